"""Exploratory data analysis of the KuaiRec interaction matrices (Gao et al., CIKM 2022).

Every function takes cleaned frames from :func:`sasrec.kuairec.load_interactions` (or hand-made frames with
the same columns) and returns a tidy pandas object or a dict for display; :mod:`sasrec.plots` draws them.
All computations are vectorised with numpy / pandas so that the 12.5M-row big matrix takes seconds.

Dates are local to Asia/Shanghai, computed from ``timestamp`` (Unix seconds) with its fixed UTC+8 offset
(China has had no daylight-saving time since 1991). The files' ``date`` column is not used because it
disagrees with ``timestamp`` on about 15.5k rows of the real big matrix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec import paths
from sasrec.errors import ConfigError, DataValidationError, MissingDataError

SHANGHAI_UTC_OFFSET_S = 8 * 3600
SECONDS_PER_DAY = 86_400
MATRIX_FILES = {"big": "big_matrix.csv", "small": "small_matrix.csv"}

_BIG_ROWS = 12_530_806
_SMALL_ROWS = 4_676_570

REAL_STATS: dict[str, dict[str, Any]] = {
    "big": {
        "users": 7_176,
        "videos": 10_728,
        "interactions": _BIG_ROWS,
        "density": _BIG_ROWS / (7_176 * 10_728),
        "wr_gt2": 936_390 / _BIG_ROWS,
        "wr_ge1": 0.338,
        "wr_lt05": 0.359,
        "wr_median_le5": 0.716,
        "wr_gt5": 0.009,
        "untimed_share": None,  # not reported in KUAIREC.md
        "first_day": "2020-06-23",
        "last_day": "2020-09-10",
        "span_days": 80,
        "user_mean": _BIG_ROWS / 7_176,
        "user_median": 1_846,
        "user_min": 100,
        "user_max": 16_015,
    },
    "small": {
        "users": 1_411,
        "videos": 3_327,
        "interactions": _SMALL_ROWS,
        "density": _SMALL_ROWS / (1_411 * 3_327),
        "wr_gt2": 217_175 / _SMALL_ROWS,
        "wr_ge1": 0.324,
        "wr_lt05": 0.273,
        "wr_median_le5": 0.766,
        "wr_gt5": 0.005,
        "untimed_share": 181_992 / _SMALL_ROWS,
        "first_day": "2020-07-04",
        "last_day": "2020-09-05",
        "span_days": 64,
        "user_mean": _SMALL_ROWS / 1_411,
        "user_median": None,  # not reported in KUAIREC.md
        "user_min": 3_295,
        "user_max": 3_327,
    },
}
"""Published figures of real KuaiRec 2.0 per matrix (from the KuaiRec paper (Gao et al., CIKM 2022), its README
and audits whose totals match the official row counts). ``None`` marks a figure that is not published.
Shares are fractions of rows; ``wr_median_le5`` is the median watch_ratio of rows with watch_ratio <= 5;
``span_days`` counts calendar days (Asia/Shanghai) from first to last, both included; ``density`` is
rows / (users x videos) as the paper reports it (repeat views included)."""

STAT_LABELS: dict[str, str] = {
    "users": "users",
    "videos": "videos",
    "interactions": "interactions",
    "density": "density (rows / users x videos)",
    "wr_gt2": "share watch_ratio > 2",
    "wr_ge1": "share watch_ratio >= 1",
    "wr_lt05": "share watch_ratio < 0.5",
    "wr_median_le5": "median watch_ratio (rows <= 5)",
    "wr_gt5": "share watch_ratio > 5",
    "untimed_share": "share of untimed rows",
    "first_day": "first day (Asia/Shanghai)",
    "last_day": "last day (Asia/Shanghai)",
    "span_days": "time span (days)",
    "user_mean": "interactions per user: mean",
    "user_median": "interactions per user: median",
    "user_min": "interactions per user: min",
    "user_max": "interactions per user: max",
}

INTERACTION_COLUMNS = ("user_id", "video_id", "timestamp", "watch_ratio")
BITMAP_MAX_KEYS = 400_000_000
"""Largest key space de-duplicated with a boolean bitmap (400 MB) instead of a sort."""


# --------------------------------------------------------------------------------------------- helpers
def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise DataValidationError naming ``what`` when ``df`` lacks any of ``columns``."""
    if not isinstance(df, pd.DataFrame):
        raise DataValidationError(f"{what}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{what}: missing column(s) {missing}; expected {list(columns)}, found {list(df.columns)[:12]}"
        )


