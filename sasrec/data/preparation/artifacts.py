"""Prepared-dataset artifacts on disk: written into a temporary folder swapped into place, verified on read.

meta.json is written last and sealed (:mod:`sasrec.integrity`): it records the size and sha256 of every
other artifact (``artifacts``) and what made them (``integrity.made_by``: source fingerprint, parameters,
prepare version, package version). :func:`_read_artifacts` checks every file against it, hashing the
bytes it parses, so a truncated or bit-flipped file is reported as an :class:`IntegrityError` in one
line, never as a pyarrow traceback.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import sasrec
from sasrec import integrity, paths
from sasrec.data.contracts import (
    EVENT_COLUMNS,
    LABEL_COLUMNS,
    PreparedData,
)
from sasrec.data.preparation.params import ARTIFACT_FILES, PREPARE_VERSION
from sasrec.data.preparation.text import _write_text_files
from sasrec.errors import IntegrityError, MissingDataError, UnsealedError

META_FILE = "meta.json"
TABLE_FILES = tuple(name for name in ARTIFACT_FILES if name != META_FILE)


def made_by(meta: dict[str, Any]) -> dict[str, Any]:
    """What a prepared dataset is made from: source fingerprint, parameters, prepare and package versions."""
    return {
        "source_path": str(meta.get("source_path")),
        "source_fingerprint": meta.get("source_fingerprint"),
        "params": meta.get("params"),
        "prepare_version": PREPARE_VERSION,
        "package_version": sasrec.__version__,
    }


def _write_artifacts(data: PreparedData, out_dir: Path, *, write_text: bool, base: str) -> None:
    """Write every artifact into a temporary folder beside ``out_dir``, then swap it into place.

    The parquet tables and the text files are written by two threads (pyarrow releases the GIL). An
    interrupted run leaves only a hidden ``.<name>.*.tmp`` folder, never a complete-looking ``out_dir``;
    the previous ``out_dir``, if any, stays complete until the swap. Hold the folder's lock.
    """
    write_started = time.perf_counter()
    out_dir = Path(out_dir)
    with paths.atomic_dir(out_dir, f"prepared dataset {data.name}") as tmp:
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
        data.meta["artifacts"] = integrity.manifest(tmp, [*TABLE_FILES, *data.meta["text_files"]])
        write_seconds = time.perf_counter() - write_started
        data.meta.setdefault("timings", {})["write_s"] = round(write_seconds, 3)
        data.meta["prepare_seconds"] = round(data.meta.get("prepare_seconds", 0.0) + write_seconds, 3)
        stored = {k: v for k, v in data.meta.items() if k not in ("out_dir", "reused")}
        text = integrity.dumps_sealed(stored, made_by(stored), default=_json_default)
        (tmp / META_FILE).write_text(text, encoding="utf-8")


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


def read_meta(out_dir: Path) -> dict[str, Any]:
    """The verified meta.json of a prepared folder.

    Raises:
        MissingDataError: the folder or its meta.json does not exist.
        IntegrityError: meta.json is unreadable, unsealed (older version) or does not match its checksum.
    """
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        raise MissingDataError(f"prepared folder {out_dir} has no {META_FILE}")
    try:
        meta = integrity.read_sealed_json(path, f"{META_FILE}")
    except OSError as exc:
        raise IntegrityError(f"{META_FILE} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(meta.get("artifacts"), dict):
        raise UnsealedError(f"{META_FILE} records no artifact checksums")
    return meta


def check_artifacts(out_dir: Path, meta: dict[str, Any], *, hash_contents: bool = True) -> list[str]:
    """Problems of a prepared folder's files against meta.json (missing, truncated, damaged)."""
    return integrity.check_manifest(out_dir, meta["artifacts"], hash_contents=hash_contents)


def read_recorded_bytes(path: Path, record: dict[str, Any], label: str) -> bytes:
    """The bytes of ``path`` once they match ``record`` (size, sha256); messages name it ``label``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IntegrityError(f"{label} is missing") from None
    if len(raw) != record.get("bytes"):
        raise IntegrityError(
            f"{label} has {len(raw):,} bytes instead of {record.get('bytes'):,} (truncated or replaced)"
        )
    if integrity.sha256_bytes(raw) != record.get(integrity.ALGORITHM):
        raise IntegrityError(f"{label} does not match its sha256 (damaged)")
    return raw


def _read_table(out_dir: Path, name: str, record: dict[str, Any]) -> pa.Table:
    """Read one parquet artifact, hashing the very bytes that are parsed."""
    raw = read_recorded_bytes(out_dir / name, record, name)
    try:
        return pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:  # checksum matched: written wrong, not damaged
        raise IntegrityError(f"{name} cannot be parsed as parquet ({str(exc).splitlines()[0]})") from None


def _read_artifacts(out_dir: Path, meta: dict[str, Any]) -> PreparedData:
    """Load a prepared folder written by :func:`_write_artifacts`, verifying every file.

    Raises:
        IntegrityError: a file is missing, has the wrong size or checksum, or has unexpected columns.
    """
    out_dir = Path(out_dir)
    recorded = meta["artifacts"]
    missing = [name for name in TABLE_FILES if name not in recorded]
    if missing:
        raise IntegrityError(f"{META_FILE} records no checksum of {', '.join(missing)}")
    other = {name: record for name, record in recorded.items() if name not in TABLE_FILES}
    with ThreadPoolExecutor(max_workers=1) as pool:  # hash the text files while the tables are read
        others_checked = pool.submit(integrity.check_manifest, out_dir, other)
        tables = {name: _read_table(out_dir, name, recorded[name]) for name in TABLE_FILES}
        problems = others_checked.result()
    if problems:
        raise IntegrityError("; ".join(problems))
    events = tables["events.parquet"].to_pandas()
    labels = tables["labels.parquet"].to_pandas()
    if list(events.columns) != list(EVENT_COLUMNS) or list(labels.columns) != list(LABEL_COLUMNS):
        raise IntegrityError(
            f"events/labels columns {list(events.columns)} / {list(labels.columns)} differ from the contract "
            f"{list(EVENT_COLUMNS)} / {list(LABEL_COLUMNS)}"
        )
    events = events.astype(EVENT_COLUMNS)
    labels = labels.astype(LABEL_COLUMNS)
    users = tables["users.parquet"].to_pandas()
    items = tables["items.parquet"].to_pandas()
    return PreparedData(
        name=str(meta["name"]),
        events=events,
        labels=labels,
        user_ids=users.sort_values("index")["user_id"].to_numpy(dtype=np.int64),
        item_ids=items.sort_values("index")["video_id"].to_numpy(dtype=np.int64),
        meta=meta,
    )
