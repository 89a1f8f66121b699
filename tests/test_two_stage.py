"""Two-stage recommendation: candidate union and masking, the planted-feature ranker, no leakage, schema refusal,
the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.data.features.pairs import pair_context
from sasrec.data.tasks import build_eval_task
from sasrec.errors import CheckpointMismatchError, ConfigError
from sasrec.evaluation.protocol import evaluate
from sasrec.inference.two_stage import TwoStage
from sasrec.models.baselines import make_baseline
from sasrec.models.ranker import LightGBMRanker, graded_labels
from sasrec.training.loop import policy_mask
from tests.conftest import make_prepared


class FixedScorer:
    """Scores given per user index: ``table[user]`` (rows of an (U+1, I+1) array)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.float32)

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(self.table[task.users[rows]].copy())
        out[:, 0] = float("-inf")
        return out


class PlantedScorer:
    """-1 at each row's relevant targets, 0 elsewhere: a feature that alone decides relevance (inverted, so
    the retriever by itself ranks the relevant items last)."""

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        rel = task.relevant[rows].toarray()  # (B, C)
        out = torch.from_numpy(-(rel > 0).astype(np.float32))
        out[:, 0] = float("-inf")
        return out


class NoiseScorer:
    """Seeded uniform scores per (user, item)."""

    def __init__(self, n_users: int, n_cols: int, seed: int = 1) -> None:
        self.table = np.random.default_rng(seed).random((n_users + 1, n_cols)).astype(np.float32)

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        out = torch.from_numpy(self.table[task.users[rows]].copy())
        out[:, 0] = float("-inf")
        return out


def random_data(n_users: int = 40, n_items: int = 30, per_user: int = 18, seed: int = 0) -> PreparedData:
    """Each user watches ``per_user`` distinct items: the first 60% train, then 20% valid, 20% test."""
    rng = np.random.default_rng(seed)
    rows = []
    n_train, n_valid = int(per_user * 0.6), int(per_user * 0.8)
    for user in range(1, n_users + 1):  # building the fixture rows only
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        ratios = rng.choice([0.3, 1.0, 2.5, 3.5], size=per_user)
        for j, (item, ratio) in enumerate(zip(items, ratios, strict=True)):
            split = 0 if j < n_train else 1 if j < n_valid else 2
            rows.append((user, int(item), float(100 * j + user), float(ratio), split))
    return make_prepared(rows, num_users=n_users, num_items=n_items)


# ------------------------------------------------------------------------------------------- labels
def test_graded_labels_hand_computed() -> None:
    labels = graded_labels(
        np.array([False, True, True, True, True, True]),
        np.array([5.0, 0.5, 0.7, 0.71, 2.0, 2.01], dtype=np.float32),
        like_threshold=0.7,
        relevance_threshold=2.0,
    )
    assert labels.tolist() == [0, 1, 1, 2, 2, 3]