def _ids(df: pd.DataFrame, column: str, what: str) -> np.ndarray:
    """Non-negative integer ids of ``column`` as int64; errors name the column and an example."""
    values = df[column].to_numpy()
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(values.dtype, np.integer):
        raise DataValidationError(
            f"{what}: column {column!r} must hold integer ids, got dtype {values.dtype} "
            f"(first value {values[0]!r}, {len(values)} rows)"
        )
    ids = values.astype(np.int64, copy=False)
    negative = ids < 0
    if negative.any():
        raise DataValidationError(
            f"{what}: column {column!r} has {int(negative.sum())} negative id(s), e.g. {int(ids[negative][0])}; "
            "expected ids >= 0"
        )
    return ids


def _check_frames(frames: Mapping[str, pd.DataFrame], columns: Sequence[str] = INTERACTION_COLUMNS) -> None:
    if not isinstance(frames, Mapping) or not frames:
        raise ConfigError("frames must be a non-empty mapping of matrix name -> interactions DataFrame")
    for name, df in frames.items():
        require_columns(df, columns, f"interaction matrix {name!r}")


def _pair_keys(users: np.ndarray, videos: np.ndarray, n_videos: int) -> np.ndarray:
    """One int64 key per (user, video) pair: user * n_videos + video."""
    return users * np.int64(n_videos) + videos


