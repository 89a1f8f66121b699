"""Video attributes and behavioural aggregates from ``item_daily_features.csv``, without leakage.

The file holds one row per video and day; its counters describe what happened on that day. Only rows
dated strictly before the cut date (the Asia/Shanghai day of the cut timestamp) are read, for every value
here: the static attributes come from a video's last row before the cut, the vocabularies from those
rows, the aggregates from the days before the cut. Rows dated on or after the cut change nothing (a
malformed or duplicated row is still refused, wherever it is dated).

* ``item_static`` (categorical, 0 = unknown): author, video type, upload type, visibility, video tag,
  duration bucket and upload-age bucket (days from upload to the cut);
* ``item_stats`` (dense float32, zeros without history): whether the video has days before the cut, the
  number of days, mean daily shows and plays (log1p), and rates per show or play.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sasrec.data.contracts import PreparedData
from sasrec.data.features.alignment import (
    UNKNOWN_STRINGS,
    categorical_codes,
    check_overlap,
    internal_index,
    scatter_rows,
)
from sasrec.data.features.table import FeatureGroup, item_group
from sasrec.data.kuairec.readers import read_item_daily_features
from sasrec.errors import DataValidationError

SOURCE = "item_daily_features.csv"
#: Video duration bucket edges in seconds (the file's video_duration is in milliseconds).
DURATION_EDGES_S = (5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0)
#: Upload age bucket edges in days before the cut (or the day after the file's last date without a cut).
AGE_EDGES_DAYS = (1, 3, 7, 14, 30, 60, 90, 180, 365)
STATIC_COLUMNS = (
    "author_id",
    "video_type",
    "upload_type",
    "visible_status",
    "video_tag_id",
    "duration_bucket",
    "upload_age_bucket",
)
STATS_COLUMNS = (
    "has_history",
    "log1p_days",
    "log1p_mean_show_cnt",
    "log1p_mean_play_cnt",
    "play_per_show",
    "complete_play_per_play",
    "like_per_play",
    "comment_per_play",
    "share_per_play",
    "follow_per_play",
    "mean_play_progress",
)


def _dates(values: np.ndarray) -> pd.DatetimeIndex:
    """yyyymmdd integers as dates (NaT where not a valid date)."""
    return pd.DatetimeIndex(
        pd.to_datetime(pd.Series(values).astype("string"), format="%Y%m%d", errors="coerce")
    )


def _bucket_codes(values: np.ndarray, edges: tuple[float, ...]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Bucket ids 1..len(edges)+1 (values <= edges[0] -> 1, above the last edge -> last); NaN -> 0."""
    finite = np.isfinite(values)
    codes = np.where(
        finite, np.searchsorted(np.asarray(edges), np.where(finite, values, 0.0), side="left") + 1, 0
    )
    labels = (f"<={edges[0]:g}", *(f"({lo:g},{hi:g}]" for lo, hi in zip(edges[:-1], edges[1:], strict=True)),
              f">{edges[-1]:g}")  # fmt: skip
    return codes.astype(np.int32), labels


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _checked_frame(path: Path) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The file's rows with their (n_file,) video ids and dates; a (video_id, date) pair twice is refused."""
    frame = read_item_daily_features(path)
    video = frame["video_id"].to_numpy(dtype=np.int64)  # (n_file,)
    date = frame["date"].to_numpy(dtype=np.int64)
    order = np.lexsort((date, video))
    same = (video[order][1:] == video[order][:-1]) & (date[order][1:] == date[order][:-1])
    if same.any():
        first = order[1:][same][0]
        raise DataValidationError(
            f"{path}: columns 'video_id', 'date' repeat {int(same.sum()):,} pair(s) (first video {video[first]} "
            f"on {date[first]}); expected one row per video and day"
        )
    return frame, video, date


