"""Two-stage recommendation: the union of several retrievers' top-N candidates, re-ranked by a learned ranker.

Stage 1 (:meth:`TwoStage.candidates`): every retriever (any ``Scorer``: a sequential model, item-kNN,
popularity, the content baseline) scores all items of a batch of task rows; each one's top ``N`` is taken
with the task's own masking (:func:`sasrec.evaluation.protocol.evaluate`'s full-protocol ranking: the task's
candidates only, minus the history when ``mask_history`` and the excluded items), and the lists are merged
into one de-duplicated union per row (items in increasing index order). Stage 2
(:meth:`TwoStage.features`, :meth:`TwoStage.scorer`): each (row, candidate) gets every retriever's score and
rank (rank ``N + 1`` outside its top N), the number of retrievers that proposed it and the pair features of
:mod:`sasrec.data.features.pairs`; the ranker scores them. :meth:`TwoStage.scorer` is a ``Scorer`` whose
scores are the ranker's on the union and ``-inf`` elsewhere, so ``evaluate`` and ``recommend`` rank it
exactly like every other model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from sasrec.data.contracts import EvalTask
from sasrec.data.features.pairs import PairContext
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import Scorer, TaskArrays  # the evaluation's own masking and top-k
from sasrec.models.ranker import LightGBMRanker


@dataclass
class Candidates:
    """Stage 1 of a batch of task rows.

    Attributes:
        rows: (B,) task rows.
        items: (B, M) int64 union of the retrievers' top-N per row, increasing item index, 0-padded.
        valid: (B, M) bool, False at padding slots.
        scores: (B, M, R) float32 each retriever's score of each candidate (NaN at padding).
        ranks: (B, M, R) float32 each candidate's 1-based rank in each retriever's top N, ``N + 1`` outside.
    """

    rows: np.ndarray
    items: np.ndarray
    valid: np.ndarray
    scores: np.ndarray
    ranks: np.ndarray

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row index within the batch, item) of every valid slot, row-major: each row's candidates together."""
        batch_row, slot = np.nonzero(self.valid)
        return batch_row, self.items[batch_row, slot]