# ------------------------------------------------------------------------------ union and masking
def test_candidate_union_and_masking_hand_checked() -> None:
    # user 1: train 1, 2; test 5 (relevant). user 2: train 3; test 4, 6.
    rows = [(1, 1, 1.0, 1.0, 0), (1, 2, 2.0, 1.0, 0), (1, 5, 3.0, 3.0, 2),
            (2, 3, 1.0, 1.0, 0), (2, 4, 2.0, 3.0, 2), (2, 6, 3.0, 0.5, 2)]  # fmt: skip
    data = make_prepared(rows, num_users=2, num_items=6)
    task = build_eval_task(data, "temporal", "test", maxlen=5)
    # scores over items 0..6 (column 0 is padding)
    a = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 9, 8, 1, 2, 3, 0], [0, 5, 1, 9, 4, 0, 2]], dtype=np.float32)
    b = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 0, 9], [0, 0, 8, 7, 1, 9, 0]], dtype=np.float32)
    pipeline = TwoStage({"a": FixedScorer(a), "b": FixedScorer(b)}, 2)
    found = pipeline.candidates(task, np.arange(len(task)))
    # user 1 masks 1, 2: a's top 2 = {5 (3), 4 (2)}, b's top 2 = {6 (9), 4 (4)} -> {4, 5, 6}
    # user 2 masks 3: a's top 2 = {1 (5), 4 (4)}, b's top 2 = {5 (9), 2 (8)} -> {1, 2, 4, 5}
    assert task.users.tolist() == [1, 2]
    got = [found.items[r][found.valid[r]].tolist() for r in range(2)]
    assert got == [[4, 5, 6], [1, 2, 4, 5]]
    # ranks within each retriever's top 2 (3 = outside), scores gathered from the full scores
    assert found.ranks[0, :3, 0].tolist() == [2.0, 1.0, 3.0]  # a: 5 first, 4 second, 6 outside
    assert found.ranks[0, :3, 1].tolist() == [2.0, 3.0, 1.0]  # b: 6 first, 4 second
    assert found.scores[1, :4, 1].tolist() == [0.0, 8.0, 1.0, 9.0]
    x = pipeline.features(task, found)
    assert x.shape == (7, len(pipeline.columns))
    assert x[:, pipeline.columns.index("n_retrievers")].tolist() == [
        2,
        1,
        1,
        1,
        1,
        1,
        1,
    ]  # user 1: 4 by both; user 2: each by one
    # non-contiguous rows give the same candidates as the rows alone
    alone = pipeline.candidates(task, np.array([1]))
    assert alone.items[0][alone.valid[0]].tolist() == [1, 2, 4, 5]


# ------------------------------------------------------------------------------------ planted feature
def test_planted_feature_is_ranked_perfectly(one_thread: None) -> None:
    data = random_data()
    tasks = {stage: build_eval_task(data, "temporal", stage, maxlen=10) for stage in ("valid", "test")}
    noise = NoiseScorer(data.num_users, data.num_items + 1)
    retrievers = {"noise": noise, "planted": PlantedScorer()}
    pipeline = TwoStage(
        retrievers, data.num_items, pairs=pair_context(data, data.stage_masks("temporal", "valid")[0])
    )
    from sasrec.study.two_stage import stage_pass

    examples = stage_pass(
        pipeline, tasks["valid"], 16, labels={"like_threshold": 0.7, "relevance_threshold": 2.0}
    )
    ranker = LightGBMRanker({"n_estimators": 20, "min_child_samples": 1, "num_leaves": 4, "num_threads": 1})
    ranker.fit(examples["features"], examples["labels"], examples["groups"], pipeline.columns)
    test_pipeline = TwoStage(retrievers, data.num_items, ranker=ranker,
                             pairs=pair_context(data, data.stage_masks("temporal", "test")[0]))  # fmt: skip
    found = test_pipeline.candidates(tasks["test"], np.arange(len(tasks["test"])))
    counts = examples["counts"]
    assert (counts[:, -1] == counts[:, 0]).all()  # every relevant validation target is a candidate
    assert (found.valid.sum(axis=1) > 0).all()
    result = evaluate(test_pipeline.scorer(), tasks["test"], k=10)
    assert result.summary["users"] > 10
    assert result.summary["ndcg@10"] == pytest.approx(1.0)
    alone = evaluate(PlantedScorer(), tasks["test"], k=10)  # the feature by itself ranks them last
    assert alone.summary["ndcg@10"] < 0.5
    top = ranker.importance()["feature"].iloc[0]
    assert top.startswith("planted_")


