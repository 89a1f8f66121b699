"""Evaluation tasks built from prepared data: within-matrix stages, big-to-small, recommendation input.

Every task is an :class:`~sasrec.data.contracts.EvalTask`: what each evaluated user's model sees as
input, which items are masked, the targets with their watch_ratio and relevance, the rankable candidates,
the original ids of rows and columns, and the item popularity of the data the model is fitted on.

Relevance rules (``relevance``):

* ``threshold`` (the default): ``watch_ratio > relevance_threshold``, by default the dataset's threshold
  (2.0, the KuaiRec paper's positive; Gao et al., CIKM 2022); the ``relevant`` column where the data has no
  watch_ratio (SASRec text files).
* ``liked``: the ``liked`` column (``watch_ratio > 0.7``), the original project's label.
* ``all``: every target is relevant (the original project's plain variant ranked all test items).

``resolve_relevance("original", explicit_negatives)`` picks the original project's rule for a model.

Cold-start protocols (``cold_start``, :mod:`sasrec.data.cold_start`): :func:`build_eval_task` removes the
withheld videos' / cold users' removed events from the input history (and from validation targets) and
restricts the test targets to withheld videos (``items``) or to cold users (``users``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sasrec.data.cold_start import ColdStart
from sasrec.data.contracts import (
    LABEL_COLUMNS,
    VALID,
    EvalTask,
    PreparedData,
    Stage,
    left_padded_tails,
    split_column,
)
from sasrec.errors import ConfigError

RELEVANCE_RULES = ("threshold", "liked", "all")
"""Relevance rules of evaluation tasks (see the module docstring)."""


def resolve_relevance(rule: str, explicit_negatives: bool) -> str:
    """The relevance rule to evaluate a model with: ``rule`` itself, or the original project's for ``original``.

    ``original`` resolves to ``liked`` for models trained with explicit negatives or weighted dislikes (the
    original project scored those variants on liked test items) and to ``all`` otherwise (its plain
    variant ranked every test item as a positive).

    Raises:
        ConfigError: ``rule`` is not ``original`` or one of :data:`RELEVANCE_RULES`.
    """
    if rule == "original":
        return "liked" if explicit_negatives else "all"
    _check_relevance(rule, None)
    return rule


def _check_relevance(relevance: str, relevance_threshold: float | None) -> None:
    """Validate a relevance rule and its threshold (only ``threshold`` takes one)."""
    if relevance not in RELEVANCE_RULES:
        raise ConfigError(
            f"relevance must be one of {', '.join(RELEVANCE_RULES)} (or 'original' where a model's training "
            f"decides); got {relevance!r}"
        )
    if relevance_threshold is not None and relevance != "threshold":
        raise ConfigError(
            f"relevance_threshold={relevance_threshold!r} only applies to relevance='threshold'; got "
            f"relevance={relevance!r}"
        )


def _relevance_flags(
    relevance: str, threshold: float, watch_ratio: np.ndarray, relevant: np.ndarray, liked: np.ndarray
) -> np.ndarray:
    """Per target row: relevant under ``relevance`` (see the module docstring)."""
    if relevance == "all":
        return np.ones(len(watch_ratio), dtype=bool)
    if relevance == "liked":
        return np.asarray(liked, dtype=bool)
    return np.where(np.isnan(watch_ratio), np.asarray(relevant, dtype=bool), watch_ratio > threshold)


def _recorded_threshold(relevance: str, threshold: float, data: PreparedData) -> float:
    """The threshold a task records: the relevance threshold, the like threshold, or NaN for ``all``."""
    if relevance == "threshold":
        return float(threshold)
    if relevance == "liked":
        return float(data.meta.get("like_threshold", 0.7))
    return float("nan")


def _candidates(exists: np.ndarray) -> np.ndarray | None:
    """Candidate mask of the items that exist, or None when every item does (the cheaper default)."""
    return None if bool(exists[1:].all()) else exists


def _column_ids(data: PreparedData) -> np.ndarray:
    """(I+1,) int64 original video id of each column of ``data``, -1 for padding."""
    item_ids = np.array(data.item_ids, dtype=np.int64)
    item_ids[0] = -1
    return item_ids


def _target_matrices(
    users: np.ndarray,
    items: np.ndarray,
    watch_ratio: np.ndarray,
    relevant: np.ndarray,
    row_of_user: np.ndarray,
    n_rows: int,
    n_cols: int,
    exclude: sp.csr_matrix | None,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Build aligned (targets, relevant) CSR matrices; repeats keep the max watch_ratio / any relevant."""
    frame = pd.DataFrame(
        {
            "r": row_of_user[users],
            "i": items,
            "w": watch_ratio.astype(np.float32),
            "rel": relevant.astype(np.float32),
        }
    )
    agg = frame.groupby(["r", "i"], sort=True).agg(w=("w", "max"), rel=("rel", "max")).reset_index()
    if exclude is not None and len(agg):
        seen = np.asarray(exclude[agg["r"].to_numpy(), agg["i"].to_numpy()]).ravel() > 0
        agg = agg[~seen]
    r = agg["r"].to_numpy(dtype=np.int64)
    i = agg["i"].to_numpy(dtype=np.int64)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(r, minlength=n_rows), out=indptr[1:])
    targets = sp.csr_matrix((agg["w"].to_numpy(dtype=np.float32), i, indptr), shape=(n_rows, n_cols))
    rel = sp.csr_matrix(
        (agg["rel"].to_numpy(dtype=np.float32), i.copy(), indptr.copy()), shape=(n_rows, n_cols)
    )
    return targets, rel