def unique_keys(keys: np.ndarray, space: int | None = None) -> np.ndarray:
    """Sorted unique values of non-negative integer ``keys`` (all below ``space``).

    A boolean bitmap over ``range(space)`` makes this one O(n) pass when the key space is at most
    :data:`BITMAP_MAX_KEYS` (the 77M (user, video) cells of KuaiRec's big matrix take 77 MB); larger key
    spaces fall back to a sort.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    if space is None:
        space = int(keys.max()) + 1
    if space <= BITMAP_MAX_KEYS:
        seen = np.zeros(space, dtype=bool)
        seen[keys] = True
        return np.flatnonzero(seen)
    return np.unique(keys)


def _unique_pairs(df: pd.DataFrame, n_videos: int | None = None) -> tuple[np.ndarray, int]:
    """Sorted unique (user, video) keys (user * n_videos + video) of ``df`` and the ``n_videos`` used."""
    users = _ids(df, "user_id", "interactions")
    videos = _ids(df, "video_id", "interactions")
    if n_videos is None:
        n_videos = int(videos.max()) + 1 if len(videos) else 1
    if len(users) == 0:
        return np.zeros(0, dtype=np.int64), n_videos
    space = (int(users.max()) + 1) * n_videos
    return unique_keys(_pair_keys(users, videos, n_videos), space), n_videos


def count_unique_pairs(df: pd.DataFrame) -> int:
    """Number of distinct (user_id, video_id) pairs of an interaction frame."""
    require_columns(df, ["user_id", "video_id"], "count_unique_pairs")
    return len(_unique_pairs(df)[0])


def _in_sorted(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """Whether each needle occurs in the sorted ``haystack`` (binary search, O(m log n))."""
    if len(haystack) == 0:
        return np.zeros(len(needles), dtype=bool)
    where = np.minimum(np.searchsorted(haystack, needles), len(haystack) - 1)
    return haystack[where] == needles


def _count_by_id(ids: np.ndarray, name: str, index_name: str) -> pd.Series:
    """Occurrences of each present id (ids absent from ``ids`` are left out), sorted by id."""
    if len(ids) and int(ids.max()) < BITMAP_MAX_KEYS:
        counts = np.bincount(ids)
        present = np.flatnonzero(counts)
        counts = counts[present]
    else:
        present, counts = np.unique(ids, return_counts=True)
    return pd.Series(counts.astype(np.int64), index=pd.Index(present, name=index_name), name=name)


def _local_days(timestamps: np.ndarray) -> np.ndarray:
    """Asia/Shanghai day numbers (days since 1970-01-01 local) of finite Unix-second timestamps."""
    return np.floor((timestamps + SHANGHAI_UTC_OFFSET_S) / SECONDS_PER_DAY).astype(np.int64)


def _day_string(day: int) -> str:
    return str((np.datetime64(0, "D") + np.int64(day)).astype("datetime64[D]"))


def _time_stats(df: pd.DataFrame) -> dict[str, Any]:
    timestamps = df["timestamp"].to_numpy(dtype=np.float64)
    timed = np.isfinite(timestamps)
    out: dict[str, Any] = {
        "untimed_share": float(1.0 - timed.mean()) if len(timestamps) else float("nan"),
        "first_day": None,
        "last_day": None,
        "span_days": 0,
    }
    if timed.any():
        first, last = _local_days(np.array([timestamps[timed].min(), timestamps[timed].max()]))
        out.update(first_day=_day_string(first), last_day=_day_string(last), span_days=int(last - first + 1))
    return out


def _basic_stats(df: pd.DataFrame) -> dict[str, Any]:
    users = _ids(df, "user_id", "interactions")
    videos = _ids(df, "video_id", "interactions")
    n_users = len(unique_keys(users))
    n_videos = len(unique_keys(videos))
    cells = n_users * n_videos
    stats: dict[str, Any] = {
        "users": n_users,
        "videos": n_videos,
        "interactions": len(df),
        "density": len(df) / cells if cells else float("nan"),
    }
    stats.update(_time_stats(df))
    return stats


# ------------------------------------------------------------------------------------------- loading
def _default_data_dir() -> Path:
    """The real files under data/raw when present, else the simulated ones (sasrec.prepare's rule)."""
    from sasrec.data.preparation.sources import default_data_dir

    return default_data_dir()


def load_matrices_with_reports(
    data_dir: str | Path | None = None, names: Sequence[str] = ("big", "small"), *, cache: bool = True
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Load and clean the named matrices; return ``(frames, cleaning_reports)`` keyed by "big" / "small".

    Args:
        data_dir: folder holding the KuaiRec files (searched by :func:`sasrec.kuairec.find_file`); defaults
            to data/raw when it holds the real files, else data/simulated.
        names: which matrices to load, among "big" and "small".
        cache: reuse / write the parsed-table parquet cache of :func:`sasrec.kuairec.read_interactions`.

    Raises:
        MissingDataError: a requested matrix file is absent.
    """
    from sasrec.data.kuairec.cleaning import load_interactions
    from sasrec.data.kuairec.readers import find_file

    folder = paths.resolve(data_dir) if data_dir is not None else _default_data_dir()
    unknown = [n for n in names if n not in MATRIX_FILES]
    if unknown:
        raise ConfigError(f"names: unknown matrix name(s) {unknown}; expected some of {list(MATRIX_FILES)}")
    frames: dict[str, pd.DataFrame] = {}
    reports: dict[str, Any] = {}
    for name in names:
        path = find_file(folder, MATRIX_FILES[name])
        if path is None:
            raise MissingDataError(
                f"{MATRIX_FILES[name]} not found under {folder}; run `make data` (real KuaiRec 2.0) "
                "or `make simulate` (KuaiRec-shaped simulator) first"
            )
        frames[name], reports[name] = load_interactions(path, cache=cache)
    return frames, reports


def load_matrices(
    data_dir: str | Path | None = None, names: Sequence[str] = ("big", "small"), *, cache: bool = True
) -> dict[str, pd.DataFrame]:
    """Load the cleaned big and small matrices as ``{"big": df, "small": df}`` (see load_matrices_with_reports)."""
    return load_matrices_with_reports(data_dir, names, cache=cache)[0]


def data_source(data_dir: str | Path | None = None) -> str:
    """Describe where the data come from: "KuaiRec 2.0 (real)" or the simulator's scale and seed.

    Raises:
        MissingDataError: the folder holds neither a simulation.json nor a small_matrix.csv.
    """
    from sasrec.data.kuairec.readers import find_file
    from sasrec.data.simulator.api import is_simulated

    folder = paths.resolve(data_dir) if data_dir is not None else _default_data_dir()
    if is_simulated(folder):
        meta_path = find_file(folder, "simulation.json") or folder / "simulation.json"
        try:
            meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataValidationError(f"{meta_path}: cannot read the simulation metadata ({exc})") from None
        if not isinstance(meta, dict):
            raise DataValidationError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
        return f"KuaiRec-shaped simulator (scale {meta.get('scale', '?')}, seed {meta.get('seed', '?')})"
    if (
        find_file(folder, MATRIX_FILES["small"]) is not None
        or find_file(folder, MATRIX_FILES["big"]) is not None
    ):
        return "KuaiRec 2.0 (real)"
    raise MissingDataError(
        f"no KuaiRec matrices under {folder}; run `make data` (real) or `make simulate` (simulator) first"
    )


# ------------------------------------------------------------------------------------------ summaries
def watch_ratio_shares(df: pd.DataFrame) -> dict[str, float]:
    """Shares of rows by watch_ratio threshold, as in KUAIREC.md's table, plus the protocols' cut-offs.

    Keys: rows, gt2 (the paper's positive, Gao et al. 2022), ge1, lt05, gt05, gt07 (the original project's
    "liked"), gt09, gt5, median_le5 (median of rows with watch_ratio <= 5), mean, max. Rows with a missing
    watch_ratio are ignored.
    """
    require_columns(df, ["watch_ratio"], "watch_ratio_shares")
    ratio = df["watch_ratio"].to_numpy(dtype=np.float64)
    ratio = ratio[np.isfinite(ratio)]
    if len(ratio) == 0:
        nan = float("nan")
        return dict.fromkeys(
            ("gt2", "ge1", "lt05", "gt05", "gt07", "gt09", "gt5", "median_le5", "mean", "max"), nan
        ) | {"rows": 0}
    at_most_5 = ratio[ratio <= 5.0]
    return {
        "rows": int(len(ratio)),
        "gt2": float((ratio > 2.0).mean()),
        "ge1": float((ratio >= 1.0).mean()),
        "lt05": float((ratio < 0.5).mean()),
        "gt05": float((ratio > 0.5).mean()),
        "gt07": float((ratio > 0.7).mean()),
        "gt09": float((ratio > 0.9).mean()),
        "gt5": float((ratio > 5.0).mean()),
        "median_le5": float(np.median(at_most_5)) if len(at_most_5) else float("nan"),
        "mean": float(ratio.mean()),
        "max": float(ratio.max()),
    }


def interactions_per_user(df: pd.DataFrame) -> pd.Series:
    """Rows per user (index user_id, only users with rows), sorted by user id."""
    require_columns(df, ["user_id"], "interactions_per_user")
    return _count_by_id(_ids(df, "user_id", "interactions"), "interactions", "user_id")


def interactions_per_video(df: pd.DataFrame) -> pd.Series:
    """Rows per video (index video_id, only videos with rows), sorted by video id."""
    require_columns(df, ["video_id"], "interactions_per_video")
    return _count_by_id(_ids(df, "video_id", "interactions"), "interactions", "video_id")


def _distinct_partners(df: pd.DataFrame, by: str) -> pd.Series:
    keys, n_videos = _unique_pairs(df)
    ids = keys // n_videos if by == "user_id" else keys % n_videos
    return _count_by_id(ids, "distinct", by)


def per_user_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Describe-style table (count, mean, std, min, quartiles, max) of interactions and distinct videos per user."""
    require_columns(df, ["user_id", "video_id"], "per_user_counts")
    table = pd.DataFrame(
        {"interactions": interactions_per_user(df), "distinct videos": _distinct_partners(df, "user_id")}
    )
    return table.describe()


def per_video_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Describe-style table of interactions and distinct users per video."""
    require_columns(df, ["user_id", "video_id"], "per_video_counts")
    table = pd.DataFrame(
        {"interactions": interactions_per_video(df), "distinct users": _distinct_partners(df, "video_id")}
    )
    return table.describe()


def matrix_summary(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per matrix: users, videos, interactions, density, unique pairs, repeat and untimed shares, span.

    ``density`` is rows / (users x videos) as the KuaiRec paper reports it; ``pair_density`` counts each
    (user, video) pair once; ``repeat_share`` is the share of rows whose pair already occurred in an
    earlier row (repeat views and exact duplicates).
    """
    _check_frames(frames)
    rows = []
    for name, df in frames.items():
        stats = _basic_stats(df)
        n_pairs = count_unique_pairs(df)
        cells = stats["users"] * stats["videos"]
        rows.append(
            {
                "matrix": name,
                "users": stats["users"],
                "videos": stats["videos"],
                "interactions": stats["interactions"],
                "density": stats["density"],
                "unique_pairs": n_pairs,
                "pair_density": n_pairs / cells if cells else float("nan"),
                "repeat_share": 1.0 - n_pairs / len(df) if len(df) else float("nan"),
                "untimed_share": stats["untimed_share"],
                "first_day": stats["first_day"],
                "last_day": stats["last_day"],
                "span_days": stats["span_days"],
            }
        )
    return pd.DataFrame(rows)


def matrix_statistics(df: pd.DataFrame) -> dict[str, Any]:
    """The statistics of :data:`REAL_STATS` computed on one matrix (same keys)."""
    require_columns(df, INTERACTION_COLUMNS, "matrix_statistics")
    stats = _basic_stats(df)
    shares = watch_ratio_shares(df)
    for key in ("gt2", "ge1", "lt05", "median_le5", "gt5"):
        stats[f"wr_{key}"] = shares[key]
    per_user = interactions_per_user(df).to_numpy()
    empty = len(per_user) == 0
    stats.update(
        user_mean=float("nan") if empty else float(per_user.mean()),
        user_median=float("nan") if empty else float(np.median(per_user)),
        user_min=0 if empty else int(per_user.min()),
        user_max=0 if empty else int(per_user.max()),
    )
    return {key: stats[key] for key in REAL_STATS["big"]}


def compare_with_real(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Side-by-side table of this data's statistics and the published real KuaiRec figures.

    Columns: statistic, matrix, this data, real KuaiRec, relative difference ((this - real) / real; NaN
    where the real figure is unpublished or not numeric). Matrices other than "big" / "small" get no real
    figure. Value columns are of object dtype because they mix counts, shares and dates.
    """
    _check_frames(frames)
    records = []
    for name, df in frames.items():
        ours = matrix_statistics(df)
        real = REAL_STATS.get(name, {})
        for key, label in STAT_LABELS.items():
            mine, theirs = ours[key], real.get(key)
            numeric = isinstance(mine, int | float) and isinstance(theirs, int | float)
            relative = (mine - theirs) / theirs if numeric and theirs != 0 else float("nan")
            records.append(
                {
                    "statistic": label,
                    "matrix": name,
                    "this data": mine,
                    "real KuaiRec": theirs,
                    "relative difference": float(relative),
                }
            )
    table = pd.DataFrame(records)
    table["this data"] = table["this data"].astype(object)
    table["real KuaiRec"] = table["real KuaiRec"].astype(object)
    return table


def daily_activity(df: pd.DataFrame) -> pd.DataFrame:
    """Interactions and distinct active users per Asia/Shanghai calendar day (untimed rows left out).

    Every day from the first to the last is listed, days without rows with zeros. Columns: date
    (datetime64, local midnight, no time zone), interactions, users.
    """
    require_columns(df, ["user_id", "timestamp"], "daily_activity")
    timestamps = df["timestamp"].to_numpy(dtype=np.float64)
    timed = np.isfinite(timestamps)
    if not timed.any():
        return pd.DataFrame(
            {
                "date": pd.Series([], dtype="datetime64[ns]"),
                "interactions": pd.Series([], dtype=np.int64),
                "users": pd.Series([], dtype=np.int64),
            }
        )
    days = _local_days(timestamps[timed])
    first = int(days.min())
    offsets = days - first  # (n_timed,) day index from the first day
    n_days = int(offsets.max()) + 1
    users = _ids(df, "user_id", "daily_activity")[timed]
    n_users = int(users.max()) + 1
    day_user = unique_keys(offsets * np.int64(n_users) + users, n_days * n_users)  # one key per (day, user)
    return pd.DataFrame(
        {
            "date": pd.to_datetime((first + np.arange(n_days)) * SECONDS_PER_DAY, unit="s"),
            "interactions": np.bincount(offsets, minlength=n_days).astype(np.int64),
            "users": np.bincount(day_user // n_users, minlength=n_days).astype(np.int64),
        }
    )


def tag_frequencies(item_categories: pd.DataFrame, df: pd.DataFrame | None = None) -> pd.DataFrame:
    """Videos (and, given ``df``, interactions) per category tag.

    Args:
        item_categories: video_id and feat (list of int tags) per video, as read_item_categories returns.
        df: optional interactions; each row counts once for every tag of its video.

    Returns:
        One row per tag, sorted by tag: tag, videos, video_share (of all videos listed), and with ``df``
        interactions, interaction_share (of all rows). Shares sum above 1 as videos carry 1-4 tags.
    """
    require_columns(item_categories, ["video_id", "feat"], "item_categories")
    exploded = item_categories[["video_id", "feat"]].explode("feat").dropna(subset=["feat"])
    try:
        tags = pd.to_numeric(exploded["feat"], errors="raise").to_numpy()
    except (TypeError, ValueError):
        bad = item_categories["feat"].iloc[0] if len(item_categories) else None
        raise DataValidationError(
            f"item_categories: column 'feat' must hold lists of integer tags (e.g. [27, 9]); got values such "
            f"as {bad!r} in {len(item_categories)} rows: parse it with sasrec.kuairec.read_item_categories"
        ) from None
    if len(tags) and (not np.all(np.equal(np.mod(tags, 1), 0)) or tags.min() < 0):
        raise DataValidationError(
            f"item_categories: tags must be non-negative integers; got e.g. {tags[(np.mod(tags, 1) != 0) | (tags < 0)][:3]}"
        )
    tags = tags.astype(np.int64)
    videos = _ids(exploded, "video_id", "item_categories")
    n_tags = int(tags.max()) + 1 if len(tags) else 0
    n_videos_total = int(item_categories["video_id"].nunique())
    pairs = pd.unique(videos * np.int64(max(n_tags, 1)) + tags)  # a tag listed twice for a video counts once
    pair_videos, pair_tags = pairs // max(n_tags, 1), pairs % max(n_tags, 1)
    video_counts = np.bincount(pair_tags, minlength=n_tags)
    present = np.flatnonzero(video_counts)
    table = pd.DataFrame({"tag": present.astype(np.int64), "videos": video_counts[present].astype(np.int64)})
    table["video_share"] = table["videos"] / n_videos_total if n_videos_total else np.nan
    if df is not None:
        require_columns(df, ["video_id"], "tag_frequencies interactions")
        rows_video = _ids(df, "video_id", "interactions")
        size = max(
            int(rows_video.max()) + 1 if len(rows_video) else 0,
            int(pair_videos.max()) + 1 if len(pairs) else 0,
        )
        per_video = np.bincount(rows_video, minlength=size)  # (size,) rows per video id
        per_tag = np.bincount(pair_tags, weights=per_video[pair_videos], minlength=n_tags)
        table["interactions"] = per_tag[present].astype(np.int64)
        table["interaction_share"] = table["interactions"] / len(df) if len(df) else np.nan
    return table


def side_information_summary(user_features: pd.DataFrame) -> pd.DataFrame:
    """One row per user-feature column: dtype, distinct values, missing share, most common value and its share.

    Numeric columns also get min and max (NaN for text columns).
    """
    if not isinstance(user_features, pd.DataFrame) or user_features.shape[1] == 0:
        raise DataValidationError("user_features: expected a DataFrame with at least one column")
    n_rows = len(user_features)
    records = []
    for column in user_features.columns:  # a fixed set of about 31 columns
        values = user_features[column]
        counts = values.value_counts(dropna=True)
        numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
        records.append(
            {
                "column": column,
                "dtype": str(values.dtype),
                "distinct": int(values.nunique(dropna=True)),
                "missing_share": float(values.isna().mean()) if n_rows else float("nan"),
                "most_common": counts.index[0] if len(counts) else None,
                "most_common_share": float(counts.iloc[0] / n_rows) if len(counts) else float("nan"),
                "min": float(values.min()) if numeric and len(counts) else float("nan"),
                "max": float(values.max()) if numeric and len(counts) else float("nan"),
            }
        )
    table = pd.DataFrame(records)
    table["most_common"] = table["most_common"].astype(object)
    return table


def big_vs_small(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Overlap checks between the big (training) and small (evaluation) matrices.

    KuaiRec's design (Gao et al. 2022): every small-matrix user and video is in the big matrix, and no
    (user, video) pair of the small matrix is in the big one. Columns: check, count, of, share, expected,
    ok (None for purely informative rows).
    """
    _check_frames(frames, ("user_id", "video_id"))
    if "big" not in frames or "small" not in frames:
        raise ConfigError(f"big_vs_small needs frames named 'big' and 'small'; got {list(frames)}")
    big, small = frames["big"], frames["small"]
    big_users, small_users = (unique_keys(_ids(f, "user_id", n)) for f, n in ((big, "big"), (small, "small")))
    big_videos, small_videos = (
        unique_keys(_ids(f, "video_id", n)) for f, n in ((big, "big"), (small, "small"))
    )
    n_videos = int(max(big_videos.max(initial=-1), small_videos.max(initial=-1))) + 1
    big_pairs, _ = _unique_pairs(big, n_videos)
    small_pairs, _ = _unique_pairs(small, n_videos)

    def row(check: str, count: int, of: int, expected: str, ok: bool | None) -> dict[str, Any]:
        return {
            "check": check,
            "count": int(count),
            "of": int(of),
            "share": count / of if of else float("nan"),
            "expected": expected,
            "ok": ok,
        }

    users_found = int(_in_sorted(big_users, small_users).sum())
    videos_found = int(_in_sorted(big_videos, small_videos).sum())
    pairs_found = int(_in_sorted(big_pairs, small_pairs).sum())
    records = [
        row(
            "small users found in big", users_found, len(small_users), "all", users_found == len(small_users)
        ),
        row(
            "small videos found in big",
            videos_found,
            len(small_videos),
            "all",
            videos_found == len(small_videos),
        ),
        row("small (user, video) pairs also in big", pairs_found, len(small_pairs), "0", pairs_found == 0),
        row("big users also in small", users_found, len(big_users), "informative", None),
        row("big videos also in small", videos_found, len(big_videos), "informative", None),
    ]
    if "timestamp" in big.columns and "timestamp" in small.columns:
        big_ts = big["timestamp"].to_numpy(dtype=np.float64)
        small_ts = small["timestamp"].to_numpy(dtype=np.float64)
        big_ts, small_ts = big_ts[np.isfinite(big_ts)], small_ts[np.isfinite(small_ts)]
        if len(big_ts) and len(small_ts):
            small_days = np.unique(_local_days(small_ts))
            lo, hi = _local_days(np.array([big_ts.min(), big_ts.max()]))
            inside = int(((small_days >= lo) & (small_days <= hi)).sum())
            records.append(
                row("small days within big's time span", inside, len(small_days), "informative", None)
            )
    table = pd.DataFrame(records)
    table["ok"] = table["ok"].astype(object)
    return table


def activity_buckets(
    n_history: pd.Series, edges: Sequence[float] | None = None, quantiles: int = 4
) -> pd.Series:
    """Bucket users by history length with readable labels such as "1-12", "13-40", ">= 41".

    Args:
        n_history: history length (or any activity count) per user; NaN stays NaN.
        edges: explicit bucket edges e0 < e1 < ...; bucket i holds values in (e_i, e_{i+1}] (e0 is
            exclusive; np.inf allowed as the last edge). Default: ``quantiles`` equal-frequency buckets.
        quantiles: number of quantile buckets when ``edges`` is None (fewer when values tie).

    Returns:
        An ordered categorical Series aligned with ``n_history`` (named "activity_bucket").
    """
    if not isinstance(n_history, pd.Series):
        n_history = pd.Series(n_history)
    values = pd.to_numeric(n_history, errors="coerce").astype(np.float64)
    finite = values[np.isfinite(values)].to_numpy()
    integral = bool(len(finite) == 0 or np.all(np.mod(finite, 1) == 0))
    if edges is None:
        if quantiles < 1:
            raise ConfigError(f"quantiles must be >= 1, got {quantiles}")
        if len(finite) == 0:
            cuts = np.array([0.0, 1.0])
        else:
            inner = np.quantile(finite, np.linspace(0, 1, quantiles + 1)[1:-1])
            inner = np.floor(inner) if integral else inner
            lowest = finite.min() - 1 if integral else finite.min()
            cuts = np.unique(np.concatenate([[lowest], inner, [finite.max()]]))
            cuts = cuts[(cuts >= lowest) & (cuts <= finite.max())]
            if len(cuts) < 2:
                cuts = np.array([lowest, finite.max()])
    else:
        cuts = np.asarray(edges, dtype=np.float64)
        if cuts.ndim != 1 or len(cuts) < 2 or np.any(np.diff(cuts) <= 0):
            raise ConfigError(f"edges must be at least two strictly increasing numbers; got {list(edges)}")
    closed_first = edges is None and not integral  # quantile edges of real values start at the minimum
    labels = [_bucket_label(lo, hi, integral) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]
    if closed_first:
        labels[0] = "[" + labels[0][1:]
    buckets = pd.cut(values, bins=cuts, labels=labels, right=True, ordered=True, include_lowest=closed_first)
    return pd.Series(buckets, index=n_history.index, name="activity_bucket")


def _bucket_label(lo: float, hi: float, integral: bool) -> str:
    if integral:
        first = int(np.floor(lo)) + 1
        if np.isinf(hi):
            return f">= {first}"
        last = int(np.floor(hi))
        return str(first) if first == last else f"{first}-{last}"
    if np.isinf(hi):
        return f"> {lo:g}"
    return f"({lo:g}, {hi:g}]"
