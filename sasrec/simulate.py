"""KuaiRec-shaped simulator: the study's embedded default data.

Writes files with the official names, columns, units and text formats of KuaiRec 2.0 (Gao et al.,
"KuaiRec: A Fully-Observed Dataset and Insights for Evaluating Recommender Systems", CIKM 2022): a sparse
``big_matrix.csv`` for training and a ~99.6%-dense ``small_matrix.csv`` for evaluation, ``item_categories.csv``
and ``user_features.csv``, plus two files the real archive lacks: ``ground_truth.parquet`` (the simulator's
expected watch_ratio of every small-matrix pair, for oracle upper bounds) and ``simulation.json``.

The generative process (sizes and marginals calibrated on the figures of ``../shared/KUAIREC.md``):

* Videos carry 1-4 of 31 tags, a duration, a quality and a long-tailed popularity. Videos of the same
  primary tag are laid out in *chains*; each video's likely successors are the next 1-3 videos of its chain,
  the same for every user (a first-order transition structure that a sequence model can learn).
* Users have tastes over the tags (two Dirichlet draws; the history drifts from the first to the second),
  a bias, and a liking for each chain (a series effect).
* ``big_matrix``: each user's history is a run of sessions; a session picks a tag from the user's current
  taste (or, for a share of sessions, from the overall tag mix), starts at a popularity-weighted video of
  that tag and walks along its chain; a user returning to a chain resumes where they left it, and past its
  end goes on in the next chain of the tag. A share of views are one-off trending videos (long tail).
  Small-matrix users walk only chains of videos outside the small matrix, so no small pair appears in
  the big matrix. Repeat views, exact duplicate rows and dates a day off the timestamp are added.
* ``small_matrix``: every small user sees (almost) every small video; the order visits short segments of
  the small videos' chains, segments of a tag clustered in time, so the order carries the same transitions.
* watch_ratio = Q(rho * x + sqrt(1 - rho^2) * eps): x is the rank-normalised user-video signal (taste . tags,
  quality, chain liking, user bias, shorter videos watched longer), eps standard normal noise, Q a
  monotone map calibrated per matrix to the real watch_ratio quantiles (heavy upper tail included).

Everything is vectorised with numpy (no loop over users or rows) and deterministic under the seed: the
same seed and scale give byte-identical files.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy.special import ndtri

from sasrec import kuairec, paths
from sasrec.cliutil import progress_enabled, str2bool
from sasrec.errors import ConfigError, DataValidationError, MissingDataError

#: Bump when the generated data change for a given seed and scale.
GENERATOR_VERSION = "1"
#: The scale of the embedded default data (1.0 reproduces the real sizes: ~12.5M big-matrix rows).
DEFAULT_SCALE: float = 0.2
MIN_SCALE, MAX_SCALE = 0.005, 2.0

REAL_USERS, REAL_VIDEOS = 7_176, 10_728
REAL_SMALL_USERS, REAL_SMALL_VIDEOS = 1_411, 3_327
N_TAGS = 31
#: How often each tag occurs in the real item_categories.csv (a marginal, used as the tag prior).
TAG_FREQUENCY = np.array(
    [24, 463, 216, 104, 164, 964, 912, 503, 1112, 696, 170, 2027, 534, 245, 63, 374]
    + [214, 350, 131, 686, 265, 29, 22, 39, 12, 468, 490, 31, 1360, 5, 22],
    dtype=np.float64,
)
#: Share of videos with 1, 2, 3 and 4 tags in the real item_categories.csv.
TAGS_PER_VIDEO_SHARE = np.array([8970, 1562, 185, 11], dtype=np.float64) / REAL_VIDEOS

_LOCAL_OFFSET_MS = 8 * 3600 * 1000  # Asia/Shanghai is UTC+8 without daylight saving since 1991
_DAY_MS = 86_400_000
BIG_SPAN = ("2020-06-23", "2020-09-10")  # inclusive local days
SMALL_SPAN = ("2020-07-04", "2020-09-05")

#: Real per-user big-matrix interaction counts at scale 1 (KUAIREC.md).
REAL_BIG_USER_COUNTS = {"mean": 1746, "median": 1846, "min": 100, "max": 16015}

#: watch_ratio calibration knots per matrix: (standard normal quantile z, watch_ratio). Between knots
#: log(watch_ratio) is linear in z; above the last knot it continues with the last slope (heavy tail).
#: Knots put the real shares at the right quantiles: P(< 0.5), the median, P(>= 1), P(> 2), P(> 5).
RATIO_KNOTS: dict[str, tuple[tuple[float, float], ...]] = {
    "big_matrix": (
        (-5.0, 0.004),
        (-1.645, 0.06),
        (-1.036, 0.12),
        (-0.674, 0.27),
        (-0.361, 0.5),
        (0.0, 0.716),
        (0.418, 1.0),
        (0.842, 1.3),
        (1.442, 2.0),
        (2.366, 5.0),
        (3.09, 12.0),
        (3.719, 30.0),
        (4.753, 150.0),
    ),
    "small_matrix": (
        (-5.0, 0.005),
        (-1.645, 0.08),
        (-1.036, 0.18),
        (-0.604, 0.5),
        (0.0, 0.766),
        (0.456, 1.0),
        (0.9, 1.3),
        (1.681, 2.0),
        (2.576, 5.0),
        (3.29, 14.0),
        (4.265, 60.0),
        (4.753, 150.0),
    ),
}

#: The real watch_ratio statistics (KUAIREC.md, audit): shares and the median of rows <= 5.
REAL_CALIBRATION: dict[str, dict[str, float]] = {
    "big_matrix": {
        "share_gt_2": 0.0747,
        "share_ge_1": 0.338,
        "share_lt_0.5": 0.359,
        "median_le_5": 0.716,
        "share_gt_5": 0.009,
    },
    "small_matrix": {
        "share_gt_2": 0.0464,
        "share_ge_1": 0.324,
        "share_lt_0.5": 0.273,
        "median_le_5": 0.766,
        "share_gt_5": 0.005,
    },
}

INTERACTION_COLUMNS = tuple(kuairec.INTERACTION_COLUMNS)
GROUND_TRUTH_FILE = "ground_truth.parquet"
METADATA_FILE = "simulation.json"


@dataclass(frozen=True)
class SimulationParams:
    """Parameters of the generative process (recorded in ``simulation.json``).

    Attributes:
        taste_concentration: total Dirichlet concentration of a user's taste over the 31 tags (low: peaked).
        taste_drift: probability weight of the second taste at the end of a history (0: no drift).
        mean_chain_length: mean number of videos per chain (videos of one primary tag in a fixed order).
        mean_session_length: mean number of views per big-matrix session (geometric).
        step_probabilities: probabilities of moving 0 (an immediate repeat view), 1, 2 or 3 places along
            the chain between consecutive views of a session.
        exploration: share of big-matrix sessions whose tag follows the overall tag frequencies (the
            feed's exploration) instead of the user's taste.
        trending_share: share of big-matrix views (not session starts) that are one-off views of a video
            drawn from the whole catalogue by popularity ** trending_power (the feed's trending videos).
        trending_power: exponent sharpening the popularity of trending picks.
        popularity_sigma: log-normal spread of the video popularity weights (long tail).
        chain_popularity_sigma: log-normal spread of a popularity factor shared by a chain's videos.
        popularity_quality_corr: correlation of log popularity with quality.
        weight_taste, weight_quality, weight_chain, weight_user, weight_duration: weights of the
            standardised signal components (taste . tags, quality, user x chain liking, user bias, -log
            duration).
        signal_correlation: rho, the correlation of the latent watch_ratio score with the signal.
        small_segment_length: views per segment of a chain in the small matrix's order.
        small_segment_time_sd: spread of a tag's segments around the tag's time in a small-matrix history.
        small_local_noise: swaps of neighbours inside a small-matrix segment (sd, in chain places).
        blocked_share: share of small-matrix pairs missing (videos of authors the user blocked).
        mean_author_videos: videos per author.
        untimed_share: share of small-matrix rows without time, date and timestamp.
        duplicate_share: share of big-matrix rows written twice (exact duplicates).
        date_mismatch_share: share of big-matrix rows whose date is a day off the timestamp's local day.
        mean_gap_seconds: mean pause between consecutive views of a session.
    """

    taste_concentration: float = 6.0
    taste_drift: float = 0.6
    mean_chain_length: int = 24
    mean_session_length: float = 8.0
    step_probabilities: tuple[float, float, float, float] = (0.03, 0.77, 0.14, 0.06)
    exploration: float = 0.4
    trending_share: float = 0.1
    trending_power: float = 1.8
    popularity_sigma: float = 1.3
    chain_popularity_sigma: float = 1.0
    popularity_quality_corr: float = 0.5
    weight_taste: float = 0.8
    weight_quality: float = 1.0
    weight_chain: float = 1.0
    weight_user: float = 0.5
    weight_duration: float = 0.3
    signal_correlation: float = 0.8
    small_segment_length: int = 6
    small_segment_time_sd: float = 0.05
    small_local_noise: float = 0.6
    blocked_share: float = 0.0038
    mean_author_videos: float = 12.0
    untimed_share: float = 0.0389
    duplicate_share: float = 0.07
    date_mismatch_share: float = 0.00124
    mean_gap_seconds: float = 3.0


@dataclass
class _World:
    """Videos, users and the shared chain structure (internal)."""

    n_users: int
    n_videos: int
    tag_ids: np.ndarray  # (V, 4) tags of each video, padded with 0
    tag_weights: np.ndarray  # (V, 4) 1/k for a video's k tags, 0 for padding
    n_tags: np.ndarray  # (V,)
    primary: np.ndarray  # (V,) primary tag
    duration_ms: np.ndarray  # (V,)
    quality: np.ndarray  # (V,)
    popularity: np.ndarray  # (V,)
    author: np.ndarray  # (V,)
    small_users: np.ndarray  # sorted user ids of the small matrix
    small_videos: np.ndarray  # sorted video ids of the small matrix
    is_small_user: np.ndarray  # (U,) bool
    is_small_video: np.ndarray  # (V,) bool
    chain_members: np.ndarray  # (V,) videos, chain after chain, in chain order
    chain_start: np.ndarray  # (C,) first index of each chain in chain_members
    chain_length: np.ndarray  # (C,)
    chain_tag: np.ndarray  # (C,)
    ring_first: np.ndarray  # (C,) first chain of the chain's (small or not, primary tag) group
    ring_size: np.ndarray  # (C,) chains in that group
    chain_of: np.ndarray  # (V,)
    position_in_chain: np.ndarray  # (V,)
    taste_start: np.ndarray  # (U, 31)
    taste_end: np.ndarray  # (U, 31)
    user_bias: np.ndarray  # (U,)
    chain_liking: np.ndarray  # (U, C) float32


# ------------------------------------------------------------------------------------------ public API
def is_simulated(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a simulator output (its ``simulation.json``)."""
    return (Path(data_dir) / METADATA_FILE).is_file()


def load_ground_truth(data_dir: Path) -> pd.DataFrame:
    """The simulator's expected watch_ratio of every small-matrix pair.

    Returns:
        Columns user_id, video_id (int64) and expected_watch_ratio (float64), one row per small pair.

    Raises:
        MissingDataError: ``data_dir`` holds no ``ground_truth.parquet`` (not a simulator folder).
        DataValidationError: the file lacks a column.
    """
    path = Path(data_dir) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise MissingDataError(
            f"{path} does not exist; ground truth exists only for simulated data (`python -m sasrec simulate`)"
        )
    frame = pq.read_table(path).to_pandas()
    expected = ["user_id", "video_id", "expected_watch_ratio"]
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {missing}; expected the columns {expected}")
    return frame[expected]


def simulate(
    scale: float = DEFAULT_SCALE,
    seed: int = 0,
    out_dir: Path | None = None,
    *,
    progress: bool | None = None,
    params: SimulationParams | None = None,
) -> dict[str, Any]:
    """Generate KuaiRec-shaped data into ``out_dir`` (default ``sasrec.paths.simulated_dir()``).

    Args:
        scale: size relative to KuaiRec 2.0 (users, videos, small-matrix sides and per-user big-matrix
            counts are multiplied by it); 1.0 gives ~12.5M big-matrix rows.
        seed: random seed; the same seed and scale give byte-identical files.
        out_dir: output folder (created when missing).
        progress: show a progress bar (default: ``sasrec.cliutil.progress_enabled``).
        params: generative parameters (default :class:`SimulationParams`).

    Returns:
        Summary: out_dir, counts, watch_ratio shares of each matrix, seconds.

    Raises:
        ConfigError: scale outside [MIN_SCALE, MAX_SCALE], a negative seed, or ``out_dir`` holding
            interaction matrices that the simulator did not write (real data is never overwritten).
    """
    from tqdm.auto import tqdm

    _check_arguments(scale, seed)
    params = params or SimulationParams()
    out = Path(out_dir) if out_dir is not None else paths.simulated_dir()
    _check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).unlink(missing_ok=True)  # a run that fails leaves no stale metadata behind
    started = time.perf_counter()
    streams = np.random.SeedSequence([int(seed), 0x5A5EC]).spawn(8)
    rngs = [np.random.default_rng(s) for s in streams]

    bar = tqdm(total=7, desc="simulate", disable=not progress_enabled(progress), unit="step")
    try:
        bar.set_postfix_str("world")
        world = _make_world(scale, params, rngs[0])
        bar.update()
        bar.set_postfix_str("big matrix")
        big = _big_matrix(world, scale, params, rngs[1])
        bar.update()
        bar.set_postfix_str("small matrix")
        small, truth = _small_matrix(world, params, rngs[2])
        bar.update()
        # Simulator-only and side files first: the matrices (what loaders look for) come last.
        bar.set_postfix_str("side files")
        truth_table = pa.table(
            {
                "user_id": pa.array(truth[0], pa.int64()),
                "video_id": pa.array(truth[1], pa.int64()),
                "expected_watch_ratio": pa.array(truth[2], pa.float64()),
            }
        )
        with paths.atomic_path(out / GROUND_TRUTH_FILE) as tmp:
            pq.write_table(truth_table, tmp, compression="zstd")
        _write_item_categories(out / "item_categories.csv", world)
        _write_user_features(out / "user_features.csv", _user_features(world.n_users, rngs[3]))
        bar.update()
        bar.set_postfix_str("writing big_matrix.csv")
        _write_interactions(out / "big_matrix.csv", big, date_as_float=False)
        bar.update()
        bar.set_postfix_str("writing small_matrix.csv")
        _write_interactions(out / "small_matrix.csv", small, date_as_float=True)
        bar.update()
        counts = {
            "users": world.n_users,
            "videos": world.n_videos,
            "small_users": len(world.small_users),
            "small_videos": len(world.small_videos),
            "big_rows": len(big["user_id"]),
            "small_rows": len(small["user_id"]),
            "small_pairs_missing": len(world.small_users) * len(world.small_videos) - len(small["user_id"]),
            "chains": len(world.chain_start),
        }
        shares = {
            "big_matrix": watch_ratio_statistics(big["watch_ratio"]),
            "small_matrix": watch_ratio_statistics(small["watch_ratio"]),
        }
        metadata = {
            "simulated": True,
            "generator_version": GENERATOR_VERSION,
            "scale": float(scale),
            "seed": int(seed),
            "parameters": asdict(params),
            "counts": counts,
            "watch_ratio": shares,
            "spans": {"big_matrix": list(BIG_SPAN), "small_matrix": list(SMALL_SPAN)},
            "timezone": "Asia/Shanghai",
            "files": [
                "big_matrix.csv",
                "small_matrix.csv",
                "item_categories.csv",
                "user_features.csv",
                GROUND_TRUTH_FILE,
            ],
        }
        paths.atomic_write_text(out / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        bar.update()
    finally:
        bar.close()
    return {
        "out_dir": str(out),
        "scale": float(scale),
        "seed": int(seed),
        "counts": counts,
        "watch_ratio": shares,
        "seconds": round(time.perf_counter() - started, 3),
    }


def watch_ratio_statistics(watch_ratio: np.ndarray) -> dict[str, float]:
    """The calibration statistics of :data:`REAL_CALIBRATION` plus the maximum, for one matrix."""
    wr = np.asarray(watch_ratio, dtype=np.float64)
    return {
        "share_gt_2": float(np.mean(wr > 2.0)),
        "share_ge_1": float(np.mean(wr >= 1.0)),
        "share_lt_0.5": float(np.mean(wr < 0.5)),
        "median_le_5": float(np.median(wr[wr <= 5.0])),
        "share_gt_5": float(np.mean(wr > 5.0)),
        "max": float(wr.max()),
    }


# ---------------------------------------------------------------------------------------- the world
def _check_arguments(scale: float, seed: int) -> None:
    if not isinstance(scale, int | float) or not np.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise ConfigError(
            f"simulate: scale must be a number in [{MIN_SCALE}, {MAX_SCALE}] (1.0 = real KuaiRec sizes); "
            f"got {scale!r}"
        )
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"simulate: seed must be a non-negative integer; got {seed!r}")


def _check_output_folder(out: Path) -> None:
    """Refuse to overwrite interaction matrices that the simulator did not write (e.g. the real archive)."""
    matrices = [name for name in ("big_matrix.csv", "small_matrix.csv") if (out / name).exists()]
    ours = (out / METADATA_FILE).is_file() or (out / GROUND_TRUTH_FILE).is_file()
    if matrices and not ours:
        raise ConfigError(
            f"simulate: {out} already holds {', '.join(matrices)} not written by the simulator (no "
            f"{METADATA_FILE} or {GROUND_TRUTH_FILE}); refusing to overwrite them. Choose another --out "
            "folder or delete those files."
        )


def _spread_subset(n_total: int, n_pick: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted random subset of 0..n_total-1 of size n_pick (spread out, never a contiguous block)."""
    return np.sort(rng.choice(n_total, size=n_pick, replace=False))


def _make_world(scale: float, params: SimulationParams, rng: np.random.Generator) -> _World:
    """Draw the videos, users, chains and the small matrix's subsets."""
    n_users = max(int(round(REAL_USERS * scale)), 4)
    n_videos = max(int(round(REAL_VIDEOS * scale)), 16)
    n_small_users = max(int(round(REAL_SMALL_USERS * scale)), 2)
    n_small_videos = max(int(round(REAL_SMALL_VIDEOS * scale)), 4)

    # Tags: 1-4 distinct tags per video, the primary first (Gumbel top-k on log tag frequency).
    n_tags = rng.choice(4, size=n_videos, p=TAGS_PER_VIDEO_SHARE) + 1  # (V,)
    log_prior = np.log(TAG_FREQUENCY / TAG_FREQUENCY.sum())
    gumbel = log_prior[None, :] + rng.gumbel(size=(n_videos, N_TAGS))  # (V, 31)
    ranked = np.argsort(-gumbel, axis=1)[:, :4]  # (V, 4)
    slot = np.arange(4)[None, :]
    present = slot < n_tags[:, None]
    tag_ids = np.where(present, ranked, 0)
    tag_weights = np.where(present, 1.0 / n_tags[:, None], 0.0)
    primary = ranked[:, 0].astype(np.int64)

    # Durations (log-normal: median 9.6 s, mean ~14.2 s, at most 315 s), quality, popularity, authors.
    duration_ms = np.clip(np.rint(9600.0 * np.exp(0.885 * rng.standard_normal(n_videos))), 1000, 315_000)
    quality = rng.standard_normal(n_videos)
    rho = params.popularity_quality_corr
    popularity = np.exp(
        params.popularity_sigma * (rho * quality + np.sqrt(1 - rho**2) * rng.standard_normal(n_videos))
    )
    n_authors = max(int(round(n_videos / params.mean_author_videos)), 1)
    author = rng.integers(0, n_authors, size=n_videos)

    small_users = _spread_subset(n_users, n_small_users, rng)
    small_videos = _spread_subset(n_videos, n_small_videos, rng)
    is_small_user = np.zeros(n_users, dtype=bool)
    is_small_user[small_users] = True
    is_small_video = np.zeros(n_videos, dtype=bool)
    is_small_video[small_videos] = True

    # Chains: videos sorted by (small or not, primary tag, random); each (small, tag) group is cut into
    # chains of about mean_chain_length consecutive videos. Small and other videos never share a chain.
    order = np.lexsort((rng.random(n_videos), primary, is_small_video))
    group = is_small_video[order].astype(np.int64) * N_TAGS + primary[order]
    group_first = np.r_[True, group[1:] != group[:-1]]
    group_id = np.cumsum(group_first) - 1
    group_starts = np.flatnonzero(group_first)
    group_size = np.diff(np.r_[group_starts, n_videos])
    rank_in_group = np.arange(n_videos) - group_starts[group_id]
    chains_per_group = np.maximum(1, np.rint(group_size / params.mean_chain_length)).astype(np.int64)
    chain_sorted = (
        np.r_[0, np.cumsum(chains_per_group)[:-1]][group_id]
        + rank_in_group * chains_per_group[group_id] // group_size[group_id]
    )
    n_chains = int(chains_per_group.sum())
    chain_length = np.bincount(chain_sorted, minlength=n_chains)
    chain_start = np.r_[0, np.cumsum(chain_length)[:-1]]
    chain_of = np.empty(n_videos, dtype=np.int64)
    chain_of[order] = chain_sorted
    position_in_chain = np.empty(n_videos, dtype=np.int64)
    position_in_chain[order] = np.arange(n_videos) - chain_start[chain_sorted]
    chain_tag = primary[order][chain_start]
    chain_group = group_id[chain_start]
    ring_first = np.r_[0, np.cumsum(chains_per_group)[:-1]][chain_group]
    ring_size = chains_per_group[chain_group]
    popularity = popularity * np.exp(params.chain_popularity_sigma * rng.standard_normal(n_chains))[chain_of]

    # Users: two tastes (start and end of the history), a bias, a liking of every chain.
    alpha = params.taste_concentration * (TAG_FREQUENCY + 20.0) / (TAG_FREQUENCY + 20.0).sum()
    taste_start = rng.dirichlet(alpha, size=n_users)
    taste_end = rng.dirichlet(alpha, size=n_users)
    user_bias = rng.standard_normal(n_users)
    chain_liking = rng.standard_normal((n_users, n_chains), dtype=np.float32)

    return _World(
        n_users=n_users,
        n_videos=n_videos,
        tag_ids=tag_ids,
        tag_weights=tag_weights,
        n_tags=n_tags,
        primary=primary,
        duration_ms=duration_ms.astype(np.int64),
        quality=quality,
        popularity=popularity,
        author=author,
        small_users=small_users,
        small_videos=small_videos,
        is_small_user=is_small_user,
        is_small_video=is_small_video,
        chain_members=order,
        chain_start=chain_start,
        chain_length=chain_length,
        chain_tag=chain_tag,
        ring_first=ring_first,
        ring_size=ring_size,
        chain_of=chain_of,
        position_in_chain=position_in_chain,
        taste_start=taste_start,
        taste_end=taste_end,
        user_bias=user_bias,
        chain_liking=chain_liking,
    )


# ------------------------------------------------------------------------------------- watch_ratio
def _standardise(values: np.ndarray) -> np.ndarray:
    std = values.std()
    return (values - values.mean()) / (std if std > 0 else 1.0)


def _signal(world: _World, users: np.ndarray, videos: np.ndarray, params: SimulationParams) -> np.ndarray:
    """Rank-normalised user-video signal x ~ N(0, 1) of each (user, video) row."""
    taste = (1 - params.taste_drift / 2) * world.taste_start + (params.taste_drift / 2) * world.taste_end
    affinity = np.zeros(len(users))
    for k in range(4):  # a video's (at most 4) tags
        affinity += taste[users, world.tag_ids[videos, k]] * world.tag_weights[videos, k]
    raw = (
        params.weight_taste * _standardise(np.log(affinity + 0.02))
        + params.weight_quality * world.quality[videos]
        + params.weight_chain * world.chain_liking[users, world.chain_of[videos]]
        + params.weight_user * world.user_bias[users]
        - params.weight_duration * _standardise(np.log(world.duration_ms[videos].astype(np.float64)))
    )
    ranks = np.empty(len(raw), dtype=np.float64)
    ranks[np.argsort(raw, kind="stable")] = np.arange(len(raw))
    return ndtri((ranks + 0.5) / len(raw))


def _ratio_of_score(z: np.ndarray, matrix: str) -> np.ndarray:
    """Monotone calibration map Q: latent standard normal score -> watch_ratio (heavy upper tail)."""
    knots = np.array(RATIO_KNOTS[matrix])
    kz, kr = knots[:, 0], np.log(knots[:, 1])
    log_ratio = np.interp(z, kz, kr)
    slope = (kr[-1] - kr[-2]) / (kz[-1] - kz[-2])
    log_ratio = np.where(z > kz[-1], kr[-1] + slope * (z - kz[-1]), log_ratio)
    return np.exp(log_ratio)


def _expected_ratio(x: np.ndarray, matrix: str, rho: float) -> np.ndarray:
    """E[Q(rho x + sqrt(1 - rho^2) eps)] over the noise eps (Gauss-Hermite on a grid, interpolated)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(60)
    weights = weights / weights.sum()
    grid = np.linspace(-6.5, 6.5, 2601)
    values = _ratio_of_score(rho * grid[:, None] + np.sqrt(1 - rho**2) * nodes[None, :], matrix) @ weights
    return np.interp(x, grid, values)


def _watch_ratio(
    x: np.ndarray, duration_ms: np.ndarray, matrix: str, rho: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(play_duration ms, watch_ratio) of rows with signal x; watch_ratio = play / video duration."""
    z = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal(len(x))
    play = np.rint(_ratio_of_score(z, matrix) * duration_ms).astype(np.int64)
    return play, play / duration_ms


# ------------------------------------------------------------------------------------------ timelines
def _local_midnight_ms(day: str) -> int:
    """Unix milliseconds of local (Asia/Shanghai) midnight starting ``day`` (yyyy-mm-dd)."""
    return int(np.datetime64(day, "ms").astype(np.int64)) - _LOCAL_OFFSET_MS


def _segment_cumsum(values: np.ndarray, group_start_index: np.ndarray) -> np.ndarray:
    """Exclusive cumulative sum of ``values`` restarting at each group (rows sorted by group).

    ``group_start_index[i]`` is the row index where row i's group starts.
    """
    total = np.cumsum(values) - values  # exclusive
    return total - total[group_start_index]


def _timeline(
    user_of_row: np.ndarray,
    session_start: np.ndarray,
    busy_ms: np.ndarray,
    window_start: np.ndarray,
    window_end: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Unix ms of each row: views follow each other inside a session; idle time between sessions.

    Rows are sorted by user, in history order. ``busy_ms`` is how long a view occupies the user (play plus
    a pause). Each user's idle time (window minus busy time) is cut at uniform spacings between sessions,
    so times increase within the user and stay inside [window_start, window_end].
    """
    user_first = np.r_[True, user_of_row[1:] != user_of_row[:-1]]
    first_row_of_user = np.flatnonzero(user_first)
    row_user_start = first_row_of_user[np.cumsum(user_first) - 1]  # (N,)
    busy_before = _segment_cumsum(busy_ms.astype(np.float64), row_user_start)  # (N,)
    busy_total = np.bincount(user_of_row, weights=busy_ms, minlength=len(window_start))
    idle_total = np.maximum(window_end - window_start - busy_total, 0.0)  # (U,)
    # Exponential spacings: idle before session s of a user = idle_total * (E_1 + ... + E_s) / (sum + E_end).
    starts = session_start | user_first
    session_id = np.cumsum(starts) - 1
    session_user = user_of_row[starts]
    spacing = rng.exponential(size=len(session_user))
    session_first = np.r_[True, session_user[1:] != session_user[:-1]]
    first_session_of_user = np.flatnonzero(session_first)
    session_user_start = first_session_of_user[np.cumsum(session_first) - 1]
    idle_before = _segment_cumsum(spacing, session_user_start) + spacing  # inclusive of its own spacing
    spacing_total = np.bincount(session_user, weights=spacing, minlength=len(window_start))
    spacing_total += rng.exponential(size=len(window_start))  # idle after the last session
    idle_share = idle_before / spacing_total[session_user]
    idle_ms = idle_share * idle_total[session_user]  # (S,)
    return np.floor(window_start[user_of_row] + busy_before + idle_ms[session_id]).astype(np.int64)


def _yyyymmdd_of_days(days: np.ndarray) -> np.ndarray:
    """yyyymmdd (int64) of days since 1970-01-01 (few distinct values: use on a small table)."""
    dates = days.astype("datetime64[D]")
    months = dates.astype("datetime64[M]")
    years = dates.astype("datetime64[Y]").astype(np.int64) + 1970
    return years * 10_000 + (months.astype(np.int64) % 12 + 1) * 100 + (dates - months).astype(np.int64) + 1


def _local_days(unix_ms: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of the Asia/Shanghai wall clock of Unix milliseconds."""
    return (unix_ms + _LOCAL_OFFSET_MS) // _DAY_MS


def _local_yyyymmdd(unix_ms: np.ndarray) -> np.ndarray:
    """yyyymmdd (int64) of the Asia/Shanghai day of Unix milliseconds (through a table of the days)."""
    days = _local_days(unix_ms)
    first = int(days.min()) if len(days) else 0
    table = _yyyymmdd_of_days(np.arange(first, int(days.max()) + 1 if len(days) else 1))
    return table[days - first]


# ----------------------------------------------------------------------------------------- big matrix
def _user_counts(n_users: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Per-user big-matrix row counts at scale 1 (mean ~1,746, median ~1,846, min 100, max 16,015) x scale."""
    kind = rng.choice(3, size=n_users, p=[0.13, 0.85, 0.02])
    low = np.exp(rng.uniform(np.log(100), np.log(1000), size=n_users))
    body = np.clip(rng.normal(1890, 330, size=n_users), 1000, 3500)
    tail = np.minimum(2500 * np.exp(np.abs(rng.normal(0, 0.85, size=n_users))), 16_015)
    counts = np.where(kind == 0, low, np.where(kind == 1, body, tail))
    counts[np.argmax(counts)] = 16_015
    counts[np.argmin(counts)] = 100
    return np.maximum(np.rint(counts * scale), 1).astype(np.int64)


def _tag_pool(videos: np.ndarray, world: _World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Popularity-weighted sampling table of ``videos`` by primary tag.

    Returns (members sorted by tag, key = tag + within-tag cumulative weight share, tag has members).
    """
    tags = world.primary[videos]
    order = np.lexsort((videos, tags))
    members, tags = videos[order], tags[order]
    weights = world.popularity[members]
    cumulative = np.cumsum(weights)
    tag_first = np.searchsorted(tags, np.arange(N_TAGS))
    tag_total = np.bincount(tags, weights=weights, minlength=N_TAGS)
    before = np.r_[0.0, cumulative][tag_first]
    within = (cumulative - before[tags]) / tag_total[tags]
    last_of_tag = np.r_[tags[1:] != tags[:-1], True]
    within[last_of_tag] = 1.0
    return members, tags + within, tag_total > 0


def _pick_from_pool(
    pool: tuple[np.ndarray, np.ndarray, np.ndarray], tags: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    members, key, _ = pool
    index = np.searchsorted(key, tags + rng.random(len(tags)), side="right")
    return members[np.minimum(index, len(members) - 1)]


def _pick_tags(cdf_rows: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sample a tag from row ``rows[i]`` of the (R, 31) cumulative table, for every i (vectorised)."""
    flat = (cdf_rows + np.arange(len(cdf_rows))[:, None]).ravel()
    index = np.searchsorted(flat, rows + rng.random(len(rows)), side="right")
    return np.minimum(index - rows * N_TAGS, N_TAGS - 1)


def _taste_cdf(taste: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    masked = taste * allowed[None, :]
    cdf = np.cumsum(masked / masked.sum(axis=1, keepdims=True), axis=1)
    cdf[:, -1] = 1.0
    return cdf


def _big_matrix(
    world: _World, scale: float, params: SimulationParams, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Generate the big matrix: session walks along chains, times, duplicates, date mismatches."""
    target = _user_counts(world.n_users, scale, rng)
    base = np.maximum(np.rint(target / (1 + params.duplicate_share)), 1).astype(np.int64)
    n_rows = int(base.sum())
    user = np.repeat(np.arange(world.n_users), base)  # (N,)
    user_first_row = np.r_[0, np.cumsum(base)[:-1]]
    position = np.arange(n_rows) - user_first_row[user]
    session_start = rng.random(n_rows) < 1.0 / params.mean_session_length
    session_start[user_first_row] = True
    session_id = np.cumsum(session_start) - 1
    session_rows = np.flatnonzero(session_start)
    session_user = user[session_rows]

    # Session tag from the drifting taste: the end taste with probability drift * (place in history).
    progress_share = position[session_rows] / base[session_user]
    use_end = rng.random(len(session_rows)) < params.taste_drift * progress_share
    pool_all = _tag_pool(np.arange(world.n_videos), world)
    pool_other = _tag_pool(np.flatnonzero(~world.is_small_video), world)
    cdf = np.concatenate(
        [
            _taste_cdf(world.taste_start, pool_all[2]),
            _taste_cdf(world.taste_end, pool_all[2]),
            _taste_cdf(world.taste_start, pool_other[2]),
            _taste_cdf(world.taste_end, pool_other[2]),
            _taste_cdf(TAG_FREQUENCY[None, :], pool_all[2]),
            _taste_cdf(TAG_FREQUENCY[None, :], pool_other[2]),
        ]
    )  # (4U + 2, 31)
    small_session = world.is_small_user[session_user]
    explore = rng.random(len(session_rows)) < params.exploration
    table_row = np.where(
        explore,
        4 * world.n_users + small_session,
        (use_end + 2 * small_session) * world.n_users + session_user,
    )
    tags = _pick_tags(cdf, table_row, rng)
    start_video = np.where(
        small_session, _pick_from_pool(pool_other, tags, rng), _pick_from_pool(pool_all, tags, rng)
    )

    # Walk: each view moves 0-3 places along the chain of the session's first video. A user coming back
    # to a chain resumes after the place where the previous visit ended (like a series); past a chain's
    # end the walk goes on in the next chain of the same tag (cyclically).
    step_cdf = np.cumsum(params.step_probabilities) / np.sum(params.step_probabilities)
    steps = np.minimum(np.searchsorted(step_cdf, rng.random(n_rows), side="right"), 3)
    steps[session_rows] = 0
    moved = _segment_cumsum(steps, session_rows[session_id]) + steps  # (N,) places moved in the session
    session_chain = world.chain_of[start_video]  # (S,)
    session_moves = moved[np.r_[session_rows[1:] - 1, n_rows - 1]]
    visit_order = np.lexsort((np.arange(len(session_rows)), session_chain, session_user))
    visit_user, visit_chain = session_user[visit_order], session_chain[visit_order]
    first_visit = np.r_[True, (visit_user[1:] != visit_user[:-1]) | (visit_chain[1:] != visit_chain[:-1])]
    first_visit_index = np.flatnonzero(first_visit)[np.cumsum(first_visit) - 1]
    resume = _segment_cumsum(session_moves[visit_order] + 1, first_visit_index)
    session_place = np.empty(len(session_rows), dtype=np.int64)
    session_place[visit_order] = world.position_in_chain[start_video[visit_order]][first_visit_index] + resume
    chain = session_chain[session_id]
    lap, place = np.divmod(session_place[session_id] + moved, world.chain_length[chain])
    chain = world.ring_first[chain] + (chain - world.ring_first[chain] + lap) % world.ring_size[chain]
    place = place % world.chain_length[chain]
    video = world.chain_members[world.chain_start[chain] + place]

    # One-off views of trending videos, interleaved with the walks (the chain walk goes on after them).
    trending = rng.random(n_rows) < params.trending_share
    trending[session_rows] = False
    trending_users = world.is_small_user[user[trending]]
    draws = rng.random(int(trending.sum()))
    trending_video = np.empty(len(draws), dtype=np.int64)
    for is_small_user, members in ((False, np.arange(world.n_videos)), (True, pool_other[0])):
        cumulative = np.cumsum(world.popularity[members] ** params.trending_power)
        picked = trending_users == is_small_user
        index = np.searchsorted(cumulative, draws[picked] * cumulative[-1], side="right")
        trending_video[picked] = members[np.minimum(index, len(members) - 1)]
    video[trending] = trending_video

    # Every video appears at least once: rare unvisited ones replace random views of non-small users.
    views = np.bincount(video, minlength=world.n_videos)
    unseen = np.flatnonzero(views == 0)
    if len(unseen):  # taken from videos seen often enough to keep at least one view
        candidates = np.flatnonzero(~world.is_small_user[user] & (views[video] > len(unseen)))
        video[rng.choice(candidates, size=len(unseen), replace=False)] = unseen

    x = _signal(world, user, video, params)
    duration = world.duration_ms[video]
    play, ratio = _watch_ratio(x, duration, "big_matrix", params.signal_correlation, rng)

    # Times: users active over most of the span; a view takes its play time plus a pause.
    span_start = _local_midnight_ms(BIG_SPAN[0])
    span_end = _local_midnight_ms(BIG_SPAN[1]) + _DAY_MS - 1
    span = span_end - span_start
    window_start = span_start + rng.uniform(0, 0.3, world.n_users) * span
    window_end = span_end - rng.uniform(0, 0.1, world.n_users) * span
    busy = play + np.rint(rng.exponential(params.mean_gap_seconds * 1000, n_rows)).astype(np.int64) + 1
    unix_ms = _timeline(user, session_start, busy, window_start, window_end, rng)

    # Exact duplicate rows (written twice, adjacent) and dates a day off the timestamp's local day.
    copies = 1 + (rng.random(n_rows) < params.duplicate_share)
    copies[0] = 2  # at least one duplicate at any scale
    date = _local_yyyymmdd(unix_ms)
    n_mismatch = max(int(round(params.date_mismatch_share * n_rows)), 3)
    mismatch = rng.choice(n_rows, size=min(n_mismatch, n_rows), replace=False)
    # A day later or earlier at random, but never outside the span.
    later = np.where(
        unix_ms[mismatch] < span_start + _DAY_MS,
        True,
        np.where(unix_ms[mismatch] > span_end - _DAY_MS, False, rng.random(len(mismatch)) < 0.5),
    )
    shifted_ms = unix_ms[mismatch] + np.where(later, _DAY_MS, -_DAY_MS)
    date[mismatch] = _local_yyyymmdd(shifted_ms)
    columns = {
        "user_id": user,
        "video_id": video,
        "play_duration": play,
        "video_duration": duration,
        "unix_ms": unix_ms,
        "date": date,
        "watch_ratio": ratio,
    }
    return {name: np.repeat(values, copies) for name, values in columns.items()}


# --------------------------------------------------------------------------------------- small matrix
def _small_matrix(
    world: _World, params: SimulationParams, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Generate the small matrix (every small user x small video but blocked authors) and its truth."""
    n_su, n_sv = len(world.small_users), len(world.small_videos)
    row_user = np.repeat(np.arange(n_su), n_sv)  # index into small_users
    video = np.tile(world.small_videos, n_su)

    # Blocked authors: each user blocks a Poisson number of authors; their videos are missing.
    videos_per_author = np.bincount(world.author[world.small_videos]).astype(np.float64)
    # Authors are drawn through random videos, so their expected size is size-biased.
    mean_size = (videos_per_author**2).sum() / videos_per_author.sum()
    n_blocked = rng.poisson(params.blocked_share * n_sv / mean_size, size=n_su)
    blocked_user = np.repeat(np.arange(n_su), n_blocked)
    blocked_author = world.author[world.small_videos][rng.integers(0, n_sv, size=len(blocked_user))]
    n_authors = int(world.author.max()) + 1
    blocked = np.isin(row_user * n_authors + world.author[video], blocked_user * n_authors + blocked_author)
    row_user, video = row_user[~blocked], video[~blocked]

    # Order: chains cut into segments after a random per-(user, chain) offset; segments of a tag sit near
    # the user's time for that tag; inside a segment views keep the chain order up to local swaps.
    first_small_chain = int(world.chain_of[world.small_videos].min())
    chain = world.chain_of[video]
    local_chain = chain - first_small_chain
    n_small_chains = len(world.chain_start) - first_small_chain
    length = world.chain_length[chain]
    offset = rng.integers(0, 1 << 30, size=(n_su, n_small_chains)) % world.chain_length[first_small_chain:]
    relative = (world.position_in_chain[video] - offset[row_user, local_chain]) % length
    seg_len = params.small_segment_length
    segments_per_chain = -(-world.chain_length[first_small_chain:] // seg_len)
    segment = np.r_[0, np.cumsum(segments_per_chain)[:-1]][local_chain] + relative // seg_len
    tag_time = rng.random((n_su, N_TAGS))
    segment_time = tag_time[:, world.chain_tag[first_small_chain:]][
        :, np.repeat(np.arange(n_small_chains), segments_per_chain)
    ] + params.small_segment_time_sd * rng.standard_normal((n_su, int(segments_per_chain.sum())))
    within = relative + params.small_local_noise * rng.standard_normal(len(video))
    order = np.lexsort((within, segment_time[row_user, segment], row_user))
    row_user, video, segment = row_user[order], video[order], segment[order]
    user = world.small_users[row_user]

    x = _signal(world, user, video, params)
    duration = world.duration_ms[video]
    play, ratio = _watch_ratio(x, duration, "small_matrix", params.signal_correlation, rng)
    expected = _expected_ratio(x, "small_matrix", params.signal_correlation)

    span_start = _local_midnight_ms(SMALL_SPAN[0])
    span_end = _local_midnight_ms(SMALL_SPAN[1]) + _DAY_MS - 1
    n_rows = len(video)
    session_start = np.r_[True, (segment[1:] != segment[:-1]) | (row_user[1:] != row_user[:-1])]
    busy = play + np.rint(rng.exponential(params.mean_gap_seconds * 1000, n_rows)).astype(np.int64) + 1
    unix_ms = _timeline(
        row_user,
        session_start,
        busy,
        np.full(n_su, float(span_start)),
        np.full(n_su, float(span_end)),
        rng,
    )
    untimed = rng.random(n_rows) < params.untimed_share
    columns = {
        "user_id": user,
        "video_id": video,
        "play_duration": play,
        "video_duration": duration,
        "unix_ms": np.where(untimed, -1, unix_ms),
        "date": _local_yyyymmdd(unix_ms),
        "watch_ratio": ratio,
        "untimed": untimed,
    }
    truth_order = np.lexsort((video, user))
    return columns, (user[truth_order], video[truth_order], expected[truth_order])


# ----------------------------------------------------------------------------------------------- writing
def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """(N, width) ASCII digits of non-negative integers, zero-padded on the left."""
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values[:, None] // powers[None, :]) % 10 + 48).astype(np.uint8)


@functools.cache
def _text_tables() -> dict[str, np.ndarray]:
    """Lookup tables of fixed-width text: 5-digit numbers, "HH:MM:SS" of each second of a day, and the
    millisecond fraction as KuaiRec prints it (trailing zeros dropped, at least one digit)."""
    seconds = np.arange(86_400)
    clock = np.empty((86_400, 8), dtype=np.uint8)
    clock[:, 0:2] = _digits(seconds // 3600, 2)
    clock[:, 3:5] = _digits(seconds // 60 % 60, 2)
    clock[:, 6:8] = _digits(seconds % 60, 2)
    clock[:, [2, 5]] = ord(":")
    millis = np.arange(1000)
    return {
        "five": _digits(np.arange(100_000), 5),
        "clock": clock,
        "fraction": _digits(millis, 3),
        "fraction_length": np.where(millis % 10 != 0, 3, np.where(millis % 100 != 0, 2, 1)),
    }


def _text_array(chars: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """Arrow string array whose row i is the first lengths[i] bytes of chars[i] (null where not valid)."""
    n_rows, width = chars.shape
    lengths = np.where(valid, lengths, 0)
    keep = np.arange(width)[None, :] < lengths[:, None]
    data = chars[keep] if not keep.all() else chars.ravel()
    offsets = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    null_count = int(n_rows - np.count_nonzero(valid))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if null_count else None
    return pa.StringArray.from_buffers(
        n_rows, pa.py_buffer(offsets), pa.py_buffer(data.tobytes()), bitmap, null_count
    )


def _time_columns(unix_ms: np.ndarray, valid: np.ndarray, *, date_as_float: bool) -> dict[str, pa.Array]:
    """KuaiRec's ``time``, ``date`` and ``timestamp`` columns of Unix milliseconds (null where not valid).

    time: "2020-07-05 00:08:23.438" (Asia/Shanghai wall clock); date: yyyymmdd, an integer or, for
    ``date_as_float``, float text "20200705.0"; timestamp: Unix seconds as Python prints the float
    ("1593878903.438", "1593882025.5"). The fraction of ``time`` has the timestamp's digits, as in real rows.
    """
    tables = _text_tables()
    unix_ms = np.where(valid, unix_ms, unix_ms[valid][0] if valid.any() else 1_593_878_903_438)
    seconds, millis = np.divmod(unix_ms, 1000)
    if not ((seconds >= 10**9) & (seconds < 10**10)).all():
        raise ValueError("timestamps must have 10 integer digits")  # never for 2020 dates
    days = _local_days(unix_ms)
    first_day = int(days.min())
    day_index = days - first_day
    all_days = np.arange(first_day, int(days.max()) + 1)
    yyyymmdd = _yyyymmdd_of_days(all_days)
    date_chars = np.empty((len(all_days), 10), dtype=np.uint8)  # "YYYY-MM-DD"
    date_chars[:, 0:4] = _digits(yyyymmdd // 10_000, 4)
    date_chars[:, 5:7] = _digits(yyyymmdd // 100 % 100, 2)
    date_chars[:, 8:10] = _digits(yyyymmdd % 100, 2)
    date_chars[:, [4, 7]] = ord("-")
    fraction = tables["fraction"][millis]  # (N, 3)
    fraction_length = tables["fraction_length"][millis]

    time_chars = np.empty((len(unix_ms), 23), dtype=np.uint8)
    time_chars[:, 0:10] = date_chars[day_index]
    time_chars[:, 10] = ord(" ")
    time_chars[:, 11:19] = tables["clock"][(unix_ms + _LOCAL_OFFSET_MS - days * _DAY_MS) // 1000]
    time_chars[:, 19] = ord(".")
    time_chars[:, 20:23] = fraction

    stamp_chars = np.empty((len(unix_ms), 14), dtype=np.uint8)
    stamp_chars[:, 0:5] = tables["five"][seconds // 100_000]
    stamp_chars[:, 5:10] = tables["five"][seconds % 100_000]
    stamp_chars[:, 10] = ord(".")
    stamp_chars[:, 11:14] = fraction

    if date_as_float:
        float_chars = np.empty((len(all_days), 10), dtype=np.uint8)
        float_chars[:, 0:8] = _digits(yyyymmdd, 8)
        float_chars[:, 8:10] = [ord("."), ord("0")]
        date = _text_array(float_chars[day_index], np.full(len(unix_ms), 10), valid)
    else:
        date = pa.array(yyyymmdd[day_index], pa.int64(), mask=~valid)
    return {
        "time": _text_array(time_chars, 20 + fraction_length, valid),
        "date": date,
        "timestamp": _text_array(stamp_chars, 11 + fraction_length, valid),
    }


def _float_text(values: np.ndarray) -> pa.Array:
    """Shortest round-trip text of finite floats, with '.0' on integral values (as pandas writes them)."""
    text = pc.cast(pa.array(values, pa.float64()), pa.string())
    integral = np.floor(values) == values
    if integral.any():
        fixed = pc.binary_join_element_wise(
            pc.cast(pa.array(values[integral].astype(np.int64)), pa.string()), ".0", ""
        )
        text = pc.replace_with_mask(text, pa.array(integral), fixed)
    return text


def _write_interactions(path: Path, columns: dict[str, np.ndarray], *, date_as_float: bool) -> None:
    """Write an interaction matrix in KuaiRec's text format, in blocks of rows, atomically.

    ``columns`` holds user_id, video_id, play_duration, video_duration, unix_ms, date (yyyymmdd, may
    disagree with unix_ms on purpose), watch_ratio and optionally untimed (rows written without time,
    date and timestamp).
    """
    n_rows = len(columns["user_id"])
    untimed = columns.get("untimed", np.zeros(n_rows, dtype=bool))
    header = (",".join(INTERACTION_COLUMNS) + "\n").encode()
    options = pv.WriteOptions(include_header=False, quoting_style="none")
    block = 1_000_000
    with paths.atomic_path(path) as tmp, tmp.open("wb") as handle:
        handle.write(header)
        for first in range(0, n_rows, block):
            rows = slice(first, min(first + block, n_rows))
            timed = ~untimed[rows]
            text = _time_columns(columns["unix_ms"][rows], timed, date_as_float=date_as_float)
            date = columns["date"][rows]
            if not date_as_float:  # the written date may be a day off the timestamp (real quirk)
                text["date"] = pa.array(date, pa.int64(), mask=~timed)
            table = pa.table(
                {
                    "user_id": pa.array(columns["user_id"][rows], pa.int64()),
                    "video_id": pa.array(columns["video_id"][rows], pa.int64()),
                    "play_duration": pa.array(columns["play_duration"][rows], pa.int64()),
                    "video_duration": pa.array(columns["video_duration"][rows], pa.int64()),
                    "time": text["time"],
                    "date": text["date"],
                    "timestamp": text["timestamp"],
                    "watch_ratio": _float_text(columns["watch_ratio"][rows]),
                }
            )
            pv.write_csv(table, handle, write_options=options)


def _write_item_categories(path: Path, world: _World) -> None:
    """item_categories.csv: video_id and feat, a list literal such as "[27, 9]"."""
    text = pd.Series(world.tag_ids[:, 0].astype(str))
    for k in range(1, 4):
        extra = ", " + pd.Series(world.tag_ids[:, k].astype(str))
        text = text + extra.where(world.n_tags > k, "")
    frame = pd.DataFrame({"video_id": np.arange(world.n_videos), "feat": "[" + text + "]"})
    with paths.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def _zipf_choice(cardinality: int, size: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Codes 0..cardinality-1 with Zipf-like frequencies over a random order of the codes."""
    weights = 1.0 / (np.arange(cardinality) + 2.0) ** exponent
    codes = rng.permutation(cardinality)
    return codes[rng.choice(cardinality, size=size, p=weights / weights.sum())]


def _categorical(values: list[int], probs: list[float], size: int, rng: np.random.Generator) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    return np.asarray(values)[rng.choice(len(values), size=size, p=p / p.sum())]


def _ranges(values: np.ndarray, edges: list[int], labels: list[str]) -> np.ndarray:
    """Label of each value: labels[i] for edges[i-1] < value <= edges[i] (first label: value <= edges[0])."""
    return np.asarray(labels)[np.searchsorted(np.asarray(edges), values, side="left")]


def _user_features(n_users: int, rng: np.random.Generator) -> pd.DataFrame:
    """Plausible user_features.csv columns drawn from approximate marginals of the real file."""
    follow = np.minimum(np.floor(np.exp(rng.normal(np.log(33), 1.98, n_users))), 2100).astype(np.int64)
    fans = np.where(
        rng.random(n_users) < 0.3, 0, np.ceil(np.exp(rng.normal(np.log(4), 1.3, n_users)))
    ).astype(np.int64)
    friends = np.where(
        rng.random(n_users) < 0.6, 0, np.ceil(np.exp(rng.normal(np.log(2), 1.2, n_users)))
    ).astype(np.int64)
    register = np.clip(np.rint(np.exp(rng.normal(np.log(225), 0.76, n_users))), 0, 2245).astype(np.int64)
    frame = pd.DataFrame(
        {
            "user_id": np.arange(n_users),
            "user_active_degree": _categorical(
                ["full_active", "high_active", "UNKNOWN", "middle_active"],
                [0.849, 0.131, 0.016, 0.004],
                n_users,
                rng,
            ),
            "is_lowactive_period": (rng.random(n_users) < 0.0005).astype(np.int64),
            "is_live_streamer": (rng.random(n_users) < 0.007).astype(np.int64),
            "is_video_author": (rng.random(n_users) < 0.17).astype(np.int64),
            "follow_user_num": follow,
            "follow_user_num_range": _ranges(
                follow,
                [0, 10, 50, 100, 150, 250, 500],
                ["0", "(0,10]", "(10,50]", "(50,100]", "(100,150]", "(150,250]", "(250,500]", "500+"],
            ),
            "fans_user_num": fans,
            "fans_user_num_range": _ranges(
                fans,
                [0, 9, 99, 999, 4999, 9999],
                ["0", "[1,10)", "[10,100)", "[100,1k)", "[1k,5k)", "[5k,1w)", "[1w,10w)"],
            ),
            "friend_user_num": friends,
            "friend_user_num_range": _ranges(
                friends,
                [0, 4, 29, 59, 119, 249],
                ["0", "[1,5)", "[5,30)", "[30,60)", "[60,120)", "[120,250)", "250+"],
            ),
            "register_days": register,
            "register_days_range": _ranges(
                register,
                [30, 60, 90, 180, 365, 730],
                ["15-30", "31-60", "61-90", "91-180", "181-365", "366-730", "730+"],
            ),
        }
    )
    features: dict[str, np.ndarray] = {
        "onehot_feat0": (rng.random(n_users) < 0.392).astype(np.int64),
        "onehot_feat1": _categorical(
            [1, 4, 3, 6, 2, 5, 0, 7], [0.429, 0.153, 0.132, 0.115, 0.103, 0.067, 0.0005, 0.0005], n_users, rng
        ),
        "onehot_feat2": _zipf_choice(30, n_users, 1.6, rng),
        "onehot_feat3": _zipf_choice(1076, n_users, 0.9, rng),
        "onehot_feat4": _categorical(
            list(range(12)),
            [0.295, 0.467, 0.171, 0.045, 0.011, 0.006, 0.003, 0.001, 0.0005, 0.0003, 0.0002, 0.0002],
            n_users,
            rng,
        ),
        "onehot_feat5": np.where(rng.random(n_users) < 0.998, 0, rng.integers(1, 10, n_users)),
        "onehot_feat6": _categorical([1, 0, 2], [0.563, 0.435, 0.002], n_users, rng),
        "onehot_feat7": _zipf_choice(47, n_users, 1.0, rng),
        "onehot_feat8": _zipf_choice(340, n_users, 0.9, rng),
        "onehot_feat9": _categorical(
            [6, 3, 5, 4, 1, 2, 0], [0.241, 0.188, 0.174, 0.159, 0.154, 0.081, 0.003], n_users, rng
        ),
        "onehot_feat10": _categorical([2, 3, 4, 0, 1], [0.524, 0.234, 0.128, 0.113, 0.001], n_users, rng),
        "onehot_feat11": _categorical([0, 2, 1], [0.929, 0.066, 0.005], n_users, rng),
    }
    for index, share in zip(range(12, 18), (0.299, 0.105, 0.095, 0.019, 0.018, 0.015), strict=True):
        features[f"onehot_feat{index}"] = (rng.random(n_users) < share).astype(np.int64)
    for name in features:
        frame[name] = features[name]
    # Codes the real file leaves empty for some users (feat4 about 2.8%, feats 12-17 about 1%).
    for name, share in [("onehot_feat4", 0.028)] + [(f"onehot_feat{i}", 0.0105) for i in range(12, 18)]:
        frame[name] = frame[name].astype("Int64").mask(rng.random(n_users) < share)
    return frame


def _write_user_features(path: Path, frame: pd.DataFrame) -> None:
    with paths.atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


# ------------------------------------------------------------------------------ sequential signal check
def _transition_vs_popularity_ndcg(
    small: pd.DataFrame, threshold: float = 2.0, k: int = 10
) -> dict[str, float]:
    """Full-ranking NDCG@k of popularity and of a first-order transition model on the positives.

    The protocol of KUAIREC.md's "sequential signal": each user's positives (watch_ratio > threshold,
    timed rows) in time order, the last one held out, the user's earlier positives masked. Popularity
    counts training positives per video; the transition model counts consecutive (last -> next) pairs of
    training positives over all users (ties broken by popularity). Remaining ties rank ahead of the
    target (pessimistic), so that a constant score earns nothing.

    Args:
        small: rows with user_id, video_id, timestamp, watch_ratio.

    Returns:
        {"popularity": ndcg, "transition": ndcg, "users": number of evaluated users}.
    """
    rows = small[(small["watch_ratio"] > threshold) & small["timestamp"].notna()]
    rows = rows.sort_values(["user_id", "timestamp"], kind="stable")
    users = rows["user_id"].to_numpy(np.int64)
    items = rows["video_id"].to_numpy(np.int64)
    n_items = int(small["video_id"].max()) + 1
    last = np.r_[users[1:] != users[:-1], True]
    first = np.r_[True, users[1:] != users[:-1]]
    counts = np.bincount(users)[users]
    evaluated = last & (counts >= 2)  # held-out target rows of users with at least one training positive
    train = ~last
    popularity = np.bincount(items[train], minlength=n_items).astype(np.float64)
    pair = train[:-1] & train[1:] & ~first[1:]  # consecutive training positives of one user
    transitions = sp.csr_matrix(
        (np.ones(int(pair.sum())), (items[:-1][pair], items[1:][pair])), shape=(n_items, n_items)
    )  # duplicates summed: counts of last -> next

    target_rows = np.flatnonzero(evaluated)
    targets = items[target_rows]
    previous = items[target_rows - 1]
    n_eval = len(target_rows)
    # Mask: each evaluated user's training positives.
    eval_index = np.full(users.max() + 1, -1, dtype=np.int64)
    eval_index[users[target_rows]] = np.arange(n_eval)
    train_of_eval = train & (eval_index[users] >= 0)
    mask_rows, mask_cols = eval_index[users[train_of_eval]], items[train_of_eval]

    def ndcg(scores: np.ndarray) -> float:
        scores = scores.copy()  # (n_eval, n_items)
        scores[mask_rows, mask_cols] = -np.inf
        target_score = scores[np.arange(n_eval), targets]
        rank = (scores >= target_score[:, None]).sum(axis=1) - 1  # ties ranked ahead of the target
        gains = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
        return float(gains.mean()) if n_eval else 0.0

    tie_break = popularity / (popularity.max() + 1.0)
    pop_scores = np.broadcast_to(popularity, (n_eval, n_items))
    transition_scores = transitions[previous].toarray() + tie_break[None, :]
    return {
        "popularity": ndcg(pop_scores),
        "transition": ndcg(transition_scores),
        "users": float(n_eval),
    }


# ------------------------------------------------------------------------------------------------- CLI
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``python -m sasrec simulate --scale S --seed N --out DIR``."""
    parser = subparsers.add_parser(
        "simulate",
        help="write KuaiRec-shaped simulated data (the embedded default)",
        description=(
            "Generate KuaiRec 2.0-shaped files (big_matrix.csv, small_matrix.csv, item_categories.csv, "
            "user_features.csv) plus ground_truth.parquet and simulation.json."
        ),
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help=f"size relative to KuaiRec (default {DEFAULT_SCALE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--out", type=str, default=None, help="output folder (default data/simulated under the project root)"
    )
    parser.add_argument("--progress", type=str2bool, default=None, help="show a progress bar (true/false)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    out = paths.resolve(args.out) if args.out else None
    summary = simulate(scale=args.scale, seed=args.seed, out_dir=out, progress=args.progress)
    counts = summary["counts"]
    print(
        f"simulated KuaiRec-shaped data (scale {summary['scale']}, seed {summary['seed']}) in "
        f"{summary['out_dir']}: {counts['users']:,} users, {counts['videos']:,} videos, "
        f"big_matrix {counts['big_rows']:,} rows, small_matrix {counts['small_rows']:,} rows "
        f"({counts['small_users']:,} x {counts['small_videos']:,}), {summary['seconds']:.1f} s"
    )
    return 0
