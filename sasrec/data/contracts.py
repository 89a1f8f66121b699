"""The prepared-dataset contract shared by preparation, models and evaluation.

A :class:`PreparedData` holds one interaction matrix as time-ordered events with internal ids
(``user`` in 1..U, ``item`` in 1..I, index 0 reserved for padding) and one split column per split
method (0 train, 1 validation, 2 test). An :class:`EvalTask` is what every model is evaluated on:
each evaluated user's input history, the items to mask, the target items with their watch_ratio and
relevance, an optional candidate set (the big-to-small test ranks only the small matrix's videos; data
prepared without remapping rank only ids that occur), original ids and the training popularity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sasrec.errors import ConfigError

TRAIN, VALID, TEST = 0, 1, 2
SPLITS = ("temporal", "leave_last_n", "leave_one_out")
Split = Literal["temporal", "leave_last_n", "leave_one_out"]
Stage = Literal["valid", "test"]

EVENT_COLUMNS = {
    "user": "int32",
    "item": "int32",
    "timestamp": "float64",
    "watch_ratio": "float32",
    "liked": "bool",
    "relevant": "bool",
    "split_temporal": "int8",
    "split_leave_last_n": "int8",
    "split_leave_one_out": "int8",
}
LABEL_COLUMNS = {
    "user": "int32",
    "item": "int32",
    "watch_ratio": "float32",
    "liked": "bool",
    "relevant": "bool",
}


def empty_labels() -> pd.DataFrame:
    """A labels frame with no rows and the ``LABEL_COLUMNS`` dtypes (data without untimed rows)."""
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in LABEL_COLUMNS.items()})


def split_column(split: str) -> str:
    """Name of the events column holding ``split``'s assignment."""
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    return f"split_{split}"