# ------------------------------------------------------------------------------------------ leakage
def _test_features(data: PreparedData) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and features of the test stage, stage 1 fitted on the training events."""
    mask = policy_mask(data, "temporal", "train", "test")
    retrievers = {name: make_baseline(name).fit(data, mask) for name in ("pop", "itemknn")}
    pipeline = TwoStage(retrievers, 8, pairs=pair_context(data, data.stage_masks("temporal", "test")[0]))
    task = build_eval_task(data, "temporal", "test", maxlen=10)
    found = pipeline.candidates(task, np.arange(len(task)))
    return found.items, pipeline.features(task, found)


def test_moving_test_period_rows_changes_no_feature(one_thread: None) -> None:
    data = random_data(seed=3)
    items, features = _test_features(data)
    moved = data.events.copy()
    test_rows = moved["split_temporal"].to_numpy() == 2
    rng = np.random.default_rng(9)
    moved.loc[test_rows, "item"] = rng.permutation(moved.loc[test_rows, "item"].to_numpy()).astype("int32")
    moved.loc[test_rows, "watch_ratio"] = rng.random(int(test_rows.sum())).astype("float32") * 5
    moved.loc[test_rows, "liked"] = moved.loc[test_rows, "watch_ratio"] > 0.7
    moved.loc[test_rows, "relevant"] = moved.loc[test_rows, "watch_ratio"] > 2.0
    changed = PreparedData(data.name, moved, data.labels, data.user_ids, data.item_ids, dict(data.meta))
    assert not np.array_equal(changed.events["item"].to_numpy(), data.events["item"].to_numpy())
    items_after, features_after = _test_features(changed)
    np.testing.assert_array_equal(items_after, items)
    np.testing.assert_array_equal(features_after, features)
    # the validation stage's pair features ignore validation and test rows alike
    valid_rows = moved["split_temporal"].to_numpy() >= 1
    moved.loc[valid_rows, "watch_ratio"] = 4.0
    again = PreparedData(data.name, moved, data.labels, data.user_ids, data.item_ids, dict(data.meta))
    users, cands = np.repeat(np.arange(1, 41), 30), np.tile(np.arange(1, 31), 40)
    before = pair_context(data, data.stage_masks("temporal", "valid")[0]).features(users, cands)
    after = pair_context(again, again.stage_masks("temporal", "valid")[0]).features(users, cands)
    np.testing.assert_array_equal(before, after)


def test_pair_features_hand_computed() -> None:
    # user 1 watches item 1 twice (wr 1.0 and 3.0) and item 2 (wr 0.5) in training; item 3 only in test
    rows = [(1, 1, 0.0, 1.0, 0), (1, 2, 3600.0, 0.5, 0), (1, 1, 7200.0, 3.0, 0), (1, 3, 9000.0, 3.0, 2),
            (2, 2, 0.0, 2.5, 0)]  # fmt: skip
    data = make_prepared(rows, num_users=2, num_items=3)
    context = pair_context(data, data.stage_masks("temporal", "test")[0])
    x = context.features(np.array([1, 1]), np.array([1, 3]))
    cols = {name: j for j, name in enumerate(context.columns)}
    assert x[0, cols["user_log1p_views"]] == pytest.approx(np.log1p(3))
    assert x[0, cols["user_mean_watch_ratio"]] == pytest.approx(1.5)
    assert x[0, cols["user_like_share"]] == pytest.approx(2 / 3)
    assert x[0, cols["item_log1p_views"]] == pytest.approx(np.log1p(2))
    assert x[0, cols["item_log1p_users"]] == pytest.approx(np.log1p(1))
    assert x[0, cols["item_relevant_rate"]] == pytest.approx(0.5)
    assert x[0, cols["item_log1p_hours_since_view"]] == pytest.approx(0.0)  # the last event overall
    assert x[1, cols["item_log1p_views"]] == 0.0  # item 3: test period only
    assert np.isnan(x[1, cols["item_mean_watch_ratio"]])
    with pytest.raises(ConfigError, match="index out of range"):
        context.features(np.array([1]), np.array([9]))


# -------------------------------------------------------------------------------------- schema refusal
def test_ranker_refuses_another_feature_schema_in_one_line(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 3)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int32) * 3
    ranker = LightGBMRanker({"n_estimators": 5, "min_child_samples": 1, "num_threads": 1})
    ranker.fit(x, y, np.full(4, 10), ("a", "b", "c"), feature_digest="a" * 64)
    path = ranker.save(tmp_path / "ranker.json")
    loaded = LightGBMRanker.load(path, feature_digest="a" * 64, columns=("a", "b", "c"))
    np.testing.assert_array_equal(loaded.predict(x), ranker.predict(x))
    with pytest.raises(CheckpointMismatchError) as info:
        LightGBMRanker.load(path, feature_digest="b" * 64)
    assert "\n" not in str(info.value) and "another feature schema" in str(info.value)
    with pytest.raises(CheckpointMismatchError, match="other feature columns"):
        LightGBMRanker.load(path, columns=("a", "b", "d"))
    with pytest.raises(ConfigError, match="two_stage.ranker has no parameter"):
        LightGBMRanker({"trees": 3})


def test_pipeline_refuses_a_ranker_of_other_columns() -> None:
    ranker = LightGBMRanker()
    ranker.columns = ("x",)
    with pytest.raises(ConfigError, match="retrain the ranker"):
        TwoStage({"a": FixedScorer(np.zeros((2, 3)))}, 2, ranker=ranker)


# ------------------------------------------------------------------------------------------ command
def test_twostage_command_on_simulated_data(world: dict[str, Path], tmp_path: Path) -> None:
    from sasrec.cli import main

    out = tmp_path / "m.json"
    rc = main(["--quiet", "twostage", "--dataset", "small_matrix", "--data-dir", str(world["raw"]),
               "--retrievers", "itemknn,pop", "--num_candidates", "30", "--n_estimators", "5", "--n_boot", "20",
               "--num_threads", "1", "--metrics_json", str(out)])  # fmt: skip
    assert rc == 0
    payload = json.loads(out.read_text())
    assert payload["model"] == "two_stage"
    assert {row["retriever"] for row in payload["recall"]} == {"itemknn", "pop", "union"}
    assert 0.0 <= payload["test"]["ndcg@10"] <= 1.0
    union = [r for r in payload["recall"] if r["retriever"] == "union" and r["stage"] == "test"][0]
    single = [r for r in payload["recall"] if r["retriever"] != "union" and r["stage"] == "test"]
    assert all(union["recall@30"] >= r["recall@30"] - 1e-9 for r in single)
    assert main(["twostage", "--dataset", "small_matrix", "--data-dir", str(world["raw"]),
                 "--retrievers", "sasrec,pop"]) == 2  # fmt: skip


def test_union_of_lists() -> None:
    """Duplicates and invalid slots leave the union; an empty batch keeps one padding column."""
    from sasrec.inference.two_stage import _union

    items, valid = _union(np.zeros((0, 4), dtype=np.int64), np.zeros((0, 4), dtype=bool))
    assert items.shape == (0, 1) and not valid.any()
    lists = np.array([[3, 1, 3, 0]], dtype=np.int64)
    items, valid = _union(lists, np.array([[True, True, True, False]]))
    assert items[valid].tolist() == [1, 3]
    assert items.shape == (1, 2)


# ------------------------------------------------------------------------------------ other protocols
def _tiny_table(data: PreparedData, n_tags: int = 4) -> Any:
    """A feature table of ``data``: each video carries tag ``item % n_tags`` and a behavioural stat = its index."""
    import scipy.sparse as sp

    from sasrec.data.features.table import FeatureGroup, FeatureTable

    n = data.num_items + 1
    items = np.arange(1, n)
    tags = sp.csr_matrix((np.ones(n - 1, dtype=np.float32), (items, items % n_tags)), shape=(n, n_tags))
    stats = np.zeros((n, 1), dtype=np.float32)
    stats[1:, 0] = items
    groups = {
        "tags": FeatureGroup(name="tags", entity="item", kind="multi_hot", source="item_categories.csv",
                             columns=tuple(f"t{t}" for t in range(n_tags)), values=tags),
        "item_stats": FeatureGroup(name="item_stats", entity="item", kind="dense",
                                   source="item_daily_features.csv", columns=("plays",), values=stats),
    }  # fmt: skip
    return FeatureTable(dataset=data.name, data_fingerprint=data.fingerprint, num_items=data.num_items,
                        num_users=data.num_users, groups=groups)  # fmt: skip


def test_item_cold_start_never_sees_a_withheld_videos_events(one_thread: None) -> None:
    """Stage 1 and the pair features under item cold-start equal those of the data with the withheld videos'
    events before test deleted; the withheld videos' aggregates and behavioural stats are unknown."""
    from sasrec.data.cold_start import ColdStart
    from sasrec.study.two_stage import TwoStageSettings, cold_start_contexts, fit_stage_one

    data = random_data(seed=4)
    spec = ColdStart("items", frac=0.2, seed=0)
    selection = spec.select(data, "temporal")
    withheld = np.flatnonzero(selection.items)
    assert (~selection.keep).sum() > 0  # the withheld videos have training / validation events to leak
    without = PreparedData(data.name, data.events[selection.keep].reset_index(drop=True), data.labels,
                           data.user_ids, data.item_ids, dict(data.meta))  # fmt: skip
    table = _tiny_table(data)
    settings = TwoStageSettings.from_mapping({"retrievers": ["itemknn", "pop"]})
    cold, _ = fit_stage_one(data, {"models": {}}, settings, split="temporal", fit_on="train", k=10, seed=0,
                            table=table, cold_start=spec)  # fmt: skip
    plain, _ = fit_stage_one(without, {"models": {}}, settings, split="temporal", fit_on="train", k=10, seed=0,
                             table=table)  # fmt: skip
    task = build_eval_task(data, "temporal", "test", maxlen=10, cold_start=spec)
    rows = np.arange(len(task))
    assert len(task) > 0
    for name in ("itemknn", "pop"):
        for stage in ("valid", "test"):
            np.testing.assert_array_equal(
                cold[name][stage].score(task, rows), plain[name][stage].score(task, rows)
            )
    users, items = np.repeat(np.arange(1, 41), 30), np.tile(np.arange(1, 31), 40)
    contexts = cold_start_contexts(data, "temporal", spec, table)
    for stage, context in contexts.items():
        reference = pair_context(without, without.stage_masks("temporal", stage)[0], table,
                                 blank_items=selection.items)  # fmt: skip
        np.testing.assert_array_equal(context.features(users, items), reference.features(users, items))
        x = context.features(np.ones(len(withheld), dtype=np.int64), withheld)
        cols = {name: j for j, name in enumerate(context.columns)}
        assert (x[:, cols["item_log1p_views"]] == 0).all() and np.isnan(x[:, cols["item_like_rate"]]).all()
        assert np.isnan(x[:, cols["item_stats.plays"]]).all()  # behaviour of the side files: unknown too
        warm = np.setdiff1d(np.arange(1, 31), withheld)
        kept = context.features(np.ones(len(warm), dtype=np.int64), warm)[:, cols["item_stats.plays"]]
        np.testing.assert_array_equal(kept, warm.astype(np.float32))


