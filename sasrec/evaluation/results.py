"""The metrics JSON shared by every command and notebook: payload, JSON-safe values, atomic write."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec.evaluation.protocol import EvalResult
from sasrec.paths import atomic_write_text


def metrics_payload(
    model: str,
    dataset: str,
    split: str,
    protocol: str,
    k: int,
    valid: EvalResult | None,
    test: EvalResult | None,
    extra: dict | None = None,
) -> dict:
    """The metrics JSON shared by ``train --metrics_json`` and ``baseline --metrics_json``.

    Shape: {"model", "dataset", "split", "protocol", "k", "relevance", "relevance_threshold", "data_source",
    "valid": {metric: value, ..., "users": n} or None, "test": {...} or None, **extra}. ``extra`` may
    override ``data_source``, ``relevance`` and ``relevance_threshold``.
    """
    thresholds = [r.relevance_threshold for r in (valid, test) if r is not None]
    rules = [r.relevance for r in (valid, test) if r is not None]
    payload: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "split": split,
        "protocol": protocol,
        "k": int(k),
        "relevance": rules[0] if rules else None,
        "relevance_threshold": thresholds[0] if thresholds else None,
        "data_source": None,
        "valid": dict(valid.summary) if valid is not None else None,
        "test": dict(test.summary) if test is not None else None,
    }
    payload.update(extra or {})
    return payload


def json_ready(value: Any) -> Any:
    """Recursively convert DataFrames (-> records), numpy scalars/arrays and non-finite floats (-> None)."""
    if isinstance(value, pd.DataFrame):
        return json_ready(value.to_dict(orient="records"))
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return [json_ready(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics_json(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` as indented strict JSON (NaN -> null) atomically; return the path."""
    text = json.dumps(json_ready(payload), indent=2, allow_nan=False)
    return atomic_write_text(Path(path), text + "\n")
