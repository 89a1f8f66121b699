"""Cleaning of KuaiRec interactions with a report: exact duplicates, repeat views, dates off the timestamp."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.kuairec.cache import read_interactions
from sasrec.data.kuairec.schema import INTERACTION_COLUMNS, LOCAL_TIMEZONE
from sasrec.errors import DataValidationError


# ------------------------------------------------------------------------------------- cleaning report
@dataclass
class CleaningReport:
    """What :func:`clean_interactions` dropped and flagged (counts of rows)."""

    source: str
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)

    _NOTES = {
        "exact_duplicate_rows": "all 8 columns equal to an earlier row",
        "untimed_rows_labels_only": "kept: no timestamp, labels only, excluded from sequences",
        "repeat_views": "kept: (user, video) seen earlier, counted as events",
        "date_disagrees_with_timestamp": f"kept: date differs from the timestamp's {LOCAL_TIMEZONE} day",
    }

    def to_frame(self) -> pd.DataFrame:
        """One row per count: columns kind (input/dropped/flagged/output), name, rows, percent, note."""
        records: list[tuple[str, str, int]] = [("input", "rows_in", self.rows_in)]
        records += [("dropped", name, count) for name, count in self.dropped.items()]
        records += [("flagged", name, count) for name, count in self.flagged.items()]
        records.append(("output", "rows_out", self.rows_out))
        frame = pd.DataFrame(records, columns=["kind", "name", "rows"])
        frame["percent"] = 100.0 * frame["rows"] / max(self.rows_in, 1)
        frame["note"] = frame["name"].map(self._NOTES).fillna("")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {
            "source": self.source,
            "rows_in": int(self.rows_in),
            "rows_out": int(self.rows_out),
            "dropped": {k: int(v) for k, v in self.dropped.items()},
            "flagged": {k: int(v) for k, v in self.flagged.items()},
        }

    def __str__(self) -> str:
        frame = self.to_frame()
        width = max(len(name) for name in frame["name"])
        lines = [f"cleaning report for {self.source}"]
        for kind, name, rows, percent, note in frame.itertuples(index=False):
            note_text = f"  ({note})" if note else ""
            lines.append(f"  {kind:<8} {name:<{width}} {rows:>12,} {percent:7.2f}%{note_text}")
        return "\n".join(lines)


def _local_yyyymmdd(timestamp: np.ndarray) -> np.ndarray:
    """yyyymmdd (float64) of Unix seconds in Asia/Shanghai.

    The zone's UTC offset is looked up once per hour of the covered span (offsets change on hour
    boundaries), which is exact and much faster than converting every timestamp with pandas.
    """
    if timestamp.size == 0:
        return np.empty(0, dtype=np.float64)
    hours = np.floor(timestamp / 3600.0).astype(np.int64)
    first, last = int(hours.min()), int(hours.max())
    if last - first <= 1_000_000:  # up to about 114 years of hourly offsets
        grid = pd.to_datetime(np.arange(first, last + 1, dtype=np.int64) * 3600, unit="s", utc=True)
        local_grid = grid.tz_convert(LOCAL_TIMEZONE).tz_localize(None)
        offset = (local_grid - grid.tz_localize(None)).total_seconds().to_numpy()  # (hours,)
        local_seconds = timestamp + offset[hours - first]
    else:
        local = pd.to_datetime(timestamp, unit="s", utc=True).tz_convert(LOCAL_TIMEZONE).tz_localize(None)
        local_seconds = (local - pd.Timestamp(0)).total_seconds().to_numpy()
    days = np.floor(local_seconds / 86_400.0).astype(np.int64)
    first_day = int(days.min())
    calendar = pd.to_datetime(np.arange(first_day, int(days.max()) + 1), unit="D")  # one entry per day
    yyyymmdd = (calendar.year * 10_000 + calendar.month * 100 + calendar.day).to_numpy(dtype=np.float64)
    return yyyymmdd[days - first_day]


def _mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser of uint64 values (a well-spread hash)."""
    mixed = values ^ (values >> np.uint64(30))
    mixed = mixed * np.uint64(0xBF58476D1CE4E5B9)
    mixed = mixed ^ (mixed >> np.uint64(27))
    mixed = mixed * np.uint64(0x94D049BB133111EB)
    return mixed ^ (mixed >> np.uint64(31))


def _as_uint64(column: pd.Series) -> np.ndarray:
    """Bits of a numeric column as uint64, with every NaN and both zeros made identical."""
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64) + 0.0  # -0.0 + 0.0 == +0.0
        values[np.isnan(values)] = np.nan
        return values.view(np.uint64)
    return column.to_numpy(dtype=np.int64).view(np.uint64)


