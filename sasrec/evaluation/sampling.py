"""Candidate lists of the sampled protocol: the original project's rule, reproducible per (seed, user).

The original project (its ``utils.evaluate``) ranked each user's positives (relevant test items) together
with 100 negatives drawn uniformly, without replacement, from the items outside the user's input history
and positives, so a watched but non-relevant test item can be a negative. Here the items never used as
negatives are: padding, items outside the task's candidates, the user's history, its positives and its
excluded items (KuaiRec's untimed views). Where fewer items are eligible than asked, all of them are taken.

Sampling without a (users x items) matrix: each row's blocked items, as sorted positions among the
candidates ``b_0 < b_1 < ...``, give ``c_j = b_j - j`` (eligible positions below ``b_j``), and the r-th
eligible position (0-based) is ``r + #{j: c_j <= r}``: one ``searchsorted``. Ranks r are counter-based
draws in [0, n_eligible) of (seed, original user id, draw number) (:func:`sasrec.ranking.hashed_below`);
a row keeps the first ``num_negatives`` distinct draws of its sequence (more draws are made for the rows
that need them), which is uniform sampling without replacement. The lists depend only on the seed, the
user's original id and the row's items, never on the batching or the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sasrec.ranking import hashed_below

SAMPLING_STREAM = 1
"""Stream of :func:`sasrec.ranking.hashed_words` reserved for negatives (random scores use stream 0)."""


@dataclass
class CandidateLists:
    """Candidate lists of a batch of rows, one row per task row.

    Attributes:
        items: (B, L) int64 item indices, increasing along each row over its valid slots, then 0.
        valid: (B, L) bool, True for the slots holding a candidate (a prefix of each row).
        positive: (B, L) bool, True for the row's positives.
        n_eligible: (B,) int64 number of items eligible as negatives.
    """

    items: np.ndarray
    valid: np.ndarray
    positive: np.ndarray
    n_eligible: np.ndarray


def csr_entries(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) int64 arrays of a CSR's stored entries."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return rows, np.asarray(matrix.indices, dtype=np.int64)


def distinct_draws(seed: int, row_keys: np.ndarray, n_eligible: np.ndarray, num_negatives: int) -> np.ndarray:
    """(B, num_negatives) int64: the first ``num_negatives`` distinct draws in [0, n_eligible) of each row.

    Every row must have ``n_eligible > num_negatives``. Draw j of a row is the j-th counter-based draw of
    its key, so the result depends only on (seed, key, n_eligible). Rows are drawn in rounds with a
    growing number of draws; a row is done when its draws hold ``num_negatives`` distinct values. numpy
    (single-threaded): the arrays are small, and torch's thread pool only adds latency here.
    """
    n_rows = len(row_keys)
    out = np.empty((n_rows, num_negatives), dtype=np.int64)
    pending = np.arange(n_rows)
    n_draws = num_negatives + max(8, num_negatives // 4)
    while len(pending):
        draws = hashed_below(
            seed, row_keys[pending], n_draws, n_eligible[pending], stream=SAMPLING_STREAM
        )  # (b, D)
        keyed = np.sort(draws * n_draws + np.arange(n_draws)[None, :], axis=1)  # by value, then draw order
        values = keyed // n_draws
        first_sorted = np.ones(values.shape, dtype=bool)
        first_sorted[:, 1:] = values[:, 1:] != values[:, :-1]  # first draw of each distinct value
        first = np.zeros_like(first_sorted)
        np.put_along_axis(first, keyed % n_draws, first_sorted, axis=1)  # (b, D) back in draw order
        count = np.cumsum(first, axis=1)
        done = count[:, -1] >= num_negatives
        accept = first & (count <= num_negatives) & done[:, None]
        out[pending[done]] = draws[accept].reshape(-1, num_negatives)
        pending = pending[~done]
        n_draws *= 2
    return out


def sampled_candidates(
    positives: sp.csr_matrix,
    blocked: Sequence[sp.csr_matrix | None],
    candidates: np.ndarray,
    row_keys: np.ndarray,
    num_negatives: int,
    seed: int,
    *,
    min_width: int = 0,
) -> CandidateLists:
    """Candidate lists of the sampled protocol for a batch of rows: positives plus sampled negatives.

    Args:
        positives: (B, C) CSR of each row's positives (its relevant, rankable targets); always in the list.
        blocked: (B, C) CSRs of further items never used as negatives (history, excluded items); None skips.
        candidates: (C,) bool items that may be ranked at all (padding False).
        row_keys: (B,) int64 original user id of each row (the key of its random draws).
        num_negatives: negatives per row (fewer when fewer items are eligible).
        seed: random seed.
        min_width: the lists are at least this wide (extra slots are invalid).

    Returns:
        :class:`CandidateLists` (numpy arrays).
    """
    n_rows, n_cols = positives.shape
    cand_items = np.flatnonzero(candidates).astype(np.int64)  # (n_cand,) sorted
    n_cand = len(cand_items)
    cand_pos = np.full(n_cols, -1, dtype=np.int64)
    cand_pos[cand_items] = np.arange(n_cand)

    pos_rows, pos_cols = csr_entries(positives)
    parts = [(pos_rows, pos_cols)] + [csr_entries(m) for m in blocked if m is not None]
    rows = np.concatenate([p[0] for p in parts])
    positions = cand_pos[np.concatenate([p[1] for p in parts])]
    keep = positions >= 0
    stride = n_cand + 1
    blocked_keys = np.unique(rows[keep] * stride + positions[keep])  # (E,) sorted distinct (row, position)
    blocked_rows = blocked_keys // stride
    n_blocked = np.bincount(blocked_rows, minlength=n_rows)
    starts = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(n_blocked, out=starts[1:])
    below = blocked_keys % stride - (np.arange(len(blocked_keys)) - starts[blocked_rows])  # c_j = b_j - j
    rank_keys = blocked_rows * stride + below  # non-decreasing: row-major, c_j non-decreasing in a row

    n_eligible = n_cand - n_blocked  # (B,)
    n_negatives = np.minimum(n_eligible, num_negatives)
    ranks = np.tile(np.arange(num_negatives, dtype=np.int64), (n_rows, 1))  # rows taking every eligible item
    drawn = n_eligible > num_negatives
    if drawn.any():
        ranks[drawn] = distinct_draws(
            seed,
            np.asarray(row_keys, dtype=np.int64)[drawn],
            n_eligible[drawn].astype(np.int64),
            num_negatives,
        )
    slot_ok = np.arange(num_negatives)[None, :] < n_negatives[:, None]  # (B, N)
    neg_rows = np.repeat(np.arange(n_rows, dtype=np.int64), n_negatives)
    neg_ranks = ranks[slot_ok]
    members_below = np.searchsorted(rank_keys, neg_rows * stride + neg_ranks, side="right") - starts[neg_rows]
    neg_items = cand_items[neg_ranks + members_below]

    all_rows = np.concatenate([pos_rows, neg_rows])
    all_items = np.concatenate([pos_cols, neg_items])
    is_positive = np.concatenate([np.ones(len(pos_rows), bool), np.zeros(len(neg_rows), bool)])
    order = np.argsort(all_rows * n_cols + all_items, kind="stable")  # by row, then item
    all_rows, all_items, is_positive = all_rows[order], all_items[order], is_positive[order]
    lengths = np.bincount(all_rows, minlength=n_rows)
    width = max(int(lengths.max()) if n_rows else 0, int(min_width))
    row_starts = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=row_starts[1:])
    slot = np.arange(len(all_rows)) - row_starts[all_rows]
    items = np.zeros((n_rows, width), dtype=np.int64)
    valid = np.zeros((n_rows, width), dtype=bool)
    positive = np.zeros((n_rows, width), dtype=bool)
    items[all_rows, slot] = all_items
    valid[all_rows, slot] = True
    positive[all_rows, slot] = is_positive
    return CandidateLists(
        items=items,
        valid=valid,
        positive=positive,
        n_eligible=n_eligible.astype(np.int64),
    )
