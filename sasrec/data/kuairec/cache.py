"""The interaction matrices read once and cached as parquet under ``data/processed/cache``.

An entry is a parquet file and a sealed sidecar JSON (:mod:`sasrec.integrity`) recording the source
file, its fingerprint (size, modification time and sampled content hash) and the parquet file's size
and sha256. An entry is reused while the source's fingerprint is unchanged and the parquet file
matches its checksum; a damaged entry is rebuilt with one logged line. Entries are read and written
under a lock (:mod:`sasrec.locks`), and the cache is pruned to entries whose source file still exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sasrec import integrity, locks, paths
from sasrec.data.kuairec.readers import _to_pandas, read_validated_table, source_fingerprint
from sasrec.data.kuairec.schema import CACHE_FORMAT_VERSION, INTERACTION_COLUMNS, OFFICIAL_FILES
from sasrec.errors import ConfigError, IntegrityError, LockBusyError, MissingDataError, UnsealedError

logger = logging.getLogger(__name__)


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


def _read_cache(
    parquet_path: Path, sidecar_path: Path, fingerprint: str
) -> tuple[pa.Table | None, str, bool]:
    """(table or None, why not, whether the entry is damaged rather than absent or out of date)."""
    if not sidecar_path.is_file():
        return None, "no cache entry", False
    try:
        meta = integrity.read_sealed_json(sidecar_path, sidecar_path.name)
    except IntegrityError as exc:
        older = isinstance(exc, UnsealedError)
        return None, "entry written by an older version" if older else str(exc), not older
    except OSError as exc:
        return None, f"{sidecar_path.name} cannot be read ({exc.strerror or exc})", True
    if meta.get("source_fingerprint") != fingerprint or meta.get("format") != CACHE_FORMAT_VERSION:
        return None, "source changed", False
    record = meta.get("parquet") or {}
    try:
        raw = parquet_path.read_bytes()
    except OSError:
        return None, f"{parquet_path.name} is missing", True
    if len(raw) != record.get("bytes"):
        return (
            None,
            f"{parquet_path.name} has {len(raw):,} bytes instead of {record.get('bytes')} (truncated)",
            True,
        )
    if integrity.sha256_bytes(raw) != record.get(integrity.ALGORITHM):
        return None, f"{parquet_path.name} does not match its sha256", True
    try:
        table = pq.read_table(pa.BufferReader(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:
        return None, f"{parquet_path.name} cannot be parsed ({str(exc).splitlines()[0]})", True
    if table.column_names != INTERACTION_COLUMNS or table.num_rows != meta.get("rows"):
        return None, f"{parquet_path.name} holds other columns or rows than recorded", True
    return table, "", False


def _write_cache(
    table: pa.Table, parquet_path: Path, sidecar_path: Path, source: Path, fingerprint: str
) -> None:
    """Write an entry (parquet, then its sealed sidecar); a failure only logs a warning."""
    try:
        with paths.atomic_path(parquet_path, "parquet cache entry") as tmp:
            pq.write_table(table, tmp, compression="lz4")
            record = integrity.file_record(tmp)
        meta = {
            "format": CACHE_FORMAT_VERSION,
            "source": str(source.resolve()),
            "source_fingerprint": fingerprint,
            "rows": table.num_rows,
            "parquet": record,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        made_by = {"source_fingerprint": fingerprint, "format": CACHE_FORMAT_VERSION}
        paths.atomic_write_text(sidecar_path, integrity.dumps_sealed(meta, made_by), "parquet cache sidecar")
    except OSError as exc:
        logger.warning("could not write the parquet cache %s: %s", parquet_path, exc)


@contextlib.contextmanager
def _entry_lock(parquet_path: Path, source: Path) -> Iterator[bool]:
    """Hold an entry's lock and tidy its temporaries; yield False (no lock) when the cache is unwritable."""
    try:
        paths.check_writable(parquet_path, "parquet cache")
    except ConfigError as exc:  # a read-only cache folder: read the CSV without it
        logger.warning("parquet cache not used: %s", exc)
        yield False
        return
    with locks.locked(parquet_path, what=f"parquet cache entry of {source.name}"):
        for target in (parquet_path, parquet_path.with_suffix(".json")):
            paths.remove_stale_temporaries(target)
        yield True


