"""Batch-wise evaluation of any scorer on an :class:`~sasrec.data.EvalTask`, confidence intervals, JSON.

Two protocols:

* ``full``: every rankable item (the task's candidates, or all items but padding; minus each user's
  history when ``task.mask_history``, and always minus ``task.exclude``: items the user watched at an
  unknown time, such as KuaiRec's untimed small-matrix rows) is ranked. This is the protocol the study trusts.
* ``sampled``: the original project's protocol (see :mod:`sasrec.evaluation.sampling`): each user's
  positives (relevant, rankable targets) ranked together with ``num_negatives`` negatives drawn uniformly,
  without replacement, from the candidates outside the user's history, positives and excluded items (a
  watched but non-relevant target can be a negative); all of them where fewer are eligible. With one target
  per user (leave-one-out) and 100 negatives this is the HR@10 / NDCG@10 of Kang & McAuley
  ("Self-Attentive Sequential Recommendation", ICDM 2018). Sampled metrics are not consistent with
  full-ranking ones (Krichene & Rendle, "On Sampled Metrics for Item Recommendation", KDD 2020); they are
  reported for comparison only.

Negatives are counter-based draws of (seed, original user id), so they do not depend on the batch size,
the device or how the dataset was indexed, and every model evaluated with the same seed sees the same
negatives. Neither protocol builds a dense (users x items) mask: history and excluded items are written as
``-inf`` into each batch's scores from their sparse coordinates, and targets are looked up by key.
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
from sasrec.evaluation.metrics import METRIC_NAMES, metrics_from_hits
from sasrec.evaluation.sampling import CandidateLists, csr_entries, sampled_candidates
from sasrec.progress import progress_enabled
from sasrec.ranking import ranking_keys, top_k_keyed, top_k_narrow

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
        summary: metric means (``"ndcg@10"``, ...); ``"users_<metric>"``: the number of users each mean is
            over (binary metrics: users with a relevant target; graded NDCG: users with a positive-gain
            target; mean popularity: users with a non-empty list); user counts (``"users"`` = users with a
            relevant target, ``"users_with_targets"``, ``"users_without_relevant"``, ``"users_total"``);
            ``"mean_candidates"``; sampled protocol: ``"users_with_fewer_negatives"`` (users with a
            relevant target who had fewer eligible negatives than asked).
        per_user: one row per task row: user, n_history, n_targets, n_relevant, each metric.
        protocol: ``full`` or ``sampled``.
        k: the cut-off.
        task_name: the task's name.
        relevance_threshold: the task's relevance threshold (the like threshold for ``liked``, NaN for ``all``).
        meta: protocol parameters (negatives, seed, gain clip) and the task's meta.
        relevance: the task's relevance rule (``threshold``, ``liked`` or ``all``).
    """

    summary: dict[str, float]
    per_user: pd.DataFrame
    protocol: str
    k: int
    task_name: str
    relevance_threshold: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)
    relevance: str = "threshold"

    def to_dict(self) -> dict:
        """JSON-ready description (without the per-user table)."""
        return {
            "task_name": self.task_name,
            "protocol": self.protocol,
            "k": self.k,
            "relevance": self.relevance,
            "relevance_threshold": self.relevance_threshold,
            "summary": dict(self.summary),
            "meta": dict(self.meta),
        }


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
        rows = csr_entries(targets)[0]
        rel_values = np.asarray(relevant[rows, targets.indices], dtype=np.float32).ravel()
    watch_ratio = np.asarray(targets.data, dtype=np.float32)
    gains = np.where(np.isnan(watch_ratio), rel_values, watch_ratio)
    return rel_values > 0, np.clip(gains, 0.0, gain_clip).astype(np.float32)


def _check_scores(scores: Any, n_rows: int, n_cols: int, task: EvalTask, start: int) -> torch.Tensor:
    """Validate a scorer's output for one batch (NaN found through row sums: one cheap pass)."""
    if not isinstance(scores, torch.Tensor):
        scores = torch.as_tensor(np.asarray(scores))
    if tuple(scores.shape) != (n_rows, n_cols):
        raise SasrecError(
            f"scorer returned scores of shape {tuple(scores.shape)} for {n_rows} rows of task {task.name}; "
            f"expected ({n_rows}, {n_cols}) = (rows, items + 1 padding column)"
        )
    scores = scores.detach().to(torch.float32)
    suspect = torch.isnan(scores.sum(dim=1))  # (B,) NaN when a score is NaN (or +inf meets -inf)
    if bool(suspect.any()):
        nan_rows = torch.zeros_like(suspect)
        nan_rows[suspect] = torch.isnan(scores[suspect]).any(dim=1)
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


