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
    """

    users: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray
    window: np.ndarray


def training_sequences(
    data: PreparedData, split: str, maxlen: int, *, mask: np.ndarray | None = None
) -> TrainingSequences:
    """Build :class:`TrainingSequences` from the ``mask`` events (default: the training events of ``split``).

    Vectorised; users with fewer than two such events have no training sequence.
    """
    if mask is None:
        mask, _ = data.stage_masks(split, "valid")
    indptr, items = data.sequences(mask)
    lengths = np.diff(indptr)  # (U+1,)
    users = np.flatnonzero(lengths >= 2).astype(np.int64)
    tails = left_padded_tails(indptr, items, users, maxlen + 1)  # (n, maxlen + 1)
    inputs = tails[:, :-1].copy()
    window = tails[:, 1:].copy()
    targets = window.copy()
    targets[inputs == 0] = 0
    return TrainingSequences(users=users, inputs=inputs, targets=targets, window=window)


def item_popularity(data: PreparedData, mask: np.ndarray | None = None) -> np.ndarray:
    """(I+1,) float32 number of (masked) events per item; the fallback scores of users without history."""
    items = data.events["item"].to_numpy()
    if mask is not None:
        items = items[mask]
    counts = np.bincount(items, minlength=data.num_items + 1).astype(np.float32)
    counts[0] = 0.0
    return counts
