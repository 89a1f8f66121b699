"""Batch-wise evaluation of any scorer on an :class:`~sasrec.data.EvalTask`, confidence intervals, JSON.

Two protocols:

* ``full``: every rankable item (the task's candidates, or all items but padding; minus each user's
  history when ``task.mask_history``, and always minus ``task.exclude``: items the user watched at an
  unknown time, such as KuaiRec's untimed small-matrix rows) is ranked. This is the protocol the study trusts.
* ``sampled``: each user's candidate list is its relevant targets plus ``num_negatives`` negatives sampled
  uniformly, without replacement, from the rankable items that are neither history nor targets; all
  other items are excluded. With one target per user (leave-one-out) and 100 negatives this is the
  HR@10 / NDCG@10 of Kang & McAuley ("Self-Attentive Sequential Recommendation", ICDM 2018) and of the
  study's seed project. Sampled metrics are not consistent with full-ranking ones (Krichene & Rendle,
  "On Sampled Metrics for Item Recommendation", KDD 2020); they are reported for comparison only.

Negatives come from counter-based keys of (seed, user index, item), so they do not depend on the batch
size or device, and every model evaluated with the same seed sees the same negatives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm import tqdm

from sasrec.data.contracts import EvalTask
from sasrec.errors import ConfigError, SasrecError
from sasrec.evaluation.metrics import METRIC_NAMES, ranking_metrics
from sasrec.evaluation.sampling import sampled_candidates
from sasrec.progress import progress_enabled
from sasrec.ranking import top_k_items

PROTOCOLS = ("full", "sampled")


class Scorer(Protocol):
    """Anything that scores every item for some rows of a task."""

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        """Return (len(rows), I+1) scores for ``task`` rows ``rows``; higher is better."""
        ...


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    Attributes:
        summary: metric means (``"ndcg@10"``, ...) and user counts (``"users"`` = users with a relevant
            target, the denominator of the binary metrics; ``"users_with_targets"`` for graded NDCG;
            ``"users_without_relevant"``; ``"users_total"``).
        per_user: one row per task row: user, n_history, n_targets, n_relevant, each metric.
        protocol: ``full`` or ``sampled``.
        k: the cut-off.
        task_name: the task's name.
        relevance_threshold: the task's relevance threshold.
        meta: protocol parameters (negatives, seed, gain clip) and the task's meta.
    """

    summary: dict[str, float]
    per_user: pd.DataFrame
    protocol: str
    k: int
    task_name: str
    relevance_threshold: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready description (without the per-user table)."""
        return {
            "task_name": self.task_name,
            "protocol": self.protocol,
            "k": self.k,
            "relevance_threshold": self.relevance_threshold,
            "summary": dict(self.summary),
            "meta": dict(self.meta),
        }


def _dense_rows(
    matrix: sp.csr_matrix,
    start: int,
    stop: int,
    device: torch.device,
    values: np.ndarray | None = None,
) -> torch.Tensor:
    """Rows start..stop-1 of a CSR as a dense (B, C) tensor.

    Without ``values``: bool, True at stored entries. With ``values`` (aligned with ``matrix.data``):
    those values at stored entries, 0 elsewhere, in ``values``' dtype.
    """
    indptr = matrix.indptr
    lo, hi = int(indptr[start]), int(indptr[stop])
    counts = np.diff(indptr[start : stop + 1])
    row_index = torch.from_numpy(np.repeat(np.arange(stop - start), counts)).to(device)
    col_index = torch.from_numpy(np.array(matrix.indices[lo:hi], dtype=np.int64)).to(device)
    shape = (stop - start, matrix.shape[1])
    if values is None:
        dense = torch.zeros(shape, dtype=torch.bool, device=device)
        dense[row_index, col_index] = True
        return dense
    chunk = torch.from_numpy(np.array(values[lo:hi]))
    dense = torch.zeros(shape, dtype=chunk.dtype, device=device)
    dense[row_index, col_index] = chunk.to(device)
    return dense


def _target_values(
    targets: sp.csr_matrix, relevant: sp.csr_matrix, gain_clip: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per stored target entry: (relevant as bool, graded gain), aligned with ``targets.data``.

    Gain = ``min(watch_ratio, gain_clip)`` (at least 0); a NaN watch_ratio takes the relevance (0 or 1).
    """
    same_structure = np.array_equal(targets.indptr, relevant.indptr) and np.array_equal(
        targets.indices, relevant.indices
    )
    if same_structure:
        rel_values = np.asarray(relevant.data, dtype=np.float32)
    else:  # look each target up in ``relevant`` (entries of ``relevant`` outside the targets are ignored)
        rows = np.repeat(np.arange(targets.shape[0]), np.diff(targets.indptr))
        rel_values = np.asarray(relevant[rows, targets.indices], dtype=np.float32).ravel()
    watch_ratio = np.asarray(targets.data, dtype=np.float32)
    gains = np.where(np.isnan(watch_ratio), rel_values, watch_ratio)
    return rel_values > 0, np.clip(gains, 0.0, gain_clip).astype(np.float32)


