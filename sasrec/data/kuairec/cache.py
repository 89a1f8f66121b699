"""The interaction matrices read once and cached as parquet under ``data/processed/cache``.

A cache entry is reused while the source file's fingerprint (size, modification time and sampled
content hash) is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sasrec import paths
from sasrec.data.kuairec.readers import _to_pandas, read_validated_table, source_fingerprint
from sasrec.data.kuairec.schema import CACHE_FORMAT_VERSION, INTERACTION_COLUMNS, OFFICIAL_FILES
from sasrec.errors import MissingDataError


# ----------------------------------------------------------------------------------------- interactions
def _interactions_frame(table: pa.Table) -> pd.DataFrame:
    frame = _to_pandas(table)
    return frame[INTERACTION_COLUMNS]


def _cache_paths(path: Path, cache_dir: Path) -> tuple[Path, Path]:
    key = hashlib.blake2b(str(path.resolve()).encode(), digest_size=8).hexdigest()
    stem = f"{path.stem}-{key}"
    return cache_dir / f"{stem}.parquet", cache_dir / f"{stem}.json"


def default_cache_dir() -> Path:
    """Where parsed tables are cached: ``data/processed/cache``."""
    return paths.processed_dir() / "cache"


def _read_cache(parquet_path: Path, sidecar_path: Path, fingerprint: str) -> pa.Table | None:
    if not (parquet_path.is_file() and sidecar_path.is_file()):
        return None
    try:
        meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
        if meta.get("source_fingerprint") != fingerprint or meta.get("format") != CACHE_FORMAT_VERSION:
            return None
        table = pq.read_table(parquet_path)
    except (OSError, ValueError, pa.ArrowException):
        return None
    if table.column_names != INTERACTION_COLUMNS or table.num_rows != meta.get("rows"):
        return None
    return table


def _write_cache(
    table: pa.Table, parquet_path: Path, sidecar_path: Path, source: Path, fingerprint: str
) -> None:
    try:
        with paths.atomic_path(parquet_path) as tmp:
            pq.write_table(table, tmp, compression="lz4")
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "source": str(source.resolve()),
            "source_fingerprint": fingerprint,
            "rows": table.num_rows,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        paths.atomic_write_text(sidecar_path, json.dumps(meta, indent=2) + "\n")
    except OSError as exc:
        warnings.warn(f"could not write the parquet cache {parquet_path}: {exc}", stacklevel=3)


def read_interactions(path: Path, *, cache: bool = True, cache_dir: Path | None = None) -> pd.DataFrame:
    """Read and validate an interaction matrix (``big_matrix.csv`` / ``small_matrix.csv`` schema).

    The validated, uncleaned table is cached as parquet under ``cache_dir`` (default
    ``data/processed/cache``), keyed by the source path; the sidecar JSON holds the source's
    :func:`source_fingerprint` and the cache is rebuilt when the source changes.

    Returns:
        Columns :data:`INTERACTION_COLUMNS`: user_id, video_id int32; play_duration, video_duration int64;
        time string (nullable, Asia/Shanghai text); date float64 (yyyymmdd, NaN allowed); timestamp
        float64 (Unix seconds, NaN allowed); watch_ratio float64.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"interaction file {path} does not exist")
    schema = OFFICIAL_FILES.get(path.name, OFFICIAL_FILES["big_matrix.csv"])
    if schema.column_names != INTERACTION_COLUMNS:
        schema = OFFICIAL_FILES["big_matrix.csv"]
    if not cache:
        return _interactions_frame(read_validated_table(path, schema))
    parquet_path, sidecar_path = _cache_paths(path, Path(cache_dir) if cache_dir else default_cache_dir())
    fingerprint = source_fingerprint(path)
    table = _read_cache(parquet_path, sidecar_path, fingerprint)
    if table is None:
        table = read_validated_table(path, schema)
        _write_cache(table, parquet_path, sidecar_path, path, fingerprint)
    return _interactions_frame(table)