def test_cold_start_examples_leave_out_withheld_candidates(one_thread: None) -> None:
    from sasrec.study.two_stage import stage_pass

    data = random_data(seed=4)
    ids = np.tile(np.arange(31, dtype=np.float32), (41, 1))  # the score is the video's index
    pipeline = TwoStage({"id": FixedScorer(ids)}, 30)
    task = build_eval_task(data, "temporal", "valid", maxlen=10)
    drop = np.zeros(31, dtype=bool)
    drop[[2, 5, 7]] = True
    labels = {"like_threshold": 0.7, "relevance_threshold": 2.0}
    full = stage_pass(pipeline, task, 16, labels=labels)
    dropped = stage_pass(pipeline, task, 16, labels=labels, drop_items=drop)
    item = full["features"][:, pipeline.columns.index("id_score")].astype(np.int64)
    user = np.repeat(np.arange(len(full["groups"])), full["groups"])
    kept = ~drop[item]
    positive = np.bincount(user, weights=kept & (full["labels"] > 0), minlength=len(full["groups"])) > 0
    expected = (
        kept & positive[user]
    )  # the full examples minus the dropped videos (and users left without a positive)
    np.testing.assert_array_equal(dropped["features"], full["features"][expected])
    np.testing.assert_array_equal(dropped["labels"], full["labels"][expected])
    np.testing.assert_array_equal(dropped["groups"], np.bincount(user[expected])[np.unique(user[expected])])
    assert kept.sum() < len(kept)
    np.testing.assert_array_equal(full["counts"], dropped["counts"])  # recall counts keep them


