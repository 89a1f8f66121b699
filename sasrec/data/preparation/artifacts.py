"""Prepared-dataset artifacts on disk: written into a temporary folder and renamed into place, read back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sasrec.data.contracts import (
    EVENT_COLUMNS,
    LABEL_COLUMNS,
    PreparedData,
)
from sasrec.data.preparation.params import ARTIFACT_FILES
from sasrec.data.preparation.text import _write_text_files
from sasrec.errors import DataValidationError, MissingDataError


def _write_artifacts(data: PreparedData, out_dir: Path, *, write_text: bool, base: str) -> None:
    """Write every artifact into a temporary folder beside ``out_dir``, then rename it into place.

    The parquet tables and the text files are written by two threads (pyarrow releases the GIL). An
    interrupted run leaves only a hidden ``.<name>.*.tmp`` folder, never a complete-looking ``out_dir``.
    """
    write_started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        parquet_options = {"compression": "zstd", "use_dictionary": False}
        tables = {
            "events.parquet": pa.Table.from_pandas(data.events, preserve_index=False),
            "labels.parquet": pa.Table.from_pandas(data.labels, preserve_index=False),
            "users.parquet": pa.table(
                {"index": np.arange(len(data.user_ids), dtype=np.int32), "user_id": data.user_ids}
            ),
            "items.parquet": pa.table(
                {"index": np.arange(len(data.item_ids), dtype=np.int32), "video_id": data.item_ids}
            ),
        }

        def write_tables() -> None:
            for filename, table in tables.items():
                pq.write_table(table, tmp / filename, **parquet_options)

        with ThreadPoolExecutor(max_workers=2) as pool:
            tables_done = pool.submit(write_tables)
            text_done = pool.submit(_write_text_files, data, tmp, base) if write_text else None
            tables_done.result()
            data.meta["text_files"] = text_done.result() if text_done is not None else {}
        write_seconds = time.perf_counter() - write_started
        data.meta.setdefault("timings", {})["write_s"] = round(write_seconds, 3)
        data.meta["prepare_seconds"] = round(data.meta.get("prepare_seconds", 0.0) + write_seconds, 3)
        (tmp / "meta.json").write_text(
            json.dumps(data.meta, indent=2, sort_keys=False, default=_json_default)
        )
        if out_dir.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
            os.replace(out_dir, trash / out_dir.name)
            try:
                os.replace(tmp, out_dir)
            except OSError:
                os.replace(trash / out_dir.name, out_dir)
                raise
            finally:
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _read_artifacts(out_dir: Path, meta: dict[str, Any]) -> PreparedData:
    """Load a prepared folder written by :func:`_write_artifacts`."""
    missing = [f for f in ARTIFACT_FILES if not (out_dir / f).is_file()]
    if missing:
        raise MissingDataError(
            f"prepared folder {out_dir} lacks {', '.join(missing)}; run `python -m sasrec prepare`"
        )
    events = pq.read_table(out_dir / "events.parquet").to_pandas()
    labels = pq.read_table(out_dir / "labels.parquet").to_pandas()
    if list(events.columns) != list(EVENT_COLUMNS) or list(labels.columns) != list(LABEL_COLUMNS):
        raise DataValidationError(
            f"prepared folder {out_dir}: events/labels columns {list(events.columns)} / {list(labels.columns)} "
            f"differ from the contract {list(EVENT_COLUMNS)} / {list(LABEL_COLUMNS)}; prepare again"
        )
    events = events.astype(EVENT_COLUMNS)
    labels = labels.astype(LABEL_COLUMNS)
    users = pq.read_table(out_dir / "users.parquet").to_pandas()
    items = pq.read_table(out_dir / "items.parquet").to_pandas()
    return PreparedData(
        name=str(meta["name"]),
        events=events,
        labels=labels,
        user_ids=users.sort_values("index")["user_id"].to_numpy(dtype=np.int64),
        item_ids=items.sort_values("index")["video_id"].to_numpy(dtype=np.int64),
        meta=meta,
    )