def _union(lists: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(B, M) distinct items per row of (B, L) lists (invalid slots ignored), increasing order, 0-padded."""
    keyed = np.where(valid, lists, np.iinfo(np.int64).max)  # invalid slots sort last
    ordered = np.sort(keyed, axis=1)  # (B, L)
    first = np.ones_like(ordered, dtype=bool)
    first[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    keep = first & (ordered != np.iinfo(np.int64).max)  # (B, L)
    width = max(int(keep.sum(axis=1).max()) if len(keep) else 0, 1)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]  # kept slots first, in increasing item order
    items = np.take_along_axis(ordered, order, axis=1)
    out_valid = np.take_along_axis(keep, order, axis=1)
    return np.where(out_valid, items, 0), out_valid


class TwoStage:
    """Retrievers + the number of candidates each contributes + pair features + a ranker.

    Args:
        retrievers: name -> ``Scorer`` (``score(task, rows) -> (B, I+1)``), fitted as the fitting policy says
            for the stage the pipeline serves.
        num_candidates: N, the top-N of each retriever that enters the union.
        pairs: the pair-feature context of the stage (:func:`sasrec.data.features.pairs.pair_context` of the
            stage's input events), or None (retriever features only).
        ranker: the fitted stage 2, or None (candidates and features only).
    """

    def __init__(
        self,
        retrievers: Mapping[str, Scorer],
        num_candidates: int,
        *,
        pairs: PairContext | None = None,
        ranker: LightGBMRanker | None = None,
    ) -> None:
        if not retrievers:
            raise ConfigError("two_stage.retrievers must name at least one retriever")
        if (
            isinstance(num_candidates, bool)
            or not isinstance(num_candidates, int | np.integer)
            or num_candidates < 1
        ):
            raise ConfigError(f"two_stage.num_candidates must be a positive integer; got {num_candidates!r}")
        self.retrievers = dict(retrievers)
        self.num_candidates = int(num_candidates)
        self.pairs = pairs
        self.ranker = ranker
        self._arrays: dict[int, tuple[EvalTask, TaskArrays]] = {}
        if ranker is not None and ranker.columns and tuple(ranker.columns) != self.columns:
            raise ConfigError(
                f"the ranker was trained on {len(ranker.columns)} feature columns, this pipeline builds "
                f"{len(self.columns)} (other retrievers or feature table): retrain the ranker"
            )

    @property
    def columns(self) -> tuple[str, ...]:
        """Feature names of :meth:`features`: each retriever's score and rank, the vote count, pair features."""
        names = [f"{name}_{what}" for name in self.retrievers for what in ("score", "rank")]
        names.append("n_retrievers")
        return (*names, *(self.pairs.columns if self.pairs is not None else ()))

    def _task_arrays(self, task: EvalTask) -> TaskArrays:
        """The evaluation's per-task arrays (masks, candidates), built once per task object."""
        cached = self._arrays.get(id(task))
        if cached is None or cached[0] is not task:
            cached = (task, TaskArrays(task, self.num_candidates, 5.0))
            self._arrays = {id(task): cached}  # one task at a time: a stage's batches in a row
        return cached[1]

    def candidates(self, task: EvalTask, rows: np.ndarray) -> Candidates:
        """Stage 1 for task rows ``rows``: each retriever's top N under the task's masking, merged."""
        rows = np.asarray(rows, dtype=np.int64)
        contiguous = len(rows) > 0 and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows)))
        if not contiguous:  # rank the rows as a task of their own (the same masking, row by row)
            sub = task.subset(rows)
            found = self.candidates(sub, np.arange(len(rows)))
            found.rows = rows
            return found
        start, stop = int(rows[0]), int(rows[0]) + len(rows)
        arrays = self._task_arrays(task)
        n_cols = task.num_items + 1
        full_scores, lists, valids = [], [], []
        for name, retriever in self.retrievers.items():
            scores = retriever.score(task, rows)
            if not isinstance(scores, torch.Tensor):
                scores = torch.as_tensor(np.asarray(scores))
            if tuple(scores.shape) != (len(rows), n_cols):
                raise ConfigError(
                    f"retriever {name} returned scores of shape {tuple(scores.shape)}; expected ({len(rows)}, {n_cols})"
                )
            scores = torch.nan_to_num(scores.detach().to("cpu", torch.float32), nan=float("-inf"))
            items, valid = arrays.rank_full(scores, start, stop, self.num_candidates)  # (B, N)
            full_scores.append(scores.numpy().copy())  # the retriever may reuse its buffer
            lists.append(items.cpu().numpy().astype(np.int64))
            valids.append(valid.cpu().numpy())
        union, valid = _union(np.concatenate(lists, axis=1), np.concatenate(valids, axis=1))  # (B, M)
        batch = np.arange(len(rows))[:, None]
        n_r, n = len(self.retrievers), self.num_candidates
        scores = np.full((*union.shape, n_r), np.nan, dtype=np.float32)
        ranks = np.full((*union.shape, n_r), n + 1, dtype=np.float32)
        position = np.full((len(rows), n_cols), n + 1, dtype=np.float32)  # reused per retriever
        for r in range(n_r):
            gathered = full_scores[r][batch, union]  # (B, M)
            scores[:, :, r] = np.where(valid & np.isfinite(gathered), gathered, np.nan)
            position[:] = n + 1
            ranked = np.broadcast_to(np.arange(1, lists[r].shape[1] + 1, dtype=np.float32), lists[r].shape)
            position[np.broadcast_to(batch, lists[r].shape)[valids[r]], lists[r][valids[r]]] = ranked[
                valids[r]
            ]
            ranks[:, :, r] = position[batch, union]
        return Candidates(rows=rows, items=union, valid=valid, scores=scores, ranks=ranks)

    def features(self, task: EvalTask, found: Candidates) -> np.ndarray:
        """(number of valid slots, len(columns)) float32 features of the candidates, in :meth:`Candidates.pairs`
        order."""
        batch_row, items = found.pairs()
        slot = np.nonzero(found.valid)[1]
        n = self.num_candidates
        retr = np.stack([found.scores[batch_row, slot], found.ranks[batch_row, slot]], axis=2)  # (P, R, 2)
        parts = [retr.reshape(len(items), -1), (found.ranks[batch_row, slot] <= n).sum(axis=1, keepdims=True)]
        if self.pairs is not None:
            users = np.asarray(task.users, dtype=np.int64)[found.rows[batch_row]]
            parts.append(self.pairs.features(users, items))
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def scorer(self) -> TwoStageScorer:
        """A ``Scorer``: the ranker's scores on the union of candidates, ``-inf`` elsewhere."""
        if self.ranker is None:
            raise ConfigError("the two-stage pipeline has no ranker: fit one (study.two_stage) or load one")
        return TwoStageScorer(self)


class TwoStageScorer:
    """``score(task, rows)`` through a :class:`TwoStage` pipeline (the ``Scorer`` protocol).

    Attributes:
        seconds: accumulated wall time of stage 1 (``candidates``), the features and stage 2 (``ranking``).
    """

    def __init__(self, pipeline: TwoStage) -> None:
        self.pipeline = pipeline
        self.seconds = {"candidates": 0.0, "features": 0.0, "ranking": 0.0}

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), I+1) float32: ranker scores at the candidates, ``-inf`` at every other item."""
        import time

        assert self.pipeline.ranker is not None
        started = time.perf_counter()
        found = self.pipeline.candidates(task, rows)
        features_at = time.perf_counter()
        x = self.pipeline.features(task, found)
        ranking_at = time.perf_counter()
        values = self.pipeline.ranker.predict(x)  # (P,)
        done = time.perf_counter()
        self.seconds["candidates"] += features_at - started
        self.seconds["features"] += ranking_at - features_at
        self.seconds["ranking"] += done - ranking_at
        out = torch.full((len(found.rows), task.num_items + 1), float("-inf"), dtype=torch.float32)
        batch_row, items = found.pairs()
        out[torch.from_numpy(batch_row), torch.from_numpy(items)] = torch.from_numpy(values)
        return out