def untimed_exclusions(
    data: PreparedData, row_of_user: np.ndarray, n_rows: int, n_cols: int, targets: sp.csr_matrix
) -> sp.csr_matrix | None:
    """(n_rows, n_cols) CSR of each evaluated user's untimed (label-only) items that are not targets."""
    labels = data.labels
    if labels is None or len(labels) == 0:
        return None
    rows = row_of_user[labels["user"].to_numpy()]
    keep = rows >= 0
    cols = labels["item"].to_numpy()[keep]
    exclude = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], cols)), shape=(n_rows, n_cols)
    )
    exclude.data[:] = 1.0
    exclude = exclude - exclude.multiply(targets != 0)
    exclude.eliminate_zeros()
    return sp.csr_matrix(exclude) if exclude.nnz else None


def build_eval_task(
    data: PreparedData,
    split: str,
    stage: Stage,
    *,
    maxlen: int = 200,
    relevance: str = "threshold",
    relevance_threshold: float | None = None,
    mask_history: bool = True,
    cold_start: ColdStart | None = None,
    cold_targets: bool = False,
) -> EvalTask:
    """Evaluation task of one dataset's split and stage: users with at least one target event.

    Args:
        data: the prepared dataset.
        split: split method (``temporal``, ``leave_last_n``, ``leave_one_out``).
        stage: ``valid`` (input: training events) or ``test`` (input: training and validation events).
        maxlen: length of the input sequences.
        relevance: ``threshold``, ``liked`` or ``all`` (see the module docstring).
        relevance_threshold: threshold of the ``threshold`` rule; default the dataset's (2.0 for KuaiRec).
        mask_history: exclude each user's input items from ranking (and from targets).
        cold_start: a cold-start protocol (None or ``none``: the stage unchanged). Its removed events are
            neither input nor targets; the test targets are withheld videos' (``items``) or cold users'
            (``users``) events; the task's name ends with ``/cold_<protocol>`` and ``meta["cold_start"]``
            records the protocol, seed and counts.
        cold_targets: with ``cold_start`` and ``stage="valid"``, the *cold validation task*: its targets are
            the validation events the protocol removes (withheld videos' or cold users' validation events,
            which no model fits on or sees as input), the mirror of the test task for choosing settings of a
            cold-start protocol on validation; the name ends with ``/cold_<protocol>_targets``.

    The task's ``item_popularity`` counts the input events of every user of ``data`` (not only the
    evaluated ones); ``candidates`` are the items that exist (ids that never occur in data prepared
    without remapping are never ranked; withheld videos are candidates).
    """
    _check_relevance(relevance, relevance_threshold)
    history_mask, target_mask = data.stage_masks(split, stage)
    name, meta = f"{data.name}/{split}/{stage}", {}
    if cold_targets and (cold_start is None or not cold_start.active or stage != "valid"):
        raise ConfigError("cold_targets needs an active cold_start protocol and stage valid")
    if cold_start is not None and cold_start.active:
        selection = cold_start.select(data, split)
        history_mask = history_mask & selection.keep
        cold = stage == "test" or cold_targets
        target_mask = target_mask & (selection.test_targets & ~selection.keep if cold_targets else
                                     selection.test_targets if cold else selection.keep)  # fmt: skip
        suffix = "_targets" if cold_targets else ""
        name, meta = f"{name}/cold_{cold_start.protocol}{suffix}", {"cold_start": dict(selection.info)}
    target_events = data.events[target_mask]
    users = np.unique(target_events["user"].to_numpy()).astype(np.int64)
    n_cols = data.num_items + 1
    row_of_user = np.full(data.num_users + 1, -1, dtype=np.int64)
    row_of_user[users] = np.arange(len(users))

    indptr, items = data.sequences(history_mask)
    sequences = left_padded_tails(indptr, items, users, maxlen)
    history_full = data.interaction_matrix(history_mask)
    history = history_full[users]

    threshold = float(
        relevance_threshold if relevance_threshold is not None else data.meta.get("relevance_threshold", 2.0)
    )
    wr = target_events["watch_ratio"].to_numpy(dtype=np.float32)
    rel = _relevance_flags(
        relevance, threshold, wr, target_events["relevant"].to_numpy(), target_events["liked"].to_numpy()
    )
    targets, relevant = _target_matrices(
        target_events["user"].to_numpy(),
        target_events["item"].to_numpy(),
        wr,
        rel,
        row_of_user,
        len(users),
        n_cols,
        history if mask_history else None,
    )
    return EvalTask(
        exclude=untimed_exclusions(data, row_of_user, len(users), n_cols, targets),
        name=name,
        users=users,
        sequences=sequences,
        history=history,
        targets=targets,
        relevant=relevant,
        candidates=_candidates(data.existing_items()),
        mask_history=mask_history,
        relevance_threshold=_recorded_threshold(relevance, threshold, data),
        relevance=relevance,
        user_ids=np.asarray(data.user_ids, dtype=np.int64)[users],
        item_ids=_column_ids(data),
        item_popularity=data.item_counts(history_mask),
        meta={
            "dataset": data.name,
            "split": split,
            "stage": stage,
            "maxlen": maxlen,
            "relevance": relevance,
            **meta,
        },
    )


