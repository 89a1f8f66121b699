"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

The architecture follows the reference implementation (the authors' TensorFlow code and its widely used
PyTorch port): scaled item embeddings plus learned positional embeddings, embedding dropout, then blocks of
``Q = LN(x)``, causal single/multi-head attention over ``x`` with the output added to ``Q``, then
``LN`` and a point-wise feed-forward network with a residual connection, padding re-zeroed after every block,
and a final layer norm. Items are scored by dot products with the shared item embedding
(:meth:`~sasrec.models.base.SequentialRecommender.output_embeddings`: inputs and outputs tied, as in the paper).

Deliberate, documented differences from the reference port:

* Padding positions are masked from the attention keys (the port lets later queries attend to padded
  positions, whose keys and values are the projection biases). A query at a padded position may always see
  itself, so no attention row is ever fully masked (no NaN); its output is zeroed anyway.
* Positional embeddings are indexed by the distance from the most recent item (0 = last position). With the
  fixed input length ``maxlen`` of the reference this is the same model with the embedding rows reversed; it
  makes the last position's output independent of how much left padding a sequence carries, so evaluation
  may feed shorter windows.
* Item and positional embeddings start from N(0, 0.02) (the port applies Xavier-normal to every matrix; the
  N(0, 1) default of ``nn.Embedding`` stalls training on KuaiRec: the loss stays near ln(I) and NDCG at the popularity level).
* Dropout on CPU draws its keep mask from 16-bit random integers (:func:`fast_dropout`): the same
  Bernoulli(1 - p) keep/scale rule with p rounded to a multiple of 2**-16, several times cheaper than
  ``torch.nn.functional.dropout`` on these machines, where dropout masks were ~44% of a training step.
  In CPU training the attention is then computed explicitly (``baddbmm`` with an additive mask, softmax,
  0/1 mask, the 1/(1-p) scale applied after the product with the values) instead of through
  ``scaled_dot_product_attention``, whose CPU dropout uses torch's slow masks. ``fast_dropout=False``
  restores torch's own dropout everywhere. Evaluation (``model.eval()``) always uses
  ``scaled_dot_product_attention`` and is unaffected.
* CPU training computes the causal attention by blocks of 50 queries against the keys up to each block's
  end only (:class:`~sasrec.models.layers.CausalSelfAttention`), with the same dropout draws: the same
  values up to float rounding, 3/8 of the attention work skipped at maxlen 200. Keys and values come from
  the two halves of ``kv_proj`` as two products (the same parameters and values).
* The attention-probability dropout of the reference is kept by default (``attention_dropout`` = None
  means ``dropout_rate``); ``attention_dropout=0.0`` is available and lets training use the fused
  attention kernel (no faster than the default blocked path on the 2-core CPU: 278 vs 254 ms per batch at
  maxlen 200, benchmarks/bench_train.py).

Scoring needs only the last position: :meth:`SASRec.score_all` runs the last block for the final
position only (``forward(..., last_only=True)``), which gives the same values at lower cost.

Side features (``feature_spec``, ``id_embedding``): the item embeddings are the shared fused table of
:meth:`~sasrec.models.base.SequentialRecommender.item_table` (SASRecF's and FDSA's item representation),
scaled by sqrt(d) like the id embeddings; user features are added at every real input position.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sasrec.models.base import SequentialRecommender, attention_settings, register, require_positive
from sasrec.models.layers import CausalSelfAttention, PointWiseFeedForward, _Dropout, self_attention_mask

EMBEDDING_INIT_STD = 0.02


