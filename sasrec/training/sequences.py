"""Training sequences (one per user, as the reference SASRec) and item popularity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sasrec.data.contracts import PreparedData, left_padded_tails


# --------------------------------------------------------------------------------------- training data
@dataclass
class TrainingSequences:
    """One training sequence per user (the reference's): inputs and next-item targets, left-padded.

    Attributes:
        users: (n,) internal user ids with at least two training events.
        inputs: (n, maxlen) the last maxlen training items before the user's final training item.
        targets: (n, maxlen) the next item at each position, 0 at padding.
        window: (n, maxlen) the last maxlen training items, the final one included (masked-item models).
        weights: (n, maxlen) float32 target weight of the event at each position of ``window`` (0 at
            padding), or None when every view is a target (``target: views``). A model's loss target at
            position t is ``window[:, t]`` or 0 (next item or masked item), so these weights are the loss
            weights of its positions (:func:`sasrec.training.loop.batch_loss_terms`).
    """

    users: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    window: np.ndarray
    weights: np.ndarray | None = None


def training_sequences(
    data: PreparedData,
    split: str,
    maxlen: int,
    *,
    mask: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> TrainingSequences:
    """Build :class:`TrainingSequences` from the ``mask`` events (default: the training events of ``split``).

    Vectorised; users with fewer than two such events have no training sequence. ``weights`` (len(events),)
    are the events' target weights (:func:`sasrec.models.targets.event_weights`): the sequences stay every
    masked view, the weights follow their events into :attr:`TrainingSequences.weights`, and a user whose
    window holds no target event (every weight 0) has no training sequence (nothing to learn from).
    """
    if mask is None:
        mask, _ = data.stage_masks(split, "valid")
    indptr, items = data.sequences(mask)
    lengths = np.diff(indptr)  # (U+1,)
    users = np.flatnonzero(lengths >= 2).astype(np.int64)
    tails = left_padded_tails(indptr, items, users, maxlen + 1)  # (n, maxlen + 1)
    window_weights = None
    if weights is not None:
        # 1-based positions of the masked events in the tails (0 = padding) pick their weights
        positions = left_padded_tails(indptr, np.arange(1, len(items) + 1), users, maxlen + 1)
        by_position = np.zeros(len(items) + 1, dtype=np.float32)  # (n_masked + 1,) 0 for padding
        by_position[1:] = np.asarray(weights, dtype=np.float32)[mask]
        window_weights = by_position[positions[:, 1:]]  # (n, maxlen)
        keep = (window_weights > 0).any(axis=1)  # (n,)
        users, tails, window_weights = users[keep], tails[keep], window_weights[keep]
    inputs = tails[:, :-1].copy()
    window = tails[:, 1:].copy()
    targets = window.copy()
    targets[inputs == 0] = 0
    return TrainingSequences(
        users=users, inputs=inputs, targets=targets, window=window, weights=window_weights
    )


def item_popularity(data: PreparedData, mask: np.ndarray | None = None) -> np.ndarray:
    """(I+1,) float32 number of (masked) events per item; the fallback scores of users without history."""
    return data.item_counts(mask).astype(np.float32)  # item 0 (padding) has no event


# ------------------------------------------------------------------------------- batches by length
#: Cost of one more forward/backward pass, in padded positions: on the 2-core CPU, an epoch of an Amazon
#: Games-shaped set (SASRec, hidden 50, maxlen 50, benchmarks/bench_train_command.py) took 21 s padded, 18 s
#: cut to each batch's width, 9.5-10 s in at most 3 groups with this overhead (1,024 or 4,096: 10-13 s).
GROUP_OVERHEAD_POSITIONS = 2048


def length_groups(
    widths: np.ndarray, *, max_groups: int = 3, overhead: float = GROUP_OVERHEAD_POSITIONS
) -> list[tuple[np.ndarray, int]]:
    """Split one batch's rows into groups of similar width: ``[(rows, width), ...]``, widest group first.

    ``widths`` (B,) are the rows' non-padding widths (left padding). Rows are sorted by width (stable, so the
    split is a pure function of ``widths``) and cut into at most ``max_groups`` contiguous groups, each
    padded to its own widest row, minimising ``sum(rows x width) + overhead x groups`` (dynamic
    programming over the cut points): one group of the batch's width when the rows are alike, several when
    a few long rows would pad many short ones. Each group lists its rows in batch order (one group: all
    rows, in order).
    """
    widths = np.asarray(widths, dtype=np.int64)
    n = len(widths)
    order = np.argsort(widths, kind="stable")
    ranked = np.maximum(widths[order], 1)  # (n,) ascending; a group is as wide as its last row
    # cost[g, j]: best cost of the first j sorted rows in g + 1 groups; cut[g, j]: where its last group starts
    starts = np.arange(n + 1)[:, None]  # (n+1, 1) first row i of the last group
    ends = np.arange(n + 1)[None, :]  # (1, n+1) end j (exclusive) of the last group
    width_at_end = np.concatenate([[0], ranked])[None, :]  # (1, n+1) width of a group ending at j
    span = np.where(starts < ends, (ends - starts) * width_at_end + overhead, np.inf)  # (n+1, n+1)
    cost = np.empty((max_groups, n + 1))
    cut = np.zeros((max_groups, n + 1), dtype=np.int64)
    cost[0] = span[0]
    cost[0, 0] = 0.0
    for g in range(1, max_groups):
        total = cost[g - 1][:, None] + span  # (n+1, n+1): previous groups end at i, the last spans i..j-1
        cut[g] = np.argmin(total, axis=0)
        cost[g] = total[cut[g], np.arange(n + 1)]
        cost[g, 0] = 0.0
    groups: list[tuple[np.ndarray, int]] = []
    g, end = int(np.argmin(cost[:, n])), n
    while end > 0:
        start = int(cut[g, end]) if g > 0 else 0
        groups.append((np.sort(order[start:end]), int(ranked[end - 1])))
        end, g = start, g - 1
    return groups
