"""Session timelines of simulated users in KuaiRec's local time (Asia/Shanghai, UTC+8)."""

from __future__ import annotations

import numpy as np

from sasrec.data.simulator.calibration import _DAY_MS, _LOCAL_OFFSET_MS


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
