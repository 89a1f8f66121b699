"""Preparation parameters: defaults, validation and the dataset names known to the study."""

from __future__ import annotations

from typing import Any

import numpy as np

from sasrec.errors import ConfigError

DATASETS = ("small_matrix", "big_matrix")
NO_REMAPPING_SUFFIX = "_no_remapping"
PREPARE_VERSION = 1
ARTIFACT_FILES = ("events.parquet", "labels.parquet", "users.parquet", "items.parquet", "meta.json")
DEFAULT_PARAMS: dict[str, Any] = {
    "like_threshold": 0.7,
    "relevance_threshold": 2.0,
    "n_valid": 50,
    "n_test": 100,
    "temporal_valid_frac": 0.1,
    "temporal_test_frac": 0.1,
}


def _normalise_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validated preparation parameters, defaults filled in (the ``params`` stored in meta.json)."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS) - {"remap"})
    if unknown:
        raise ConfigError(
            f"unknown preparation parameter(s) {', '.join(unknown)}; expected {', '.join(DEFAULT_PARAMS)}"
        )
    merged = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if k != "remap" and v is not None}}
    out: dict[str, Any] = {}
    for key in ("like_threshold", "relevance_threshold", "temporal_valid_frac", "temporal_test_frac"):
        try:
            value = float(merged[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number; got {merged[key]!r}") from None
        if not np.isfinite(value):
            raise ConfigError(f"{key} must be finite; got {value}")
        out[key] = value
    for key in ("n_valid", "n_test"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ConfigError(f"{key} must be a non-negative integer; got {value!r}")
        out[key] = int(value)
    for key in ("temporal_valid_frac", "temporal_test_frac"):
        if not 0.0 <= out[key] < 1.0:
            raise ConfigError(f"{key} must be in [0, 1); got {out[key]}")
    if out["temporal_valid_frac"] + out["temporal_test_frac"] >= 1.0:
        raise ConfigError(
            "temporal_valid_frac + temporal_test_frac must be below 1 (some events must remain for "
            f"training); got {out['temporal_valid_frac']} + {out['temporal_test_frac']}"
        )
    return out
