"""BERT4Rec (Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder Representations
from Transformer", CIKM 2019).

A bidirectional Transformer encoder trained with the Cloze task: random items of a user's sequence are
replaced by a ``[MASK]`` token and predicted from both sides. At inference the next item is predicted by
appending ``[MASK]`` to the history and scoring that position.

The architecture follows the paper (Section 3):

* Embedding layer: ``h0 = v + p``, item embedding plus a learned positional embedding, followed by layer
  norm and dropout (BERT's embedding post-processing, as in the authors' code). The item table has I + 2
  rows: 0 is padding, 1..I the items, I + 1 the ``[MASK]`` token.
* ``num_blocks`` Transformer layers, post-norm as in the paper's Eq. (4):
  ``H = LN(x + Dropout(MH(x)))``, ``out = LN(H + Dropout(PFFN(H)))`` with
  ``PFFN(x) = GELU(x W1 + b1) W2 + b2``, W1 of size d x 4d. Attention is bidirectional; padded keys are
  hidden (:func:`sasrec.models.layers.self_attention_mask`), so padding never changes a real position.
* Output layer, the paper's Eq. (7): ``GELU(h W^P + b^P)`` then layer norm (the authors' code), scored by
  dot products with the item embeddings (tied input and output, as the paper).

Deliberate, documented differences from the paper:

* Positional embeddings are indexed by the distance from the most recent position (0 = last), as this
  study's SASRec: the last position's output does not depend on how much left padding a sequence has.
* The per-item output bias b^O of Eq. (7) is left out: every model of this study scores by plain dot
  products with :meth:`output_embeddings`, which the shared losses use.
* Linear layers start Xavier-normal (as this study's SASRec), embeddings from N(0, 0.02) truncated at two
  standard deviations (as BERT). The authors' code draws every weight from the truncated N(0, 0.02); on the
  planted-sequence test of ``tests/test_models.py`` that needed about twice the epochs and failed some
  seeds at the test's budget.
* Side features (``feature_spec``, ``id_embedding``): the item rows 1..I are the shared fused table of
  :meth:`~sasrec.models.base.SequentialRecommender.item_table`; ``[MASK]`` keeps its own learned row (under
  ``id_embedding=False``, the one row of ``special_emb``) and no features; user features are added at every
  real position, ``[MASK]`` included.
* Training uses one masked copy of each user's window per epoch (:meth:`BERT4Rec.training_batch`); the
  authors' code additionally duplicates sequences with fresh masks and adds copies with only the last item
  masked. A row with no masked position has its last item masked, so every row trains.

Training to convergence matters: Petrov & Macdonald ("A Systematic Review and Replicability Study of
BERT4Rec for Sequential Recommendation", RecSys 2022) find that most reported failures of BERT4Rec come
from training it too briefly; they train it with early stopping on validation, which is what
:func:`sasrec.training.loop.train` does (``patience``), so give it a generous ``num_epochs``. The presets
(hidden 64, 2 blocks, 2 heads, dropout 0.1, mask probability 0.2, full softmax cross-entropy) are in
:data:`sasrec.training.config.MODEL_PRESETS`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sasrec.errors import ConfigError
from sasrec.models.base import SequentialRecommender, attention_settings, register, require_positive
from sasrec.models.layers import SelfAttention, _Dropout, self_attention_mask

INIT_STD = 0.02
LAYER_NORM_EPS = 1e-12


class TransformerLayer(nn.Module):
    """One post-norm Transformer layer (the paper's Eq. (4)): attention and GELU feed-forward sublayers."""

    def __init__(
        self, hidden_units: int, num_heads: int, dropout_rate: float, attention_dropout: float, fast: bool
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden_units, num_heads, attention_dropout, fast)
        self.attention_dropout = _Dropout(dropout_rate, fast)
        self.attention_norm = nn.LayerNorm(hidden_units, eps=LAYER_NORM_EPS)
        self.linear1 = nn.Linear(hidden_units, 4 * hidden_units)
        self.linear2 = nn.Linear(4 * hidden_units, hidden_units)
        self.ffn_dropout = _Dropout(dropout_rate, fast)
        self.ffn_norm = nn.LayerNorm(hidden_units, eps=LAYER_NORM_EPS)

    def forward(self, queries: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Outputs (B, Tq, d) at ``queries`` (B, Tq, d), a suffix of ``x`` (B, T, d) or ``x`` itself."""
        h = self.attention_norm(queries + self.attention_dropout(self.attention(queries, x, mask)))
        ffn = self.linear2(F.gelu(self.linear1(h)))  # (B, Tq, d)
        return self.ffn_norm(h + self.ffn_dropout(ffn))  # (B, Tq, d)


@register
class BERT4Rec(SequentialRecommender):
    """Bidirectional Transformer trained to recover masked items (Sun et al., CIKM 2019).

    Args:
        num_items: number of items I; index 0 is padding and I + 1 is ``[MASK]`` (I + 2 embedding rows).
        hidden_units: embedding and hidden size d.
        num_blocks: number of Transformer layers.
        num_heads: attention heads (must divide hidden_units).
        maxlen: longest input sequence, ``[MASK]`` included at inference.
        dropout_rate: dropout on embeddings and sublayer outputs.
        attention_dropout: dropout on attention probabilities; None means ``dropout_rate`` (as BERT).
        mask_prob: probability that a training position is masked (the paper's rho).
        fast_dropout: draw CPU dropout masks from 16-bit random integers (:func:`~sasrec.models.layers.fast_dropout`).
        feature_spec: side-feature groups fused into the item (and user) representation, or None.
        id_embedding: keep the id embeddings beside the features (False: content only; needs features).
    """

    name = "bert4rec"
    checkpoint_prefix = "BERT4Rec"
    causal = False
    trims_training_padding = False  # its masks are drawn over the whole window

    def __init__(
        self,
        num_items: int,
        *,
        hidden_units: int = 64,
        num_blocks: int = 2,
        num_heads: int = 2,
        maxlen: int = 200,
        dropout_rate: float = 0.1,
        attention_dropout: float | None = None,
        mask_prob: float = 0.2,
        fast_dropout: bool = True,
        feature_spec: dict[str, Any] | None = None,
        id_embedding: bool = True,
    ) -> None:
        super().__init__()
        require_positive(num_items=num_items, hidden_units=hidden_units, num_blocks=num_blocks,
                         num_heads=num_heads, maxlen=maxlen)  # fmt: skip
        attention_dropout = attention_settings(hidden_units, num_heads, dropout_rate, attention_dropout)
        if not 0.0 < mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1); got {mask_prob!r}")
        self.num_items = num_items
        self.hidden_units = hidden_units
        self.maxlen = maxlen
        self.mask_prob = mask_prob
        self.mask_id = num_items + 1
        self.item_emb = nn.Embedding(num_items + 2, hidden_units, padding_idx=0)  # 0 pad, I + 1 [MASK]
        self.pos_emb = nn.Embedding(maxlen, hidden_units)
        self.emb_norm = nn.LayerNorm(hidden_units, eps=LAYER_NORM_EPS)
        self.emb_dropout = _Dropout(dropout_rate, fast_dropout)
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_units, num_heads, dropout_rate, attention_dropout, fast_dropout)
            for _ in range(num_blocks)
        )
        self.head = nn.Linear(hidden_units, hidden_units)  # W^P, b^P of Eq. (7)
        self.head_norm = nn.LayerNorm(hidden_units, eps=LAYER_NORM_EPS)
        self.reset_parameters()
        self.init_item_representation(feature_spec, id_embedding, hidden_units=hidden_units, special_rows=1)

    def reset_parameters(self) -> None:
        """Embeddings N(0, 0.02) truncated at 2 std (as BERT; padding row zero); linear layers
        Xavier-normal with zero biases (as this study's SASRec)."""
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=INIT_STD, a=-2 * INIT_STD, b=2 * INIT_STD)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(
        self, seqs: torch.Tensor, *, last_only: bool = False, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Output-layer states (B, T, d) of left-padded sequences ``seqs`` (B, T), T <= maxlen.

        ``seqs`` may hold the ``[MASK]`` id (I + 1); padded positions output zeros. With ``last_only`` the
        last layer computes only the final position (its keys still cover every position) and (B, 1, d)
        is returned. ``users`` (B,): each row's user index (read only when user features are fused).
        """
        length = self.check_length(seqs)
        distance_from_end = torch.arange(length - 1, -1, -1, device=seqs.device)  # (T,)
        x = self.embed_items(seqs, users) + self.pos_emb(distance_from_end)  # (B, T, d)
        x = self.emb_dropout(self.emb_norm(x))  # (B, T, d)
        valid = seqs != 0  # (B, T)
        additive = self.layers[0].attention.uses_explicit_attention(seqs.device)
        mask = self_attention_mask(valid, causal=False, additive=additive)
        keep = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        for index, layer in enumerate(self.layers):
            if last_only and index == len(self.layers) - 1:
                x = layer(x[:, -1:], x, mask[..., -1:, :])  # (B, 1, d)
                keep = keep[:, -1:]  # (B, 1, 1)
            else:
                x = layer(x, x, mask)  # (B, T, d)
        return self.head_norm(F.gelu(self.head(x))) * keep  # (B, T or 1, d)

    def training_batch(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        window: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Cloze task (Section 3.6) on ``window`` (B, T), the user's last T training items.

        Every non-padding position is masked independently with probability ``mask_prob`` (draws from
        ``generator``); a row left without a masked position has its last item masked. Returns
        (window with masked positions set to ``[MASK]``, the original items there and 0 elsewhere).
        ``inputs`` and ``targets`` (next-item prediction) are not used.
        """
        valid = window != 0  # (B, T)
        draws = torch.rand(window.shape, generator=generator, device=window.device)  # (B, T)
        masked = (draws < self.mask_prob) & valid  # (B, T)
        masked[:, -1] |= ~masked.any(dim=1) & valid[:, -1]  # left padding: the last column is the last item
        model_input = torch.where(masked, self.mask_id, window)  # (B, T)
        loss_targets = torch.where(masked, window, 0)  # (B, T)
        return model_input, loss_targets

    def last_hidden(self, seqs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) output at a ``[MASK]`` appended after the last item of each sequence of ``seqs`` (B, T).

        When the result would exceed ``maxlen`` the oldest column is dropped. Only dropping what does not fit
        keeps a row's scores independent of its left padding (and so of the other rows of its batch). The
        output embeddings (the base class's) are rows 0..I: the ``[MASK]`` row is never a candidate.
        """
        mask_column = torch.full((seqs.shape[0], 1), self.mask_id, dtype=seqs.dtype, device=seqs.device)
        shifted = torch.cat([seqs, mask_column], dim=1)[:, -self.maxlen :]  # (B, min(T + 1, maxlen))
        return self.forward(shifted, last_only=True, users=users)[:, -1, :]  # (B, d)

    def model_kwargs(self) -> dict[str, object]:
        """Constructor keywords that rebuild this architecture (stored in checkpoints)."""
        first = self.layers[0].attention
        return {
            "num_items": self.num_items,
            "hidden_units": self.hidden_units,
            "num_blocks": len(self.layers),
            "num_heads": first.num_heads,
            "maxlen": self.maxlen,
            "dropout_rate": self.emb_dropout.p,
            "attention_dropout": first.attention_dropout,
            "mask_prob": self.mask_prob,
            "fast_dropout": self.emb_dropout.fast,
            **self.feature_kwargs(),
        }