def test_protocol_tasks_are_every_models_tasks() -> None:
    """The cold-start and big-to-small tasks of the pipeline are those the other models are evaluated on."""
    from sasrec.data.cold_start import ColdStart
    from sasrec.study import comparisons
    from sasrec.study.preferences import protocol_tasks
    from sasrec.study.two_stage import big_to_small_tasks, cold_start_tasks

    config = comparisons.evaluation_config({"k": 10, "n_boot": 10})
    big, small = random_data(seed=4), random_data(n_users=40, seed=7)
    spec = ColdStart("items", frac=0.2, seed=0)
    ours = cold_start_tasks(big, "temporal", 10, config, spec)
    theirs = protocol_tasks(big, "temporal", 10, config, {"items": spec})
    ours.update(big_to_small_tasks(big, small, "temporal", 10, config))
    theirs["big_valid"] = comparisons.stage_tasks(big, "temporal", 10, config)["valid"]
    theirs["small_matrix"] = comparisons.cross_tasks(big, small, "temporal", 10, config)["small_matrix"]
    assert set(ours) == {"valid:items", "test:items", "big_valid", "small_matrix"} == set(theirs)
    for name, task in ours.items():
        other = theirs[name]
        assert task.name == other.name and len(task) > 0
        np.testing.assert_array_equal(task.users, other.users)
        np.testing.assert_array_equal(task.sequences, other.sequences)
        for matrix in ("targets", "relevant", "history"):
            assert (getattr(task, matrix) != getattr(other, matrix)).nnz == 0
    # the cold test targets are the withheld videos' test events only
    withheld = spec.select(big, "temporal").items
    assert withheld[ours["test:items"].targets.indices].all()


