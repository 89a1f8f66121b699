"""Baselines on tiny data with known answers, the oracle, the registry and the ``baseline`` command."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from sasrec.cli import baseline as baseline_cli
from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import evaluate
from sasrec.models.baselines import BASELINES, OracleScorer, make_baseline
from tests.conftest import history_task, make_prepared

# tiny_data training events (split 0): user 1: 1 -> 2 -> 3; user 2: 2 -> 3; user 3: 4.
# Item users: 1 {1}, 2 {1, 2}, 3 {1, 2}, 4 {3}, 5 {}.


def test_registry_and_parameter_errors() -> None:
    assert BASELINES == ("random", "pop", "itemknn", "ease", "als", "markov")
    with pytest.raises(ConfigError, match="unknown baseline 'bpr'"):
        make_baseline("bpr")
    with pytest.raises(ConfigError, match="no parameter 'lambda_'.*accepted: split, l2"):
        make_baseline("ease", lambda_=3)
    with pytest.raises(ConfigError, match="l2"):
        make_baseline("ease", l2=-1)
    with pytest.raises(ConfigError, match="split must be one of"):
        make_baseline("pop", split="random")


def test_pop_counts_training_events(tiny_data: PreparedData) -> None:
    scores = make_baseline("pop").fit(tiny_data).score(history_task([[1], []]), np.array([0, 1]))
    assert scores.dtype == torch.float32 and scores.shape == (2, 6)
    assert scores[0, 0] == float("-inf")
    assert scores[0, 1:].tolist() == [1.0, 2.0, 2.0, 1.0, 0.0]
    # fit on train + valid: user 1's item 4 (valid) is counted too
    mask = tiny_data.events["split_temporal"].to_numpy() <= 1
    scores = make_baseline("pop").fit(tiny_data, mask).score(history_task([[]]), np.array([0]))
    assert scores[0, 1:].tolist() == [1.0, 2.0, 2.0, 2.0, 0.0]
    with pytest.raises(ConfigError, match="bool array of shape \\(10,\\)"):
        make_baseline("pop").fit(tiny_data, mask[:3])


def test_markov_predicts_the_next_item(tiny_data: PreparedData) -> None:
    model = make_baseline("markov", smoothing=0.1, backoff=0.01).fit(tiny_data)
    # transitions: 1 -> 2 (once), 2 -> 3 (twice); item 3 and 4 have no successor
    scores = model.score(history_task([[3, 1], [1, 2], [4], []]), np.arange(4))
    pop = np.array([0, 1, 2, 2, 1, 0]) / 6.0  # shares of the 6 training events
    # row 0 (last item 1): P(2 | 1) = 0.99 * (1 + 0.1) / (1 + 0.1 * 5) + 0.01 * 2/6
    assert scores[0, 2].item() == pytest.approx(0.99 * 1.1 / 1.5 + 0.01 * pop[2], rel=1e-6)
    assert scores[0, 3].item() == pytest.approx(0.99 * 0.1 / 1.5 + 0.01 * pop[3], rel=1e-6)
    assert int(scores[0].argmax()) == 2
    assert int(scores[1].argmax()) == 3  # last item 2 -> 3
    # no successor of 4 and no history: uniform transitions, so the popularity back-off decides
    for row in (2, 3):
        top = torch.argsort(scores[row, 1:], descending=True, stable=True)[:2] + 1
        assert top.tolist() == [2, 3]


def test_itemknn_cosine_values(tiny_data: PreparedData) -> None:
    model = make_baseline("itemknn").fit(tiny_data)
    s = model.similarity
    assert isinstance(s, torch.Tensor)
    assert s[2, 3].item() == pytest.approx(2 / math.sqrt(2 * 2))  # |{1,2} & {1,2}| / sqrt(2 * 2) = 1
    assert s[1, 2].item() == pytest.approx(1 / math.sqrt(1 * 2))
    assert s[1, 4].item() == 0.0
    assert torch.diagonal(s).abs().sum().item() == 0.0
    scores = model.score(history_task([[1, 4]]), np.array([0]))
    # history {1, 4}: score_j = S[1, j] + S[4, j]
    assert scores[0, 1:].tolist() == pytest.approx([0.0, 1 / math.sqrt(2), 1 / math.sqrt(2), 0.0, 0.0])
    # one neighbour per item: item 1 keeps item 2 (tie with 3 goes to the lower index)
    sparse = make_baseline("itemknn", neighbors=1).fit(tiny_data)
    assert sparse.similarity[1].toarray().ravel().tolist() == pytest.approx([0, 0, 1 / math.sqrt(2), 0, 0, 0])
    assert sparse.score(history_task([[1]]), np.array([0]))[0, 2].item() == pytest.approx(1 / math.sqrt(2))


def _random_binary_data(n_users: int, n_items: int, density: float, seed: int) -> PreparedData:
    rng = np.random.default_rng(seed)
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    rows = [
        (int(u) + 1, int(i) + 1, float(t), 1.0, 0) for t, (u, i) in enumerate(zip(users, items, strict=True))
    ]
    return make_prepared(rows, num_users=n_users, num_items=n_items)


def test_ease_matches_the_closed_form() -> None:
    data = _random_binary_data(30, 12, 0.3, seed=1)
    model = make_baseline("ease", l2=5.0).fit(data)
    x = data.interaction_matrix().toarray().astype(np.float64)  # (U+1, I+1)
    p = np.linalg.inv(x.T @ x + 5.0 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]  # Steck (2019): B = I - P diag(1/diag(P))
    assert np.abs(np.diag(model.weights.numpy())).max() == 0.0
    assert model.weights.numpy() == pytest.approx(b, abs=1e-5)
    task = history_task([[1, 2, 3], [5, 7]], n_cols=13)
    scores = model.score(task, np.array([0, 1])).numpy()
    expected = task.history.toarray() @ b
    assert scores[:, 1:] == pytest.approx(expected[:, 1:], abs=1e-5)


def test_als_recovers_block_structure() -> None:
    # users 1-8 watch items 1-6 (each skips one), users 9-16 watch items 7-12 (each skips one)
    rows = []
    t = 0.0
    for u in range(1, 17):
        block = range(1, 7) if u <= 8 else range(7, 13)
        skip = list(block)[u % 6]
        for i in block:
            if i != skip:
                rows.append((u, i, t, 1.0, 0))
                t += 1
    data = make_prepared(rows, num_users=16, num_items=12)
    model = make_baseline("als", factors=2, iterations=10, num_threads=1, seed=0).fit(data)
    task = history_task([[1, 2, 3], [8, 9, 10]], n_cols=13)
    scores = model.score(task, np.array([0, 1])).numpy()
    assert scores[0, 4:7].min() > scores[0, 7:13].max()  # unseen items of block A beat all of block B
    assert scores[1, [7, 11, 12]].min() > scores[1, 1:7].max()
    again = make_baseline("als", factors=2, iterations=10, num_threads=1, seed=0).fit(data)
    assert again.score(task, np.array([0, 1])).numpy() == pytest.approx(scores, abs=1e-5)


def test_random_is_seeded_per_user_and_batch_independent(tiny_data: PreparedData) -> None:
    task = history_task([[1], [2], [3]])
    model = make_baseline("random", seed=3).fit(tiny_data)
    all_rows = model.score(task, np.arange(3))
    assert torch.equal(model.score(task, np.array([2])), all_rows[2:])
    assert not torch.equal(all_rows[0], all_rows[1])
    assert not torch.equal(make_baseline("random", seed=4).fit(tiny_data).score(task, np.arange(3)), all_rows)
    assert torch.isinf(all_rows[:, 0]).all() and (all_rows[:, 1:] >= 0).all() and (all_rows[:, 1:] < 1).all()


def test_random_scores_are_keyed_by_original_ids(tiny_data: PreparedData) -> None:
    model = make_baseline("random", seed=3).fit(tiny_data)
    task = history_task([[1], [2]])
    task.user_ids, task.item_ids = np.array([70, 80]), np.array([-1, 11, 12, 13, 14, 15])
    scores = model.score(task, np.arange(2))
    # other internal users and a permuted column order, same original ids: the same score per (user, video)
    other = history_task([[1], [2]])
    other.users = np.array([9, 4])
    other.user_ids, other.item_ids = np.array([80, 70]), np.array([-1, 15, 14, 13, 12, 11])
    moved = model.score(other, np.arange(2))
    assert torch.equal(moved[0, 1:], scores[1, 1:].flip(0))
    assert torch.equal(moved[1, 1:], scores[0, 1:].flip(0))
    # without original ids the internal indices are the keys, which differ
    assert not torch.equal(model.score(history_task([[1], [2]]), np.arange(2)), scores)


def test_scoring_a_task_of_another_item_space_fails(tiny_data: PreparedData) -> None:
    model = make_baseline("pop").fit(tiny_data)
    with pytest.raises(ConfigError, match="has 8 items but baseline pop was fitted on 5"):
        model.score(history_task([[1]], n_cols=9), np.array([0]))


def test_oracle_reaches_the_graded_upper_bound(tiny_data: PreparedData) -> None:
    task = build_eval_task(tiny_data, "temporal", "test")
    result = evaluate(OracleScorer(task.targets), task, k=3)
    assert result.summary["graded_ndcg@3"] == pytest.approx(1.0)
    assert result.summary["ndcg@3"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="oracle matrix has shape"):
        OracleScorer(task.targets[:1]).score(task, np.array([0]))


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    baseline_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_baseline_command_writes_metrics_and_recommendations(
    tiny_data, tmp_path, monkeypatch, capsys
) -> None:
    import sasrec.data.preparation.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_prepared", lambda dataset, **kw: tiny_data)
    out = tmp_path / "m.json"
    rc = _run_cli(
        ["baseline", "--dataset=tiny", "--model", "pop", "--metrics_json", str(out), "--k", "3",
         "--generate_recommendations", "--recommendations_path", str(tmp_path / "recs")]
    )  # fmt: skip
    assert rc == 0
    payload = json.loads(out.read_text())
    assert (payload["model"], payload["dataset"], payload["split"], payload["protocol"]) == (
        "pop",
        "tiny",
        "temporal",
        "full",
    )
    assert payload["valid"]["users"] == 1 and payload["test"]["users_total"] == 2
    # test: pop refitted on train + valid counts 1:1, 2:2, 3:2, 4:2, 5:0; user 1 sees 1-4 -> [5] ranks first
    assert payload["test"]["hr@3"] == 1.0
    assert "ndcg@3" in capsys.readouterr().out
    assert (tmp_path / "recs.parquet").is_file() and (tmp_path / "recs.csv").is_file()
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        _run_cli(["baseline", "--dataset=tiny", "--model", "ease", "--param", "l2"])


def test_big_to_small_task_with_a_baseline_fitted_on_all_big_events(tiny_data: PreparedData) -> None:
    from sasrec.data.tasks import build_cross_task

    small = make_prepared(
        [
            (2, 4, 1.0, 3.0, 0),
            (2, 5, 2.0, 1.0, 0),
            (3, 1, 1.0, 3.0, 0),
            (3, 2, 2.0, 0.5, 0),
            (3, 5, 3.0, 2.5, 0),
        ],
        num_users=3,
        num_items=5,
        name="small",
    )
    task = build_cross_task(tiny_data, small, relevance_threshold=2.0)
    assert task.candidates.tolist() == [False, True, True, False, True, True]
    model = make_baseline("pop").fit(tiny_data, np.ones(len(tiny_data.events), dtype=bool))
    # all big events: counts 1:2, 2:3, 3:2, 4:2, 5:1
    # user 2 (big history 1, 2, 3) ranks candidates 4, 5 -> relevant 4 first: NDCG 1
    # user 3 (big history 4) ranks 2 (3), 1 (2), 5 (1) -> relevant {1, 5}: hit at rank 2 only
    result = evaluate(model, task, k=2)
    per_user = result.per_user.set_index("user")
    assert per_user.loc[2, "ndcg@2"] == pytest.approx(1.0)
    log3 = math.log2(3)
    assert per_user.loc[3, "ndcg@2"] == pytest.approx((1 / log3) / (1 + 1 / log3))
    assert result.summary["coverage@2"] == pytest.approx(4 / 4)  # {4, 5} | {2, 1} over 4 candidates


def test_baseline_command_big_to_small(tiny_data, tmp_path, monkeypatch) -> None:
    import numpy as np

    import sasrec.data.preparation.pipeline as pipeline
    from tests.conftest import make_prepared

    # "small": original user 1 (big user 2, history 2, 3, 1) watched video 40 (big item 5), watch_ratio 3.0
    small = make_prepared([(1, 1, 1.0, 3.0, 0)], num_users=1, num_items=1, name="small")
    small.user_ids, small.item_ids = np.array([-1, 1]), np.array([-1, 40])
    datasets = {"big": tiny_data, "small": small}
    monkeypatch.setattr(pipeline, "load_prepared", lambda dataset, **kw: datasets[dataset])
    out = tmp_path / "m.json"
    rc = _run_cli(["baseline", "--dataset=small", "--training_dataset=big", "--model", "pop", "--k", "1",
                   "--metrics_json", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    payload = json.loads(out.read_text())
    assert payload["valid_task"] == "tiny/temporal/valid"  # validation on the training dataset
    assert payload["test_task"] == "tiny->small"
    # test ranks only the small matrix's video (big item 5), which big user 2 never watched: a hit
    assert payload["test"]["users"] == 1 and payload["test"]["hr@1"] == 1.0