def csr_from_groups(group: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (indptr, values) of a CSR layout of ``values`` grouped by the sorted ``group`` array.

    ``group`` must be non-decreasing; rows 0..n_groups-1 (row 0 is the padding user and stays empty).
    """
    counts = np.bincount(group, minlength=n_groups)
    indptr = np.zeros(n_groups + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, values


def left_padded_tails(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray, maxlen: int) -> np.ndarray:
    """Last ``maxlen`` values of each CSR row in ``rows``, left-padded with 0: shape (len(rows), maxlen).

    Vectorised: no Python loop over rows.
    """
    rows = np.asarray(rows, dtype=np.int64)
    out = np.zeros((len(rows), maxlen), dtype=np.int64)
    if len(rows) == 0 or maxlen == 0:
        return out
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = np.minimum(ends - starts, maxlen)  # (n,)
    offsets = np.arange(maxlen)[None, :] - (maxlen - lengths)[:, None]  # (n, maxlen); <0 is padding
    valid = offsets >= 0
    src = (ends - lengths)[:, None] + np.where(valid, offsets, 0)
    out[valid] = values[src[valid]]
    return out


@dataclass
class PreparedData:
    """One prepared interaction matrix.

    Attributes:
        name: dataset name (``small_matrix``, ``big_matrix``, ``small_matrix_no_remapping``, or a file stem).
        events: timed events sorted by (user, time, tie-break); columns and dtypes as ``EVENT_COLUMNS``.
        labels: untimed rows (KuaiRec's forced exposures): labels only, never in sequences; ``LABEL_COLUMNS``.
        user_ids: (U+1,) original user id of each internal user index; entry 0 is -1 (padding).
        item_ids: (I+1,) original video id of each internal item index; entry 0 is -1 (padding).
        meta: counts, thresholds, split parameters, source fingerprint, ``remap`` flag.
    """

    name: str
    events: pd.DataFrame
    labels: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        """Number of user indices (excluding padding index 0)."""
        return len(self.user_ids) - 1

    @property
    def num_items(self) -> int:
        """Number of item indices (excluding padding index 0); scores have num_items + 1 columns."""
        return len(self.item_ids) - 1

    @property
    def fingerprint(self) -> str:
        """Hash of the id maps and name: a checkpoint is only valid against data with the same value."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.item_ids, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.user_ids, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def existing_items(self) -> np.ndarray:
        """(I+1,) bool: True for item indices with at least one event or label; False for padding.

        Remapped data index only ids that occur, so every item exists; data prepared without remapping
        index every id from 0 to the largest one, and ids that never occur must not be ranked or sampled.
        """
        counts = np.bincount(self.events["item"].to_numpy(), minlength=self.num_items + 1)
        if self.labels is not None and len(self.labels):
            counts = counts + np.bincount(self.labels["item"].to_numpy(), minlength=self.num_items + 1)
        exists = counts[: self.num_items + 1] > 0
        exists[0] = False
        return exists

    def item_counts(self, mask: np.ndarray | None = None) -> np.ndarray:
        """(I+1,) float64 number of events (repeat views count) of each item among the ``mask``ed events."""
        items = self.events["item"].to_numpy()
        if mask is not None:
            items = items[mask]
        return np.bincount(items, minlength=self.num_items + 1).astype(np.float64)

    def stage_masks(self, split: str, stage: Stage) -> tuple[np.ndarray, np.ndarray]:
        """Boolean masks over events: (history usable as model input, targets) for ``stage``.

        Validation sees training events and predicts validation events; test sees training plus
        validation events and predicts test events.
        """
        assignment = self.events[split_column(split)].to_numpy()
        if stage == "valid":
            return assignment == TRAIN, assignment == VALID
        if stage == "test":
            return assignment <= VALID, assignment == TEST
        raise ConfigError(f"stage must be 'valid' or 'test'; got {stage!r}")

    def sequences(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """CSR (indptr over users 0..U, items) of the time-ordered item sequences of masked events."""
        ev = self.events if mask is None else self.events[mask]
        users = ev["user"].to_numpy()
        items = ev["item"].to_numpy().astype(np.int64)
        return csr_from_groups(users, items, self.num_users + 1)

    def interaction_matrix(self, mask: np.ndarray | None = None, values: str | None = None) -> sp.csr_matrix:
        """(U+1, I+1) sparse matrix of masked events: 1 per distinct pair, or the max of column ``values``."""
        ev = self.events if mask is None else self.events[mask]
        rows = ev["user"].to_numpy()
        cols = ev["item"].to_numpy()
        shape = (self.num_users + 1, self.num_items + 1)
        if values is None:
            mat = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
            mat.data[:] = 1.0  # duplicates summed: back to presence
            return mat
        frame = pd.DataFrame({"u": rows, "i": cols, "v": ev[values].to_numpy(dtype=np.float32)})
        agg = frame.groupby(["u", "i"], sort=True)["v"].max()
        u = agg.index.get_level_values(0).to_numpy()
        i = agg.index.get_level_values(1).to_numpy()
        return sp.csr_matrix((agg.to_numpy(dtype=np.float32), (u, i)), shape=shape)


@dataclass
class EvalTask:
    """What a model is evaluated on, for a batch-wise full-ranking (or sampled) evaluation.

    Row r describes user ``users[r]``. Every array is aligned on rows.

    Attributes:
        name: e.g. ``small_matrix/temporal/test`` or ``big_to_small``.
        users: (n,) internal user indices of the model's dataset.
        sequences: (n, maxlen) left-padded input history in time order, most recent last (0 = padding).
        history: (n, I+1) CSR, 1 for every item in the user's input history (masked from ranking when
            ``mask_history``); also the input of non-sequential baselines.
        targets: (n, I+1) CSR whose stored entries are exactly the target items, data = watch_ratio
            (max over repeat views; NaN when the source has no watch_ratio, then ``relevant`` decides).
        relevant: (n, I+1) CSR with the same structure as ``targets``, data 1.0 where the target is
            relevant (watch_ratio above the relevance threshold, or liked for text datasets) else 0.0.
        candidates: (I+1,) bool of rankable items, or None for all items except padding.
        mask_history: whether history items are excluded from ranking (and from targets).
        relevance_threshold: the threshold of the relevance rule: watch_ratio threshold (``threshold``), the
            like threshold (``liked``), NaN (``all``).
        meta: free-form description (split, stage, dataset names).
        exclude: (n, I+1) CSR of further items never ranked for the row's user, or None: items the user is
            known to have watched at an unknown time (KuaiRec's untimed rows). They are neither input nor
            target; left rankable, a model that recognises them as the user's would be scored as wrong.
        relevance: the rule that built ``relevant``: ``threshold`` (watch_ratio > relevance_threshold),
            ``liked`` (the liked flag) or ``all`` (every target); see :mod:`sasrec.data.tasks`.
        user_ids: (n,) original user id of each row, or None (then ``users`` stands in).
        item_ids: (I+1,) original video id of each column, -1 for padding, or None (column indices stand in).
            Random scores and sampled negatives are keyed by original ids, so they do not depend on how
            a dataset was indexed.
        item_popularity: (I+1,) event counts of the input events of every user of the dataset the model is
            fitted on (the default popularity of ``mean_popularity@k``), or None.
    """

    name: str
    users: np.ndarray
    sequences: np.ndarray
    history: sp.csr_matrix
    targets: sp.csr_matrix
    relevant: sp.csr_matrix
    candidates: np.ndarray | None
    mask_history: bool
    relevance_threshold: float
    meta: dict[str, Any] = field(default_factory=dict)
    exclude: sp.csr_matrix | None = None
    relevance: str = "threshold"
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    item_popularity: np.ndarray | None = None

    @property
    def num_items(self) -> int:
        """Number of items (scores have num_items + 1 columns, column 0 is padding)."""
        return self.history.shape[1] - 1

    @property
    def row_keys(self) -> np.ndarray:
        """(n,) int64 key of each row for random numbers: the original user id, else the user index."""
        return np.asarray(self.users if self.user_ids is None else self.user_ids, dtype=np.int64)

    @property
    def column_keys(self) -> np.ndarray:
        """(I+1,) int64 key of each column for random numbers: the original video id, else the index."""
        if self.item_ids is None:
            return np.arange(self.num_items + 1, dtype=np.int64)
        return np.asarray(self.item_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows: np.ndarray) -> EvalTask:
        """The same task restricted to ``rows`` (used for batching and for results by user group)."""
        rows = np.asarray(rows)
        return EvalTask(
            name=self.name,
            users=self.users[rows],
            sequences=self.sequences[rows],
            history=self.history[rows],
            targets=self.targets[rows],
            relevant=self.relevant[rows],
            candidates=self.candidates,
            mask_history=self.mask_history,
            relevance_threshold=self.relevance_threshold,
            meta=self.meta,
            exclude=None if self.exclude is None else self.exclude[rows],
            relevance=self.relevance,
            user_ids=None if self.user_ids is None else self.user_ids[rows],
            item_ids=self.item_ids,
            item_popularity=self.item_popularity,
        )