def test_cold_start_and_big_to_small_steps(tmp_path: Path, one_thread: None) -> None:
    from types import SimpleNamespace

    from sasrec.study.two_stage import run_big_to_small, run_cold_start, run_two_stage

    big, small = random_data(seed=4), random_data(n_users=40, seed=7)
    study = SimpleNamespace(models_dir=tmp_path)
    evaluation = {"k": 5, "n_boot": 20}
    two_stage = {"retrievers": ["sequential", "itemknn", "pop"], "num_candidates": 8, "features": False,
                 "single_models": {"ease": {"l2": 10.0}},
                 "ranker": {"n_estimators": 5, "min_child_samples": 1, "num_threads": 1}}  # fmt: skip
    cold = run_cold_start(
        study, big, {"models": {}}, evaluation, two_stage, {"protocol": "items", "frac": 0.2}
    )
    assert cold.test_task == "test:items" and set(cold.setup["retrievers"]) == {"itemknn", "pop"}
    assert set(cold.table["task"]) == {"valid:items", "test:items"}
    assert set(cold.paired["reference"]) <= {"itemknn", "pop", "ease"} and len(cold.paired)
    cross = run_big_to_small(study, big, small, None, evaluation, two_stage)
    assert cross.test_task == "small_matrix" and "sequential" not in cross.setup["retrievers"]
    assert (tmp_path / "tiny_two_stage" / "ranker_cold_items.json").is_file()
    within = run_two_stage(study, big, {"models": {}}, evaluation, {**two_stage, "retrievers": ["itemknn", "pop"]},
                           split="temporal")  # fmt: skip
    payload = within.add(cold, cross).to_json()
    assert set(pd.DataFrame(payload["protocol_table"])["setting"]) == {"within", "cold_items", "big_to_small"}
    from sasrec.evaluation.results import json_ready
    from sasrec.study.two_stage import report_context

    context = report_context(json.loads(json.dumps(json_ready(payload))))
    assert [p["setting"] for p in context["protocols"]] == ["within", "cold_items", "big_to_small"]
    assert all(p["models"][0]["model"] == "two_stage" and p["paired"] for p in context["protocols"])
