"""The configuration of a training run (:class:`TrainConfig`) and device selection."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sasrec.data.cold_start import ColdStart, cold_start_of
from sasrec.data.contracts import SPLITS
from sasrec.errors import ConfigError
from sasrec.models.base import model_class
from sasrec.models.targets import check_target
from sasrec.training.features import parse_features

logger = logging.getLogger(__name__)
LOSSES = ("bce", "ce", "sampled_softmax", "gbce")
#: Losses that draw ``num_negatives`` uniform negatives per position (capped by :func:`fit_to_catalogue`).
SAMPLED_LOSSES = ("sampled_softmax", "gbce")
EVAL_PROTOCOLS = ("full", "sampled")
FIT_POLICIES = ("train", "train_valid")
RELEVANCE_RULES = ("threshold", "liked", "all", "original")
#: Training defaults of each named model, applied by :meth:`TrainConfig.for_model` under explicit values.
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "sasrec": {},
    # Petrov & Macdonald (RecSys 2023): 256 negatives, calibration t = 0.75.
    "gsasrec": {"loss": "gbce", "num_negatives": 256, "gbce_t": 0.75},
    # Sun et al. (CIKM 2019): d = 64, 2 layers, 2 heads, dropout 0.1, mask probability 0.2, full softmax.
    "bert4rec": {
        "loss": "ce",
        "hidden_units": 64,
        "num_blocks": 2,
        "num_heads": 2,
        "dropout_rate": 0.1,
        "mask_prob": 0.2,
    },
    # Hidasi et al. (ICLR 2016): one GRU layer of 100 units; full cross-entropy (Hidasi & Czapp, RecSys 2023).
    "gru4rec": {"loss": "ce", "hidden_units": 100, "num_blocks": 1, "dropout_rate": 0.2},
}


# ------------------------------------------------------------------------------------------ configuration
@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (the original project's flags plus the study's).

    ``model`` names a registered model (``sasrec``, ``gsasrec``, ``bert4rec``, ``gru4rec``);
    ``weighted_dislike`` implies ``explicit_negatives``. ``target`` (``views``, ``liked``, ``relevant``,
    ``graded``; :mod:`sasrec.models.targets`) selects which fitted views are positives of the loss (the input
    stays every view); ``graded`` cannot be combined with explicit negatives. Early stopping: training stops once ``patience``
    epochs have passed without a better validation NDCG@k, but never before ``min_epochs`` (``patience``
    0 disables it). ``fit_on`` is the fitting policy shared by every model of a comparison: ``train``
    (parameters fit on training events; at test time the input includes the validation events) or
    ``train_valid`` (after selection on validation, the model is retrained on training + validation
    events for the selected number of epochs, with the same seed). ``relevance`` is the relevance rule of
    validation (``threshold``: watch_ratio > relevance_threshold; ``liked``; ``all``; ``original``:
    the original project's, liked for dislike variants and all otherwise). ``cold_start`` (``none``,
    ``items``, ``users``) with ``cold_start_frac``, ``cold_user_events`` and ``cold_start_seed`` selects a
    cold-start protocol (:mod:`sasrec.data.cold_start`) for the fitting events and tasks. ``amp`` runs CUDA
    training and evaluation under bf16 autocast and ``compile`` wraps the model in ``torch.compile``;
    neither changes CPU results. ``attention_dropout`` None follows the reference (the same rate as ``dropout_rate``);
    ``fast_dropout`` selects the cheap CPU dropout masks of :func:`sasrec.models.layers.fast_dropout`.
    ``features`` fuses side features into every model's item (and user) representation: ``none`` (ids
    only, the default), ``all`` (every available group) or a comma list of ``tags``, ``categories``,
    ``caption``, ``item_daily``, ``user`` (:mod:`sasrec.training.features`); ``id_embedding`` false leaves
    items represented by their features alone (content only); ``id_dropout`` p drops each item's id
    embedding with probability p at every training step (features alone then represent it, as they do for a
    video nobody watched; DropoutNet, Volkovs et al., NeurIPS 2017).
    """

    model: str = "sasrec"
    dataset: str = "small_matrix"
    train_dir: str = "default"
    split: str = "temporal"
    loss: str = "bce"
    explicit_negatives: bool = False
    weighted_dislike: bool = False
    dislike_weight: float = 2.0
    target: str = "views"
    num_negatives: int = 100
    gbce_t: float = 0.75
    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: int = 128
    maxlen: int = 200
    hidden_units: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout_rate: float = 0.2
    attention_dropout: float | None = None
    mask_prob: float = 0.2
    fast_dropout: bool = True
    l2_emb: float = 0.0
    num_epochs: int = 20
    eval_every: int = 1
    patience: int = 20
    min_epochs: int = 0
    fit_on: str = "train"
    cold_start: str = "none"
    cold_start_frac: float = 0.1
    cold_user_events: int = 5
    cold_start_seed: int = 0
    features: str = "none"
    id_embedding: bool = True
    id_dropout: float = 0.0
    k: int = 10
    seed: int = 0
    device: str = "auto"
    relevance: str = "threshold"
    relevance_threshold: float | None = None
    eval_protocol: str = "full"
    num_eval_negatives: int = 100
    eval_batch_size: int = 512
    ce_chunk_size: int = 2048
    amp: bool = False
    compile: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.weighted_dislike:
            self.explicit_negatives = True
        self.validate()

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` naming the first invalid parameter; return self."""

        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")

        def number(
            name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = True
        ) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number; got {value!r}")
            if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
                left, right = "(" if low_open else "[", ")" if high_open else "]"
                raise ConfigError(f"{name} must be in {left}{low}, {high}{right}; got {value!r}")

        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"dataset must be a non-empty name or path; got {self.dataset!r}")
        if not isinstance(self.train_dir, str) or not self.train_dir or "/" in self.train_dir:
            raise ConfigError(
                f"train_dir must be a non-empty folder name without '/'; got {self.train_dir!r}"
            )
        model_class(self.model)  # ConfigError naming the known models
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.explicit_negatives and self.loss != "bce":
            raise ConfigError(
                f"explicit_negatives / weighted_dislike need loss='bce' (one negative per position); got loss={self.loss!r}"
            )
        check_target(self.target)
        if self.target == "graded" and self.explicit_negatives:
            option = "weighted_dislike" if self.weighted_dislike else "explicit_negatives"
            raise ConfigError(
                f"target='graded' contradicts {option}=true: graded makes every view a positive weighted by its "
                f"watch_ratio, {option} makes disliked views negatives; use target liked (liked positives, "
                f"disliked negatives) or {option}=false"
            )
        for name in ("batch_size", "maxlen", "hidden_units", "num_blocks", "num_heads", "num_epochs"):
            positive_int(name)
        for name in (
            "eval_every",
            "k",
            "num_negatives",
            "num_eval_negatives",
            "eval_batch_size",
            "ce_chunk_size",
        ):
            positive_int(name)
        positive_int("patience", 0)
        positive_int("min_epochs", 0)
        if self.fit_on not in FIT_POLICIES:
            raise ConfigError(f"fit_on must be one of {', '.join(FIT_POLICIES)}; got {self.fit_on!r}")
        self.cold_start_spec()  # ConfigError naming the cold-start parameter and its allowed values
        if self.relevance not in RELEVANCE_RULES:
            raise ConfigError(
                f"relevance must be one of {', '.join(RELEVANCE_RULES)}; got {self.relevance!r}"
            )
        flags = ("amp", "compile", "explicit_negatives", "weighted_dislike", "fast_dropout", "id_embedding")
        for name in flags:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {getattr(self, name)!r}")
        if not parse_features(self.features) and not self.id_embedding:
            raise ConfigError(
                "id_embedding=false needs side features (features none leaves items without any representation); "
                "set features to all or a comma list of tags,categories,caption,item_daily, or id_embedding=true"
            )
        positive_int("seed", 0)
        if self.hidden_units % self.num_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must divide hidden_units ({self.hidden_units})")
        number("lr", 0.0, math.inf, low_open=True)
        number("dropout_rate", 0.0, 1.0)
        number("id_dropout", 0.0, 1.0, high_open=True)
        if self.id_dropout > 0 and not parse_features(self.features):
            raise ConfigError(
                f"id_dropout={self.id_dropout} needs side features (an item without its id embedding has no "
                "other representation); set features (e.g. all) or id_dropout=0"
            )
        if self.attention_dropout is not None:
            number("attention_dropout", 0.0, 1.0)
        number("l2_emb", 0.0, math.inf)
        number("weight_decay", 0.0, math.inf)
        number("dislike_weight", 0.0, math.inf)
        number("gbce_t", 0.0, 1.0, high_open=False)
        number("mask_prob", 0.0, 1.0, low_open=True)
        if self.relevance_threshold is not None:
            number("relevance_threshold", -math.inf, math.inf)
        if self.eval_protocol not in EVAL_PROTOCOLS:
            raise ConfigError(
                f"eval_protocol must be one of {', '.join(EVAL_PROTOCOLS)}; got {self.eval_protocol!r}"
            )
        resolve_device(self.device, check_only=True)
        return self

    def make_optimizer(self, parameters: Any) -> torch.optim.Optimizer:
        """The optimizer this configuration describes: Adam with the reference SASRec's betas (0.9, 0.98) and
        ``weight_decay`` (an L2 penalty on every parameter; 0 by default, as the reference)."""
        # foreach: one multi-tensor update per step, bit-identical to the per-parameter loop and faster
        return torch.optim.Adam(
            parameters, lr=self.lr, betas=(0.9, 0.98), weight_decay=self.weight_decay, foreach=True
        )

    def cold_start_spec(self) -> ColdStart | None:
        """The cold-start protocol of every fitting mask and task of this run, or None under ``none``."""
        return cold_start_of(self)

    def relevance_arguments(self) -> dict[str, Any]:
        """``relevance`` and ``relevance_threshold`` for the evaluation tasks of this model: the rule
        ``original`` resolves to liked for models trained with explicit negatives, all targets otherwise."""
        from sasrec.data.tasks import resolve_relevance

        rule = resolve_relevance(self.relevance, self.explicit_negatives)
        return {
            "relevance": rule,
            "relevance_threshold": self.relevance_threshold if rule == "threshold" else None,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def for_model(cls, model: str, **values: Any) -> TrainConfig:
        """The configuration of ``model`` with its :data:`MODEL_PRESETS`, explicit ``values`` winning."""
        model_class(model)
        return cls(**{**MODEL_PRESETS.get(model, {}), **values, "model": model})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)


def negatives_limit(num_items: int) -> int:
    """The most negatives a sampled loss may draw per position on a catalogue of ``num_items`` items.

    gBCE's calibration needs alpha = negatives / (items - 1) < 1, so at most ``num_items - 2``; sampled
    softmax shares the limit.
    """
    return num_items - 2


def fit_to_catalogue(config: TrainConfig, num_items: int, dataset: str) -> TrainConfig:
    """``config`` with ``num_negatives`` capped to the catalogue, or ``config`` itself when it fits.

    A preset (gSASRec's 256 negatives) or a flag may ask for more negatives than a small catalogue holds;
    the value is then lowered to :func:`negatives_limit` with a logged WARNING naming the requested and
    the used value, and the returned configuration (stored in checkpoints and metrics) holds the used one.

    Args:
        config: the requested configuration.
        num_items: number of items of the dataset.
        dataset: its name, for the messages.

    Raises:
        ConfigError: the catalogue is too small for any negative (fewer than 3 items).
    """
    limit = negatives_limit(num_items)
    if config.loss not in SAMPLED_LOSSES or config.num_negatives <= limit:
        return config
    if limit < 1:
        raise ConfigError(
            f"loss {config.loss!r} needs at least 3 items (negatives / (items - 1) < 1); {dataset} has "
            f"{num_items}: choose loss bce or ce"
        )
    logger.warning(
        "num_negatives=%d capped to %d: %s has %d items and loss %r needs num_negatives < items - 1 (%d); "
        "the run records num_negatives=%d",
        config.num_negatives,
        limit,
        dataset,
        num_items,
        config.loss,
        num_items - 1,
        limit,
    )
    return dataclasses.replace(config, num_negatives=limit)


def resolve_device(device: str, *, check_only: bool = False) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; explicit devices must be available."""
    if not isinstance(device, str) or not device:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        if check_only:
            return resolved
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device=cpu or auto")
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if (mps is None or not mps.is_available()) and not check_only:
            raise ConfigError(
                f"device {device!r} requested but MPS is not available; use --device=cpu or auto"
            )
    if resolved.type not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
    return resolved