def build_cross_task(
    train_data: PreparedData,
    test_data: PreparedData,
    *,
    maxlen: int = 200,
    relevance: str = "threshold",
    relevance_threshold: float | None = None,
    mask_history: bool = True,
) -> EvalTask:
    """KuaiRec's big-to-small test: rank the small matrix's videos from each user's big-matrix history.

    Ids are matched through the original user and video ids, so the two datasets may be prepared with
    or without remapping; scores live in ``train_data``'s item space. Every small-matrix row, timed or
    not, is a target: the small matrix is fully observed, so its labels are unbiased (Gao et al., CIKM 2022).
    Test videos that do not exist in ``train_data`` are counted in ``meta`` and dropped; a test user
    unknown to ``train_data`` is a :class:`ConfigError`. Relevance as :func:`build_eval_task`, on the test
    rows (the threshold defaults to ``test_data``'s). ``item_popularity`` counts every event of
    ``train_data``: the model is fitted on all of them.
    """
    _check_relevance(relevance, relevance_threshold)
    train_user_index = pd.Series(np.arange(1, train_data.num_users + 1), index=train_data.user_ids[1:])
    train_item_index = pd.Series(np.arange(1, train_data.num_items + 1), index=train_data.item_ids[1:])
    train_exists = train_data.existing_items()
    test_rows = pd.concat([test_data.events[list(LABEL_COLUMNS)], test_data.labels[list(LABEL_COLUMNS)]])
    orig_users = test_data.user_ids[test_rows["user"].to_numpy()]
    orig_items = test_data.item_ids[test_rows["item"].to_numpy()]
    mapped_items = train_item_index.reindex(orig_items).to_numpy()
    known_item = ~np.isnan(mapped_items)
    known_item[known_item] = train_exists[mapped_items[known_item].astype(np.int64)]  # an id without events
    mapped_users = train_user_index.reindex(orig_users).to_numpy()
    test_user_orig = np.unique(orig_users)
    n_unknown_users = int(np.isnan(train_user_index.reindex(test_user_orig).to_numpy()).sum())
    if n_unknown_users:
        raise ConfigError(
            f"{n_unknown_users} users of {test_data.name} have no history in {train_data.name}: "
            "the big-to-small test needs every test user in the training matrix"
        )
    rows_kept = known_item
    users_of_rows = mapped_users[rows_kept].astype(np.int64)
    items_of_rows = mapped_items[rows_kept].astype(np.int64)
    wr = test_rows["watch_ratio"].to_numpy(dtype=np.float32)[rows_kept]
    threshold = float(
        relevance_threshold
        if relevance_threshold is not None
        else test_data.meta.get("relevance_threshold", 2.0)
    )
    rel = _relevance_flags(
        relevance,
        threshold,
        wr,
        test_rows["relevant"].to_numpy()[rows_kept],
        test_rows["liked"].to_numpy()[rows_kept],
    )

    users = np.unique(users_of_rows)
    n_cols = train_data.num_items + 1
    row_of_user = np.full(train_data.num_users + 1, -1, dtype=np.int64)
    row_of_user[users] = np.arange(len(users))
    indptr, items = train_data.sequences()
    sequences = left_padded_tails(indptr, items, users, maxlen)
    history = train_data.interaction_matrix()[users]
    targets, relevant = _target_matrices(
        users_of_rows,
        items_of_rows,
        wr,
        rel,
        row_of_user,
        len(users),
        n_cols,
        history if mask_history else None,
    )
    candidates = np.zeros(n_cols, dtype=bool)
    candidates[np.unique(items_of_rows)] = True
    return EvalTask(
        name=f"{train_data.name}->{test_data.name}",
        users=users,
        sequences=sequences,
        history=history,
        targets=targets,
        relevant=relevant,
        candidates=candidates,
        mask_history=mask_history,
        relevance_threshold=_recorded_threshold(relevance, threshold, test_data),
        relevance=relevance,
        user_ids=np.asarray(train_data.user_ids, dtype=np.int64)[users],
        item_ids=_column_ids(train_data),
        item_popularity=train_data.item_counts(),
        meta={
            "train_dataset": train_data.name,
            "test_dataset": test_data.name,
            "maxlen": maxlen,
            "relevance": relevance,
            "test_rows_with_unknown_video": int((~known_item).sum()),
        },
    )


