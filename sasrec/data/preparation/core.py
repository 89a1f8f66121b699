"""Data preparation: KuaiRec matrices (or SASRec text files) to time-ordered sequences and splits.

The original project's ``python prepare_data.py small_matrix``, rebuilt vectorised. One run reads a
cleaned interaction file, keeps the timed rows as events sorted per user by (timestamp, file row order),
sends untimed rows (KuaiRec's forced exposures) to ``labels``, maps ids to internal indices (0 = padding)
and stores three split assignments side by side:

* ``temporal`` (the study's default): global cut points on time, the last 10% of events to test and the
  10% before to validation, so no model is trained on the future of another user's test events.
* ``leave_last_n`` (the original project's): per user the last ``n_test`` events to test and the
  ``n_valid`` before to validation.
* ``leave_one_out`` (Kang & McAuley, ICDM 2018, Section IV-B): per user the last event to test and the
  one before to validation.

``liked`` is ``watch_ratio > 0.7`` (the original project's label); ``relevant`` is ``watch_ratio > 2.0``,
the positive of the KuaiRec paper (Gao et al., CIKM 2022). Every split passes :func:`check_no_leakage`
before anything is written, and artifacts are written into a temporary folder renamed into place.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sasrec.data.contracts import (
    EVENT_COLUMNS,
    LABEL_COLUMNS,
    SPLITS,
    PreparedData,
)
from sasrec.data.preparation.params import PREPARE_VERSION, _normalise_params
from sasrec.data.preparation.splits import (
    _per_user_positions,
    _per_user_split,
    _split_counts,
    _temporal_split,
    check_no_leakage,
)
from sasrec.errors import ConfigError, DataValidationError

_MAX_INDEX = np.iinfo(np.int32).max - 1


# ------------------------------------------------------------------------------------------- the core
def _id_map(ids: np.ndarray, remap: bool, column: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Return (internal index of each row, original id of each index with -1 at 0, ids present).

    Vectorised through a presence table over 0..max id (``np.unique`` when ids are very sparse).
    """
    max_id = int(ids.max()) if len(ids) else -1
    if not remap and max_id >= _MAX_INDEX:
        raise DataValidationError(
            f"column {column}: id {max_id} is too large to be used without remapping (index = id + 1 must "
            "fit int32); prepare the remapped dataset instead"
        )
    if max_id <= 4 * len(ids) + 10_000_000:
        present = np.bincount(ids, minlength=max_id + 1) > 0  # (max_id + 1,)
        n_present = int(np.count_nonzero(present))
        if not remap:
            return (ids + 1).astype(np.int32), np.arange(-1, max_id + 1, dtype=np.int64), n_present
        index_of_id = np.cumsum(present, dtype=np.int64)  # 1-based rank of each present id
        original = np.concatenate([[-1], np.flatnonzero(present)]).astype(np.int64)
        return index_of_id[ids].astype(np.int32), original, n_present
    uniques, inverse = np.unique(ids, return_inverse=True)
    if not remap:
        return (ids + 1).astype(np.int32), np.arange(-1, max_id + 1, dtype=np.int64), len(uniques)
    if len(uniques) > _MAX_INDEX:
        raise DataValidationError(f"column {column}: {len(uniques)} distinct ids do not fit int32 indices")
    original = np.concatenate([[-1], uniques]).astype(np.int64)
    return (inverse + 1).astype(np.int32), original, len(uniques)


def _integer_ids(df: pd.DataFrame, column: str, name: str) -> np.ndarray:
    """Validated non-negative integer id column as int64."""
    series = df[column]
    if not pd.api.types.is_integer_dtype(series.dtype):
        numeric = pd.to_numeric(series, errors="coerce")
        bad = numeric.isna() | (numeric != np.floor(numeric))
        if bad.any():
            example = series[bad.to_numpy()].iloc[0]
            raise DataValidationError(
                f"{name}: column {column} must hold integer ids; {int(bad.sum())} row(s) do not "
                f"(first {example!r})"
            )
        series = numeric
    values = series.to_numpy(dtype=np.int64)
    negative = values < 0
    if negative.any():
        raise DataValidationError(
            f"{name}: column {column} must hold non-negative ids; {int(negative.sum())} row(s) are negative "
            f"(first {int(values[negative][0])})"
        )
    return values