@register
class SASRec(SequentialRecommender):
    """Self-Attentive Sequential Recommendation model (Kang & McAuley, ICDM 2018).

    Args:
        num_items: number of items; item index 0 is padding, so embeddings have num_items + 1 rows.
        hidden_units: embedding and hidden size d.
        num_blocks: number of self-attention blocks.
        num_heads: attention heads (must divide hidden_units).
        maxlen: longest input sequence (number of positional embeddings).
        dropout_rate: dropout on embeddings, feed-forward layers and (by default) attention probabilities.
        attention_dropout: dropout on attention probabilities; None means ``dropout_rate`` (the reference).
        fast_dropout: draw CPU dropout masks from 16-bit random integers (see :func:`fast_dropout`).
        feature_spec: side-feature groups fused into the item (and user) representation, or None (ids only).
        id_embedding: keep the id embeddings beside the features (False: content only; needs features).
    """

    name = "sasrec"
    checkpoint_prefix = "SASRec"

    def __init__(
        self,
        num_items: int,
        *,
        hidden_units: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        maxlen: int = 200,
        dropout_rate: float = 0.2,
        attention_dropout: float | None = None,
        fast_dropout: bool = True,
        feature_spec: dict[str, Any] | None = None,
        id_embedding: bool = True,
    ) -> None:
        super().__init__()
        require_positive(num_items=num_items, hidden_units=hidden_units, num_blocks=num_blocks,
                         num_heads=num_heads, maxlen=maxlen)  # fmt: skip
        attention_dropout = attention_settings(hidden_units, num_heads, dropout_rate, attention_dropout)
        self.num_items = num_items
        self.hidden_units = hidden_units
        self.maxlen = maxlen
        self.item_emb = nn.Embedding(num_items + 1, hidden_units, padding_idx=0)
        self.pos_emb = nn.Embedding(maxlen, hidden_units)
        self.emb_dropout = _Dropout(dropout_rate, fast_dropout)
        self.attention_layernorms = nn.ModuleList(
            nn.LayerNorm(hidden_units, eps=1e-8) for _ in range(num_blocks)
        )
        self.attention_layers = nn.ModuleList(
            CausalSelfAttention(hidden_units, num_heads, attention_dropout, fast_dropout)
            for _ in range(num_blocks)
        )
        self.forward_layernorms = nn.ModuleList(
            nn.LayerNorm(hidden_units, eps=1e-8) for _ in range(num_blocks)
        )
        self.forward_layers = nn.ModuleList(
            PointWiseFeedForward(hidden_units, dropout_rate, fast_dropout) for _ in range(num_blocks)
        )
        self.last_layernorm = nn.LayerNorm(hidden_units, eps=1e-8)
        self.reset_parameters()
        self.init_item_representation(feature_spec, id_embedding, hidden_units=hidden_units)

    def reset_parameters(self) -> None:
        """Embeddings N(0, 0.02) (padding row zero); linear weights Xavier-normal as the reference port."""
        nn.init.normal_(self.item_emb.weight, mean=0.0, std=EMBEDDING_INIT_STD)
        nn.init.normal_(self.pos_emb.weight, mean=0.0, std=EMBEDDING_INIT_STD)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(
        self, seqs: torch.Tensor, *, last_only: bool = False, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Hidden states (B, T, d) of left-padded item sequences ``seqs`` (B, T), T <= maxlen.

        With ``last_only`` the last block computes only the final position (its keys still cover every
        position) and (B, 1, d) is returned: the same values as ``forward(seqs)[:, -1:]``, cheaper.
        ``users`` (B,): each row's user index (read only when user features are fused).
        """
        length = self.check_length(seqs)
        valid = seqs != 0  # (B, T)
        x = self.embed_items(seqs, users) * math.sqrt(self.hidden_units)  # (B, T, d)
        distance_from_end = torch.arange(length - 1, -1, -1, device=seqs.device)  # (T,)
        x = x + self.pos_emb(distance_from_end)  # (B, T, d)
        x = self.emb_dropout(x)
        keep = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        x = x * keep
        additive = self.attention_layers[0].uses_explicit_attention(seqs.device)
        mask = self_attention_mask(valid, causal=True, additive=additive)  # (B, T, T) or (B, 1, T, T)
        blocks = list(
            zip(
                self.attention_layernorms,
                self.attention_layers,
                self.forward_layernorms,
                self.forward_layers,
                strict=True,
            )
        )
        for index, (attn_ln, attn, ffn_ln, ffn) in enumerate(blocks):
            if last_only and index == len(blocks) - 1:
                mask, keep = mask[..., -1:, :], keep[:, -1:]  # last query row of the mask; (B, 1, 1)
                queries = attn_ln(x[:, -1:])  # (B, 1, d)
            else:
                queries = attn_ln(x)  # (B, T, d)
            x = queries + attn(queries, x, mask)  # (B, T or 1, d)
            x = ffn(ffn_ln(x)) * keep  # (B, T or 1, d)
        return self.last_layernorm(x)  # (B, T or 1, d)

    def last_hidden(self, seqs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) output of the last position of ``seqs`` (B, T); the last block computes that position only."""
        return self.forward(seqs, last_only=True, users=users)[:, -1, :]

    def model_kwargs(self) -> dict[str, object]:
        """Constructor keywords that rebuild this architecture (stored in checkpoints)."""
        first = self.attention_layers[0]
        return {
            "num_items": self.num_items,
            "hidden_units": self.hidden_units,
            "num_blocks": len(self.attention_layers),
            "num_heads": first.num_heads,
            "maxlen": self.maxlen,
            "dropout_rate": self.emb_dropout.p,
            "attention_dropout": first.attention_dropout,
            "fast_dropout": self.emb_dropout.fast,
            **self.feature_kwargs(),
        }