def recommendation_task(data: PreparedData, *, split: str = "temporal", maxlen: int = 200) -> EvalTask:
    """An :class:`EvalTask` over every user of ``data`` whose input is all train + valid events of ``split``.

    This is the test stage's input: what a deployed model would know. Targets are empty; ``candidates``
    are the items that exist (None when all do).
    """
    history_mask = data.events[split_column(split)].to_numpy() <= VALID
    users = np.arange(1, data.num_users + 1, dtype=np.int64)
    indptr, items = data.sequences(history_mask)
    n_cols = data.num_items + 1
    empty = sp.csr_matrix((len(users), n_cols), dtype=np.float32)
    row_of_user = np.arange(-1, data.num_users, dtype=np.int64)  # user index u -> row u - 1
    return EvalTask(
        exclude=untimed_exclusions(data, row_of_user, len(users), n_cols, empty),
        name=f"{data.name}/{split}/recommend",
        users=users,
        sequences=left_padded_tails(indptr, items, users, maxlen),
        history=data.interaction_matrix(history_mask)[users],
        targets=empty,
        relevant=empty.copy(),
        candidates=_candidates(data.existing_items()),
        mask_history=True,
        relevance_threshold=float(data.meta.get("relevance_threshold", 2.0)),
        user_ids=np.asarray(data.user_ids, dtype=np.int64)[users],
        item_ids=_column_ids(data),
        item_popularity=data.item_counts(history_mask),
        meta={"dataset": data.name, "split": split, "stage": "recommend", "maxlen": maxlen},
    )
