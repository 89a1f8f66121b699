"""The sampled protocol's candidate rule, its reproducibility, and invariance to how a dataset is indexed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sasrec.data import preparation as prep
from sasrec.data.contracts import EvalTask
from sasrec.data.tasks import build_eval_task
from sasrec.evaluation.protocol import evaluate, sampled_lists
from sasrec.models.baselines import make_baseline

N_COLS = 13  # items 1..12, column 0 is padding


def _csr(rows: list[dict[int, float]]) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [j for row in rows for j in row]
    v = [x for row in rows for x in row.values()]
    return sp.csr_matrix((np.array(v, dtype=np.float32), (r, c)), shape=(len(rows), N_COLS))


# A fully observed matrix of 12 items: every item is history, a target or (row 1) an untimed view.
# row 0: history 1-3; targets 4-12, relevant 5 and 9          -> eligible negatives 4, 6, 7, 8, 10, 11, 12
# row 1: history 4, 5; untimed 7; targets the rest, relevant 1 and 12 -> eligible 2, 3, 6, 8, 9, 10, 11
# row 2: history 1-10; targets 11 (relevant) and 12           -> eligible 12 only: fewer than asked
HISTORY = [{1, 2, 3}, {4, 5}, set(range(1, 11))]
EXCLUDE = [set(), {7}, set()]
RELEVANT = [{5, 9}, {1, 12}, {11}]


def dense_task(candidates: np.ndarray | None = None, users: tuple[int, ...] = (5, 6, 7)) -> EvalTask:
    everything = set(range(1, N_COLS))
    targets = [everything - h - e for h, e in zip(HISTORY, EXCLUDE, strict=True)]
    return EvalTask(
        name="dense",
        users=np.array(users),
        sequences=np.zeros((3, 2), dtype=np.int64),
        history=_csr([dict.fromkeys(h, 1.0) for h in HISTORY]),
        targets=_csr(
            [{i: 3.0 if i in rel else 1.0 for i in t} for t, rel in zip(targets, RELEVANT, strict=True)]
        ),
        relevant=_csr([{i: float(i in rel) for i in t} for t, rel in zip(targets, RELEVANT, strict=True)]),
        candidates=candidates,
        mask_history=True,
        relevance_threshold=2.0,
        exclude=_csr([dict.fromkeys(e, 1.0) for e in EXCLUDE]),
        user_ids=np.array([500, 600, 700]),
    )


def eligible(row: int, candidates: np.ndarray | None = None) -> set[int]:
    """The rule, written out: candidates minus padding, history, positives and untimed views."""
    allowed = set(range(1, N_COLS)) if candidates is None else set(np.flatnonzero(candidates)) - {0}
    return allowed - HISTORY[row] - RELEVANT[row] - EXCLUDE[row]


def lists_by_row(frame: pd.DataFrame, n_rows: int) -> list[tuple[list[int], list[int]]]:
    """(positives, negatives) item lists of each row."""
    out = []
    for row in range(n_rows):
        sub = frame[frame["row"] == row]
        out.append((sub.loc[sub["positive"], "item"].tolist(), sub.loc[~sub["positive"], "item"].tolist()))
    return out


@pytest.mark.parametrize("num_negatives", [4, 10])
def test_candidate_lists_follow_the_original_rule(num_negatives: int) -> None:
    task = dense_task()
    seen_negatives: list[set[int]] = [set(), set(), set()]
    for seed in range(30):
        frame = sampled_lists(task, num_negatives=num_negatives, seed=seed)
        for row, (positives, negatives) in enumerate(lists_by_row(frame, 3)):
            assert sorted(positives) == sorted(RELEVANT[row])  # every rankable positive, always
            assert len(set(negatives)) == len(negatives)  # distinct
            assert set(negatives) <= eligible(row)  # never history, a positive, an untimed view or padding
            assert len(negatives) == min(num_negatives, len(eligible(row)))
            seen_negatives[row] |= set(negatives)
        assert frame.groupby("row")["n_eligible"].first().tolist() == [7, 7, 1]
    # watched but non-relevant test items are negatives for some seed (all 7 eligible items of rows 0, 1)
    assert seen_negatives == [eligible(0), eligible(1), eligible(2)]
    assert {4, 6, 7, 8} <= seen_negatives[0]


def test_candidate_lists_do_not_depend_on_batching_and_follow_the_original_user_id() -> None:
    task = dense_task()
    one = sampled_lists(task, num_negatives=4, seed=3, batch_size=1)
    many = sampled_lists(task, num_negatives=4, seed=3, batch_size=64)
    pd.testing.assert_frame_equal(one, many)
    # other internal user indices, same original ids: the same lists; other seed: other lists
    renumbered = sampled_lists(dense_task(users=(1, 2, 3)), num_negatives=4, seed=3)
    pd.testing.assert_frame_equal(one.drop(columns="user"), renumbered.drop(columns="user"))
    assert not one.equals(sampled_lists(task, num_negatives=4, seed=4))
    # evaluation metrics agree under both batchings too
    scores = torch.rand(3, N_COLS, generator=torch.Generator().manual_seed(0)).numpy()

    class Table:
        def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(scores[rows].copy())

    a = evaluate(Table(), task, k=3, protocol="sampled", num_negatives=4, batch_size=1)
    b = evaluate(Table(), task, k=3, protocol="sampled", num_negatives=4, batch_size=64)
    pd.testing.assert_frame_equal(a.per_user, b.per_user)


def test_candidates_outside_the_task_candidate_set_are_never_negatives() -> None:
    candidates = np.ones(N_COLS, dtype=bool)
    candidates[[0, 8, 11]] = False
    task = dense_task(candidates)
    for seed in range(20):
        for row, (_, negatives) in enumerate(
            lists_by_row(sampled_lists(task, num_negatives=4, seed=seed), 3)
        ):
            assert set(negatives) <= eligible(row, candidates)
            assert len(negatives) == min(4, len(eligible(row, candidates)))


def test_negatives_are_uniform_without_replacement() -> None:
    # 600 users shaped like row 0: 4 of its 7 eligible items each; every item is drawn with probability 4/7
    n = 600
    history = sp.csr_matrix(
        (np.ones(3 * n, np.float32), (np.repeat(np.arange(n), 3), np.tile([1, 2, 3], n))), shape=(n, N_COLS)
    )
    target_items = np.arange(4, 13)
    targets = sp.csr_matrix(
        (np.ones(9 * n, np.float32), (np.repeat(np.arange(n), 9), np.tile(target_items, n))),
        shape=(n, N_COLS),
    )
    relevant = targets.copy()
    relevant.data = np.tile(np.isin(target_items, [5, 9]).astype(np.float32), n)
    task = EvalTask(
        "u", np.arange(1, n + 1), np.zeros((n, 1), np.int64), history, targets, relevant, None, True, 2.0
    )
    frame = sampled_lists(task, num_negatives=4, seed=0)
    negatives = frame[~frame["positive"]]
    assert (negatives.groupby("row").size() == 4).all()
    shares = negatives["item"].value_counts().sort_index() / n
    assert shares.index.tolist() == [4, 6, 7, 8, 10, 11, 12]
    # standard error of a share: sqrt(4/7 * 3/7 / 600) = 0.020; 4 standard errors
    assert (shares - 4 / 7).abs().max() < 0.08


def test_sampled_summary_counts_candidates_and_short_users() -> None:
    task = dense_task()

    class Constant:
        def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
            return torch.zeros(len(rows), N_COLS)

    result = evaluate(Constant(), task, k=3, protocol="sampled", num_negatives=4, seed=1)
    # positives + min(4, eligible): 2 + 4, 2 + 4, 1 + 1
    assert result.per_user["n_candidates"].tolist() == [6, 6, 2]
    assert result.summary["users_with_fewer_negatives"] == 1
    assert result.summary["mean_candidates"] == pytest.approx(14 / 3)
    # row 2 ranks 11 (positive) and 12 with equal scores: the lower index first, a hit at rank 1
    assert result.per_user.loc[2, "ndcg@3"] == pytest.approx(1.0)
    assert result.meta["num_negatives"] == 4 and result.meta["seed"] == 1


def test_random_scores_are_near_chance_on_a_dense_matrix() -> None:
    # 60 users x 300 items fully observed: 20 history items, 280 targets of which 14 relevant. The old rule
    # (negatives outside every target) left 0 negatives, and every model scored HR@10 = 1.
    rng = np.random.default_rng(0)
    n, n_items = 60, 300
    order = np.argsort(rng.random((n, n_items)), axis=1) + 1  # (n, 300) a permutation of items per user
    rows = np.repeat(np.arange(n), 20)
    history = sp.csr_matrix(
        (np.ones(20 * n, np.float32), (rows, order[:, :20].ravel())), shape=(n, n_items + 1)
    )
    t_rows = np.repeat(np.arange(n), 280)
    targets = sp.csr_matrix(
        (np.ones(280 * n, np.float32), (t_rows, order[:, 20:].ravel())), shape=history.shape
    )
    relevant = sp.csr_matrix(
        (np.tile(np.r_[np.ones(14), np.zeros(266)], n).astype(np.float32), (t_rows, order[:, 20:].ravel())),
        shape=history.shape,
    )
    task = EvalTask("dense", np.arange(1, n + 1), order[:, :20], history, targets, relevant, None, True, 2.0)

    class Random:
        def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
            return torch.rand(len(rows), n_items + 1, generator=torch.Generator().manual_seed(int(rows[0])))

    result = evaluate(Random(), task, k=10, protocol="sampled", num_negatives=100)
    assert result.summary["mean_candidates"] == 114.0  # 14 positives + 100 negatives
    assert result.summary["users_with_fewer_negatives"] == 0
    # chance precision@10 = 14 / 114 = 0.123; the mean of 60 users has a standard error near 0.013
    assert abs(result.summary["precision@10"] - 14 / 114) < 0.05


def kuairec_frame(seed: int = 0) -> pd.DataFrame:
    """KuaiRec-shaped rows: user ids 0, 3, 6, ..., video ids with gaps (only even ids below 60), many time
    ties, about 5% untimed rows."""
    rng = np.random.default_rng(seed)
    n_rows = 600
    timestamps = rng.integers(0, 60, n_rows).astype(np.float64)
    timestamps[rng.random(n_rows) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, 12, n_rows).astype(np.int32) * 3,
            "video_id": rng.integers(0, 30, n_rows).astype(np.int32) * 2,
            "timestamp": timestamps,
            "watch_ratio": rng.gamma(1.0, 1.0, n_rows),
        }
    )


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_random_scores_equal_with_and_without_remapping(protocol: str) -> None:
    frame = kuairec_frame()
    results, lists = {}, {}
    for remap in (True, False):
        data = prep.prepare_frame(frame, "kuairec_like", remap=remap)
        task = build_eval_task(data, "temporal", "test", relevance="liked")
        assert (task.candidates is None) == remap  # without remapping, odd ids do not exist
        model = make_baseline("random", seed=3).fit(data)
        results[remap] = evaluate(model, task, k=5, protocol=protocol, num_negatives=8, seed=2)
        frame_lists = sampled_lists(task, num_negatives=8, seed=2)
        lists[remap] = frame_lists.assign(
            user=task.user_ids[frame_lists["row"]], item=task.item_ids[frame_lists["item"]]
        )
    remapped, raw = results[True], results[False]
    assert remapped.summary["users"] > 5 and remapped.summary["users_without_relevant"] > 0
    pd.testing.assert_frame_equal(remapped.per_user.drop(columns="user"), raw.per_user.drop(columns="user"))
    assert remapped.summary == pytest.approx(raw.summary, nan_ok=True)
    pd.testing.assert_frame_equal(lists[True], lists[False])  # the same videos, in original ids
    assert (lists[False]["item"] % 2 == 0).all()  # never an id that does not exist


def test_the_sampled_positives_share_no_array_with_the_targets() -> None:
    """Building the positives (relevant, rankable targets) drops entries in place: it must work on a copy."""
    from sasrec.evaluation.protocol import TaskArrays

    task = dense_task()
    arrays = TaskArrays(task, 3, 5.0)
    expected = sp.csr_matrix(task.targets)
    assert arrays.targets.nnz == expected.nnz and (arrays.targets != expected).nnz == 0
    assert arrays.positives.nnz == int(arrays.target_positive.sum()) < expected.nnz