def _check_scores(scores: Any, n_rows: int, n_cols: int, task: EvalTask, start: int) -> torch.Tensor:
    """Validate a scorer's output for one batch."""
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(np.asarray(scores))
    if tuple(scores.shape) != (n_rows, n_cols):
        raise SasrecError(
            f"scorer returned scores of shape {tuple(scores.shape)} for {n_rows} rows of task {task.name}; "
            f"expected ({n_rows}, {n_cols}) = (rows, items + 1 padding column)"
        )
    scores = scores.detach().to(torch.float32)
    nan_rows = torch.isnan(scores).any(dim=1)
    if bool(nan_rows.any()):
        bad = nan_rows.nonzero()[:, 0]
        raise SasrecError(
            f"scorer returned NaN scores in {int(bad.numel())} of {n_rows} rows of task {task.name} "
            f"(first: task row {start + int(bad[0])}, user {int(task.users[start + int(bad[0])])}); "
            "expected finite scores (or -inf for items the model excludes)"
        )
    return scores


def _validate(task: EvalTask, k: int, protocol: str, num_negatives: int, gain_clip: float) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {protocol!r}")
    if not isinstance(k, int | np.integer) or k < 1:
        raise ConfigError(f"k must be a positive integer; got {k!r}")
    if protocol == "sampled" and (not isinstance(num_negatives, int | np.integer) or num_negatives < 1):
        raise ConfigError(f"num_negatives must be a positive integer; got {num_negatives!r}")
    if not gain_clip > 0:
        raise ConfigError(f"gain_clip must be positive; got {gain_clip!r}")
    n_cols = task.history.shape[1]
    for name in ("targets", "relevant"):
        matrix = getattr(task, name)
        if matrix.shape != (len(task), n_cols):
            raise ConfigError(
                f"task {task.name}: {name} has shape {matrix.shape}; expected ({len(task)}, {n_cols})"
            )
    if task.candidates is not None and task.candidates.shape != (n_cols,):
        raise ConfigError(
            f"task {task.name}: candidates has shape {task.candidates.shape}; expected ({n_cols},)"
        )