def _pattern(matrix: sp.spmatrix | None) -> sp.csr_matrix | None:
    """Canonical CSR (sorted, distinct indices) holding 1.0 at every stored entry of ``matrix`` (or None).

    Shares the index arrays of an already canonical CSR (no copy of the structure).
    """
    if matrix is None:
        return None
    csr = sp.csr_matrix(matrix)
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()  # sorts the indices of each row
    return sp.csr_matrix((np.ones(csr.nnz, dtype=np.float32), csr.indices, csr.indptr), shape=csr.shape)


def _row_counts(matrix: sp.csr_matrix, flags: np.ndarray) -> np.ndarray:
    """(rows,) int64 number of stored entries per row whose column is flagged, without a per-entry row array."""
    cumulative = np.zeros(matrix.nnz + 1, dtype=np.int64)
    np.cumsum(flags[matrix.indices], out=cumulative[1:])
    return cumulative[matrix.indptr[1:]] - cumulative[matrix.indptr[:-1]]


def _members(keys: np.ndarray, matrix: sp.csr_matrix | None, pattern: sp.csr_matrix) -> np.ndarray:
    """(len(keys),) bool: which ``row * C + column`` keys of ``pattern``'s entries are stored in ``matrix``."""
    if matrix is None:
        return np.zeros(len(keys), dtype=bool)
    common = pattern.multiply(matrix).tocsr()  # entries in both: O(nnz), usually none
    common.eliminate_zeros()
    if common.nnz == 0:
        return np.zeros(len(keys), dtype=bool)
    return np.isin(keys, csr_entries(common)[0] * matrix.shape[1] + common.indices)