def read_interactions(path: Path, *, cache: bool = True, cache_dir: Path | None = None) -> pd.DataFrame:
    """Read and validate an interaction matrix (``big_matrix.csv`` / ``small_matrix.csv`` schema).

    The validated, uncleaned table is cached as parquet under ``cache_dir`` (default
    ``data/processed/cache``), keyed by the source path; the sealed sidecar JSON holds the source's
    :func:`source_fingerprint` and the parquet file's checksum; the entry is rebuilt when the source
    changes or the entry is damaged. Entries whose source file is gone are pruned.

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
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    parquet_path, sidecar_path = _cache_paths(path, directory)
    with _entry_lock(parquet_path, path) as usable:
        if not usable:
            return _interactions_frame(read_validated_table(path, schema))
        fingerprint = source_fingerprint(path)
        table, problem, damaged = _read_cache(parquet_path, sidecar_path, fingerprint)
        if table is None:
            if damaged:
                logger.warning(
                    "parquet cache entry of %s is damaged (%s); reading the CSV again", path, problem
                )
            table = read_validated_table(path, schema)
            _write_cache(table, parquet_path, sidecar_path, path, fingerprint)
    prune_cache(directory)
    return _interactions_frame(table)


# ------------------------------------------------------------------------------------------- pruning
@dataclass(frozen=True)
class CacheEntry:
    """One cache entry: its parquet file, its sidecar, the recorded source and what is wrong (or None)."""

    parquet: Path
    sidecar: Path
    source: Path | None
    problem: str | None

    @property
    def stale(self) -> bool:
        """Whether :func:`prune_cache` removes it (source gone, half an entry, unreadable sidecar)."""
        return self.problem is not None and not self.problem.startswith(("damaged", "out of date"))


def cache_entries(cache_dir: Path | None = None, *, verify: bool = False) -> list[CacheEntry]:
    """Every entry of the cache with its problem, if any.

    Problems: ``source gone``, ``orphan parquet`` / ``orphan sidecar`` (half an entry),
    ``unreadable sidecar``, ``written by an older version``; with ``verify`` also ``out of date`` (source changed) and ``damaged: ...``
    (the parquet file does not match its checksum).
    """
    directory = Path(cache_dir) if cache_dir else default_cache_dir()
    if not directory.is_dir():
        return []
    stems = sorted(
        {
            p.stem
            for p in directory.iterdir()
            if p.suffix in (".parquet", ".json") and not p.name.startswith(".")
        }
    )
    entries = []
    for stem in stems:
        parquet, sidecar = directory / f"{stem}.parquet", directory / f"{stem}.json"
        if not sidecar.is_file():
            entries.append(CacheEntry(parquet, sidecar, None, "orphan parquet (no sidecar)"))
            continue
        try:
            meta = integrity.read_sealed_json(sidecar, sidecar.name)
        except IntegrityError as exc:
            older = isinstance(exc, UnsealedError)
            problem = "written by an older version" if older else f"unreadable sidecar ({exc})"
            entries.append(CacheEntry(parquet, sidecar, None, problem))
            continue
        except OSError as exc:
            entries.append(CacheEntry(parquet, sidecar, None, f"unreadable sidecar ({exc.strerror or exc})"))
            continue
        source = Path(str(meta.get("source")))
        problem = None
        if not parquet.is_file():
            problem = "orphan sidecar (no parquet file)"
        elif not source.is_file():
            problem = "source gone"
        elif verify:
            table, why, damaged = _read_cache(parquet, sidecar, source_fingerprint(source))
            if table is None:
                problem = f"damaged: {why}" if damaged else f"out of date: {why}"
        entries.append(CacheEntry(parquet, sidecar, source, problem))
    return entries


def prune_cache(cache_dir: Path | None = None) -> list[Path]:
    """Remove cache entries whose source file is gone (and half-written or unreadable ones); return them.

    An entry in use by another process (its lock held) is left alone.
    """
    removed: list[Path] = []
    for entry in cache_entries(cache_dir):
        if not entry.stale:
            continue
        try:
            with locks.locked(entry.parquet, what="parquet cache entry", wait=False):
                for target in (entry.parquet, entry.sidecar):
                    paths.remove_stale_temporaries(target)
                    if target.exists():
                        target.unlink()
                        removed.append(target)
        except (LockBusyError, OSError):
            continue
        for leftover in (locks.lock_path(entry.parquet), locks.holder_path(entry.parquet)):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
    if removed:
        logger.info("pruned %d parquet cache file(s) whose source is gone or incomplete", len(removed))
    return removed
