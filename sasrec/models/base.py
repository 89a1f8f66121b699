"""The interface every sequential model implements, and the registry that builds them by name.

A sequential model maps left-padded item sequences (B, T) (0 = padding, items 1..I) to hidden states
(B, T, d) and scores items by dot products with its output item embeddings. Training, evaluation,
checkpoints and inference only use this interface, so they never special-case a model:

* :meth:`SequentialRecommender.forward`: hidden states of every position.
* :meth:`SequentialRecommender.training_batch`: what the model is trained on, given a batch of the
  training windows: next-item prediction for causal models (the default), masked-item prediction for
  BERT4Rec. Positions whose loss target is 0 contribute nothing.
* :meth:`SequentialRecommender.score_all`: scores of every item (column 0 = padding) as the next item
  after each input sequence, from :meth:`SequentialRecommender.last_hidden`.
* :meth:`SequentialRecommender.model_kwargs`: constructor keywords stored in checkpoints.

Side features are fused here, once for every model (:mod:`sasrec.models.features`): a model's constructor
ends with :meth:`SequentialRecommender.init_item_representation`, and its forward pass embeds items with
:meth:`SequentialRecommender.embed_items`; :meth:`SequentialRecommender.item_table` (id embeddings plus the
projected side features, or the features alone under ``id_embedding=False``) then serves as the input and
the output embeddings, so ``score_items``, ``score_all`` and the losses score every item from its features.
Without features (the default) nothing is created and every model computes exactly what it computed before.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sasrec.errors import ConfigError
from sasrec.models.features import FeatureBundle, FeatureFusion


def require_positive(**values: int) -> None:
    """Raise :class:`ConfigError` naming the first of ``values`` that is not a positive integer."""
    for name, value in values.items():
        if int(value) < 1:
            raise ConfigError(f"{name} must be a positive integer; got {value!r}")


def require_rates(**values: float) -> None:
    """Raise :class:`ConfigError` naming the first of ``values`` (dropout rates) outside [0, 1)."""
    for name, value in values.items():
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1); got {value!r}")


def attention_settings(
    hidden_units: int, num_heads: int, dropout_rate: float, attention_dropout: float | None
) -> float:
    """Check an attention model's heads and rates; return the attention dropout (default: ``dropout_rate``)."""
    if hidden_units % num_heads:
        raise ConfigError(f"num_heads ({num_heads}) must divide hidden_units ({hidden_units})")
    attention_dropout = dropout_rate if attention_dropout is None else attention_dropout
    require_rates(dropout_rate=dropout_rate, attention_dropout=attention_dropout)
    return attention_dropout


