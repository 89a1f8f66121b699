"""A feature table on disk: ``features.npz`` (arrays) and ``features.json`` (sealed schema and checksums).

The folder is written into a hidden temporary folder and swapped into place (:func:`sasrec.paths.atomic_dir`),
features.json last; it records the size and sha256 of features.npz and the table's :meth:`digest`. Reading
checks the JSON's seal, the bytes of the arrays and the digest of the rebuilt table, so a truncated or
edited file is refused with :class:`sasrec.errors.IntegrityError`. Hold the folder's lock
(:func:`sasrec.locks.locked`) when several processes may write it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sasrec import integrity, paths
from sasrec.data.features.table import FEATURE_FORMAT_VERSION, FeatureGroup, FeatureTable
from sasrec.data.preparation.artifacts import read_recorded_bytes
from sasrec.errors import IntegrityError, MissingDataError

ARRAYS_FILE = "features.npz"
META_FILE = "features.json"


def _made_by(table: FeatureTable) -> dict[str, Any]:
    return {
        "format_version": FEATURE_FORMAT_VERSION,
        "dataset": table.dataset,
        "data_fingerprint": table.data_fingerprint,
        "params": dict(table.params),
    }


def save_feature_table(table: FeatureTable, folder: str | Path) -> Path:
    """Write ``table`` into ``folder`` (replaced atomically) and return the folder."""
    folder = Path(folder)
    arrays = {
        f"{name}.{part}": np.ascontiguousarray(array)
        for name in table.groups_available
        for part, array in table.groups[name].array_parts().items()
    }
    with paths.atomic_dir(folder, f"feature table of {table.dataset}") as tmp:
        with (tmp / ARRAYS_FILE).open("wb") as handle:
            np.savez(handle, **arrays)
        document = {
            "schema": table.schema(),
            "vocabularies": table.vocabularies(),
            "columns": {name: list(table.groups[name].columns) for name in table.groups_available},
            "digest": table.digest(),
            "artifacts": integrity.manifest(tmp, [ARRAYS_FILE]),
        }
        text = integrity.dumps_sealed(document, _made_by(table))
        (tmp / META_FILE).write_text(text, encoding="utf-8")
    return folder


def _read_arrays(folder: Path, record: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of features.npz, after checking the very bytes that are parsed."""
    path = folder / ARRAYS_FILE
    raw = read_recorded_bytes(path, record, str(path))
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise IntegrityError(f"{path} cannot be read as .npz ({exc})") from None


def load_feature_table(folder: str | Path) -> FeatureTable:
    """Read a table written by :func:`save_feature_table`, verifying every file.

    Raises:
        MissingDataError: the folder holds no features.json.
        IntegrityError: a file is damaged, truncated, edited or of another format version.
    """
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise MissingDataError(f"feature table folder {folder} has no {META_FILE}")
    document = integrity.read_sealed_json(meta_path)
    schema = document.get("schema") or {}
    if schema.get("format_version") != FEATURE_FORMAT_VERSION:
        raise IntegrityError(
            f"{meta_path}: format version {schema.get('format_version')!r}, expected {FEATURE_FORMAT_VERSION}; "
            "rebuild the feature table"
        )
    record = (document.get("artifacts") or {}).get(ARRAYS_FILE)
    if not isinstance(record, dict):
        raise IntegrityError(f"{meta_path} records no checksum of {ARRAYS_FILE}")
    arrays = _read_arrays(folder, record)
    groups: dict[str, FeatureGroup] = {}
    try:
        for name, entry in schema["groups"].items():
            columns = tuple(document["columns"][name])
            shape = (int(entry["rows"]), len(columns))
            if entry["kind"] == "multi_hot":
                parts = (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"])
                values: np.ndarray | sp.csr_matrix = sp.csr_matrix(parts, shape=shape)
            else:
                values = arrays[f"{name}.values"]
            vocabularies = {c: tuple(v) for c, v in document["vocabularies"].get(name, {}).items()}
            groups[name] = FeatureGroup(
                name=name,
                entity=entry["entity"],
                kind=entry["kind"],
                source=entry["source"],
                columns=columns,
                values=values,
                vocabularies=vocabularies,
                covered=int(entry["covered"]),
                notes=entry["notes"],
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"{folder}: the arrays do not match {META_FILE} ({exc!r})") from None
    for group in groups.values():
        for array in group.array_parts().values():
            array.setflags(write=False)
    table = FeatureTable(
        dataset=schema["dataset"],
        data_fingerprint=schema["data_fingerprint"],
        num_items=int(schema["num_items"]),
        num_users=int(schema["num_users"]),
        groups=groups,
        unavailable=dict(schema.get("unavailable", {})),
        params=dict(schema.get("params", {})),
    )
    if table.digest() != document.get("digest"):
        raise IntegrityError(f"{folder}: the rebuilt table does not match its recorded digest (damaged)")
    return table