def _in_repeated_group(keys: np.ndarray) -> np.ndarray:
    """Mask of the rows whose key occurs more than once (sort based)."""
    order = np.argsort(keys)
    ordered = keys[order]
    same_as_next = ordered[1:] == ordered[:-1]
    repeated_sorted = np.zeros(keys.size, dtype=bool)
    repeated_sorted[1:] |= same_as_next
    repeated_sorted[:-1] |= same_as_next
    repeated = np.empty(keys.size, dtype=bool)
    repeated[order] = repeated_sorted
    return repeated


def exact_duplicates(
    df: pd.DataFrame, columns: list[str], bucket_columns: list[str] | None = None
) -> np.ndarray:
    """Mask of rows equal on ``columns`` to an earlier row (the same as ``df.duplicated(columns)``).

    Rows are first bucketed by a 64-bit hash of ``bucket_columns`` (numeric columns among ``columns``;
    default all numeric ones); only rows whose hash repeats (a few percent) go through pandas' exact
    comparison on every column, so hash collisions cannot cause errors, only extra work.
    """
    if len(df) < 2:
        return np.zeros(len(df), dtype=bool)
    numeric = [
        name
        for name in (bucket_columns if bucket_columns is not None else columns)
        if name in columns and pd.api.types.is_numeric_dtype(df[name].dtype)
    ]
    if not numeric:
        return df.duplicated(subset=columns, keep="first").to_numpy()
    row_hash = np.zeros(len(df), dtype=np.uint64)
    for name in numeric:  # polynomial combination, then one finaliser (collisions only add candidates)
        np.multiply(row_hash, np.uint64(0x9E3779B97F4A7C15), out=row_hash)
        np.add(row_hash, _as_uint64(df[name]), out=row_hash)
    row_hash = _mix64(row_hash)
    candidates = np.flatnonzero(_in_repeated_group(row_hash))
    duplicate = np.zeros(len(df), dtype=bool)
    if candidates.size:
        subset = df.iloc[candidates]
        duplicate[candidates] = subset.duplicated(subset=columns, keep="first").to_numpy()
    return duplicate


def count_repeats(keys: np.ndarray) -> int:
    """Number of entries of ``keys`` equal to an earlier entry (sort based)."""
    if keys.size == 0:
        return 0
    ordered = np.sort(keys)
    return int(np.count_nonzero(ordered[1:] == ordered[:-1]))


def clean_interactions(df: pd.DataFrame, source: str) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop exact duplicate rows and count what the preparation step must know.

    Dropped: rows equal to an earlier row on all 8 columns. Kept but flagged: rows without a timestamp
    (labels only: the preparation step leaves them out of sequences), repeat views of a (user, video)
    pair, and rows whose date differs from the Asia/Shanghai day of their timestamp.

    Args:
        df: an interaction frame as returned by :func:`read_interactions`.
        source: name shown in the report (usually the file name).

    Returns:
        The cleaned frame (original order, fresh index) and its :class:`CleaningReport`.
    """
    missing = [name for name in INTERACTION_COLUMNS if name not in df.columns]
    if missing:
        raise DataValidationError(f"{source}: interaction frame lacks column(s) {missing}")
    # Any exact duplicate shares these four columns with its original: bucket on them only.
    duplicate = exact_duplicates(
        df, INTERACTION_COLUMNS, ["user_id", "video_id", "play_duration", "timestamp"]
    )
    cleaned = df.loc[~duplicate].reset_index(drop=True) if duplicate.any() else df.reset_index(drop=True)

    timestamp = cleaned["timestamp"].to_numpy(dtype=np.float64)
    untimed = np.isnan(timestamp)
    pair_key = cleaned["user_id"].to_numpy(np.int64) << 32 | cleaned["video_id"].to_numpy(np.int64)
    repeat_views = count_repeats(pair_key)
    date = cleaned["date"].to_numpy(dtype=np.float64)
    both = ~untimed & ~np.isnan(date)
    disagree = int(np.count_nonzero(_local_yyyymmdd(timestamp[both]) != date[both]))

    report = CleaningReport(
        source=source,
        rows_in=len(df),
        rows_out=len(cleaned),
        dropped={"exact_duplicate_rows": int(duplicate.sum())},
        flagged={
            "untimed_rows_labels_only": int(untimed.sum()),
            "repeat_views": repeat_views,
            "date_disagrees_with_timestamp": disagree,
        },
    )
    return cleaned, report


def load_interactions(
    path: Path, *, cache: bool = True, cache_dir: Path | None = None
) -> tuple[pd.DataFrame, CleaningReport]:
    """:func:`read_interactions` followed by :func:`clean_interactions`."""
    frame = read_interactions(path, cache=cache, cache_dir=cache_dir)
    return clean_interactions(frame, Path(path).name)
