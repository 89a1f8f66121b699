"""Simulated ``item_daily_features.csv``: one row per video and day, counters from the big matrix's views.

A video has a row for every day of the big matrix's span from its upload day on (the upload precedes its
first view). Static attributes are constant per video: the author (authors specialise in tags and are a
refinement of the simulator's authors, so a blocked author of the small matrix is a set of whole
authors here), video type, upload date and type, visibility, the duration the matrices use, frame size,
music and a video tag. The counters of a day follow the big matrix's rows dated that day: play_cnt is
``daily_play_scale`` times those rows (exact), play_user_num the same factor times the distinct users;
complete, valid, long and short plays, play time and play progress come from the same rows; likes,
comments, follows, shares and collections are binomial draws whose rates grow with the rows' watch_ratio
(and with a per-video likability).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from scipy.special import expit
from scipy.stats import pearsonr, spearmanr

from sasrec.data import kuairec
from sasrec.data.simulator.calibration import BIG_SPAN, N_TAGS, TAG_FREQUENCY, SideFileParams
from sasrec.data.simulator.timelines import _local_days, _local_midnight_ms, _yyyymmdd_of_days
from sasrec.data.simulator.world import _World

DAILY_COLUMNS = tuple(kuairec.OFFICIAL_FILES["item_daily_features.csv"].column_names)
UNKNOWN_ID, UNKNOWN_NAME = -124, "UNKNOWN"
#: (width, height) of the videos and their shares.
FRAME_SIZES = ((720, 1280), (1080, 1920), (540, 960), (576, 1024), (1280, 720), (1920, 1080), (720, 720))
FRAME_SHARES = (0.6, 0.12, 0.08, 0.06, 0.06, 0.03, 0.05)
#: upload_type of short and long (> 57 s) videos.
SHORT_UPLOADS = (
    ("ShortImport", 0.55),
    ("ShortCamera", 0.3),
    ("PictureSet", 0.07),
    ("FollowShoot", 0.05),
    ("Kmovie", 0.03),
)
LONG_UPLOADS = (("LongImport", 0.6), ("LongCamera", 0.25), ("Web", 0.15))
LONG_VIDEO_MS = 57_000
#: A valid play lasts at least 3 s or completes the video; a short play lasts under 3 s; a long play lasts
#: the whole video (at most 18 s long) or at least 18 s (KuaiComt's long_view definition).
VALID_PLAY_MS, LONG_PLAY_MS = 3_000, 18_000


def _span_days() -> np.ndarray:
    """Days since 1970-01-01 of the big matrix's span (local days)."""
    first = _local_days(np.array([_local_midnight_ms(BIG_SPAN[0])]))[0]
    last = _local_days(np.array([_local_midnight_ms(BIG_SPAN[1])]))[0]
    return np.arange(first, last + 1)


def _choice(labels: tuple[tuple[str, float], ...], size: int, rng: np.random.Generator) -> np.ndarray:
    names = np.array([name for name, _ in labels], dtype=object)
    shares = np.array([share for _, share in labels])
    return names[rng.choice(len(names), size=size, p=shares / shares.sum())]


def _authors(world: _World, params: SideFileParams, rng: np.random.Generator) -> np.ndarray:
    """(V,) author ids: the simulator's authors split by the main tag (a few by a random tag), renumbered."""
    key_tag = np.where(
        rng.random(world.n_videos) < params.author_tag_noise,
        rng.choice(N_TAGS, size=world.n_videos, p=TAG_FREQUENCY / TAG_FREQUENCY.sum()),
        world.primary,
    )
    _, index = np.unique(world.author * N_TAGS + key_tag, return_inverse=True)
    return rng.permutation(int(index.max()) + 1)[index]  # dense ids in random order


