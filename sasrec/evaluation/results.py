"""The metrics JSON shared by every command and notebook: payload, JSON-safe values, sealed atomic write.

Every metrics file is self-checking: :func:`write_metrics_json` seals the payload
(:func:`sasrec.integrity.seal`: a checksum of the content plus ``made_by``, a description of what made it:
the package version, the command or notebook that rewrites it, and the origin the payload names: dataset,
split, fitting policy, data source and each checkpoint's path with the SHA-256 of the file) and writes it
atomically, indented, with the seal as one extra top-level key ``"integrity"``. :func:`read_metrics_json`
refuses, in one line naming the file and what rewrites it, a file that is cut short, edited by hand or
written without a seal.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec import __version__, integrity
from sasrec.errors import IntegrityError, MissingDataError
from sasrec.evaluation.protocol import EvalResult
from sasrec.paths import atomic_write_text

#: Top-level payload keys copied into ``made_by`` (what the numbers were computed from).
ORIGIN_KEYS = (
    "model",
    "dataset",
    "train_dataset",
    "test_dataset",
    "trained_on",
    "split",
    "fit_on",
    "data_source",
)


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
    "cold_start", "valid": {metric: value, ..., "users": n} or None, "test": {...} or None, **extra}.
    ``cold_start`` is the cold-start protocol of the tasks (their ``meta["cold_start"]``: protocol, seed,
    fraction, withheld videos or cold users), ``{"protocol": "none"}`` without one. ``extra`` may override
    ``data_source``, ``relevance``, ``relevance_threshold`` and ``cold_start``.
    """
    thresholds = [r.relevance_threshold for r in (valid, test) if r is not None]
    rules = [r.relevance for r in (valid, test) if r is not None]
    cold = [r.meta["cold_start"] for r in (test, valid) if r is not None and "cold_start" in r.meta]
    payload: dict[str, Any] = {
        "model": model,
        "dataset": dataset,
        "split": split,
        "protocol": protocol,
        "k": int(k),
        "relevance": rules[0] if rules else None,
        "relevance_threshold": thresholds[0] if thresholds else None,
        "data_source": None,
        "cold_start": dict(cold[0]) if cold else {"protocol": "none"},
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


def command_line() -> str:
    """This process's command line as a user would type it (``python -m sasrec train --dataset=...``)."""
    argv = list(sys.argv) or ["python"]
    first = Path(argv[0]).name
    argv[0] = "python -m sasrec" if first in ("__main__.py", "sasrec") else "python " + argv[0]
    text = " ".join(argv)
    return text if len(text) <= 300 else text[:297] + "..."


def _checkpoint_record(value: str) -> dict[str, Any]:
    path = Path(value)
    record: dict[str, Any] = {"path": value}
    if path.is_file():
        record.update(integrity.file_record(path))
    return record


def metrics_origin(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What the payload says it was computed from: :data:`ORIGIN_KEYS` and every checkpoint it names.

    Checkpoints are the string values of a ``"checkpoint"`` key at the top level or one mapping down
    (``{"models": {"bce": {"checkpoint": ...}}}``), recorded under their dotted key with the file's size
    and SHA-256 when it exists.
    """
    origin: dict[str, Any] = {key: payload[key] for key in ORIGIN_KEYS if key in payload}
    checkpoints: dict[str, Any] = {}
    for key, value in payload.items():
        if key == "checkpoint" and isinstance(value, str):
            checkpoints["checkpoint"] = _checkpoint_record(value)
        elif isinstance(value, Mapping):
            for inner, item in value.items():
                if isinstance(item, Mapping) and isinstance(item.get("checkpoint"), str):
                    checkpoints[f"{key}.{inner}.checkpoint"] = _checkpoint_record(item["checkpoint"])
    if checkpoints:
        origin["checkpoints"] = checkpoints
    return origin


def write_metrics_json(
    payload: Mapping[str, Any],
    path: str | Path,
    *,
    rewritten_by: str | None = None,
    made_by: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``payload`` sealed, as indented strict JSON (NaN -> null), atomically; return the path.

    Args:
        payload: the metrics (DataFrames, numpy values and paths are converted by :func:`json_ready`).
        path: the file to write.
        rewritten_by: how to write the file again, shown when it is refused (default: this process's
            command line; a notebook passes ``"notebook 03_train (make report)"``).
        made_by: more of what made it, added to the seal's description (:func:`metrics_origin` and the
            package version are always recorded).
    """
    content = json_ready(dict(payload))
    origin = {
        "package": "sasrec",
        "version": __version__,
        "rewritten_by": rewritten_by or command_line(),
        **json_ready(metrics_origin(content)),
        **json_ready(dict(made_by or {})),
    }
    sealed = integrity.seal(content, origin)
    text = json.dumps(sealed, indent=2, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(Path(path), text + "\n", what=f"metrics file {Path(path).name}")


def _remedy(payload: Any, hint: str | None) -> str:
    if hint:
        return hint
    writer = integrity.made_by(payload).get("rewritten_by") if isinstance(payload, Mapping) else None
    return f"rerun `{writer}` to rewrite it" if writer else "rerun the command or notebook that wrote it"


def _read_sealed(path: Path, hint: str | None) -> dict[str, Any]:
    what = f"metrics file {path}"
    if not path.is_file():
        raise MissingDataError(f"{what} is missing; {_remedy(None, hint)}")
    try:
        payload = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        reason = (
            f"{exc.msg}: line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else "bad bytes"
        )
        raise IntegrityError(
            f"{what} is not valid JSON ({reason}): it was cut short or damaged; {_remedy(None, hint)}"
        ) from None
    try:
        return integrity.verify_sealed(payload, what)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}; {_remedy(payload, hint)}") from None


def read_metrics_json(path: str | Path, *, hint: str | None = None) -> dict[str, Any]:
    """Read and verify a metrics file written by :func:`write_metrics_json`; return the payload (no seal).

    Args:
        path: the metrics file.
        hint: how to rewrite it, ending the error message (default: the ``rewritten_by`` the file
            records when it can be parsed, else a generic sentence).

    Raises:
        MissingDataError: the file does not exist.
        IntegrityError: one line naming the file, what is wrong (not valid JSON, no seal, a checksum
            mismatch) and how to rewrite it.
    """
    payload = _read_sealed(Path(path), hint)
    return {key: value for key, value in payload.items() if key != integrity.INTEGRITY_KEY}


def metrics_made_by(path: str | Path) -> dict[str, Any]:
    """The verified ``made_by`` description of a metrics file (:class:`IntegrityError` when damaged)."""
    return integrity.made_by(_read_sealed(Path(path), None))