def _kept_rows(
    path: Path,
    frame: pd.DataFrame,
    video: np.ndarray,
    date: np.ndarray,
    data: PreparedData,
    cut_date: int | None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """(n_kept,) internal item of each row of the dataset's videos dated before the cut, by item then day."""
    file_rows = internal_index(data.item_ids, video)
    check_overlap(path, "video_id", video, file_rows, data.name)
    before = np.ones(len(frame), dtype=bool) if cut_date is None else date < int(cut_date)
    keep = np.flatnonzero(before & (file_rows > 0))
    keep = keep[np.lexsort((date[keep], file_rows[keep]))]  # by item, then day
    return file_rows[keep], frame.iloc[keep].reset_index(drop=True)


def _attribute_codes(latest: pd.DataFrame) -> tuple[list[np.ndarray], dict[str, tuple[str, ...]]]:
    """Categorical ids and vocabularies of the first five static columns of each item's latest row."""
    columns, vocabularies = [], {}
    for name in STATIC_COLUMNS[:5]:  # five columns, not rows
        values = latest[name]
        if name in ("author_id", "video_tag_id"):
            numbers = pd.to_numeric(values, errors="coerce")
            codes, vocab = categorical_codes(
                numbers, unknown=(numbers < 0).to_numpy(dtype=bool, na_value=False)
            )
        else:
            text = values.astype("string").str.strip()
            unknown = (text.str.len() == 0) | text.str.upper().isin(UNKNOWN_STRINGS)
            codes, vocab = categorical_codes(text, unknown=unknown.to_numpy(dtype=bool, na_value=False))
        columns.append(codes)
        vocabularies[name] = vocab
    return columns, vocabularies


def _static_values(
    rows: np.ndarray, kept: pd.DataFrame, date: np.ndarray, cut_date: int | None, n_rows: int
) -> tuple[np.ndarray, dict[str, tuple[str, ...]]]:
    """(n_rows, 7) int32 static attributes from each item's last day before the cut, and their vocabularies."""
    last = np.flatnonzero(np.r_[rows[1:] != rows[:-1], True]) if len(rows) else np.zeros(0, dtype=np.int64)
    latest = kept.iloc[last].reset_index(drop=True)
    columns, vocabularies = _attribute_codes(latest)
    seconds = latest["video_duration"].to_numpy(dtype=np.float64) / 1000.0
    seconds = np.where(seconds > 0, seconds, np.nan)
    duration, vocabularies["duration_bucket"] = _bucket_codes(seconds, DURATION_EDGES_S)
    if cut_date is not None:
        reference = _dates(np.asarray([cut_date]))[0]
    else:
        reference = _dates(np.asarray([date.max()]))[0] + pd.Timedelta(days=1) if len(date) else pd.NaT
    uploaded = pd.DatetimeIndex(pd.to_datetime(latest["upload_dt"].astype("string").str.strip(),
                                               format="%Y-%m-%d", errors="coerce"))  # fmt: skip
    age_days = ((reference - uploaded) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64, na_value=np.nan)
    age, vocabularies["upload_age_bucket"] = _bucket_codes(
        np.where(age_days >= 0, age_days, np.nan), AGE_EDGES_DAYS
    )
    static = scatter_rows(rows[last], np.stack([*columns, duration, age], axis=1), n_rows)  # (n_items + 1, 7)
    return static, vocabularies


def _stats_values(rows: np.ndarray, kept: pd.DataFrame, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_rows, 11) float32 aggregates over the days before the cut, and (n_rows,) days per item."""

    def total(name: str) -> np.ndarray:
        values = kept[name].to_numpy(dtype=np.float64)
        return np.bincount(rows, weights=np.nan_to_num(values, nan=0.0), minlength=n_rows)  # (n_items + 1,)

    days = np.bincount(rows, minlength=n_rows).astype(np.float64)
    show, play = total("show_cnt"), total("play_cnt")
    progress = kept["play_progress"].to_numpy(dtype=np.float64)
    progress_days = np.bincount(rows, weights=np.isfinite(progress).astype(np.float64), minlength=n_rows)
    stats = np.stack(
        [
            (days > 0).astype(np.float64),
            np.log1p(days),
            np.log1p(_ratio(show, days)),
            np.log1p(_ratio(play, days)),
            _ratio(play, show),
            _ratio(total("complete_play_cnt"), play),
            _ratio(total("like_cnt"), play),
            _ratio(total("comment_cnt"), play),
            _ratio(total("share_cnt"), play),
            _ratio(total("follow_cnt"), play),
            _ratio(total("play_progress"), progress_days),
        ],
        axis=1,
    ).astype(np.float32)  # (n_items + 1, 11)
    stats[0] = 0.0
    return stats, days


def item_daily_groups(
    path: Path, data: PreparedData, cut_date: int | None
) -> tuple[FeatureGroup, FeatureGroup]:
    """The ``item_static`` and ``item_stats`` groups, from rows dated before ``cut_date`` (yyyymmdd).

    Args:
        path: the item_daily_features.csv file.
        data: the prepared dataset.
        cut_date: only rows with ``date < cut_date`` are used; None uses every row (no split to protect).

    Raises:
        DataValidationError: the reader's checks, a (video_id, date) pair twice, or no video of the dataset.
    """
    frame, video, date = _checked_frame(path)
    rows, kept = _kept_rows(path, frame, video, date, data, cut_date)  # (n_kept,) sorted
    n_rows = data.num_items + 1
    static, vocabularies = _static_values(rows, kept, date, cut_date, n_rows)
    stats, days = _stats_values(rows, kept, n_rows)
    cut_text = "every row (no cut)" if cut_date is None else f"rows dated before {cut_date}"
    static_group = item_group(
        data,
        name="item_static",
        kind="categorical",
        source=SOURCE,
        columns=STATIC_COLUMNS,
        values=static,
        vocabularies=vocabularies,
        notes=f"last row of each video among {cut_text}; vocabularies from those rows; unknown = 0",
    )
    stats_group = item_group(
        data,
        name="item_stats",
        kind="dense",
        source=SOURCE,
        columns=STATS_COLUMNS,
        values=stats,
        covered=int(np.count_nonzero(data.existing_items() & (days > 0))),
        notes=f"sums over {cut_text}; rates per show or play, 0 without history",
    )
    return static_group, stats_group