def evaluate(
    scorer: Scorer,
    task: EvalTask,
    *,
    k: int = 10,
    protocol: str = "full",
    num_negatives: int = 100,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    gain_clip: float = 5.0,
    item_popularity: np.ndarray | None = None,
    progress: bool | None = None,
) -> EvalResult:
    """Rank items for every user of ``task`` in batches and compute top-``k`` metrics.

    Args:
        scorer: object with ``score(task, rows) -> (len(rows), I+1) tensor``.
        task: the evaluation task.
        k: cut-off.
        protocol: ``full`` (rank all rankable items) or ``sampled`` (relevant targets + negatives).
        num_negatives: negatives per user for the sampled protocol.
        seed: seed of the sampled negatives.
        batch_size: users per batch (the dense score matrix is batch_size x (I+1) floats).
        device: where metrics are computed; default the device of the scores.
        gain_clip: graded-NDCG gains are ``min(watch_ratio, gain_clip)``.
        item_popularity: (I+1,) popularity for mean_popularity@k; default column sums of task.history.
        progress: tqdm bar (default from ``SASREC_PROGRESS``).

    Returns:
        An :class:`EvalResult` with means over users (binary metrics over users with a relevant target,
        graded NDCG over users with a positive-gain target) and the per-user table.
    """
    _validate(task, k, protocol, num_negatives, gain_clip)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive; got {batch_size!r}")
    n_rows, n_cols = len(task), task.history.shape[1]
    history = sp.csr_matrix(task.history)
    exclude = None if task.exclude is None else sp.csr_matrix(task.exclude)
    targets = sp.csr_matrix(task.targets)
    target_relevant, target_gains = _target_values(targets, sp.csr_matrix(task.relevant), gain_clip)
    if item_popularity is None:
        popularity_np = np.asarray((history != 0).sum(axis=0), dtype=np.float64).ravel()
    else:
        popularity_np = np.asarray(item_popularity, dtype=np.float64).ravel()
        if popularity_np.shape != (n_cols,):
            raise ConfigError(f"item_popularity has shape {popularity_np.shape}; expected ({n_cols},)")
    base_rankable_np = (
        np.ones(n_cols, dtype=bool) if task.candidates is None else task.candidates.astype(bool)
    )
    base_rankable_np = base_rankable_np.copy()
    base_rankable_np[0] = False
    n_rankable_items = int(base_rankable_np.sum())

    metric_columns: dict[str, list[np.ndarray]] = {}
    popularity_column: list[np.ndarray] = []
    candidates_column: list[np.ndarray] = []
    recommended: torch.Tensor | None = None
    starts = range(0, n_rows, batch_size)
    bar = tqdm(starts, desc=f"evaluate {task.name}", unit="batch", disable=not progress_enabled(progress))
    with torch.no_grad():
        for start in bar:
            stop = min(start + batch_size, n_rows)
            rows = np.arange(start, stop)
            scores = _check_scores(scorer.score(task, rows), stop - start, n_cols, task, start)
            dev = torch.device(device) if device is not None else scores.device
            scores = scores.to(dev)
            if recommended is None:
                recommended = torch.zeros(n_cols, dtype=torch.bool, device=dev)
                base_rankable = torch.from_numpy(base_rankable_np).to(dev)
                popularity = torch.from_numpy(popularity_np.astype(np.float32)).to(dev)
            hist_present = _dense_rows(history, start, stop, dev)  # (B, C) bool
            target_present = _dense_rows(targets, start, stop, dev)  # (B, C) bool
            relevant = _dense_rows(targets, start, stop, dev, target_relevant)  # (B, C) bool
            gains = _dense_rows(targets, start, stop, dev, target_gains)  # (B, C) float32

            if task.mask_history:
                rankable = ~hist_present & base_rankable[None, :]  # (B, C)
            else:
                rankable = base_rankable[None, :].expand(stop - start, n_cols)  # (B, C)
            if exclude is not None:  # known interactions of unknown time: neither input nor target
                rankable = rankable & ~_dense_rows(exclude, start, stop, dev)  # (B, C)
            if protocol == "sampled":
                user_keys = torch.from_numpy(np.array(task.users[start:stop], dtype=np.int64)).to(dev)
                rankable = sampled_candidates(
                    rankable, hist_present, target_present, relevant, user_keys, num_negatives, seed
                )

            candidates_column.append(
                rankable.sum(dim=1).cpu().numpy()
            )  # (B,) items each user is ranked among
            items, valid = top_k_items(scores, rankable, k)  # (B, k')
            batch_metrics = ranking_metrics(items, valid, relevant.float(), gains, rankable, k)
            for name, values in batch_metrics.items():
                metric_columns.setdefault(name, []).append(values.cpu().numpy())
            recommended[items[valid]] = True
            pop = torch.gather(popularity.expand(stop - start, n_cols), 1, items) * valid
            n_valid = valid.sum(dim=1)
            mean_pop = torch.where(n_valid > 0, pop.sum(dim=1) / n_valid.clamp(min=1), float("nan"))
            popularity_column.append(mean_pop.cpu().numpy())

    per_user = pd.DataFrame(
        {
            "user": np.asarray(task.users, dtype=np.int64),
            "n_history": np.diff(history.indptr).astype(np.int64),
            "n_targets": np.diff(targets.indptr).astype(np.int64),
            "n_relevant": np.bincount(
                np.repeat(np.arange(n_rows), np.diff(targets.indptr)),
                weights=target_relevant,
                minlength=n_rows,
            ).astype(np.int64),
            "n_candidates": (
                np.concatenate(candidates_column).astype(np.int64)
                if candidates_column
                else np.zeros(0, np.int64)
            ),
        }
    )
    for name in (f"{metric}@{k}" for metric in METRIC_NAMES):
        chunks = metric_columns.get(name, [])
        per_user[name] = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    per_user[f"mean_popularity@{k}"] = (
        np.concatenate(popularity_column) if popularity_column else np.zeros(0, dtype=np.float32)
    )
    summary = _summarise(per_user, k, recommended, n_rankable_items)
    meta = {"gain_clip": gain_clip, **({} if task.meta is None else dict(task.meta))}
    if protocol == "sampled":
        meta.update({"num_negatives": num_negatives, "seed": seed})
    return EvalResult(
        summary=summary,
        per_user=per_user,
        protocol=protocol,
        k=int(k),
        task_name=task.name,
        relevance_threshold=float(task.relevance_threshold),
        meta=meta,
    )


def _summarise(
    per_user: pd.DataFrame, k: int, recommended: torch.Tensor | None, n_rankable_items: int
) -> dict[str, float]:
    """Means over eligible users plus user counts."""
    summary: dict[str, float] = {}
    metric_names = [c for c in per_user.columns if "@" in c]
    for name in metric_names:
        values = per_user[name].to_numpy(dtype=np.float64)
        finite = values[~np.isnan(values)]
        summary[name] = float(finite.mean()) if len(finite) else float("nan")
    n_distinct = int(recommended.sum()) if recommended is not None else 0
    summary[f"coverage@{k}"] = n_distinct / n_rankable_items if n_rankable_items else float("nan")
    with_relevant = int((per_user["n_relevant"] > 0).sum())
    summary["users"] = with_relevant
    summary["users_with_targets"] = int((per_user["n_targets"] > 0).sum())
    summary["users_without_relevant"] = int(len(per_user) - with_relevant)
    summary["users_total"] = int(len(per_user))
    eligible = per_user["n_relevant"] > 0
    # items each evaluated user is ranked among: all unmasked items (full) or relevant + negatives (sampled)
    summary["mean_candidates"] = (
        float(per_user.loc[eligible, "n_candidates"].mean()) if eligible.any() else float("nan")
    )
    return summary
