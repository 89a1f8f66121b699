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

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sasrec import paths
from sasrec.data import EVENT_COLUMNS, LABEL_COLUMNS, SPLITS, TEST, TRAIN, VALID, PreparedData, split_column
from sasrec.errors import ConfigError, DataValidationError, MissingDataError, SasrecError

DATASETS = ("small_matrix", "big_matrix")
NO_REMAPPING_SUFFIX = "_no_remapping"
PREPARE_VERSION = 1
ARTIFACT_FILES = ("events.parquet", "labels.parquet", "users.parquet", "items.parquet", "meta.json")
DEFAULT_PARAMS: dict[str, Any] = {
    "like_threshold": 0.7,
    "relevance_threshold": 2.0,
    "n_valid": 50,
    "n_test": 100,
    "temporal_valid_frac": 0.1,
    "temporal_test_frac": 0.1,
}
_TEXT_LINE_PATTERN = r"^[0-9]+[ \t]+[0-9]+([ \t]+[0-9]+)?$"
_MAX_INDEX = np.iinfo(np.int32).max - 1


# --------------------------------------------------------------------------------------------- sources
def default_data_dir() -> Path:
    """Folder holding the interaction matrices: the official files if present, else the simulated ones.

    Raises:
        MissingDataError: neither ``data/raw`` holds the official matrices nor ``data/simulated`` the
            simulator's files.
    """
    from sasrec import kuairec, simulate

    raw = paths.raw_dir()
    if kuairec.has_official_matrices(raw):
        return raw
    simulated = paths.simulated_dir()
    if simulated.is_dir() and simulate.is_simulated(simulated):
        return simulated
    raise MissingDataError(
        f"no interaction data: {raw} does not hold the official KuaiRec matrices and {simulated} holds no "
        "simulated files; run `make data` (real KuaiRec 2.0) or `make simulate` (KuaiRec-shaped simulator)"
    )


def _resolve_dataset(dataset: str, remap: bool | None) -> tuple[str, str, bool, Path | None]:
    """Return (name, base name, remap, text path or None) of a dataset argument."""
    base = dataset[: -len(NO_REMAPPING_SUFFIX)] if dataset.endswith(NO_REMAPPING_SUFFIX) else dataset
    if base in DATASETS:
        named_remap = not dataset.endswith(NO_REMAPPING_SUFFIX)
        if remap is not None and bool(remap) != named_remap:
            raise ConfigError(
                f"remap={remap} contradicts dataset name {dataset!r}: use {base!r} for remapped ids or "
                f"{base + NO_REMAPPING_SUFFIX!r} for original ids"
            )
        return dataset, base, named_remap, None
    text_path = paths.resolve(dataset)
    if text_path.is_file():
        stem = text_path.stem
        text_remap = True if remap is None else bool(remap)
        return stem, stem, text_remap, text_path
    looks_like_path = os.sep in dataset or "/" in dataset or Path(dataset).suffix != ""
    if looks_like_path:
        raise MissingDataError(f"SASRec text file {text_path} does not exist")
    names = [*DATASETS, *(d + NO_REMAPPING_SUFFIX for d in DATASETS)]
    raise ConfigError(
        f"unknown dataset {dataset!r}: expected one of {', '.join(names)} or the path of a SASRec text "
        "file ('user item' or 'user item liked' per line)"
    )


def _fingerprint(path: Path) -> str:
    """Fingerprint of a source file (``sasrec.kuairec.source_fingerprint``)."""
    from sasrec import kuairec

    return str(kuairec.source_fingerprint(path))


def _default_out_dir(name: str, data_source: str = "kuairec") -> Path:
    """``data/processed/<name>``; text datasets under ``data/processed/text/<stem>`` (a file named
    ``small_matrix.txt`` must not replace the prepared KuaiRec ``small_matrix``)."""
    if data_source == "text":
        return paths.processed_dir() / "text" / name
    return paths.processed_dir() / name


