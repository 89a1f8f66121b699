"""The feature table of a prepared dataset, cached next to its artifacts: ``<prepared folder>/features/<split>/``.

One table per split, built with :func:`~sasrec.data.features.feature_cut` of that split (the daily
aggregates never read the held-out period) from the side files beside the dataset's source file
(``PreparedData.meta["source_path"]``, or ``data_dir``). The folder holds what
:func:`~sasrec.data.features.save_feature_table` writes (atomic, sealed) and ``cache.json``, a sealed
record of what the table was built from: the dataset's fingerprint, its source's fingerprint, the cut,
the build parameters and the fingerprint of every side file (None where missing). The table is reused
while that record matches, and rebuilt (one logged line saying why) when the data, a side file (added,
removed or changed) or a parameter changed, or when a file is damaged. It is checked and written under
the folder's lock (:func:`sasrec.locks.locked`), as preparation holds its folder's; where the prepared
folder cannot be written (read-only), a stale table is built in memory and not stored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sasrec import integrity, locks, paths
from sasrec.data.contracts import PreparedData
from sasrec.data.features.build import GROUP_SOURCES, build_feature_table, feature_cut
from sasrec.data.features.storage import load_feature_table, save_feature_table
from sasrec.data.features.table import FEATURE_FORMAT_VERSION, FeatureTable
from sasrec.data.kuairec.readers import find_file, source_fingerprint
from sasrec.errors import IntegrityError, MissingDataError

logger = logging.getLogger(__name__)

CACHE_FOLDER = "features"
KEY_FILE = "cache.json"
_LOCK_HINT = "wait for it to finish and run again"


def side_files_dir(data: PreparedData) -> Path | None:
    """The folder of the dataset's source file (where KuaiRec keeps its side files), or None if unrecorded."""
    source = data.meta.get("source_path")
    return Path(source).parent if source else None


def cache_folder(data: PreparedData, split: str) -> Path | None:
    """``<prepared folder>/features/<split>``, or None for data that was not loaded from a prepared folder."""
    out_dir = data.meta.get("out_dir")
    return Path(out_dir) / CACHE_FOLDER / split if out_dir else None


def side_file_fingerprints(data_dir: Path) -> dict[str, str | None]:
    """Fingerprint (size, mtime, head and tail digest) of every side file under ``data_dir``; None if missing."""
    found = {name: find_file(data_dir, name) for name in sorted(set(GROUP_SOURCES.values()))}
    return {name: None if path is None else source_fingerprint(path) for name, path in found.items()}


def cache_key(data: PreparedData, split: str, data_dir: Path, params: dict[str, Any]) -> dict[str, Any]:
    """What a cached table must have been built from to be reused (JSON-ready)."""
    return {
        "format_version": FEATURE_FORMAT_VERSION,
        "dataset": data.name,
        "data_fingerprint": data.fingerprint,
        "source_fingerprint": data.meta.get("source_fingerprint"),
        "split": split,
        "cut_timestamp": feature_cut(data, split),
        "params": dict(sorted(params.items())),
        "side_files": side_file_fingerprints(data_dir),
    }


def _cached(folder: Path, key: dict[str, Any]) -> tuple[FeatureTable | None, str]:
    """(the cached table, "") when ``folder`` holds an intact table built from ``key``; else (None, why)."""
    key_path = folder / KEY_FILE
    if not key_path.is_file():
        return None, "not built yet" if not folder.exists() else f"{KEY_FILE} is missing"
    try:
        recorded = integrity.read_sealed_json(key_path).get("key")
    except IntegrityError as exc:
        return None, str(exc)
    if recorded != key:
        changed = sorted(name for name in key if (recorded or {}).get(name) != key[name])
        return None, f"{', '.join(changed)} changed"
    try:
        table = load_feature_table(folder)
    except (IntegrityError, MissingDataError) as exc:
        return None, str(exc)
    return table, ""


def cached_feature_table(
    data: PreparedData,
    split: str = "temporal",
    *,
    data_dir: str | Path | None = None,
    caption_dim: int = 32,
    seed: int = 0,
    min_topic_videos: int = 5,
    wait: bool = True,
) -> FeatureTable:
    """The feature table of ``data`` for ``split`` (every group the side files allow), cached when possible.

    Args:
        data: the prepared dataset (``meta["out_dir"]`` locates the cache; in-memory data is not cached).
        split: the split whose held-out period the daily aggregates must not read.
        data_dir: folder of the side files (default: the folder of the dataset's source file).
        caption_dim, seed, min_topic_videos: as :func:`~sasrec.data.features.build_feature_table`.
        wait: wait for another process building the same table (else :class:`LockBusyError`).

    Raises:
        MissingDataError: no ``data_dir`` given and the dataset records no source folder.
    """
    directory = Path(data_dir) if data_dir is not None else side_files_dir(data)
    if directory is None:
        raise MissingDataError(
            f"dataset {data.name} records no source folder to read side files from; pass data_dir"
        )
    params = {"caption_dim": int(caption_dim), "seed": int(seed), "min_topic_videos": int(min_topic_videos)}

    def build() -> FeatureTable:
        return build_feature_table(data, directory, cut_timestamp=feature_cut(data, split), **params)

    folder = cache_folder(data, split)
    if folder is None:
        return build()
    key = cache_key(data, split, directory, params)
    parent = next((p for p in folder.parents if p.exists()), folder.parent)
    if not os.access(parent, os.W_OK | os.X_OK):  # read-only: nobody can write it, so no lock either
        table, why = _cached(folder, key)
        if table is None:
            logger.warning("feature table in %s cannot be used (%s) nor rebuilt there (read-only); "
                           "building it in memory", folder, why)  # fmt: skip
            table = build()
        return table
    what = f"feature table of {data.name} ({split})"
    with locks.locked(folder, what=what, wait=wait, hint=_LOCK_HINT):
        paths.remove_stale_temporaries(folder)
        table, why = _cached(folder, key)
        if table is not None:
            return table
        logger.info("building the %s into %s: %s", what, folder, why)
        table = build()
        save_feature_table(table, folder)
        made_by = {"dataset": data.name, "data_fingerprint": data.fingerprint, "split": split}
        paths.atomic_write_text(folder / KEY_FILE, integrity.dumps_sealed({"key": key}, made_by), what)
        return table
