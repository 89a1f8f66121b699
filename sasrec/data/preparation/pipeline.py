"""Prepare a dataset from its source, or reuse its artifacts when they are still valid."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sasrec.data.contracts import (
    PreparedData,
)
from sasrec.data.preparation.artifacts import _read_artifacts, _write_artifacts
from sasrec.data.preparation.core import prepare_frame
from sasrec.data.preparation.params import ARTIFACT_FILES, PREPARE_VERSION, _normalise_params
from sasrec.data.preparation.sources import _default_out_dir, _fingerprint, _source
from sasrec.data.preparation.text import read_sasrec_text


def prepare(
    dataset: str,
    *,
    data_dir: Path | None = None,
    out_dir: Path | None = None,
    write_text: bool = True,
    progress: bool | None = None,
    **params: Any,
) -> PreparedData:
    """Prepare ``dataset`` from its source file, write the artifacts and return the result.

    Args:
        dataset: ``small_matrix``, ``big_matrix``, either with ``_no_remapping`` (original ids), or the
            path of a SASRec text file.
        data_dir: folder of the KuaiRec matrices (default: :func:`default_data_dir`).
        out_dir: artifact folder (default ``data/processed/<name>``).
        write_text: also write the original project's ``<name>.txt`` and ``<name>_no_remapping.txt``.
        progress: show a progress bar (default: ``SASREC_PROGRESS``).
        **params: :func:`prepare_frame` parameters.
    """
    from tqdm import tqdm

    from sasrec.progress import progress_enabled

    started = time.perf_counter()
    source = _source(dataset, data_dir, params.pop("remap", None))
    params = _normalise_params(params)
    target = Path(out_dir) if out_dir is not None else _default_out_dir(source["name"], source["data_source"])
    bar = tqdm(total=4, desc=f"prepare {source['name']}", disable=not progress_enabled(progress), leave=False)
    try:
        bar.set_postfix_str("read")
        fingerprint = _fingerprint(source["path"])  # before reading: a later change makes it stale
        if source["data_source"] == "text":
            frame = read_sasrec_text(source["path"])
            cleaning: dict[str, Any] | None = {"rows": len(frame), "format": "sasrec text"}
        else:
            from sasrec.data import kuairec

            frame, report = kuairec.load_interactions(source["path"])
            cleaning = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        read_seconds = time.perf_counter() - started
        bar.update()
        bar.set_postfix_str("sequences and splits")
        data = prepare_frame(frame, source["name"], remap=source["remap"], **params)
        del frame
        bar.update()
        data.meta.update(
            {
                "source_path": str(source["path"]),
                "source_fingerprint": fingerprint,
                "data_source": source["data_source"],
                "cleaning": cleaning,
                "timings": {
                    "read_s": round(read_seconds, 3),
                    "prepare_frame_s": data.meta["prepare_frame_seconds"],
                },
            }
        )
        bar.set_postfix_str("write")
        data.meta["prepare_seconds"] = round(time.perf_counter() - started, 3)
        _write_artifacts(data, target, write_text=write_text, base=source["base"])
        bar.update(2)
    finally:
        bar.close()
    data.meta["out_dir"] = str(target)
    return data


def load_prepared(
    dataset: str, *, data_dir: Path | None = None, out_dir: Path | None = None, **params: Any
) -> PreparedData:
    """Return the prepared ``dataset``, reusing its artifacts when still valid, else :func:`prepare`.

    Artifacts are reused when meta.json records the same parameters and the same source fingerprint.
    """
    source = _source(dataset, data_dir, params.get("remap"))
    wanted = {
        **_normalise_params({k: v for k, v in params.items() if k != "remap"}),
        "remap": source["remap"],
    }
    target = Path(out_dir) if out_dir is not None else _default_out_dir(source["name"], source["data_source"])
    meta_path = target / "meta.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            meta = None
        if (
            isinstance(meta, dict)
            and meta.get("prepare_version") == PREPARE_VERSION
            and meta.get("params") == wanted
            and meta.get("source_fingerprint") == _fingerprint(source["path"])
            and all((target / f).is_file() for f in ARTIFACT_FILES)
        ):
            data = _read_artifacts(target, meta)
            data.meta["out_dir"] = str(target)
            data.meta["reused"] = True
            return data
    return prepare(dataset, data_dir=data_dir, out_dir=target, **params)