def _normalise_params(params: dict[str, Any]) -> dict[str, Any]:
    """Validated preparation parameters, defaults filled in (the ``params`` stored in meta.json)."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS) - {"remap"})
    if unknown:
        raise ConfigError(
            f"unknown preparation parameter(s) {', '.join(unknown)}; expected {', '.join(DEFAULT_PARAMS)}"
        )
    merged = {**DEFAULT_PARAMS, **{k: v for k, v in params.items() if k != "remap" and v is not None}}
    out: dict[str, Any] = {}
    for key in ("like_threshold", "relevance_threshold", "temporal_valid_frac", "temporal_test_frac"):
        try:
            value = float(merged[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number; got {merged[key]!r}") from None
        if not np.isfinite(value):
            raise ConfigError(f"{key} must be finite; got {value}")
        out[key] = value
    for key in ("n_valid", "n_test"):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ConfigError(f"{key} must be a non-negative integer; got {value!r}")
        out[key] = int(value)
    for key in ("temporal_valid_frac", "temporal_test_frac"):
        if not 0.0 <= out[key] < 1.0:
            raise ConfigError(f"{key} must be in [0, 1); got {out[key]}")
    if out["temporal_valid_frac"] + out["temporal_test_frac"] >= 1.0:
        raise ConfigError(
            "temporal_valid_frac + temporal_test_frac must be below 1 (some events must remain for "
            f"training); got {out['temporal_valid_frac']} + {out['temporal_test_frac']}"
        )
    return out


# ------------------------------------------------------------------------------------------ text files
def read_sasrec_text(path: Path) -> pd.DataFrame:
    """Read a SASRec-format file: ``user item`` or ``user item liked`` per line, lines in time order.

    The format of Kang & McAuley's SASRec code (and the original project's text files). Blank lines are
    skipped. Returns columns ``user_id``, ``video_id`` (int64), ``liked`` (bool; True when the file has
    two columns) and ``order`` (1-based line number, the time order within each user).

    Raises:
        MissingDataError: the file does not exist.
        DataValidationError: a line is not 2 or 3 non-negative integers, the column count changes, or
            ``liked`` is not 0 or 1; the message names the file, the line number and its content.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"SASRec text file {path} does not exist")
    try:
        table = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=["line"]),
            parse_options=pacsv.ParseOptions(
                delimiter="\x1f",
                quote_char=False,
                escape_char=False,
                double_quote=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={"line": pa.string()}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataValidationError(
            f"{path}: not a SASRec text file (expected UTF-8 lines of 2 or 3 integers): {exc}"
        ) from None
    lines = pc.utf8_trim_whitespace(table["line"])
    line_numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    keep = np.asarray(pc.not_equal(lines, "").to_numpy(zero_copy_only=False), dtype=bool)
    lines = lines.filter(pa.array(keep))
    line_numbers = line_numbers[keep]
    if len(lines) == 0:
        raise DataValidationError(f"{path}: no interactions (the file is empty or holds only blank lines)")

    def fail(bad: np.ndarray, what: str) -> NoReturn:
        first = int(np.flatnonzero(bad)[0])
        content = lines[first].as_py()
        raise DataValidationError(
            f"{path}: line {int(line_numbers[first])}: {content!r}: {what} "
            f"({int(bad.sum())} such line(s) of {len(bad)})"
        )

    well_formed = np.asarray(
        pc.match_substring_regex(lines, _TEXT_LINE_PATTERN).to_numpy(zero_copy_only=False)
    )
    if not well_formed.all():
        fail(
            ~well_formed,
            "expected 'user item' or 'user item liked', non-negative integers separated by spaces",
        )
    fields = pc.split_pattern_regex(lines, r"[ \t]+")
    n_fields = np.asarray(pc.list_value_length(fields).to_numpy(zero_copy_only=False), dtype=np.int64)
    width = int(n_fields[0])
    if (n_fields != width).any():
        fail(n_fields != width, f"has {3 if width == 2 else 2} columns but the file's first line has {width}")
    flat_text = pc.list_flatten(fields)
    field_length = np.asarray(pc.utf8_length(flat_text).to_numpy(zero_copy_only=False)).reshape(-1, width)
    too_long = (field_length > 18).any(axis=1)
    if too_long.any():
        fail(too_long, "an id has more than 18 digits")
    values = pc.cast(flat_text, pa.int64()).to_numpy().reshape(-1, width)
    if width == 3:
        liked_raw = values[:, 2]
        bad_liked = (liked_raw != 0) & (liked_raw != 1)
        if bad_liked.any():
            fail(bad_liked, "the third column (liked) must be 0 or 1")
        liked = liked_raw.astype(bool)
    else:
        liked = np.ones(len(values), dtype=bool)
    return pd.DataFrame(
        {"user_id": values[:, 0], "video_id": values[:, 1], "liked": liked, "order": line_numbers}
    )


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


def _per_user_positions(users_sorted: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """(events per user index, position from the end of each event in its user's sequence; 0 = last)."""
    counts = np.bincount(users_sorted, minlength=n_users + 1)
    starts = np.zeros(n_users + 2, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    position = np.arange(len(users_sorted), dtype=np.int64) - starts[users_sorted]
    from_end = counts[users_sorted] - 1 - position
    return counts, from_end


def _per_user_split(
    users_sorted: np.ndarray,
    counts: np.ndarray,
    from_end: np.ndarray,
    n_valid: int,
    n_test: int,
    min_events: int,
) -> tuple[np.ndarray, int]:
    """Last ``n_test`` events of each long-enough user to test, the ``n_valid`` before to validation."""
    eligible = counts[users_sorted] >= min_events
    assignment = np.full(len(users_sorted), TRAIN, dtype=np.int8)
    assignment[eligible & (from_end < n_test + n_valid)] = VALID
    assignment[eligible & (from_end < n_test)] = TEST
    n_short = int(((counts > 0) & (counts < min_events)).sum())
    return assignment, n_short


def _temporal_split(timestamps: np.ndarray, valid_frac: float, test_frac: float) -> tuple[np.ndarray, dict]:
    """Global time cut points; an event exactly on a cut belongs to the later part."""
    assignment = np.full(len(timestamps), TRAIN, dtype=np.int8)
    if len(timestamps) == 0:
        return assignment, {"valid_cut": None, "test_cut": None}
    test_cut = float(np.quantile(timestamps, 1.0 - test_frac)) if test_frac > 0 else np.inf
    valid_cut = float(np.quantile(timestamps, 1.0 - (test_frac + valid_frac))) if valid_frac > 0 else test_cut
    assignment[timestamps >= valid_cut] = VALID
    assignment[timestamps >= test_cut] = TEST
    cuts = {
        "valid_cut": valid_cut if np.isfinite(valid_cut) else None,
        "test_cut": test_cut if np.isfinite(test_cut) else None,
    }
    return assignment, cuts


def _split_counts(users: np.ndarray, assignment: np.ndarray, n_users: int) -> dict[str, int]:
    """Events per part and users with validation / test targets."""
    parts = np.bincount(assignment, minlength=3)
    out = {"train": int(parts[TRAIN]), "valid": int(parts[VALID]), "test": int(parts[TEST])}
    for part, label in ((VALID, "users_valid"), (TEST, "users_test")):
        out[label] = int(np.count_nonzero(np.bincount(users[assignment == part], minlength=n_users + 1)))
    out["stages"] = {
        "valid": {"history_events": out["train"], "target_events": out["valid"], "users": out["users_valid"]},
        "test": {
            "history_events": out["train"] + out["valid"],
            "target_events": out["test"],
            "users": out["users_test"],
        },
    }
    return out


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
        {
            "like_threshold": like_threshold,
            "relevance_threshold": relevance_threshold,
            "n_valid": n_valid,
            "n_test": n_test,
            "temporal_valid_frac": temporal_valid_frac,
            "temporal_test_frac": temporal_test_frac,
        }
    )
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

    user_raw = _integer_ids(df, "user_id", name)
    item_raw = _integer_ids(df, "video_id", name)
    user_index, user_ids, users_present = _id_map(user_raw, remap, "user_id")
    item_index, item_ids, items_present = _id_map(item_raw, remap, "video_id")
    del user_raw, item_raw

    if is_text:
        timestamps = pd.to_numeric(df["order"], errors="coerce").to_numpy(dtype=np.float64)
        watch_ratio = np.full(len(df), np.nan, dtype=np.float64)
        if "liked" in df.columns:
            liked_col = df["liked"]
            liked_num = pd.to_numeric(liked_col, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isin(liked_num, [0.0, 1.0])
            if bad.any():
                raise DataValidationError(
                    f"{name}: column liked must be 0/1 or bool; {int(bad.sum())} row(s) are not "
                    f"(first {liked_col[bad].iloc[0]!r})"
                )
            liked = liked_num == 1.0
        else:
            liked = np.ones(len(df), dtype=bool)
        relevant = liked.copy()
    else:
        timestamps = pd.to_numeric(df["timestamp"], errors="coerce").to_numpy(dtype=np.float64)
        watch_ratio = pd.to_numeric(df["watch_ratio"], errors="coerce").to_numpy(dtype=np.float64)
        liked = watch_ratio > params["like_threshold"]  # NaN compares False
        relevant = watch_ratio > params["relevance_threshold"]

    timed = np.isfinite(timestamps)
    if is_text and not timed.all():
        raise DataValidationError(
            f"{name}: column order must be numeric; {int((~timed).sum())} row(s) are not"
        )
    timed_rows = np.flatnonzero(timed)
    # Stable sort by (user, time): equal keys keep file row order (pyarrow's sort_indices is stable).
    sort_keys = pa.table({"user": user_index[timed_rows], "time": timestamps[timed_rows]})
    within_timed = pc.sort_indices(sort_keys, sort_keys=[("user", "ascending"), ("time", "ascending")])
    order = timed_rows[within_timed.to_numpy()]
    del sort_keys, within_timed
    users_sorted = user_index[order]
    ts_sorted = timestamps[order]
    n_users = len(user_ids) - 1

    events = pd.DataFrame(
        {
            "user": users_sorted,
            "item": item_index[order],
            "timestamp": ts_sorted,
            "watch_ratio": watch_ratio[order].astype(np.float32),
            "liked": liked[order],
            "relevant": relevant[order],
        }
    )
    counts_per_user, from_end = _per_user_positions(users_sorted, n_users)
    min_last_n = params["n_valid"] + params["n_test"] + 2
    last_n, short_last_n = _per_user_split(
        users_sorted, counts_per_user, from_end, params["n_valid"], params["n_test"], min_last_n
    )
    one_out, short_one_out = _per_user_split(users_sorted, counts_per_user, from_end, 1, 1, 3)
    temporal, cuts = _temporal_split(ts_sorted, params["temporal_valid_frac"], params["temporal_test_frac"])
    events["split_temporal"] = temporal
    events["split_leave_last_n"] = last_n
    events["split_leave_one_out"] = one_out
    events = events.astype(EVENT_COLUMNS)[list(EVENT_COLUMNS)]

    untimed_rows = np.flatnonzero(~timed)
    label_order = untimed_rows[np.argsort(user_index[untimed_rows], kind="stable")]
    labels = pd.DataFrame(
        {
            "user": user_index[label_order],
            "item": item_index[label_order],
            "watch_ratio": watch_ratio[label_order].astype(np.float32),
            "liked": liked[label_order],
            "relevant": relevant[label_order],
        }
    ).astype(LABEL_COLUMNS)[list(LABEL_COLUMNS)]

    split_counts = {
        "temporal": _split_counts(users_sorted, temporal, n_users),
        "leave_last_n": {
            **_split_counts(users_sorted, last_n, n_users),
            "users_all_train": short_last_n,
            "min_events": min_last_n,
        },
        "leave_one_out": {
            **_split_counts(users_sorted, one_out, n_users),
            "users_all_train": short_one_out,
            "min_events": 3,
        },
    }
    meta: dict[str, Any] = {
        "name": name,
        "prepare_version": PREPARE_VERSION,
        "remap": bool(remap),
        **params,
        "params": {**params, "remap": bool(remap)},
        "order": (
            "line order within each user (timestamp = 1-based line number; the temporal split cuts on line "
            "numbers, so in a file grouped by user it holds out the last users rather than the latest time)"
            if is_text
            else "timestamp, ties broken by file row order"
        ),
        "has_watch_ratio": not is_text,
        "temporal_cuts": cuts,
        "counts": {
            "rows_in": len(df),
            "events": len(events),
            "labels": len(labels),
            "users": n_users,
            "items": len(item_ids) - 1,
            "users_present": users_present,
            "items_present": items_present,
            "users_with_events": int(np.count_nonzero(counts_per_user)),
            "liked_events": int(events["liked"].sum()),
            "relevant_events": int(events["relevant"].sum()),
            "splits": split_counts,
        },
    }
    data = PreparedData(
        name=name, events=events, labels=labels, user_ids=user_ids, item_ids=item_ids, meta=meta
    )
    meta["leakage"] = {split: check_no_leakage(data, split) for split in SPLITS}
    meta["prepare_frame_seconds"] = round(time.perf_counter() - started, 3)
    return data


# ------------------------------------------------------------------------------------------- leakage
def check_no_leakage(data: PreparedData, split: str) -> dict[str, Any]:
    """Verify that ``split`` never lets a model see the future of what it predicts.

    Per-user splits: events are sorted per user by time, and along each user's sequence the assignment
    never decreases (train before validation before test). Temporal: the latest training time is at most
    the earliest validation time, and validation at most test. Every event is in exactly one part.

    Returns:
        A summary (events per part, users checked) with ``ok: True``.

    Raises:
        SasrecError: on any leak, naming the split, the number of offending events and an example.
    """
    column = split_column(split)
    events = data.events
    if column not in events.columns:
        raise SasrecError(f"{data.name}: events have no column {column}")
    assignment = events[column].to_numpy()
    users = events["user"].to_numpy()
    timestamps = events["timestamp"].to_numpy(dtype=np.float64)
    invalid = (assignment < TRAIN) | (assignment > TEST)
    if invalid.any():
        raise SasrecError(
            f"{data.name}/{split}: {int(invalid.sum())} event(s) are in no part or an unknown one "
            f"(first value {assignment[invalid][0]!r}; expected 0 train, 1 valid, 2 test)"
        )
    parts = np.bincount(assignment.astype(np.int64), minlength=3)
    summary: dict[str, Any] = {
        "split": split,
        "ok": True,
        "events": {"train": int(parts[TRAIN]), "valid": int(parts[VALID]), "test": int(parts[TEST])},
    }
    if split == "temporal":
        bounds = {}
        for part, label in ((TRAIN, "train"), (VALID, "valid"), (TEST, "test")):
            ts = timestamps[assignment == part]
            bounds[label] = (float(ts.min()), float(ts.max())) if len(ts) else None
        for earlier, later in (("train", "valid"), ("valid", "test"), ("train", "test")):
            if bounds[earlier] is None or bounds[later] is None:
                continue
            if bounds[earlier][1] > bounds[later][0]:
                late = timestamps[assignment == {"train": TRAIN, "valid": VALID}[earlier]] > bounds[later][0]
                raise SasrecError(
                    f"{data.name}/temporal: leak: {int(late.sum())} {earlier} event(s) are later than the "
                    f"earliest {later} event (max {earlier} time {bounds[earlier][1]} > min {later} time "
                    f"{bounds[later][0]})"
                )
        summary["time_bounds"] = bounds
        summary["rule"] = "max train time <= min valid time, max valid time <= min test time"
        return summary
    same_user = users[1:] == users[:-1]
    unsorted_users = users[1:] < users[:-1]
    if unsorted_users.any():
        first = int(np.flatnonzero(unsorted_users)[0]) + 1
        raise SasrecError(
            f"{data.name}/{split}: events are not sorted by user (row {first}, user {users[first]})"
        )
    backwards_time = same_user & (timestamps[1:] < timestamps[:-1])
    if backwards_time.any():
        first = int(np.flatnonzero(backwards_time)[0]) + 1
        raise SasrecError(
            f"{data.name}/{split}: {int(backwards_time.sum())} event(s) are out of time order within their "
            f"user (first: row {first}, user {int(users[first])})"
        )
    backwards_part = same_user & (assignment[1:] < assignment[:-1])
    if backwards_part.any():
        rows = np.flatnonzero(backwards_part) + 1
        leaking_users = np.unique(users[rows])
        first = int(rows[0])
        raise SasrecError(
            f"{data.name}/{split}: leak: {len(rows)} event(s) of {len(leaking_users)} user(s) come after a "
            f"later part in sequence order (first: user {int(users[first])}, row {first}: part "
            f"{int(assignment[first])} after part {int(assignment[first - 1])}; expected train before valid "
            "before test)"
        )
    summary["users"] = int(np.count_nonzero(np.bincount(users))) if len(users) else 0
    summary["rule"] = "per user, every train event precedes each valid event, which precedes each test event"
    return summary


# ------------------------------------------------------------------------------------------ artifacts
def _sasrec_text_table(users: np.ndarray, items: np.ndarray, liked: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "user": pa.array(users, type=pa.int64()),
            "item": pa.array(items, type=pa.int64()),
            "liked": pa.array(liked.astype(np.int8), type=pa.int8()),
        }
    )


def _write_text_files(data: PreparedData, folder: Path, base: str) -> dict[str, str]:
    """The original project's files: ``<base>.txt`` (contiguous ids) and ``<base>_no_remapping.txt``."""
    users = data.events["user"].to_numpy()
    items = data.events["item"].to_numpy()
    liked = data.events["liked"].to_numpy()
    if data.meta.get("remap", True):
        remapped_users, remapped_items = users, items
    else:  # contiguous ranks of the present ids, as the remapped dataset would number them
        rank_of_user = np.cumsum(
            np.bincount(users, minlength=data.num_users + 1)
            + np.bincount(data.labels["user"], minlength=data.num_users + 1)
            > 0
        )
        rank_of_item = np.cumsum(
            np.bincount(items, minlength=data.num_items + 1)
            + np.bincount(data.labels["item"], minlength=data.num_items + 1)
            > 0
        )
        remapped_users, remapped_items = rank_of_user[users], rank_of_item[items]
    options = pacsv.WriteOptions(include_header=False, delimiter=" ", quoting_style="none")
    written = {}
    for filename, u, i in (
        (f"{base}.txt", remapped_users, remapped_items),
        (f"{base}{NO_REMAPPING_SUFFIX}.txt", data.user_ids[users], data.item_ids[items]),
    ):
        pacsv.write_csv(_sasrec_text_table(u, i, liked), folder / filename, write_options=options)
        written[filename] = filename
    return written


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


# ------------------------------------------------------------------------------------------- pipeline
def _source(dataset: str, data_dir: Path | None, remap: bool | None) -> dict[str, Any]:
    """Where a dataset comes from: name, base name, remap flag, source file and its kind."""
    name, base, remap_flag, text_path = _resolve_dataset(dataset, remap)
    if text_path is not None:
        return {"name": name, "base": base, "remap": remap_flag, "path": text_path, "data_source": "text"}
    from sasrec import kuairec, simulate

    directory = paths.resolve(data_dir) if data_dir is not None else default_data_dir()
    if not directory.is_dir():
        raise MissingDataError(
            f"data folder {directory} does not exist; run `make data` (real KuaiRec 2.0) or `make simulate`"
        )
    found = kuairec.find_file(directory, f"{base}.csv")
    if found is None:
        raise MissingDataError(
            f"{base}.csv not found in {directory}; run `make data` (real KuaiRec 2.0 into {paths.raw_dir()}) "
            f"or `make simulate` (simulated files into {paths.simulated_dir()})"
        )
    found = Path(found)
    kind = (
        "simulated" if simulate.is_simulated(found.parent) or simulate.is_simulated(directory) else "kuairec"
    )
    return {"name": name, "base": base, "remap": remap_flag, "path": found, "data_source": kind}


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
    from tqdm.auto import tqdm

    from sasrec.cliutil import progress_enabled

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
            from sasrec import kuairec

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


# ---------------------------------------------------------------------------------------------- CLI
def _format_cleaning(cleaning: dict[str, Any] | None) -> list[str]:
    """Lines of the loader's cleaning report (rows in / out, dropped and flagged counts)."""
    if not cleaning:
        return ["cleaning: none"]
    if "rows_in" not in cleaning:
        return [f"cleaning: {json.dumps(cleaning, default=_json_default)}"]
    rows_in = max(int(cleaning["rows_in"]), 1)
    lines = [f"cleaning report: rows in {cleaning['rows_in']:,}, rows out {cleaning.get('rows_out', 0):,}"]
    for kind in ("dropped", "flagged"):
        for what, rows in cleaning.get(kind, {}).items():
            lines.append(f"  {kind:<8} {what:<32} {rows:>12,} ({100.0 * rows / rows_in:.2f}%)")
    return lines


def _format_summary(data: PreparedData) -> str:
    meta = data.meta
    counts = meta["counts"]
    lines = [
        f"dataset {data.name} ({meta.get('data_source', '?')}, remap={meta['remap']}) from {meta.get('source_path', '?')}",
        *_format_cleaning(meta.get("cleaning")),
        f"rows in {counts['rows_in']:,}; events {counts['events']:,}; labels (untimed) {counts['labels']:,}; "
        f"users {counts['users']:,}; items {counts['items']:,}",
        (
            f"liked (watch_ratio > {meta['like_threshold']}) {counts['liked_events']:,}; relevant "
            f"(watch_ratio > {meta['relevance_threshold']}) {counts['relevant_events']:,}"
            if meta.get("has_watch_ratio", True)
            else f"liked (third column) {counts['liked_events']:,}; relevant = liked (no watch_ratio)"
        ),
    ]
    for split in SPLITS:
        c = counts["splits"][split]
        extra = f"; users kept all-train {c['users_all_train']:,}" if "users_all_train" in c else ""
        lines.append(
            f"  {split:<14} train {c['train']:,}  valid {c['valid']:,} ({c['users_valid']:,} users)  "
            f"test {c['test']:,} ({c['users_test']:,} users){extra}"
        )
    for split in SPLITS:
        check = meta["leakage"][split]
        lines.append(f"  leakage check {split}: {'ok' if check['ok'] else 'FAILED'} ({check['rule']})")
    lines.append(f"written to {meta.get('out_dir')} in {meta.get('prepare_seconds', 0):.1f} s")
    return "\n".join(lines)


def _run_cli(args: argparse.Namespace) -> int:
    data = prepare(
        args.dataset,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        out_dir=Path(args.out) if args.out else None,
        write_text=not args.no_text,
        progress=False if args.no_progress else None,
        like_threshold=args.like_threshold,
        relevance_threshold=args.relevance_threshold,
        n_valid=args.n_valid,
        n_test=args.n_test,
        temporal_valid_frac=args.temporal_valid_frac,
        temporal_test_frac=args.temporal_test_frac,
    )
    print(_format_summary(data))
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``prepare NAME [--data-dir DIR] [--out DIR] ...`` (the original ``prepare_data.py``)."""
    parser = subparsers.add_parser(
        "prepare",
        help="build sequences and train/valid/test splits of a KuaiRec matrix or SASRec text file",
        description=(
            "Prepare small_matrix, big_matrix (add _no_remapping for original ids) or a SASRec text file: "
            "time-ordered sequences, temporal / leave-last-n / leave-one-out splits, leakage checks, "
            "parquet artifacts and the original project's text files."
        ),
    )
    parser.add_argument(
        "dataset", metavar="NAME", help="small_matrix, big_matrix, *_no_remapping, or a .txt path"
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder of the KuaiRec CSVs (default: data/raw, else data/simulated)"
    )
    parser.add_argument("--out", default=None, help="artifact folder (default: data/processed/NAME)")
    parser.add_argument("--like-threshold", type=float, default=DEFAULT_PARAMS["like_threshold"])
    parser.add_argument("--relevance-threshold", type=float, default=DEFAULT_PARAMS["relevance_threshold"])
    parser.add_argument("--n-valid", type=int, default=DEFAULT_PARAMS["n_valid"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_PARAMS["n_test"])
    parser.add_argument("--temporal-valid-frac", type=float, default=DEFAULT_PARAMS["temporal_valid_frac"])
    parser.add_argument("--temporal-test-frac", type=float, default=DEFAULT_PARAMS["temporal_test_frac"])
    parser.add_argument("--no-text", action="store_true", help="skip the original project's text files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=_run_cli)
