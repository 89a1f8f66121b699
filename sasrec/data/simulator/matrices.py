"""The simulated big matrix (sparse, sessions along shared chains) and small matrix (fully observed)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sasrec.data.simulator.calibration import (
    _DAY_MS,
    BIG_SPAN,
    N_TAGS,
    SMALL_SPAN,
    TAG_FREQUENCY,
    SimulationParams,
)
from sasrec.data.simulator.timelines import _local_midnight_ms, _local_yyyymmdd, _segment_cumsum, _timeline
from sasrec.data.simulator.world import _expected_ratio, _signal, _watch_ratio, _World


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


@dataclass(frozen=True)
class _Sessions:
    """The big matrix's rows (before duplicates) grouped into per-user sessions."""

    user: np.ndarray  # (N,) user of each row
    base: np.ndarray  # (U,) rows per user
    position: np.ndarray  # (N,) place of each row in its user's history
    session_start: np.ndarray  # (N,) whether a row opens a session
    session_id: np.ndarray  # (N,) session of each row
    session_rows: np.ndarray  # (S,) first row of each session
    session_user: np.ndarray  # (S,) user of each session

    @property
    def n_rows(self) -> int:
        """Number of rows before duplicates (N)."""
        return len(self.user)


def _split_sessions(
    world: _World, scale: float, params: SimulationParams, rng: np.random.Generator
) -> _Sessions:
    """Draw each user's row count and cut the rows into sessions (geometric lengths)."""
    target = _user_counts(world.n_users, scale, rng)
    base = np.maximum(np.rint(target / (1 + params.duplicate_share)), 1).astype(np.int64)  # (U,)
    n_rows = int(base.sum())
    user = np.repeat(np.arange(world.n_users), base)  # (N,)
    user_first_row = np.r_[0, np.cumsum(base)[:-1]]  # (U,)
    position = np.arange(n_rows) - user_first_row[user]  # (N,)
    session_start = rng.random(n_rows) < 1.0 / params.mean_session_length  # (N,)
    session_start[user_first_row] = True
    session_id = np.cumsum(session_start) - 1  # (N,)
    session_rows = np.flatnonzero(session_start)  # (S,)
    return _Sessions(
        user=user,
        base=base,
        position=position,
        session_start=session_start,
        session_id=session_id,
        session_rows=session_rows,
        session_user=user[session_rows],
    )


