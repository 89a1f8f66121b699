"""Evaluation settings in one object: cut-off, protocols, negatives, relevance, intervals, batching."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from sasrec.data.tasks import RELEVANCE_RULES, resolve_relevance
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import PROTOCOLS


@dataclass
class EvalConfig:
    """Settings of an evaluation (the ``evaluation`` block of a parameter file).

    Attributes:
        k: the cut-off K of every metric.
        protocols: protocols to run, among ``full`` and ``sampled``.
        num_negatives: negatives per user of the sampled protocol (the original project: 100).
        relevance: ``threshold``, ``liked``, ``all``, or ``original`` (resolved per model by
            :meth:`relevance_for`: ``liked`` for models trained with explicit negatives, else ``all``).
        relevance_threshold: threshold of the ``threshold`` rule; None for the dataset's (2.0).
        n_boot: bootstrap resamples of the intervals.
        alpha: 1 - the intervals' level.
        seed: seed of the sampled negatives and of the bootstrap.
        batch_size: users per evaluation batch.
        gain_clip: graded-NDCG gains are min(watch_ratio, gain_clip).
    """

    k: int = 10
    protocols: tuple[str, ...] = ("full",)
    num_negatives: int = 100
    relevance: str = "threshold"
    relevance_threshold: float | None = None
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0
    batch_size: int = 512
    gain_clip: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.protocols, str):
            self.protocols = (self.protocols,)
        elif isinstance(self.protocols, list | tuple):
            self.protocols = tuple(self.protocols)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field and what it expects."""

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"evaluation {name} must be an integer >= {low}; got {value!r}")

        def number(name: str) -> float:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"evaluation {name} must be a finite number; got {value!r}")
            return float(value)

        for name, low in (("k", 1), ("num_negatives", 1), ("n_boot", 1), ("seed", 0), ("batch_size", 1)):
            integer(name, low)
        protocols = self.protocols
        if (
            not isinstance(protocols, tuple)
            or not protocols
            or any(p not in PROTOCOLS for p in protocols)
            or len(set(protocols)) != len(protocols)
        ):
            raise ConfigError(
                f"evaluation protocols must be a non-empty list of distinct names among {', '.join(PROTOCOLS)}; "
                f"got {protocols!r}"
            )
        if self.relevance not in (*RELEVANCE_RULES, "original"):
            raise ConfigError(
                f"evaluation relevance must be one of {', '.join(RELEVANCE_RULES)}, original; got {self.relevance!r}"
            )
        if self.relevance_threshold is not None:
            number("relevance_threshold")
            if self.relevance != "threshold":
                raise ConfigError(
                    f"evaluation relevance_threshold only applies to relevance 'threshold'; got relevance "
                    f"{self.relevance!r} with relevance_threshold {self.relevance_threshold!r}"
                )
        if not 0 < number("alpha") < 1:
            raise ConfigError(f"evaluation alpha must be in (0, 1); got {self.alpha!r}")
        if not number("gain_clip") > 0:
            raise ConfigError(f"evaluation gain_clip must be positive; got {self.gain_clip!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> EvalConfig:
        """Build from a mapping (a parameter file's ``evaluation`` block); unknown keys are a ConfigError."""
        values = dict(values or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown evaluation setting(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (protocols as a list)."""
        out = asdict(self)
        out["protocols"] = list(self.protocols)
        return out

    def relevance_for(self, explicit_negatives: bool) -> str:
        """The relevance rule for a model (``original`` resolved by how the model was trained)."""
        return resolve_relevance(self.relevance, explicit_negatives)

    def evaluate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sasrec.evaluation.protocol.evaluate` (add ``protocol``)."""
        return {
            "k": self.k,
            "num_negatives": self.num_negatives,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "gain_clip": self.gain_clip,
        }