class SequentialRecommender(nn.Module):
    """Base class of the sequential models (SASRec, gSASRec, BERT4Rec, GRU4Rec).

    Attributes:
        name: registry name (``sasrec``, ``bert4rec``, ...).
        checkpoint_prefix: first part of the checkpoint file names (``SASRec.epoch=...``).
        causal: whether position t only sees positions <= t (then every position is a training example).
        trims_training_padding: whether a training batch may be cut to its longest row's width (true for
            next-item training; false for a model whose training batch draws over the whole window).
        num_items: number of items I; embeddings have I + 1 rows (row 0 is padding) or more.
        maxlen: longest input sequence.
        item_emb: the id embedding table (I + 1 rows or more, row 0 padding); absent under
            ``id_embedding=False`` (content only), where :attr:`special_emb` holds the rows after I (BERT4Rec's
            ``[MASK]``).
    """

    #: Probability of dropping an item's id embedding at a training step (features only then; set by the
    #: training loop from ``TrainConfig.id_dropout``; no effect in evaluation or without features).
    id_dropout: float = 0.0

    name: ClassVar[str] = "sequential"
    checkpoint_prefix: ClassVar[str] = "Sequential"
    causal: ClassVar[bool] = True
    trims_training_padding: ClassVar[bool] = True
    num_items: int
    maxlen: int

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) of left-padded item sequences ``seqs`` (B, T), T <= maxlen.

        Models fusing user features also take ``users`` (B,), each row's user index (0 = unknown).
        """
        raise NotImplementedError

    # ------------------------------------------------------------------------- item representation
    def init_item_representation(
        self,
        feature_spec: dict[str, Any] | None,
        id_embedding: bool,
        *,
        hidden_units: int,
        special_rows: int = 0,
    ) -> None:
        """Set up side-feature fusion; call it last in the constructor (after ``reset_parameters``).

        Args:
            feature_spec: the groups to fuse (:meth:`sasrec.models.features.FeatureBundle.spec`), or None:
                id embeddings only, exactly as without this call (nothing created, no random draw).
            id_embedding: keep the id embedding ``item_emb`` (summed with the features); False: items are
                their features only (content-based; needs item groups).
            hidden_units: the hidden size d.
            special_rows: rows of ``item_emb`` after item I (BERT4Rec's ``[MASK]``); under
                ``id_embedding=False`` they get their own learned table ``special_emb``.
        """
        if not isinstance(id_embedding, bool):
            raise ConfigError(f"id_embedding must be true or false; got {id_embedding!r}")
        self.id_embedding = id_embedding
        if feature_spec is None:
            if not id_embedding:
                raise ConfigError(
                    "id_embedding=false needs side features (features none leaves items without any "
                    "representation); set features (e.g. all) or id_embedding=true"
                )
            return
        self.fusion = FeatureFusion(feature_spec, hidden_units, num_items=self.num_items)
        if id_embedding:
            # 1 for items whose id embedding is used: every row until set_fitted_items says which were fitted
            self.register_buffer("id_rows", torch.ones(self.item_emb.num_embeddings))
        else:
            if not self.fusion.has_items:
                raise ConfigError(
                    "id_embedding=false needs an item feature group (tags, categories, caption or item_daily); "
                    "the user group alone leaves items without any representation"
                )
            del self.item_emb
            self.special_emb = nn.Embedding(special_rows, hidden_units) if special_rows else None
            if self.special_emb is not None:
                nn.init.normal_(self.special_emb.weight, mean=0.0, std=0.02)

    @property
    def feature_fusion(self) -> FeatureFusion | None:
        """The side-feature fusion module, or None (id embeddings only)."""
        module = self._modules.get("fusion")
        return module if isinstance(module, FeatureFusion) else None

    @property
    def user_features(self) -> bool:
        """Whether the model fuses user features (then pass each row's user index as ``users``)."""
        fusion = self.feature_fusion
        return fusion is not None and fusion.has_users

    def load_features(self, bundle: FeatureBundle) -> None:
        """Fill the fusion's buffers with ``bundle``'s tensors (the model was built with its spec)."""
        fusion = self.feature_fusion
        if fusion is None:
            raise ConfigError(f"model {self.name} was built without side features; pass feature_spec")
        fusion.load_bundle(bundle)

    def set_fitted_items(self, fitted: torch.Tensor) -> None:
        """Use the id embeddings of the ``fitted`` (I + 1,) bool items only (those with fitted events).

        An item without fitted events has an id embedding that training never fits (uniform negatives would
        only push it down), so with features it is represented by its features alone: a video unseen in
        training is scored from what it is, not from a random or negative-only vector. Special rows (BERT4Rec's
        ``[MASK]``) keep theirs. No effect without features or under ``id_embedding=False``.
        """
        if self.feature_fusion is None or not self.id_embedding:
            return
        rows = self.get_buffer("id_rows")
        with torch.no_grad():
            rows[: self.num_items + 1] = fitted.to(rows.device, rows.dtype)
            rows[0] = 1.0  # padding: its embedding is zero anyway

    def feature_kwargs(self) -> dict[str, Any]:
        """The constructor keywords of the item representation ({} without features: old checkpoints'
        keywords are unchanged)."""
        fusion = self.feature_fusion
        if fusion is None:
            return {}
        return {"feature_spec": fusion.spec, "id_embedding": bool(self.id_embedding)}

    def item_table(self) -> torch.Tensor:
        """(R, d) every item's representation, R = I + 1 plus any special rows; row 0 (padding) is zero.

        Without features this is ``item_emb.weight`` itself; with features, the id embeddings (of the fitted
        items, :meth:`set_fitted_items`) plus the projected item features (special rows get no features), or
        under ``id_embedding=False`` the features followed by ``special_emb``.

        The fused table is computed once and reused (input embeddings, output scores, the losses, every
        length group of a batch, every evaluation batch) until a tensor it is computed from changes (an
        optimizer step, a load, a move) or a backward pass has run through it.
        """
        fusion = self.feature_fusion
        if fusion is None:
            return self.item_emb.weight
        sources = [*fusion.parameters(), *fusion.buffers(), *self.parameters(recurse=False)]
        for name in ("item_emb", "special_emb"):
            module = self._modules.get(name)
            if module is not None:
                sources.append(module.weight)
        if self.id_embedding:
            sources.append(self.get_buffer("id_rows"))
        key = (
            self.training,  # training draws the id dropout of the step
            torch.is_grad_enabled(),
            torch.is_inference_mode_enabled(),
            tuple((t.data_ptr(), t._version) for t in sources),
        )
        cached = self.__dict__.get("_item_table_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        table = self._fused_item_table(fusion)  # (R, d)
        if table.requires_grad:  # a backward pass frees its graph: the next call computes a new table
            table.register_hook(self._forget_item_table)
        self.__dict__["_item_table_cache"] = (key, table)
        return table

    def _forget_item_table(self, grad: torch.Tensor) -> None:
        self.__dict__.pop("_item_table_cache", None)

    def _fused_item_table(self, fusion: FeatureFusion) -> torch.Tensor:
        """(R, d) the fused item table of :meth:`item_table`, computed."""
        content = fusion.item_vectors()  # (I + 1, d) or None
        if not self.id_embedding:
            assert content is not None
            special = self._modules.get("special_emb")
            return content if special is None else torch.cat([content, special.weight])  # (R, d)
        rows = self.get_buffer("id_rows")  # (R,) 1 for the fitted items' ids
        if self.training and self.id_dropout > 0:  # DropoutNet: these items are their features this step
            dropped = torch.rand(rows.shape, device=rows.device) < self.id_dropout  # (R,)
            dropped[self.num_items + 1 :] = False  # special rows ([MASK]) keep theirs
            rows = rows * (~dropped).to(rows.dtype)
        weight = self.item_emb.weight * rows.unsqueeze(1)  # (R, d) the ids used
        if content is None:
            return weight
        extra = weight.shape[0] - content.shape[0]
        return weight + (F.pad(content, (0, 0, 0, extra)) if extra else content)  # (R, d)

    def embed_items(self, seqs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, d) input embeddings of ``seqs`` (B, T): :meth:`item_table` rows, plus (user features on) the
        user's fused features at every real position; padding stays zero."""
        fusion = self.feature_fusion
        if fusion is None:
            return self.item_emb(seqs)
        x = F.embedding(seqs, self.item_table(), padding_idx=0)  # (B, T, d)
        if users is not None and fusion.has_users:
            user = fusion.user_vectors(users.to(seqs.device))  # (B, d)
            x = x + user.unsqueeze(1) * (seqs != 0).unsqueeze(-1).to(x.dtype)  # (B, T, d)
        return x

    def check_length(self, seqs: torch.Tensor) -> int:
        """The length T of ``seqs`` (B, T); refuses one longer than the model's ``maxlen``."""
        length = seqs.shape[1]
        if length > self.maxlen:
            raise ConfigError(f"sequence length {length} exceeds the model's maxlen {self.maxlen}")
        return length

    def output_embeddings(self) -> torch.Tensor:
        """(I + 1, d) embeddings that hidden states are scored against; row 0 (padding) is never a target.

        The first I + 1 rows of :meth:`item_table` (inputs and outputs tied, as every model here does).
        """
        table = self.item_table()  # (R, d)
        return table if table.shape[0] == self.num_items + 1 else table[: self.num_items + 1]

    def score_items(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Dot products of hidden states with item embeddings.

        ``hidden`` (..., d) with ``items`` of the same leading shape (...) gives (...); with one extra
        trailing dimension (..., K) gives (..., K). One embedding lookup (cheaper than indexing the weight);
        row 0 (padding) never receives a gradient from it.
        """
        emb = F.embedding(items, self.output_embeddings(), padding_idx=0)  # (..., d) or (..., K, d)
        if emb.dim() == hidden.dim():
            return (hidden * emb).sum(-1)
        return torch.matmul(emb, hidden.unsqueeze(-1)).squeeze(-1)  # (..., K)

    def training_batch(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        window: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(model input (B, T), loss targets (B, T)) of a batch of training windows.

        Args:
            inputs: (B, T) each user's last T training items before the final one (left-padded).
            targets: (B, T) the next item at every position of ``inputs`` (0 where the input is padding).
            window: (B, T) the user's last T training items, the final one included (left-padded).
            generator: random source for models that corrupt their input (BERT4Rec's masks).

        The default is next-item prediction: ``(inputs, targets)``. Every model's loss target at position t
        is ``window[:, t]`` or 0: the training target's per-position weights (``target``, aligned with
        ``window``; :func:`sasrec.training.loop.batch_loss_terms`) rely on it.
        """
        return inputs, targets

    def last_hidden(self, seqs: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) the state that scores the next item after each sequence of ``seqs`` (B, T)."""
        hidden = self.forward(seqs) if users is None else self.forward(seqs, users=users)
        return hidden[:, -1, :]

    def score_all(
        self, seqs: torch.Tensor, *, out: torch.Tensor | None = None, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores (B, I + 1) of every item as the next item after each sequence of ``seqs`` (B, T).

        ``out`` (B, I + 1), when given, receives the scores (no new allocation: evaluation reuses one buffer).
        ``users`` (B,): each row's user index, used by models fusing user features (None: unknown users).
        """
        hidden = self.last_hidden(seqs) if users is None else self.last_hidden(seqs, users=users)  # (B, d)
        return torch.mm(hidden, self.output_embeddings().T, out=out)  # (B, I + 1)

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor keywords that rebuild this architecture (stored in checkpoints)."""
        raise NotImplementedError


MODELS: dict[str, type[SequentialRecommender]] = {}


def register(cls: type[SequentialRecommender]) -> type[SequentialRecommender]:
    """Class decorator adding a model to :data:`MODELS` under ``cls.name``."""
    MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> type[SequentialRecommender]:
    """The registered class of model ``name``; :class:`ConfigError` names the known ones otherwise."""
    _load_registry()
    if name not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(sorted(MODELS))}; got {name!r}")
    return MODELS[name]


def build_model(name: str, num_items: int, **hyperparameters: Any) -> SequentialRecommender:
    """Instantiate model ``name`` with the hyperparameters its constructor accepts (others are ignored).

    Every model reads what it needs from one flat mapping (hidden_units, num_blocks, num_heads, maxlen,
    dropout_rate, ...), so a training configuration serves every model.
    """
    cls = model_class(name)
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {key: value for key, value in hyperparameters.items() if key in accepted and key != "num_items"}
    return cls(num_items, **kwargs)


def _load_registry() -> None:
    """Import the model modules so that their ``@register`` decorators run."""
    import importlib

    for module in _MODEL_MODULES:
        importlib.import_module(module)


_MODEL_MODULES: tuple[str, ...] = (
    "sasrec.models.sasrec",
    "sasrec.models.gsasrec",
    "sasrec.models.bert4rec",
    "sasrec.models.gru4rec",
)