def _static(
    world: _World,
    first_view: np.ndarray,
    tag_names: np.ndarray,
    params: SideFileParams,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Per-video attributes (constant over the video's rows) and its upload day (days since 1970)."""
    n_videos = world.n_videos
    fresh = rng.random(n_videos) < params.fresh_upload_share
    age = np.where(
        fresh,
        rng.integers(0, 4, n_videos),
        1 + np.floor(rng.exponential(params.mean_upload_age_days, n_videos)),
    ).astype(np.int64)
    upload_day = first_view - age  # (V,) never after the first view
    long = world.duration_ms > LONG_VIDEO_MS
    upload_type = np.where(long, _choice(LONG_UPLOADS, n_videos, rng), _choice(SHORT_UPLOADS, n_videos, rng))
    upload_type = np.where(rng.random(n_videos) < 0.005, UNKNOWN_NAME, upload_type)
    frame = np.asarray(FRAME_SIZES)[rng.choice(len(FRAME_SIZES), size=n_videos, p=np.asarray(FRAME_SHARES))]
    n_music = max(n_videos // 2, 8)
    music_ids = 1 + rng.choice(1_000_000, size=n_music, replace=False)
    weights = 1.0 / (np.arange(n_music) + 2.0)
    music = music_ids[rng.choice(n_music, size=n_videos, p=weights / weights.sum())]
    tag_ids = 1 + rng.choice(3000, size=N_TAGS, replace=False)  # the 31 video tags' ids
    video_tag = np.where(
        rng.random(n_videos) < params.video_tag_noise,
        rng.choice(N_TAGS, size=n_videos, p=TAG_FREQUENCY / TAG_FREQUENCY.sum()),
        world.primary,
    )
    tag_unknown = rng.random(n_videos) < params.video_tag_unknown_share
    upload_dt = np.datetime_as_string(upload_day.astype("datetime64[D]"), unit="D").astype(object)
    return {
        "author_id": _authors(world, params, rng),
        "video_type": np.where(rng.random(n_videos) < 0.03, "AD", "NORMAL").astype(object),
        "upload_dt": upload_dt,
        "upload_type": upload_type,
        "visible_status": np.where(rng.random(n_videos) < 0.002, UNKNOWN_NAME, "public").astype(object),
        "video_duration": world.duration_ms,
        "video_width": frame[:, 0],
        "video_height": frame[:, 1],
        "music_id": music,
        "video_tag_id": np.where(tag_unknown, UNKNOWN_ID, tag_ids[video_tag]),
        "video_tag_name": np.where(tag_unknown, UNKNOWN_NAME, tag_names[video_tag]).astype(object),
        "upload_day": upload_day,
    }


def _view_sums(
    big: dict[str, np.ndarray], cell: np.ndarray, n_cells: int, n_users: int
) -> dict[str, np.ndarray]:
    """Per (video, day) cell: views, distinct users, and the sums of each view flag (and of users with it)."""
    ratio = big["watch_ratio"]
    play = big["play_duration"]
    duration = big["video_duration"]
    flags = {
        "complete": ratio >= 1.0,
        "valid": (play >= VALID_PLAY_MS) | (ratio >= 1.0),
        "long": play >= np.minimum(duration, LONG_PLAY_MS),
        "short": play < VALID_PLAY_MS,
    }
    sums = {"views": np.bincount(cell, minlength=n_cells).astype(np.int64)}
    for name, flag in flags.items():  # four flags
        sums[name] = np.bincount(cell, weights=flag, minlength=n_cells).astype(np.int64)
    sums["play_ms"] = np.bincount(cell, weights=play, minlength=n_cells)
    sums["progress"] = np.bincount(cell, weights=np.minimum(ratio, 1.0), minlength=n_cells)
    sums["low"] = np.bincount(cell, weights=ratio < 0.3, minlength=n_cells)
    # Distinct users per cell (and per cell and flag): one sort of (cell, user) keys.
    key = cell * n_users + big["user_id"]
    order = np.argsort(key)  # the order inside a (cell, user) group does not matter
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])  # (G,) one per (cell, user)
    group_cell = sorted_key[starts] // n_users
    sums["users"] = np.bincount(group_cell, minlength=n_cells).astype(np.int64)
    for name, flag in flags.items():
        any_flag = np.maximum.reduceat(flag[order], starts) if len(starts) else np.zeros(0, dtype=bool)
        sums[f"{name}_users"] = np.bincount(group_cell, weights=any_flag, minlength=n_cells).astype(np.int64)
    return sums


def _counters(
    sums: dict[str, np.ndarray],
    like_p: np.ndarray,
    ctr: np.ndarray,
    params: SideFileParams,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """The daily counters of every row from its cell's view sums (rows: cells of the written days)."""
    k = params.daily_play_scale
    views = sums["views"]
    play = k * views
    users = k * sums["users"]
    watched = views > 0
    low = np.divide(sums["low"], views, out=np.zeros(len(views)), where=watched)

    def binomial(n: np.ndarray, p: np.ndarray | float) -> np.ndarray:
        return rng.binomial(n, np.clip(p, 0.0, 1.0))

    unplayed = rng.poisson(play * (1.0 / ctr - 1.0))  # shows without a play
    out: dict[str, np.ndarray] = {
        "show_cnt": play + unplayed,
        "show_user_num": users
        + binomial(unplayed, np.divide(users, play, out=np.zeros(len(play)), where=play > 0)),
        "play_cnt": play,
        "play_user_num": users,
        "play_duration": k * np.rint(sums["play_ms"]).astype(np.int64),
    }
    for name in ("complete", "valid", "long_time", "short_time"):  # four kinds of play
        flag = name.removesuffix("_time")
        out[f"{name}_play_cnt"] = k * sums[flag]
        out[f"{name}_play_user_num"] = k * sums[f"{flag}_users"]
    out["play_progress"] = np.round(
        np.divide(sums["progress"], views, out=np.full(len(views), np.nan), where=watched), 4
    )
    like = binomial(play, like_p)
    comment = binomial(play, 0.15 * like_p + 0.001)
    out["comment_stay_duration"] = np.where(
        comment > 0, np.rint(rng.gamma(np.maximum(comment, 1), 15_000.0)), 0
    ).astype(np.int64)
    click = binomial(like, 0.7)
    cancel_like = binomial(like, 0.03)
    direct = binomial(comment, 0.75)
    delete = binomial(comment, 0.01)
    comment_like = binomial(play, 0.1 * like_p + 0.0005)
    follow = binomial(play, 0.05 * like_p + 0.0003)
    cancel_follow = binomial(follow, 0.05)
    share = binomial(play, 0.08 * like_p + 0.0005)
    download = binomial(play, 0.002)
    report = binomial(play, 0.0002 + 0.002 * low)
    reduce_similar = binomial(play, 0.001 + 0.01 * low)
    collect = binomial(play, 0.2 * like_p + 0.0005)
    cancel_collect = binomial(collect, 0.05)
    out |= {
        "like_cnt": like,
        "like_user_num": binomial(like, 0.95),
        "click_like_cnt": click,
        "double_click_cnt": like - click,
        "cancel_like_cnt": cancel_like,
        "cancel_like_user_num": cancel_like,
        "comment_cnt": comment,
        "comment_user_num": binomial(comment, 0.85),
        "direct_comment_cnt": direct,
        "reply_comment_cnt": comment - direct,
        "delete_comment_cnt": delete,
        "delete_comment_user_num": delete,
        "comment_like_cnt": comment_like,
        "comment_like_user_num": binomial(comment_like, 0.9),
        "follow_cnt": follow,
        "follow_user_num": follow,
        "cancel_follow_cnt": cancel_follow,
        "cancel_follow_user_num": cancel_follow,
        "share_cnt": share,
        "share_user_num": binomial(share, 0.9),
        "download_cnt": download,
        "download_user_num": binomial(download, 0.95),
        "report_cnt": report,
        "report_user_num": report,
        "reduce_similar_cnt": reduce_similar,
        "reduce_similar_user_num": binomial(reduce_similar, 0.95),
        "collect_cnt": collect,
        "collect_user_num": collect,
        "cancel_collect_cnt": cancel_collect,
        "cancel_collect_user_num": cancel_collect,
    }
    return out


def _rank_correlations(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlations (0 when undefined)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"pearson": 0.0, "spearman": 0.0}
    return {
        "pearson": round(float(pearsonr(x, y)[0]), 4),
        "spearman": round(float(spearmanr(x, y)[0]), 4),
    }


def _leave_one_out_accuracy(group: np.ndarray, main: np.ndarray) -> tuple[float, int]:
    """Accuracy of predicting a video's main tag by the majority of the other videos of its group.

    Returns (accuracy, videos evaluated: those whose group has another video).
    """
    _, index = np.unique(group, return_inverse=True)
    table = np.bincount(index * N_TAGS + main, minlength=(index.max() + 1) * N_TAGS).reshape(-1, N_TAGS)
    others = table[index].copy()  # (V, 31)
    others[np.arange(len(main)), main] -= 1
    evaluated = others.sum(axis=1) > 0
    if not evaluated.any():
        return 0.0, 0
    return float(np.mean(others[evaluated].argmax(axis=1) == main[evaluated])), int(evaluated.sum())


def _daily_truth(
    world: _World,
    static: dict[str, np.ndarray],
    row_video: np.ndarray,
    row_day: np.ndarray,
    day: np.ndarray,
    counters: dict[str, np.ndarray],
    big: dict[str, np.ndarray],
    days: np.ndarray,
    params: SideFileParams,
) -> dict[str, Any]:
    """How much signal the daily file carries (figures of side_ground_truth.json)."""
    n_videos = world.n_videos
    play = counters["play_cnt"].astype(np.float64)
    like = counters["like_cnt"].astype(np.float64)
    video_play = np.bincount(row_video, weights=play, minlength=n_videos)
    video_like = np.bincount(row_video, weights=like, minlength=n_videos)
    views = np.bincount(big["video_id"], minlength=n_videos)
    mean_ratio = np.bincount(big["video_id"], weights=big["watch_ratio"], minlength=n_videos) / np.maximum(
        views, 1
    )
    seen = video_play > 0
    day_rows = play > 0
    cut = int(np.median(day))  # the day index of the median row
    before = row_day < cut
    play_before = np.bincount(row_video[before], weights=play[before], minlength=n_videos)
    play_after = video_play - play_before
    like_before = np.bincount(row_video[before], weights=like[before], minlength=n_videos)
    both = (play_before > 0) & (play_after > 0)
    like_rate_before = np.divide(like_before, play_before, out=np.zeros(n_videos), where=play_before > 0)
    like_rate_all = np.divide(video_like, video_play, out=np.zeros(n_videos), where=seen)
    author_accuracy, author_evaluated = _leave_one_out_accuracy(static["author_id"], world.primary)
    tag_known = static["video_tag_id"] != UNKNOWN_ID
    tag_accuracy, _ = _leave_one_out_accuracy(static["video_tag_id"][tag_known], world.primary[tag_known])
    return {
        "rows": len(row_video),
        "days": len(days),
        "videos": n_videos,
        "daily_play_scale": params.daily_play_scale,
        "play_cnt_over_scaled_big_rows": round(
            float(play.sum() / (params.daily_play_scale * len(big["video_id"]))), 6
        ),
        "like_per_play_vs_mean_watch_ratio_videos": _rank_correlations(like_rate_all[seen], mean_ratio[seen]),
        "like_per_play_vs_mean_watch_ratio_days": _rank_correlations(
            like[day_rows] / play[day_rows], mean_ratio[row_video[day_rows]]
        ),
        "median_row_date": int(_yyyymmdd_of_days(days[[cut]])[0]),
        "share_of_play_before_median_date": round(float(play[before].sum() / max(play.sum(), 1.0)), 4),
        "videos_with_plays_before_and_after_median_date": int(both.sum()),
        "play_before_vs_after_median_date": _rank_correlations(play_before[both], play_after[both]),
        "videos_whose_like_per_play_differs_before_median_date": int(
            np.sum((play_before > 0) & (np.abs(like_rate_before - like_rate_all) > 1e-12))
        ),
        "authors": int(len(np.unique(static["author_id"]))),
        "main_tag_from_author_accuracy_leave_one_out": round(author_accuracy, 4),
        "main_tag_from_author_videos_evaluated": author_evaluated,
        "main_tag_from_video_tag_accuracy_leave_one_out": round(tag_accuracy, 4),
    }


def _daily_table(
    world: _World,
    big: dict[str, np.ndarray],
    tag_names: np.ndarray,
    params: SideFileParams,
    rng: np.random.Generator,
) -> tuple[pa.Table, dict[str, Any]]:
    """The daily file's rows (official columns, sorted by video then date) and its ground truth.

    Args:
        world: the simulated world.
        big: the big matrix's columns as written (duplicates included; ``date`` the written yyyymmdd).
        tag_names: (31,) the video tag name of each tag.
    """
    days = _span_days()  # (D,)
    n_days, n_videos = len(days), world.n_videos
    table_dates = _yyyymmdd_of_days(days)
    lookup = np.full(int(table_dates[-1] - table_dates[0]) + 1, -1)
    lookup[table_dates - table_dates[0]] = np.arange(n_days)
    offset = np.clip(big["date"] - table_dates[0], 0, len(lookup) - 1)
    day = lookup[offset]  # (N,) written date -> day index
    if (day < 0).any() or not np.array_equal(table_dates[day], big["date"]):
        raise ValueError("big-matrix dates outside the span")  # never: the matrices keep to the span
    # The first view: the earliest written date or local day of a video's rows (every video has one).
    first_view = np.minimum(
        _local_days(_first_of(big["video_id"], big["unix_ms"], n_videos)),
        days[0] + _first_of(big["video_id"], day, n_videos),
    )  # (V,) days since 1970
    static = _static(world, first_view, tag_names, params, rng)
    start = np.clip(static["upload_day"] - days[0], 0, n_days - 1)  # (V,) first written day index
    n_rows = n_days - start
    row_video = np.repeat(np.arange(n_videos), n_rows)  # (R,)
    row_day = np.arange(int(n_rows.sum())) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows) + start[row_video]
    cell = big["video_id"] * n_days + day  # (N,)
    sums = _view_sums(big, cell, n_videos * n_days, world.n_users)
    row_cell = row_video * n_days + row_day
    if sums["views"].sum() != sums["views"][row_cell].sum():
        raise ValueError("a view falls before its video's first row")  # never: upload precedes every view
    likability = params.like_video_sd * rng.standard_normal(n_videos)  # (V,)
    like_p = expit(
        params.like_intercept
        + params.like_slope * np.log(big["watch_ratio"] + 0.05)
        + likability[big["video_id"]]
    )  # (N,)
    like_sum = np.bincount(cell, weights=like_p, minlength=n_videos * n_days)
    row_sums = {name: values[row_cell] for name, values in sums.items()}
    views = row_sums["views"]
    mean_like = np.divide(like_sum[row_cell], views, out=np.zeros(len(views)), where=views > 0)
    ctr = expit(0.4 + 0.4 * world.quality)[row_video]  # (R,) plays per show
    counters = _counters(row_sums, mean_like, ctr, params, rng)
    columns: dict[str, pa.Array] = {}
    for name in DAILY_COLUMNS:  # the official columns, in order
        if name == "video_id":
            values = row_video
        elif name == "date":
            values = table_dates[row_day]
        elif name in static:
            values = static[name][row_video]
        else:
            values = counters[name]
        if values.dtype == object:
            columns[name] = pa.array(values, pa.string())
        elif values.dtype.kind == "f":
            columns[name] = pa.array(values, pa.float64(), mask=np.isnan(values))
        else:
            columns[name] = pa.array(values, pa.int64())
    truth = _daily_truth(world, static, row_video, row_day, day, counters, big, days, params)
    truth["median_days_from_upload_to_first_view"] = float(np.median(first_view - static["upload_day"]))
    truth["videos_uploaded_before_the_span"] = int(np.sum(static["upload_day"] < days[0]))
    return pa.table(columns), truth


def _first_of(video: np.ndarray, values: np.ndarray, n_videos: int) -> np.ndarray:
    """(V,) the smallest of ``values`` over each video's rows (int64 max for a video without rows)."""
    first = np.full(n_videos, np.iinfo(np.int64).max)
    np.minimum.at(first, video, values)
    return first
