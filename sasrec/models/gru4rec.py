"""GRU4Rec (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks", ICLR 2016).

A recurrent next-item model: each item of the sequence updates a GRU's hidden state, and the state after
item t scores every item as item t + 1. The training choices follow the authors' later audit of the model,
Hidasi & Czapp ("The effect of third party implementations on reproducibility", RecSys 2023):

* Item embeddings -> ``num_blocks`` GRU layers of ``hidden_units`` -> dropout -> dot products with the
  output item embeddings, as the official implementation.
* Input and output embeddings are tied: one (I + 1, d) table serves as the GRU's input and as the output
  weights. This is the official implementation's default (``constrained_embedding=True``, also in its
  published tuned parameter files), it halves the parameters, and it is how this study's SASRec and
  BERT4Rec score items, so the models differ in the sequence encoder only. It forces the embedding size to
  equal ``hidden_units``. The official output bias is left out (every model here scores by plain dot
  products, which the shared losses use).
* Loss: full softmax cross-entropy (preset ``loss="ce"``), one of the two losses of the improved GRU4Rec
  whose tuned settings Hidasi & Czapp publish (the other, BPR-max from Hidasi & Karatzoglou, CIKM 2018, is
  not implemented here). The official implementation scores the target against sampled negatives; here
  the softmax runs over every item, which that sampling approximates.
* Hidden size 100 and one layer (the ICLR paper's main setting). Dropout ``dropout_rate`` on the GRU
  output (and between stacked layers), none on the input embeddings: the official implementation tunes an
  embedding and a hidden dropout per dataset (0.0-0.5), and its tuned cross-entropy setting for Yoochoose
  uses 0.0 and 0.2, the preset here. Presets in :data:`sasrec.training.config.MODEL_PRESETS`.

Side features (``feature_spec``, ``id_embedding``): the tied table is the base class's fused item table
(:meth:`~sasrec.models.base.SequentialRecommender.item_table`), and user features are added to every real
input step, as in every model of this study.

Difference from the paper: GRU4Rec trains on session-parallel mini-batches, carrying the hidden state
across batches; here, like every model of this study, it trains on each user's last ``maxlen`` training
items with every position a next-item example, and scoring restarts the GRU from a zero state on the input
window.

Left padding never changes a real position: each sequence is right-aligned (its items first, its padding
last), run through the GRU from a zero state, and left-aligned again (two gathers); padded positions output
zeros. A unidirectional GRU's output at step j depends only on steps <= j, so the trailing padding is read
only after the last real item and the real outputs are exactly those of the unpadded sequence, as a run on
``pack_padded_sequence`` input gives them (``tests/test_models.py`` checks the two agree). Packing itself is
not used: on the 2-core CPU the packed GRU's forward and backward at batch 128 x 200 took 3-5x as long as
the plain one (6-8 s against 1.5-2.6 s per step, measured under the machine's shared load), and it saves
nothing on training windows, which are mostly full.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sasrec.models.base import SequentialRecommender, register, require_positive, require_rates
from sasrec.models.layers import _Dropout

EMBEDDING_INIT_STD = 0.02


@register
class GRU4Rec(SequentialRecommender):
    """Recurrent next-item recommender (Hidasi et al., ICLR 2016; Hidasi & Czapp, RecSys 2023).

    Args:
        num_items: number of items; index 0 is padding, so the item table has num_items + 1 rows.
        hidden_units: GRU state size d, also the (tied) item embedding size.
        num_blocks: number of stacked GRU layers.
        maxlen: longest input sequence.
        dropout_rate: dropout on the GRU output and between stacked GRU layers (none on the embeddings).
        fast_dropout: draw CPU dropout masks from 16-bit random integers (:func:`~sasrec.models.layers.fast_dropout`).
        feature_spec: side-feature groups fused into the (tied) item and the user representation, or None.
        id_embedding: keep the id embeddings beside the features (False: content only; needs features).
    """

    name = "gru4rec"
    checkpoint_prefix = "GRU4Rec"

    def __init__(
        self,
        num_items: int,
        *,
        hidden_units: int = 100,
        num_blocks: int = 1,
        maxlen: int = 200,
        dropout_rate: float = 0.2,
        fast_dropout: bool = True,
        feature_spec: dict[str, Any] | None = None,
        id_embedding: bool = True,
    ) -> None:
        super().__init__()
        require_positive(num_items=num_items, hidden_units=hidden_units, num_blocks=num_blocks, maxlen=maxlen)
        require_rates(dropout_rate=dropout_rate)
        self.num_items = num_items
        self.hidden_units = hidden_units
        self.maxlen = maxlen
        self.item_emb = nn.Embedding(num_items + 1, hidden_units, padding_idx=0)
        self.gru = nn.GRU(
            hidden_units,
            hidden_units,
            num_layers=num_blocks,
            batch_first=True,
            dropout=dropout_rate if num_blocks > 1 else 0.0,
        )
        self.out_dropout = _Dropout(dropout_rate, fast_dropout)
        self.reset_parameters()
        self.init_item_representation(feature_spec, id_embedding, hidden_units=hidden_units)

    def reset_parameters(self) -> None:
        """Item embeddings N(0, 0.02) (padding row zero); GRU weights uniform(+-1/sqrt(d)), biases zero."""
        nn.init.normal_(self.item_emb.weight, mean=0.0, std=EMBEDDING_INIT_STD)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        bound = 1.0 / math.sqrt(self.hidden_units)
        for name, param in self.gru.named_parameters():
            if name.startswith("weight"):
                nn.init.uniform_(param, -bound, bound)
            else:
                nn.init.zeros_(param)

    def _run_right_aligned(
        self, seqs: torch.Tensor, users: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(GRU outputs (B, T, d) of the right-aligned sequences, left padding per row (B, 1)).

        Row b's real items sit at steps 0..L_b - 1 of the outputs; steps after them read padding.
        ``users`` (B,): each row's user index (read only when user features are fused).
        """
        length = self.check_length(seqs)
        shift = (seqs == 0).sum(dim=1, keepdim=True)  # (B, 1) amount of left padding
        columns = torch.arange(length, device=seqs.device)  # (T,)
        # Rotating each row left by its padding puts its items first and its padding (zeros) last.
        right_aligned = seqs.gather(1, (columns + shift) % length)  # (B, T)
        outputs, _ = self.gru(self.embed_items(right_aligned, users))  # (B, T, d)
        return outputs, shift

    def forward(self, seqs: torch.Tensor, *, users: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states (B, T, d) of left-padded sequences ``seqs`` (B, T); zeros at padded positions."""
        length = seqs.shape[1]
        outputs, shift = self._run_right_aligned(seqs, users)
        columns = torch.arange(length, device=seqs.device)  # (T,)
        back = ((columns - shift) % length).unsqueeze(-1).expand(-1, -1, self.hidden_units)  # (B, T, d)
        hidden = outputs.gather(1, back) * (seqs != 0).unsqueeze(-1)  # (B, T, d) left-aligned again
        return self.out_dropout(hidden)

    def last_hidden(self, seqs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) each row's last real output, read straight from the right-aligned run (step L_b - 1);
        empty sequences give 0 (as :meth:`forward`'s padded positions). The output embeddings are the
        base class's item table, tied with the GRU's input embeddings."""
        outputs, shift = self._run_right_aligned(seqs, users)
        lengths = seqs.shape[1] - shift.squeeze(1)  # (B,)
        rows = torch.arange(seqs.shape[0], device=seqs.device)  # (B,)
        last = outputs[rows, (lengths - 1).clamp(min=0)] * (lengths > 0).unsqueeze(1)  # (B, d)
        return self.out_dropout(last)

    def model_kwargs(self) -> dict[str, object]:
        """Constructor keywords that rebuild this architecture (stored in checkpoints)."""
        return {
            "num_items": self.num_items,
            "hidden_units": self.hidden_units,
            "num_blocks": self.gru.num_layers,
            "maxlen": self.maxlen,
            "dropout_rate": self.out_dropout.p,
            "fast_dropout": self.out_dropout.fast,
            **self.feature_kwargs(),
        }