class TaskArrays:
    """What :func:`evaluate` needs of a task, computed once: sparse layouts and per-row counts, no dense mask.

    Target entries are kept as sorted keys ``row * C + item`` with their relevance, gain and rankability;
    a batch looks its ranked items up with one ``searchsorted``.
    """

    def __init__(self, task: EvalTask, k: int, gain_clip: float) -> None:
        n_rows, n_cols = len(task), task.history.shape[1]
        self.n_cols = n_cols
        self.mask_history = bool(task.mask_history)
        self.history = _pattern(task.history)
        self.exclude = _pattern(task.exclude) if task.exclude is not None and task.exclude.nnz else None
        targets = sp.csr_matrix(task.targets).sorted_indices()
        relevant = sp.csr_matrix(task.relevant).sorted_indices()
        self.targets = targets
        target_relevant, target_gains = _target_values(targets, relevant, gain_clip)

        base = np.ones(n_cols, dtype=bool) if task.candidates is None else task.candidates.astype(bool).copy()
        base[0] = False
        self.base = base
        self.n_rankable_items = int(base.sum())
        # Full protocol: with a candidate set, rank only its columns (at least min(k, C) wide, -inf filled).
        self.compact = task.candidates is not None
        cand_items = np.flatnonzero(base).astype(np.int64)
        self.k_eff = min(int(k), n_cols)
        self.pad_columns = max(self.k_eff - len(cand_items), 0) if self.compact else 0
        self.columns = np.concatenate([cand_items, np.zeros(self.pad_columns, dtype=np.int64)])
        self.column_of_item = np.full(n_cols, -1, dtype=np.int64)
        self.column_of_item[cand_items] = np.arange(len(cand_items))
        self._buffer: torch.Tensor | None = None  # keys of the full protocol, reused across batches
        self._columns: torch.Tensor | None = None

        t_rows = csr_entries(targets)[0]
        t_cols = targets.indices.astype(np.int64)
        self.target_keys = t_rows * n_cols + t_cols  # (T,) sorted: canonical CSR, row-major
        t_pattern = _pattern(targets)
        in_exclude = _members(self.target_keys, self.exclude, t_pattern)
        in_history = _members(self.target_keys, self.history if self.mask_history else None, t_pattern)
        target_rankable = base[t_cols] & ~in_exclude & ~in_history
        self.target_relevant = target_relevant  # (T,) bool
        self.target_positive = target_relevant & target_rankable  # (T,) relevant and rankable: always sampled
        positives = sp.csr_matrix(
            (self.target_positive.astype(np.float32), targets.indices, targets.indptr),
            shape=targets.shape,
            copy=True,  # eliminate_zeros works in place: the targets' arrays must not be shared
        )
        positives.eliminate_zeros()
        self.positives = positives  # the sampled protocol's positives (row-sliced per batch)
        self.target_gains = target_gains  # (T,) float32
        self.n_relevant = np.bincount(t_rows, weights=target_relevant, minlength=n_rows).astype(np.int64)

        # Ideal graded DCG of the full protocol: the k' largest gains among each row's rankable targets.
        keep = np.flatnonzero(target_rankable)
        order = keep[np.lexsort((-target_gains[keep], t_rows[keep]))]  # by row, then decreasing gain
        first = np.searchsorted(t_rows[order], np.arange(n_rows))
        rank = np.arange(len(order)) - first[t_rows[order]]
        top = rank < self.k_eff
        self.ideal_gains = np.zeros((n_rows, self.k_eff), dtype=np.float32)
        self.ideal_gains[t_rows[order][top], rank[top]] = target_gains[order][top]

        # Items each row is ranked among in the full protocol: candidates minus masked history and exclude.
        blocked = np.zeros(n_rows, dtype=np.int64)
        if self.mask_history:
            blocked += _row_counts(self.history, base)
        if self.exclude is not None:
            blocked += _row_counts(self.exclude, base)
            if self.mask_history:  # an excluded item also in the history is blocked once
                e_rows = csr_entries(self.exclude)[0]
                twice = _members(e_rows * n_cols + self.exclude.indices, self.history, self.exclude)
                twice &= base[self.exclude.indices]
                blocked -= np.bincount(e_rows[twice], minlength=n_rows)
        self.n_candidates_full = self.n_rankable_items - blocked

    def lookup(self, start: int, stop: int, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (B, L) items of rows start..stop-1: (relevant, gain) of each, False / 0 for non-targets."""
        lo, hi = int(self.targets.indptr[start]), int(self.targets.indptr[stop])
        if hi == lo:
            return np.zeros(items.shape, dtype=bool), np.zeros(items.shape, dtype=np.float32)
        keys = self.target_keys[lo:hi]  # (T_b,) sorted
        query = np.arange(start, stop, dtype=np.int64)[:, None] * self.n_cols + items  # (B, L)
        index = np.minimum(np.searchsorted(keys, query), hi - lo - 1)
        found = keys[index] == query  # (B, L)
        relevant = self.target_relevant[lo:hi][index] & found
        gains = np.where(found, self.target_gains[lo:hi][index], np.float32(0.0))
        return relevant, gains

    def sample(
        self, start: int, stop: int, row_keys: np.ndarray, num_negatives: int, seed: int
    ) -> CandidateLists:
        """Sampled-protocol candidate lists of rows start..stop-1 (at least k' slots wide)."""
        positives = self.positives[start:stop]
        blocked = [self.history[start:stop], None if self.exclude is None else self.exclude[start:stop]]
        return sampled_candidates(
            positives, blocked, self.base, row_keys[start:stop], num_negatives, seed, min_width=self.k_eff
        )

    def rank_sampled(
        self,
        scores: torch.Tensor,
        start: int,
        stop: int,
        k: int,
        row_keys: np.ndarray,
        num_negatives: int,
        seed: int,
    ) -> tuple[np.ndarray, ...]:
        """Sampled protocol for rows start..stop-1: each row's candidate list ranked by its scores.

        The lists are ranked on the CPU with numpy: (B, ~100) arrays, where one thread beats a thread pool.

        Returns:
            items, valid, hits, ranked gains, ideal gains (each (B, k')), candidates per row, eligible
            negatives per row.
        """
        lists = self.sample(start, stop, row_keys, num_negatives, seed)
        device_items = torch.from_numpy(lists.items).to(scores.device)
        gathered = torch.gather(scores, 1, device_items).cpu().numpy()  # (B, L)
        finite = np.maximum(gathered, np.finfo(np.float32).min)  # a rankable -inf precedes the filler slots
        order, valid = top_k_narrow(
            np.where(lists.valid, finite, -np.inf), k
        )  # (B, k') positions in the lists
        _, gains = self.lookup(start, stop, lists.items)
        gains = np.where(lists.valid, gains, np.float32(0.0))  # (B, L)
        items = np.take_along_axis(lists.items, order, axis=1)
        hits = np.take_along_axis(lists.positive, order, axis=1) & valid
        ranked_gains = np.take_along_axis(gains, order, axis=1) * valid
        ideal = -np.sort(-gains, axis=1)[:, : order.shape[1]]  # the list's largest gains
        return items, valid, hits, ranked_gains, ideal, lists.valid.sum(axis=1), lists.n_eligible

    def rank_full(
        self, scores: torch.Tensor, start: int, stop: int, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k items of every rankable item (full protocol): (items, valid), each (B, k').

        The keys are written into a buffer kept across batches: fresh (B, C) memory per batch costs more
        than the clamp itself.
        """
        device, n_rows = scores.device, stop - start
        width = len(self.columns) if self.compact else self.n_cols
        if self._buffer is None or self._buffer.device != device or self._buffer.shape[0] < n_rows:
            self._buffer = torch.empty((n_rows, width), dtype=torch.float32, device=device)
            self._columns = torch.from_numpy(self.columns).to(device)
        keyed = self._buffer[:n_rows]  # (B, width), contiguous
        if self.compact:
            torch.index_select(scores, 1, self._columns, out=keyed)  # (B, n_cand [+ pad])
            ranking_keys(keyed, out=keyed)
            if self.pad_columns:
                keyed[:, width - self.pad_columns :] = float("-inf")
        else:
            ranking_keys(scores, out=keyed)  # (B, C)
            keyed[:, 0] = float("-inf")
        for matrix in (self.history if self.mask_history else None, self.exclude):
            if matrix is None:
                continue
            rows, items = csr_entries(matrix[start:stop])  # (batch row, item)
            if self.compact:
                cols = self.column_of_item[items]
                rows, items = rows[cols >= 0], cols[cols >= 0]
            keyed.index_put_(
                (torch.from_numpy(rows).to(device), torch.from_numpy(items).to(device)),
                torch.tensor(float("-inf"), device=device),
            )
        positions, valid = top_k_keyed(keyed, k)  # (B, k')
        if self.compact:
            return self._columns[positions], valid
        return positions, valid


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
        protocol: ``full`` (rank all rankable items) or ``sampled`` (positives + sampled negatives).
        num_negatives: negatives per user for the sampled protocol.
        seed: seed of the sampled negatives.
        batch_size: users per batch (the dense score matrix is batch_size x (I+1) floats).
        device: where metrics are computed; default the device of the scores.
        gain_clip: graded-NDCG gains are ``min(watch_ratio, gain_clip)``.
        item_popularity: (I+1,) popularity for mean_popularity@k; default ``task.item_popularity`` (the
            input events of every user of the data the model is fitted on), else column sums of
            ``task.history``.
        progress: tqdm bar (default from ``SASREC_PROGRESS``).

    Returns:
        An :class:`EvalResult` with means over users (binary metrics over users with a relevant target,
        graded NDCG over users with a positive-gain target; ``users_<metric>`` says how many) and the
        per-user table.
    """
    _validate(task, k, protocol, num_negatives, gain_clip)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive; got {batch_size!r}")
    n_rows, n_cols = len(task), task.history.shape[1]
    arrays = TaskArrays(task, k, gain_clip)
    popularity_np = _popularity(task, arrays, item_popularity)
    columns = _Columns()
    recommended: torch.Tensor | None = None
    bar = tqdm(range(0, n_rows, batch_size), desc=f"evaluate {task.name}", unit="batch",
               disable=not progress_enabled(progress))  # fmt: skip
    with torch.no_grad():
        for start in bar:
            stop = min(start + batch_size, n_rows)
            scores = _check_scores(
                scorer.score(task, np.arange(start, stop)), stop - start, n_cols, task, start
            )
            dev = torch.device(device) if device is not None else scores.device
            if recommended is None:
                recommended = torch.zeros(n_cols, dtype=torch.bool, device=dev)
                popularity = torch.from_numpy(popularity_np.astype(np.float32)).to(dev)
            ranked = _rank_batch(
                arrays, scores.to(dev), start, stop, k, protocol, task.row_keys, num_negatives, seed
            )
            items, valid, hits, ranked_gains, ideal = ranked.tensors
            n_relevant = torch.from_numpy(arrays.n_relevant[start:stop]).to(dev)  # (B,)
            metrics = metrics_from_hits(hits.to(torch.float32), ranked_gains, n_relevant, ideal, k)
            recommended[items[valid]] = True
            n_valid = valid.sum(dim=1)
            mean_pop = torch.where(
                n_valid > 0, (popularity[items] * valid).sum(dim=1) / n_valid.clamp(min=1), float("nan")
            )
            columns.add(metrics, mean_pop, ranked.n_candidates, ranked.n_eligible)
    per_user = columns.frame(task, arrays, k)
    summary = _summarise(per_user, k, recommended, arrays.n_rankable_items)
    meta = {"gain_clip": gain_clip, **({} if task.meta is None else dict(task.meta))}
    if protocol == "sampled":
        evaluated = per_user["n_relevant"].to_numpy() > 0
        summary["users_with_fewer_negatives"] = int(((columns.eligible() < num_negatives) & evaluated).sum())
        meta.update({"num_negatives": num_negatives, "seed": seed})
    return EvalResult(summary=summary, per_user=per_user, protocol=protocol, k=int(k), task_name=task.name,
                      relevance_threshold=float(task.relevance_threshold), relevance=task.relevance, meta=meta)  # fmt: skip


def _popularity(task: EvalTask, arrays: TaskArrays, item_popularity: np.ndarray | None) -> np.ndarray:
    """(I+1,) popularity for mean_popularity@k: given, else the task's (the fitted data's), else history sums."""
    n_cols = task.history.shape[1]
    if item_popularity is None:
        item_popularity = task.item_popularity
    if item_popularity is None:
        return np.asarray(arrays.history.sum(axis=0), dtype=np.float64).ravel()
    popularity = np.asarray(item_popularity, dtype=np.float64).ravel()
    if popularity.shape != (n_cols,):
        raise ConfigError(f"item_popularity has shape {popularity.shape}; expected ({n_cols},)")
    return popularity


@dataclass
class _Ranked:
    """One batch ranked under a protocol: (items, valid, hits, gains, ideal gains) tensors (B, k'), and per
    row the number of candidates and of eligible negatives (sampled protocol)."""

    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
    n_candidates: np.ndarray
    n_eligible: np.ndarray | None


def _rank_batch(
    arrays: TaskArrays, scores: torch.Tensor, start: int, stop: int, k: int, protocol: str,
    row_keys: np.ndarray, num_negatives: int, seed: int,
) -> _Ranked:  # fmt: skip
    """Top-k of rows start..stop under ``protocol`` with the hits and gains of the ranked items."""
    dev = scores.device
    if protocol == "full":
        items, valid = arrays.rank_full(scores, start, stop, k)  # (B, k')
        relevant, gains = arrays.lookup(start, stop, items.cpu().numpy())
        hits = torch.from_numpy(relevant).to(dev) & valid  # a relevant target ranked (rankable)
        ideal = torch.from_numpy(arrays.ideal_gains[start:stop]).to(dev)  # (B, k')
        ranked_gains = torch.from_numpy(gains).to(dev) * valid
        return _Ranked((items, valid, hits, ranked_gains, ideal), arrays.n_candidates_full[start:stop], None)
    ranked = arrays.rank_sampled(scores, start, stop, k, row_keys, num_negatives, seed)
    tensors = tuple(torch.from_numpy(a).to(dev) for a in ranked[:5])
    return _Ranked(tensors, ranked[5], ranked[6])  # type: ignore[arg-type]


@dataclass
class _Columns:
    """Per-user results accumulated batch by batch."""

    metrics: dict[str, list[np.ndarray]] = field(default_factory=dict)
    popularity: list[np.ndarray] = field(default_factory=list)
    candidates: list[np.ndarray] = field(default_factory=list)
    eligible_negatives: list[np.ndarray] = field(default_factory=list)

    def add(self, metrics: dict[str, torch.Tensor], mean_pop: torch.Tensor, n_candidates: np.ndarray,
            n_eligible: np.ndarray | None) -> None:  # fmt: skip
        for name, values in metrics.items():
            self.metrics.setdefault(name, []).append(values.cpu().numpy())
        self.popularity.append(mean_pop.cpu().numpy())
        self.candidates.append(np.asarray(n_candidates))
        if n_eligible is not None:
            self.eligible_negatives.append(np.asarray(n_eligible))

    @staticmethod
    def _joined(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype=dtype)

    def eligible(self) -> np.ndarray:
        """Eligible negatives per user (sampled protocol)."""
        return self._joined(self.eligible_negatives, np.int64)

    def frame(self, task: EvalTask, arrays: TaskArrays, k: int) -> pd.DataFrame:
        """The per-user table: user, counts, every metric at k, mean popularity of the list."""
        per_user = pd.DataFrame(
            {
                "user": np.asarray(task.users, dtype=np.int64),
                "n_history": np.diff(arrays.history.indptr).astype(np.int64),
                "n_targets": np.diff(arrays.targets.indptr).astype(np.int64),
                "n_relevant": arrays.n_relevant,
                "n_candidates": self._joined(self.candidates, np.int64),
            }
        )
        for name in (f"{metric}@{k}" for metric in METRIC_NAMES):
            per_user[name] = self._joined(self.metrics.get(name, []), np.float32)
        per_user[f"mean_popularity@{k}"] = self._joined(self.popularity, np.float32)
        return per_user


def _summarise(
    per_user: pd.DataFrame, k: int, recommended: torch.Tensor | None, n_rankable_items: int
) -> dict[str, float]:
    """Means over the users each metric is defined for, how many those are, and user counts."""
    summary: dict[str, float] = {}
    metric_names = [c for c in per_user.columns if "@" in c]
    counts: dict[str, int] = {}
    for name in metric_names:
        values = per_user[name].to_numpy(dtype=np.float64)
        finite = values[~np.isnan(values)]
        summary[name] = float(finite.mean()) if len(finite) else float("nan")
        counts[f"users_{name}"] = int(len(finite))
    n_distinct = int(recommended.sum()) if recommended is not None else 0
    summary[f"coverage@{k}"] = n_distinct / n_rankable_items if n_rankable_items else float("nan")
    with_relevant = int((per_user["n_relevant"] > 0).sum())
    summary["users"] = with_relevant
    summary["users_with_targets"] = int((per_user["n_targets"] > 0).sum())
    summary["users_without_relevant"] = int(len(per_user) - with_relevant)
    summary["users_total"] = int(len(per_user))
    eligible = per_user["n_relevant"] > 0
    # items each evaluated user is ranked among: all unmasked items (full) or positives + negatives (sampled)
    summary["mean_candidates"] = (
        float(per_user.loc[eligible, "n_candidates"].mean()) if eligible.any() else float("nan")
    )
    summary.update(counts)  # users each mean is over: binary metrics, graded NDCG, mean popularity
    return summary


def sampled_lists(
    task: EvalTask, *, num_negatives: int = 100, seed: int = 0, batch_size: int = 512
) -> pd.DataFrame:
    """The sampled protocol's candidate lists of every task row, as :func:`evaluate` ranks them.

    Returns:
        One row per (task row, candidate): ``row``, ``user`` (internal index), ``item`` (internal index),
        ``positive`` (a relevant target, else a sampled negative), ``n_eligible`` (items the row could
        draw negatives from); by row, then item.
    """
    _validate(task, 10, "sampled", num_negatives, 1.0)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive; got {batch_size!r}")
    arrays = TaskArrays(task, 10, 1.0)
    frames = []
    for start in range(0, len(task), batch_size):
        stop = min(start + batch_size, len(task))
        lists = arrays.sample(start, stop, task.row_keys, num_negatives, seed)
        counts = lists.valid.sum(axis=1)
        rows = np.repeat(np.arange(start, stop), counts)
        frames.append(
            pd.DataFrame(
                {
                    "row": rows,
                    "user": np.asarray(task.users, dtype=np.int64)[rows],
                    "item": lists.items[lists.valid],
                    "positive": lists.positive[lists.valid],
                    "n_eligible": np.repeat(lists.n_eligible, counts),
                }
            )
        )
    columns = {"row": "int64", "user": "int64", "item": "int64", "positive": "bool", "n_eligible": "int64"}
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    return pd.concat(frames, ignore_index=True).astype(columns)
