"""Alignment of a side file's original ids with a prepared dataset's internal indices, and its checks.

Every side file is keyed by KuaiRec's original ids (``video_id``, ``user_id``); a :class:`PreparedData`
indexes them 1..N (0 is padding) through ``item_ids`` / ``user_ids``, remapped or not. The helpers here
map ids to indices without loops and refuse files that cannot belong to the dataset (duplicate ids, or
not one id in common), in one line naming the file and the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sasrec.errors import DataValidationError

#: Strings that mean "no information" in KuaiRec's side files (category names, activity degree).
UNKNOWN_STRINGS = ("UNKNOWN",)
#: KuaiRec's category-id sentinel for "no category at this level".
UNKNOWN_CATEGORY_ID = -124


def internal_index(id_map: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Internal index of each original id, 0 where the dataset does not hold it.

    Args:
        id_map: (N+1,) original id of each internal index, entry 0 = -1 (``PreparedData.item_ids``).
        original: (n,) original ids read from a side file.

    Returns:
        (n,) int64 indices in 0..N.
    """
    keys = np.asarray(id_map, dtype=np.int64)[1:]  # (N,)
    original = np.asarray(original, dtype=np.int64)
    if len(keys) == 0 or len(original) == 0:
        return np.zeros(len(original), dtype=np.int64)
    order = np.argsort(keys, kind="stable")  # id maps are sorted already; this keeps any order working
    sorted_keys = keys[order]
    position = np.minimum(np.searchsorted(sorted_keys, original), len(sorted_keys) - 1)  # (n,)
    found = sorted_keys[position] == original
    return np.where(found, order[position] + 1, 0).astype(np.int64)


def check_unique(path: Path, column: str, ids: np.ndarray, what: str) -> None:
    """Raise when ``ids`` (a file's key column) holds a value twice: expected one row per ``what``."""
    ids = np.asarray(ids, dtype=np.int64)
    sorted_ids = np.sort(ids)
    repeated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if len(repeated):
        distinct = np.unique(repeated)
        raise DataValidationError(
            f"{path}: column '{column}' has {len(distinct):,} duplicated id(s) (first {int(distinct[0])}); "
            f"expected one row per {what}"
        )


def check_overlap(path: Path, column: str, ids: np.ndarray, rows: np.ndarray, dataset: str) -> None:
    """Raise when none of a file's ids is in the dataset (the file belongs to other data)."""
    if len(ids) and not (rows > 0).any():
        ids = np.asarray(ids, dtype=np.int64)
        raise DataValidationError(
            f"{path}: column '{column}' has none of the ids of dataset {dataset} ({len(ids):,} rows, ids "
            f"{int(ids.min())}..{int(ids.max())}); expected the original ids the dataset was prepared from"
        )


def existing_rows(values: np.ndarray, n_rows: int) -> np.ndarray:
    """(n_rows,) bool: True for indices that occur in ``values`` (events' users or items); row 0 False."""
    present = np.bincount(np.asarray(values, dtype=np.int64), minlength=n_rows)[:n_rows] > 0
    present[0] = False
    return present


def categorical_codes(
    values: pd.Series, unknown: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer ids of a column's values: 1..V in sorted value order, 0 for missing or ``unknown`` rows.

    Args:
        values: (n,) the column (numbers, strings or categories; NA allowed).
        unknown: (n,) bool, rows whose value means "unknown" (a sentinel), or None.

    Returns:
        ((n,) int32 ids, the V original values as strings: the value of id k is ``vocabulary[k - 1]``).
    """
    series = values.reset_index(drop=True)
    if isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype(series.cat.categories.dtype)
    if pd.api.types.is_integer_dtype(series.dtype) or (
        pd.api.types.is_float_dtype(series.dtype) and bool((series.dropna() % 1 == 0).all())
    ):
        series = series.astype("Int64")  # integral codes keep integer labels ("20", not "20.0") under NA
    if unknown is not None:
        series = series.mask(pd.Series(unknown))
    codes, uniques = pd.factorize(series, sort=True, use_na_sentinel=True)  # NA -> -1
    vocabulary = tuple(pd.Index(uniques).astype(str).tolist())
    return (codes + 1).astype(np.int32), vocabulary


def scatter_rows(rows: np.ndarray, values: np.ndarray, n_rows: int, fill: float | int = 0) -> np.ndarray:
    """(n_rows, ...) array holding ``values[k]`` at row ``rows[k]`` for rows > 0; other rows ``fill``."""
    values = np.asarray(values)
    out = np.full((n_rows, *values.shape[1:]), fill, dtype=values.dtype)
    keep = rows > 0
    out[rows[keep]] = values[keep]
    return out
