"""Configuration of the data stage: which simulated data to make, and how to prepare any dataset.

Each is one mapping of a params file (``simulator:``, ``preparation:``) turned into a frozen dataclass
unchanged: unknown keys and invalid values are refused in one line naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from sasrec.data.preparation.params import DEFAULT_PARAMS, _normalise_params
from sasrec.errors import ConfigError

T = TypeVar("T")


def from_mapping(cls: type[T], values: dict[str, Any] | None, section: str) -> T:
    """``cls(**values)`` refusing unknown keys (one line naming them, the section and the known keys)."""
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{section}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}") from None


@dataclass(frozen=True)
class SimulatorSettings:
    """The embedded simulator's size and seed (used when no real KuaiRec archive is in data/raw).

    Attributes:
        scale: share of the real sizes (1.0 = 7,176 x 10,728 and ~12.5M big-matrix rows).
        seed: random seed; the same scale and seed give byte-identical files.
    """

    scale: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        from sasrec.data.simulator.calibration import MAX_SCALE, MIN_SCALE

        if isinstance(self.scale, bool) or not isinstance(self.scale, int | float):
            raise ConfigError(f"simulator.scale must be a number; got {self.scale!r}")
        if not MIN_SCALE <= float(self.scale) <= MAX_SCALE:
            raise ConfigError(f"simulator.scale must be in [{MIN_SCALE}, {MAX_SCALE}]; got {self.scale!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"simulator.seed must be a non-negative integer; got {self.seed!r}")


@dataclass(frozen=True)
class PrepareConfig:
    """How a dataset is prepared (labels and the three splits); every notebook prepares with the same values.

    Attributes:
        like_threshold: ``liked = watch_ratio > like_threshold`` (the original project's 0.7).
        relevance_threshold: ``relevant = watch_ratio > relevance_threshold`` (the KuaiRec paper's 2.0).
        n_valid: validation events per user of ``leave_last_n``.
        n_test: test events per user of ``leave_last_n``.
        temporal_valid_frac: share of events (by time) in the temporal validation part.
        temporal_test_frac: share of events (by time) in the temporal test part.
    """

    like_threshold: float = DEFAULT_PARAMS["like_threshold"]
    relevance_threshold: float = DEFAULT_PARAMS["relevance_threshold"]
    n_valid: int = DEFAULT_PARAMS["n_valid"]
    n_test: int = DEFAULT_PARAMS["n_test"]
    temporal_valid_frac: float = DEFAULT_PARAMS["temporal_valid_frac"]
    temporal_test_frac: float = DEFAULT_PARAMS["temporal_test_frac"]

    def __post_init__(self) -> None:
        _normalise_params(self.to_params())  # ConfigError naming the first invalid value

    def to_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`sasrec.data.preparation.load_prepared`."""
        return dataclasses.asdict(self)