def _input_kind(df: pd.DataFrame, name: str) -> bool:
    """Whether ``df`` is SASRec text data (``order``) rather than KuaiRec columns; checks the columns."""
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"{name}: prepare_frame needs a pandas DataFrame; got {type(df).__name__}")
    is_text = "timestamp" not in df.columns and "order" in df.columns
    required = (
        ["user_id", "video_id", "order"] if is_text else ["user_id", "video_id", "timestamp", "watch_ratio"]
    )
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{name}: missing column(s) {', '.join(missing)}; have {', '.join(map(str, df.columns))}; expected "
            "user_id, video_id, timestamp, watch_ratio (KuaiRec) or user_id, video_id, [liked], order (text)"
        )
    if len(df) == 0:
        raise DataValidationError(f"{name}: no rows to prepare")
    return is_text


def _row_values(df: pd.DataFrame, name: str, params: dict[str, Any], is_text: bool) -> dict[str, np.ndarray]:
    """Per input row: time (timestamp, or line number for text), watch_ratio (NaN for text), liked, relevant."""
    if not is_text:
        watch_ratio = pd.to_numeric(df["watch_ratio"], errors="coerce").to_numpy(dtype=np.float64)
        return {
            "time": pd.to_numeric(df["timestamp"], errors="coerce").to_numpy(dtype=np.float64),
            "watch_ratio": watch_ratio,
            "liked": watch_ratio > params["like_threshold"],  # NaN compares False
            "relevant": watch_ratio > params["relevance_threshold"],
        }
    time_ = pd.to_numeric(df["order"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(time_).all():
        raise DataValidationError(
            f"{name}: column order must be numeric; {int((~np.isfinite(time_)).sum())} row(s) are not"
        )
    liked = np.ones(len(df), dtype=bool)
    if "liked" in df.columns:
        liked_num = pd.to_numeric(df["liked"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isin(liked_num, [0.0, 1.0])
        if bad.any():
            raise DataValidationError(
                f"{name}: column liked must be 0/1 or bool; {int(bad.sum())} row(s) are not "
                f"(first {df['liked'][bad].iloc[0]!r})"
            )
        liked = liked_num == 1.0
    return {"time": time_, "watch_ratio": np.full(len(df), np.nan), "liked": liked, "relevant": liked.copy()}


def _time_order(user_index: np.ndarray, time_: np.ndarray) -> np.ndarray:
    """Timed rows sorted by (user, time); equal keys keep file row order (pyarrow's sort_indices is stable)."""
    timed_rows = np.flatnonzero(np.isfinite(time_))
    keys = pa.table({"user": user_index[timed_rows], "time": time_[timed_rows]})
    within = pc.sort_indices(keys, sort_keys=[("user", "ascending"), ("time", "ascending")])
    return timed_rows[within.to_numpy()]


def _rows_frame(rows: np.ndarray, users: np.ndarray, items: np.ndarray, values: dict[str, np.ndarray],
                with_time: bool) -> pd.DataFrame:  # fmt: skip
    """Events (with time) or labels (without) of the input ``rows``, in that order."""
    frame = {"user": users[rows], "item": items[rows]}
    if with_time:
        frame["timestamp"] = values["time"][rows]
    frame.update({"watch_ratio": values["watch_ratio"][rows].astype(np.float32), "liked": values["liked"][rows],
                  "relevant": values["relevant"][rows]})  # fmt: skip
    return pd.DataFrame(frame)


def _assign_splits(
    events: pd.DataFrame, n_users: int, params: dict[str, Any], name: str, rows_in: int
) -> tuple[pd.DataFrame, dict]:
    """The three split columns of ``events`` (sorted by user, time) and their counts and temporal cuts."""
    users_sorted, ts_sorted = events["user"].to_numpy(), events["timestamp"].to_numpy()
    counts_per_user, from_end = _per_user_positions(users_sorted, n_users)
    if not (counts_per_user >= 2).any():
        raise DataValidationError(
            f"{name}: no user has at least 2 timed events ({len(events):,} timed event(s) of {rows_in:,} rows, "
            f"{int(np.count_nonzero(counts_per_user)):,} user(s) with exactly one); sequences need 2 or more per user"
        )
    min_last_n = params["n_valid"] + params["n_test"] + 2
    last_n, short_last_n = _per_user_split(
        users_sorted, counts_per_user, from_end, params["n_valid"], params["n_test"], min_last_n
    )
    one_out, short_one_out = _per_user_split(users_sorted, counts_per_user, from_end, 1, 1, 3)
    temporal, cuts = _temporal_split(ts_sorted, params["temporal_valid_frac"], params["temporal_test_frac"])
    events = events.assign(split_temporal=temporal, split_leave_last_n=last_n, split_leave_one_out=one_out)
    counts = {
        "temporal": _split_counts(users_sorted, temporal, n_users),
        "leave_last_n": {
            **_split_counts(users_sorted, last_n, n_users),
            "users_all_train": short_last_n,
            "min_events": min_last_n,
        },  # fmt: skip
        "leave_one_out": {
            **_split_counts(users_sorted, one_out, n_users),
            "users_all_train": short_one_out,
            "min_events": 3,
        },  # fmt: skip
    }
    return events.astype(EVENT_COLUMNS)[list(EVENT_COLUMNS)], {"splits": counts, "temporal_cuts": cuts,
                                                               "users_with_events": int(np.count_nonzero(counts_per_user))}  # fmt: skip


def prepare_frame(
    df: pd.DataFrame,
    name: str,
    *,
    remap: bool = True,
    like_threshold: float = 0.7,
    relevance_threshold: float = 2.0,
    n_valid: int = 50,
    n_test: int = 100,
    temporal_valid_frac: float = 0.1,
    temporal_test_frac: float = 0.1,
) -> PreparedData:
    """Prepare one interaction frame in memory: sequences, labels, id maps and the three splits.

    Args:
        df: cleaned KuaiRec columns (``user_id``, ``video_id``, ``timestamp`` with NaN for untimed rows,
            ``watch_ratio``), or SASRec text data (``user_id``, ``video_id``, optional ``liked``,
            ``order``). Row order is the tie-break among equal timestamps.
        name: dataset name stored in the result.
        remap: map present ids, sorted, to 1..U and 1..I; otherwise index = original id + 1.
        like_threshold: ``liked = watch_ratio > like_threshold`` (the original project's 0.7).
        relevance_threshold: ``relevant = watch_ratio > relevance_threshold`` (KuaiRec paper: 2.0).
        n_valid: validation events per user of ``leave_last_n``.
        n_test: test events per user of ``leave_last_n``.
        temporal_valid_frac: share of events (by time) in the temporal validation part.
        temporal_test_frac: share of events (by time) in the temporal test part.

    Returns:
        The prepared data; ``meta`` holds parameters, counts and the leakage checks.
    """
    started = time.perf_counter()
    params = _normalise_params(
        {"like_threshold": like_threshold, "relevance_threshold": relevance_threshold, "n_valid": n_valid,
         "n_test": n_test, "temporal_valid_frac": temporal_valid_frac, "temporal_test_frac": temporal_test_frac}
    )  # fmt: skip
    is_text = _input_kind(df, name)
    user_index, user_ids, users_present = _id_map(_integer_ids(df, "user_id", name), remap, "user_id")
    item_index, item_ids, items_present = _id_map(_integer_ids(df, "video_id", name), remap, "video_id")
    values = _row_values(df, name, params, is_text)
    order = _time_order(user_index, values["time"])
    events = _rows_frame(order, user_index, item_index, values, with_time=True)
    events, split_meta = _assign_splits(events, len(user_ids) - 1, params, name, len(df))
    untimed = np.flatnonzero(~np.isfinite(values["time"]))
    label_rows = untimed[np.argsort(user_index[untimed], kind="stable")]
    labels = _rows_frame(label_rows, user_index, item_index, values, with_time=False)
    labels = labels.astype(LABEL_COLUMNS)[list(LABEL_COLUMNS)]
    meta: dict[str, Any] = {
        "name": name, "prepare_version": PREPARE_VERSION, "remap": bool(remap), **params,
        "params": {**params, "remap": bool(remap)},
        "order": (
            "line order within each user (timestamp = 1-based line number; the temporal split cuts on line "
            "numbers, so in a file grouped by user it holds out the last users rather than the latest time)"
            if is_text else "timestamp, ties broken by file row order"
        ),
        "has_watch_ratio": not is_text,
        "temporal_cuts": split_meta["temporal_cuts"],
        "counts": {
            "rows_in": len(df), "events": len(events), "labels": len(labels), "users": len(user_ids) - 1,
            "items": len(item_ids) - 1, "users_present": users_present, "items_present": items_present,
            "users_with_events": split_meta["users_with_events"], "liked_events": int(events["liked"].sum()),
            "relevant_events": int(events["relevant"].sum()), "splits": split_meta["splits"],
        },
    }  # fmt: skip
    data = PreparedData(
        name=name, events=events, labels=labels, user_ids=user_ids, item_ids=item_ids, meta=meta
    )
    meta["leakage"] = {split: check_no_leakage(data, split) for split in SPLITS}
    meta["prepare_frame_seconds"] = round(time.perf_counter() - started, 3)
    return data
