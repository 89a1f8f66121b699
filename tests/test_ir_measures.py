"""Cross-check of the ranking metrics against an independent implementation: ir_measures (pytrec_eval).

Random continuous scores (no ties, so the two tie-breaking rules never matter) on a small task; every
per-user value must agree to 1e-6. trec_eval's AP@k divides by the number of relevant items where ours
divides by min(#relevant, k) (see :mod:`sasrec.evaluation.metrics`), so the test converts ours explicitly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sasrec.data.contracts import EvalTask
from sasrec.evaluation.protocol import evaluate, sampled_lists

ir_measures = pytest.importorskip("ir_measures")

N_USERS, N_ITEMS, K = 30, 80, 10


def random_task(seed: int = 0) -> tuple[EvalTask, np.ndarray]:
    """30 users: 5-25 history items, 3-30 targets with integer watch ratios 0..4 (relevant above 2)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((N_USERS, N_ITEMS)), axis=1) + 1  # (U, I) a permutation of items per user
    n_hist = rng.integers(5, 26, N_USERS)
    n_targets = rng.integers(3, 31, N_USERS)
    hist_mask = np.arange(N_ITEMS)[None, :] < n_hist[:, None]
    target_mask = ~hist_mask & (np.arange(N_ITEMS)[None, :] < (n_hist + n_targets)[:, None])
    rows = np.nonzero(hist_mask)[0]
    history = sp.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, order[hist_mask])), shape=(N_USERS, N_ITEMS + 1)
    )
    t_rows = np.nonzero(target_mask)[0]
    watch_ratio = rng.integers(0, 5, len(t_rows)).astype(np.float32)
    targets = sp.csr_matrix((watch_ratio, (t_rows, order[target_mask])), shape=history.shape)
    relevant = sp.csr_matrix(
        ((watch_ratio > 2).astype(np.float32), (t_rows, order[target_mask])), shape=history.shape
    )
    task = EvalTask("ir", np.arange(1, N_USERS + 1), np.zeros((N_USERS, 1), np.int64), history, targets, relevant,
                    None, True, 2.0)  # fmt: skip
    scores = rng.random((N_USERS, N_ITEMS + 1))  # continuous: no ties
    scores[:, 0] = -np.inf
    return task, scores.astype(np.float32)


class Table:
    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.scores[rows].copy())


def qrels(task: EvalTask, graded: bool) -> list:
    """Judgements of every target: relevance 1/0 (binary) or the integer watch ratio (graded)."""
    targets = task.targets.tocoo()
    relevant = np.asarray(task.relevant[targets.row, targets.col]).ravel()
    values = targets.data.astype(int) if graded else relevant.astype(int)
    return [
        ir_measures.Qrel(str(r), str(c), int(v))
        for r, c, v in zip(targets.row, targets.col, values, strict=True)
    ]


def run(scores: np.ndarray, candidates: list[np.ndarray]) -> list:
    return [
        ir_measures.ScoredDoc(str(r), str(i), float(scores[r, i]))
        for r, items in enumerate(candidates)
        for i in items
    ]


def measured(measures: list, qrel_list: list, run_list: list) -> pd.DataFrame:
    values = [
        (int(m.query_id), str(m.measure), m.value)
        for m in ir_measures.iter_calc(measures, qrel_list, run_list)
    ]
    return pd.DataFrame(values, columns=["row", "measure", "value"]).pivot(
        index="row", columns="measure", values="value"
    )


def compare(ours: pd.DataFrame, theirs: pd.DataFrame, graded_theirs: pd.DataFrame) -> None:
    has_rel = ours["n_relevant"] > 0
    rows = ours.index[has_rel]
    assert len(rows) >= 20  # most users have a relevant target: the check is not vacuous
    n_rel = ours.loc[rows, "n_relevant"].to_numpy()
    pairs = {
        "nDCG@10": ours.loc[rows, "ndcg@10"],
        "P@10": ours.loc[rows, "precision@10"],
        "R@10": ours.loc[rows, "recall@10"],
        "RR@10": ours.loc[rows, "mrr@10"],
        # ours: sum of precision at hits / min(#relevant, K); trec_eval: / #relevant
        "AP@10": ours.loc[rows, "map@10"] * np.minimum(n_rel, K) / n_rel,
    }
    for measure, values in pairs.items():
        np.testing.assert_allclose(
            values.to_numpy(), theirs.loc[rows, measure].to_numpy(), atol=1e-6, err_msg=measure
        )
    assert 0 < ours.loc[rows, "ndcg@10"].mean() < 1  # neither all misses nor all perfect
    graded_rows = ours.index[~ours["graded_ndcg@10"].isna()]
    np.testing.assert_allclose(
        ours.loc[graded_rows, "graded_ndcg@10"].to_numpy(),
        graded_theirs.loc[graded_rows, "nDCG@10"].to_numpy(),
        atol=1e-6,
        err_msg="graded nDCG@10 (linear gains = watch ratio)",
    )


def test_full_ranking_metrics_agree_with_ir_measures() -> None:
    task, scores = random_task()
    ours = evaluate(Table(scores), task, k=K, gain_clip=5.0).per_user
    history = task.history.toarray() > 0
    candidates = [np.flatnonzero(~history[r] & (np.arange(N_ITEMS + 1) > 0)) for r in range(N_USERS)]
    measures = [
        ir_measures.nDCG @ K,
        ir_measures.P @ K,
        ir_measures.R @ K,
        ir_measures.RR @ K,
        ir_measures.AP @ K,
    ]
    theirs = measured(measures, qrels(task, graded=False), run(scores, candidates))
    graded = measured([ir_measures.nDCG @ K], qrels(task, graded=True), run(scores, candidates))
    compare(ours, theirs, graded)


def test_sampled_protocol_metrics_agree_with_ir_measures_on_the_candidate_lists() -> None:
    task, scores = random_task(seed=1)
    ours = evaluate(Table(scores), task, k=K, protocol="sampled", num_negatives=20, seed=4).per_user
    lists = sampled_lists(task, num_negatives=20, seed=4)
    candidates = [lists.loc[lists["row"] == r, "item"].to_numpy() for r in range(N_USERS)]
    assert ours["n_candidates"].tolist() == [len(c) for c in candidates]
    measures = [
        ir_measures.nDCG @ K,
        ir_measures.P @ K,
        ir_measures.R @ K,
        ir_measures.RR @ K,
        ir_measures.AP @ K,
    ]
    theirs = measured(measures, qrels(task, graded=False), run(scores, candidates))
    # graded NDCG in the sampled protocol: the ideal is over the candidate list, so judge only its items
    targets = task.targets.tocoo()
    in_list = set(zip(lists["row"], lists["item"], strict=True))
    graded_qrels = [
        ir_measures.Qrel(str(r), str(c), int(v))
        for r, c, v in zip(targets.row, targets.col, targets.data, strict=True)
        if (r, c) in in_list
    ]
    graded = measured([ir_measures.nDCG @ K], graded_qrels, run(scores, candidates))
    compare(ours, theirs, graded)
