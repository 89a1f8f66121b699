"""The three splits (temporal, leave-last-N, leave-one-out) and the leakage check every split passes."""

from __future__ import annotations

from typing import Any

import numpy as np

from sasrec.data.contracts import (
    TEST,
    TRAIN,
    VALID,
    PreparedData,
    split_column,
)
from sasrec.errors import ConfigError, SasrecError


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


# ------------------------------------------------------------------------------------------ usability
def default_split(data: PreparedData, split: str | None) -> str:
    """``split``, or the default: temporal for KuaiRec; leave_one_out for SASRec text files, which have no time.

    Raises:
        ConfigError: temporal asked of a text file (a file grouped by user would hold out whole users).
    """
    is_text = data.meta.get("data_source") == "text" or not data.meta.get("has_watch_ratio", True)
    if is_text and split == "temporal":
        raise ConfigError(
            f"split=temporal needs timestamps but {data.name} is a SASRec text file (line order only; a "
            "file grouped by user would hold out whole users); use --split=leave_one_out or leave_last_n"
        )
    return split or ("leave_one_out" if is_text else "temporal")


def check_split_usable(data: PreparedData, split: str) -> None:
    """Refuse a split that gives no user a validation or a test event (before anything is trained on it).

    Raises:
        ConfigError: one line naming the split, the parameter that decides it and the counts.
    """
    column = split_column(split)
    events = data.events
    assignment = events[column].to_numpy()
    users = events["user"].to_numpy()
    valid_users = len(np.unique(users[assignment == VALID]))
    test_users = len(np.unique(users[assignment == TEST]))
    meta = data.meta
    if split == "temporal":
        for users_with, key in ((test_users, "temporal_test_frac"), (valid_users, "temporal_valid_frac")):
            if users_with == 0:
                raise ConfigError(
                    f"{data.name}: split temporal has no {key.split('_')[1]} event ({key}="
                    f"{meta.get(key)}); raise {key} or use another split"
                )
        return
    n_valid = int(meta.get("n_valid", 0)) if split == "leave_last_n" else 1
    n_test = int(meta.get("n_test", 0)) if split == "leave_last_n" else 1
    if (n_test and test_users == 0) or (n_valid and valid_users == 0):
        per_user = np.bincount(users) if len(users) else np.zeros(1, dtype=np.int64)
        longest, with_events = int(per_user.max()), int(np.count_nonzero(per_user))
        if split == "leave_last_n":
            need = f"n_valid + n_test + 2 = {n_valid + n_test + 2} timed events per user (n_valid={n_valid}, n_test={n_test})"
            remedy = "lower n_valid / n_test (--n-valid / --n-test) or use the temporal split"
        else:
            need, remedy = "3 timed events per user", "use the temporal split"
        raise ConfigError(
            f"{data.name}: split {split} gives no user a validation or test event: it needs {need} and the "
            f"longest of the {with_events:,} users has {longest:,}; {remedy}"
        )
