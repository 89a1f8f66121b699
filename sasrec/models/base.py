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
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from sasrec.errors import ConfigError


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
    """

    name: ClassVar[str] = "sequential"
    checkpoint_prefix: ClassVar[str] = "Sequential"
    causal: ClassVar[bool] = True
    trims_training_padding: ClassVar[bool] = True
    num_items: int
    maxlen: int

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) of left-padded item sequences ``seqs`` (B, T), T <= maxlen."""
        raise NotImplementedError

    def check_length(self, seqs: torch.Tensor) -> int:
        """The length T of ``seqs`` (B, T); refuses one longer than the model's ``maxlen``."""
        length = seqs.shape[1]
        if length > self.maxlen:
            raise ConfigError(f"sequence length {length} exceeds the model's maxlen {self.maxlen}")
        return length

    def output_embeddings(self) -> torch.Tensor:
        """(I + 1, d) embeddings that hidden states are scored against; row 0 (padding) is never a target."""
        raise NotImplementedError

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

        The default is next-item prediction: ``(inputs, targets)``.
        """
        return inputs, targets

    def last_hidden(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, d) the state that scores the next item after each sequence of ``seqs`` (B, T)."""
        return self.forward(seqs)[:, -1, :]

    def score_all(self, seqs: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, I + 1) of every item as the next item after each sequence of ``seqs`` (B, T).

        ``out`` (B, I + 1), when given, receives the scores (no new allocation: evaluation reuses one buffer).
        """
        return torch.mm(self.last_hidden(seqs), self.output_embeddings().T, out=out)  # (B, I + 1)

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
