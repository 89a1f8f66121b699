"""The simulated world: videos, tags, chains, user tastes, and the watch_ratio model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

from sasrec.data.simulator.calibration import (
    N_TAGS,
    RATIO_KNOTS,
    REAL_SMALL_USERS,
    REAL_SMALL_VIDEOS,
    REAL_USERS,
    REAL_VIDEOS,
    TAG_FREQUENCY,
    TAGS_PER_VIDEO_SHARE,
    SimulationParams,
)


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