def _session_tag_cdf(
    world: _World,
    pool_all: tuple[np.ndarray, np.ndarray, np.ndarray],
    pool_other: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """Stack the tag CDFs: start/end taste over all/non-small videos, then global frequency rows."""
    return np.concatenate(
        [
            _taste_cdf(world.taste_start, pool_all[2]),
            _taste_cdf(world.taste_end, pool_all[2]),
            _taste_cdf(world.taste_start, pool_other[2]),
            _taste_cdf(world.taste_end, pool_other[2]),
            _taste_cdf(TAG_FREQUENCY[None, :], pool_all[2]),
            _taste_cdf(TAG_FREQUENCY[None, :], pool_other[2]),
        ]
    )  # (4U + 2, 31)


def _session_start_videos(
    world: _World,
    sessions: _Sessions,
    params: SimulationParams,
    pool_all: tuple[np.ndarray, np.ndarray, np.ndarray],
    pool_other: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Pick each session's first video from a tag of the drifting taste (or an exploration tag)."""
    session_rows, session_user = sessions.session_rows, sessions.session_user
    # The end taste with probability drift * (place in history).
    progress_share = sessions.position[session_rows] / sessions.base[session_user]  # (S,)
    use_end = rng.random(len(session_rows)) < params.taste_drift * progress_share  # (S,)
    cdf = _session_tag_cdf(world, pool_all, pool_other)  # (4U + 2, 31)
    small_session = world.is_small_user[session_user]  # (S,)
    explore = rng.random(len(session_rows)) < params.exploration  # (S,)
    table_row = np.where(
        explore,
        4 * world.n_users + small_session,
        (use_end + 2 * small_session) * world.n_users + session_user,
    )  # (S,)
    tags = _pick_tags(cdf, table_row, rng)  # (S,)
    return np.where(
        small_session, _pick_from_pool(pool_other, tags, rng), _pick_from_pool(pool_all, tags, rng)
    )  # (S,)


def _session_entry_places(
    world: _World,
    sessions: _Sessions,
    start_video: np.ndarray,
    session_chain: np.ndarray,
    session_moves: np.ndarray,
) -> np.ndarray:
    """Place in its chain where each session enters: a return visit resumes after the previous one."""
    session_user = sessions.session_user
    visit_order = np.lexsort((np.arange(len(sessions.session_rows)), session_chain, session_user))  # (S,)
    visit_user, visit_chain = session_user[visit_order], session_chain[visit_order]
    first_visit = np.r_[True, (visit_user[1:] != visit_user[:-1]) | (visit_chain[1:] != visit_chain[:-1])]
    first_visit_index = np.flatnonzero(first_visit)[np.cumsum(first_visit) - 1]  # (S,)
    resume = _segment_cumsum(session_moves[visit_order] + 1, first_visit_index)  # (S,)
    session_place = np.empty(len(sessions.session_rows), dtype=np.int64)  # (S,)
    session_place[visit_order] = world.position_in_chain[start_video[visit_order]][first_visit_index] + resume
    return session_place


def _walk_chains(
    world: _World,
    sessions: _Sessions,
    start_video: np.ndarray,
    params: SimulationParams,
    rng: np.random.Generator,
) -> np.ndarray:
    """Walk each session 0-3 places per view along its chain, on into the next chain of the tag."""
    # A user coming back to a chain resumes after the place where the previous visit ended (like a
    # series); past a chain's end the walk goes on in the next chain of the same tag (cyclically).
    session_rows, session_id, n_rows = sessions.session_rows, sessions.session_id, sessions.n_rows
    step_cdf = np.cumsum(params.step_probabilities) / np.sum(params.step_probabilities)
    steps = np.minimum(np.searchsorted(step_cdf, rng.random(n_rows), side="right"), 3)  # (N,)
    steps[session_rows] = 0
    moved = _segment_cumsum(steps, session_rows[session_id]) + steps  # (N,) places moved in the session
    session_chain = world.chain_of[start_video]  # (S,)
    session_moves = moved[np.r_[session_rows[1:] - 1, n_rows - 1]]  # (S,)
    session_place = _session_entry_places(world, sessions, start_video, session_chain, session_moves)
    chain = session_chain[session_id]  # (N,)
    lap, place = np.divmod(session_place[session_id] + moved, world.chain_length[chain])  # (N,)
    chain = world.ring_first[chain] + (chain - world.ring_first[chain] + lap) % world.ring_size[chain]
    place = place % world.chain_length[chain]
    return world.chain_members[world.chain_start[chain] + place]  # (N,)


def _trending_views(
    world: _World,
    sessions: _Sessions,
    params: SimulationParams,
    pool_other: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the rows that become one-off trending views, and their popularity-weighted videos."""
    trending = rng.random(sessions.n_rows) < params.trending_share  # (N,)
    trending[sessions.session_rows] = False
    trending_users = world.is_small_user[sessions.user[trending]]  # (T,)
    draws = rng.random(int(trending.sum()))  # (T,)
    trending_video = np.empty(len(draws), dtype=np.int64)  # (T,)
    for is_small_user, members in ((False, np.arange(world.n_videos)), (True, pool_other[0])):
        cumulative = np.cumsum(world.popularity[members] ** params.trending_power)
        picked = trending_users == is_small_user
        index = np.searchsorted(cumulative, draws[picked] * cumulative[-1], side="right")
        trending_video[picked] = members[np.minimum(index, len(members) - 1)]
    return trending, trending_video


def _cover_unseen_videos(
    world: _World, user: np.ndarray, video: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (random views of non-small users) to give to the never-viewed videos, and those videos."""
    views = np.bincount(video, minlength=world.n_videos)  # (n_videos,)
    unseen = np.flatnonzero(views == 0)
    if not len(unseen):
        return np.empty(0, dtype=np.int64), unseen
    # Taken from videos seen often enough to keep at least one view.
    candidates = np.flatnonzero(~world.is_small_user[user] & (views[video] > len(unseen)))
    return rng.choice(candidates, size=len(unseen), replace=False), unseen


def _big_span_ms() -> tuple[int, int]:
    """First and last millisecond of the big matrix's span (local days)."""
    return _local_midnight_ms(BIG_SPAN[0]), _local_midnight_ms(BIG_SPAN[1]) + _DAY_MS - 1


def _big_timestamps(
    world: _World, sessions: _Sessions, play: np.ndarray, params: SimulationParams, rng: np.random.Generator
) -> np.ndarray:
    """Lay the views on each user's active window; a view takes its play time plus a pause."""
    span_start, span_end = _big_span_ms()
    span = span_end - span_start
    window_start = span_start + rng.uniform(0, 0.3, world.n_users) * span  # (U,)
    window_end = span_end - rng.uniform(0, 0.1, world.n_users) * span  # (U,)
    gap = np.rint(rng.exponential(params.mean_gap_seconds * 1000, sessions.n_rows)).astype(np.int64)
    busy = play + gap + 1  # (N,)
    return _timeline(sessions.user, sessions.session_start, busy, window_start, window_end, rng)  # (N,)


def _duplicate_copies(n_rows: int, params: SimulationParams, rng: np.random.Generator) -> np.ndarray:
    """How many times each row is written (2 = an exact adjacent duplicate); at least one duplicate."""
    copies = 1 + (rng.random(n_rows) < params.duplicate_share)  # (N,)
    copies[0] = 2  # at least one duplicate at any scale
    return copies


def _dates_with_mismatches(
    unix_ms: np.ndarray, params: SimulationParams, rng: np.random.Generator
) -> np.ndarray:
    """Local yyyymmdd dates of ``unix_ms``, a few of them a day off (never outside the span)."""
    span_start, span_end = _big_span_ms()
    n_rows = len(unix_ms)
    date = _local_yyyymmdd(unix_ms)  # (N,)
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
    return date


def _big_matrix(
    world: _World, scale: float, params: SimulationParams, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Generate the big matrix: session walks along chains, times, duplicates, date mismatches."""
    sessions = _split_sessions(world, scale, params, rng)
    pool_all = _tag_pool(np.arange(world.n_videos), world)
    pool_other = _tag_pool(np.flatnonzero(~world.is_small_video), world)
    start_video = _session_start_videos(world, sessions, params, pool_all, pool_other, rng)  # (S,)
    video = _walk_chains(world, sessions, start_video, params, rng)  # (N,)
    # One-off views of trending videos, interleaved with the walks (the chain walk goes on after them).
    trending, trending_video = _trending_views(world, sessions, params, pool_other, rng)
    video[trending] = trending_video
    # Every video appears at least once: rare unvisited ones replace random views of non-small users.
    replaced, unseen = _cover_unseen_videos(world, sessions.user, video, rng)
    video[replaced] = unseen

    user = sessions.user
    x = _signal(world, user, video, params)
    duration = world.duration_ms[video]  # (N,)
    play, ratio = _watch_ratio(x, duration, "big_matrix", params.signal_correlation, rng)
    unix_ms = _big_timestamps(world, sessions, play, params, rng)
    # Exact duplicate rows (written twice, adjacent) and dates a day off the timestamp's local day.
    copies = _duplicate_copies(sessions.n_rows, params, rng)
    date = _dates_with_mismatches(unix_ms, params, rng)
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
