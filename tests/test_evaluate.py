"""The evaluation runner on a hand-made task: masking, candidates, sampled protocol, CI, JSON shape."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sasrec.data.contracts import EvalTask
from sasrec.errors import ConfigError, IntegrityError, MissingDataError, SasrecError
from sasrec.evaluation.bootstrap import bootstrap_ci, paired_difference, paired_table
from sasrec.evaluation.config import EvalConfig
from sasrec.evaluation.protocol import evaluate
from sasrec.evaluation.results import metrics_made_by, metrics_payload, read_metrics_json, write_metrics_json
from sasrec.evaluation.sampling import sampled_candidates

NAN = float("nan")
LOG3 = math.log2(3)


class TableScorer:
    """Scores from a fixed (n_rows, I+1) table; records the rows asked for."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        self.calls: list[list[int]] = []

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        self.calls.append(list(map(int, rows)))
        return torch.from_numpy(self.table[rows].copy())


def _csr(rows: list[dict[int, float]], n_cols: int) -> sp.csr_matrix:
    r = [i for i, row in enumerate(rows) for _ in row]
    c = [j for row in rows for j in row]
    v = [x for row in rows for x in row.values()]
    return sp.csr_matrix((np.array(v, dtype=np.float32), (r, c)), shape=(len(rows), n_cols))


def hand_task(mask_history: bool = True, candidates: np.ndarray | None = None) -> EvalTask:
    """Three users, six items (columns 0..6).

    row 0: history {1}; targets 2 (wr 3.0, relevant), 4 (wr 12.0, relevant), 6 (wr 0.5)
    row 1: no history; targets 3 (wr NaN, relevant), 5 (wr 1.0)
    row 2: history {2}; target 1 (wr 1.5, not relevant)
    """
    n_cols = 7
    history = _csr([{1: 1.0}, {}, {2: 1.0}], n_cols)
    targets = _csr([{2: 3.0, 4: 12.0, 6: 0.5}, {3: NAN, 5: 1.0}, {1: 1.5}], n_cols)
    relevant = _csr([{2: 1.0, 4: 1.0, 6: 0.0}, {3: 1.0, 5: 0.0}, {1: 0.0}], n_cols)
    return EvalTask(
        name="hand",
        users=np.array([10, 11, 12]),
        sequences=np.array([[0, 1], [0, 0], [0, 2]]),
        history=history,
        targets=targets,
        relevant=relevant,
        candidates=candidates,
        mask_history=mask_history,
        relevance_threshold=2.0,
    )


# row 0: item 1 (history) 9; items 3 and 5 tie at 7 -> ranked 3, 5, 2, 6, 4 once item 1 is masked
# row 1: constant -> ranked 1, 2, 3
# row 2: item 2 (history) 9 -> ranked 3, 4, 5
SCORES = np.array(
    [
        [0, 9, 5, 7, 1, 7, 3],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 9, 8, 7, 6, 5],
    ],
    dtype=np.float32,
)


def test_full_ranking_by_hand() -> None:
    result = evaluate(TableScorer(SCORES), hand_task(), k=3, gain_clip=5.0)
    per_user = result.per_user
    # row 0: top 3 = [3, 5, 2]; relevant {2, 4}: one hit at rank 3
    ndcg0 = 0.5 / (1 + 1 / LOG3)
    assert per_user.loc[0, "ndcg@3"] == pytest.approx(ndcg0)
    assert per_user.loc[0, "precision@3"] == pytest.approx(1 / 3)
    assert per_user.loc[0, "recall@3"] == pytest.approx(1 / 2)
    assert per_user.loc[0, "mrr@3"] == pytest.approx(1 / 3)
    assert per_user.loc[0, "map@3"] == pytest.approx((1 / 3) / 2)  # precision@3 over min(n_rel=2, K=3)
    # graded: gains 2 -> 3.0, 4 -> min(12, 5) = 5, 6 -> 0.5; DCG = 3.0 at rank 3
    graded0 = (3.0 * 0.5) / (5.0 + 3.0 / LOG3 + 0.5 * 0.5)
    assert per_user.loc[0, "graded_ndcg@3"] == pytest.approx(graded0)
    # row 1: top 3 = [1, 2, 3]; relevant {3} at rank 3; NaN watch_ratio -> gain 1 (relevant)
    ndcg1 = 0.5
    assert per_user.loc[1, "ndcg@3"] == pytest.approx(ndcg1)
    assert per_user.loc[1, "recall@3"] == pytest.approx(1.0)
    assert per_user.loc[1, "map@3"] == pytest.approx(1 / 3)
    graded1 = 0.5 / (1.0 + 1.0 / LOG3)  # targets 3 (gain 1) and 5 (gain 1.0)
    assert per_user.loc[1, "graded_ndcg@3"] == pytest.approx(graded1)
    # row 2: no relevant target -> binary metrics NaN; graded uses it: target 1 not in [3, 4, 5] -> 0
    assert math.isnan(per_user.loc[2, "ndcg@3"])
    assert per_user.loc[2, "graded_ndcg@3"] == 0.0

    s = result.summary
    assert s["ndcg@3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert s["graded_ndcg@3"] == pytest.approx((graded0 + graded1 + 0.0) / 3)
    assert s["hr@3"] == pytest.approx(1.0)
    assert (s["users"], s["users_without_relevant"], s["users_with_targets"], s["users_total"]) == (
        2,
        1,
        3,
        3,
    )
    # coverage: {3, 5, 2} | {1, 2, 3} | {3, 4, 5} = 5 of 6 rankable items
    assert s["coverage@3"] == pytest.approx(5 / 6)
    # popularity = history column sums: items 1 and 2 have 1, others 0 -> row means 1/3, 2/3, 0
    assert per_user["mean_popularity@3"].tolist() == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert s["mean_popularity@3"] == pytest.approx(1 / 3)
    assert per_user[["user", "n_history", "n_targets", "n_relevant"]].values.tolist() == [
        [10, 1, 3, 2],
        [11, 0, 2, 1],
        [12, 1, 1, 0],
    ]


def test_batching_does_not_change_results() -> None:
    scorer = TableScorer(SCORES)
    one = evaluate(scorer, hand_task(), k=3, batch_size=1)
    assert scorer.calls == [[0], [1], [2]]
    full = evaluate(TableScorer(SCORES), hand_task(), k=3, batch_size=512)
    assert one.per_user.equals(full.per_user)


def test_history_not_masked_lets_seen_items_rank() -> None:
    result = evaluate(TableScorer(SCORES), hand_task(mask_history=False), k=3)
    # row 0: item 1 (score 9) now ranks first -> [1, 3, 5], no hit
    assert result.per_user.loc[0, "ndcg@3"] == 0.0


def test_candidates_restrict_the_ranking() -> None:
    candidates = np.zeros(7, dtype=bool)
    candidates[[2, 4, 6]] = True
    result = evaluate(TableScorer(SCORES), hand_task(candidates=candidates), k=3)
    # row 0 ranks only 2 (5), 6 (3), 4 (1): hits at ranks 1 and 3
    assert result.per_user.loc[0, "ndcg@3"] == pytest.approx((1 + 0.5) / (1 + 1 / LOG3))
    assert result.summary["coverage@3"] == pytest.approx(1.0)  # rows 0 and 1 list all 3 candidates


def test_bad_scorer_output_and_parameters() -> None:
    with pytest.raises(SasrecError, match="shape"):
        evaluate(TableScorer(SCORES[:, :5]), hand_task(), k=3)
    bad = SCORES.copy()
    bad[1, 2] = NAN
    with pytest.raises(SasrecError, match="NaN scores in 1 of 3 rows.*user 11"):
        evaluate(TableScorer(bad), hand_task(), k=3)
    with pytest.raises(ConfigError, match="protocol"):
        evaluate(TableScorer(SCORES), hand_task(), protocol="sampeld")
    with pytest.raises(ConfigError, match="k must"):
        evaluate(TableScorer(SCORES), hand_task(), k=0)


def _random_loo_task(n_users: int = 40, n_items: int = 300, seed: int = 0) -> EvalTask:
    """Leave-one-out-like task: each user has 20 history items and one relevant held-out target."""
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((n_users, n_items)), axis=1)[:, :21] + 1  # (U, 21) distinct items
    rows = np.repeat(np.arange(n_users), 20)
    history = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, perm[:, :20].ravel())), shape=(n_users, n_items + 1)
    )
    targets = sp.csr_matrix(
        (np.full(n_users, 3.0, np.float32), (np.arange(n_users), perm[:, 20])), shape=history.shape
    )
    relevant = targets.copy()
    relevant.data[:] = 1.0
    return EvalTask(
        "loo", np.arange(1, n_users + 1), perm[:, :20], history, targets, relevant, None, True, 2.0
    )


def test_sampled_protocol_matches_rank_among_candidates() -> None:
    task = _random_loo_task()
    n_cols = task.num_items + 1
    scores = np.tile(np.arange(n_cols, dtype=np.float32), (len(task), 1))  # higher index scores higher
    result = evaluate(TableScorer(scores), task, k=10, protocol="sampled", num_negatives=100, seed=5)
    # reference: the target's rank among its 101 candidates, from the same candidate sampler
    lists = sampled_candidates(
        task.targets, [task.history], np.r_[False, np.ones(n_cols - 1, bool)], task.users, 100, 5
    )
    cand = np.zeros((len(task), n_cols), dtype=bool)
    rows = np.repeat(np.arange(len(task)), lists.valid.sum(axis=1))
    cand[rows, lists.items[lists.valid]] = True
    target_item = task.targets.indices
    rank = 1 + (cand & (np.arange(n_cols)[None, :] > target_item[:, None])).sum(axis=1)
    expected_ndcg = np.where(rank <= 10, 1 / np.log2(rank + 1), 0.0)
    assert result.per_user["ndcg@10"].to_numpy() == pytest.approx(expected_ndcg)
    assert result.per_user["hr@10"].to_numpy() == pytest.approx((rank <= 10).astype(float))
    assert 0 < result.summary["hr@10"] < 1  # the check is not vacuous
    again = evaluate(
        TableScorer(scores), task, k=10, protocol="sampled", num_negatives=100, seed=5, batch_size=7
    )
    assert again.per_user.equals(result.per_user)  # deterministic under the seed, whatever the batching
    other = evaluate(TableScorer(scores), task, k=10, protocol="sampled", num_negatives=100, seed=6)
    assert not other.per_user["ndcg@10"].equals(result.per_user["ndcg@10"])


def test_sampled_protocol_with_a_perfect_scorer() -> None:
    task = _random_loo_task()
    perfect = task.targets.toarray() * 10.0  # target scores 30, everything else 0
    result = evaluate(TableScorer(perfect), task, k=10, protocol="sampled", num_negatives=100)
    assert result.summary["hr@10"] == 1.0
    assert result.summary["ndcg@10"] == pytest.approx(1.0)


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic() -> None:
    rng = np.random.default_rng(0)
    import pandas as pd

    per_user = pd.DataFrame(
        {"a": rng.random(200), "b": np.r_[rng.random(150), np.full(50, np.nan)], "c": 0.25}
    )
    ci = bootstrap_ci(per_user, ["a", "b", "c"], n_boot=500, seed=1)
    assert list(ci.columns) == ["metric", "mean", "low", "high"]
    assert ci["mean"].tolist() == pytest.approx([per_user["a"].mean(), np.nanmean(per_user["b"]), 0.25])
    assert (ci["low"] < ci["mean"]).iloc[:2].all() and (ci["mean"] < ci["high"]).iloc[:2].all()
    # the 95% interval of a mean of 200 U(0, 1) values has a half-width near 1.96 * 0.289 / sqrt(200) = 0.04
    assert 0.025 < (ci.loc[0, "high"] - ci.loc[0, "low"]) / 2 < 0.055
    assert ci.loc[2, "low"] == pytest.approx(0.25) and ci.loc[2, "high"] == pytest.approx(0.25)
    assert ci.equals(bootstrap_ci(per_user, ["a", "b", "c"], n_boot=500, seed=1))
    assert not ci.equals(bootstrap_ci(per_user, ["a", "b", "c"], n_boot=500, seed=2))
    with pytest.raises(ConfigError, match="no column 'x'"):
        bootstrap_ci(per_user, ["x"])


def test_metrics_payload_shape_and_strict_json(tmp_path) -> None:
    valid = evaluate(TableScorer(SCORES), hand_task(), k=3)
    test = evaluate(TableScorer(SCORES), hand_task(candidates=np.r_[False, [True] * 6]), k=3)
    payload = metrics_payload(
        "pop",
        "small_matrix",
        "temporal",
        "full",
        3,
        valid,
        test,
        extra={"data_source": "simulated", "seed": 0},
    )
    path = write_metrics_json(payload, tmp_path / "out" / "m.json")
    loaded = json.loads(path.read_text())
    for key in (
        "model",
        "dataset",
        "split",
        "protocol",
        "k",
        "relevance_threshold",
        "data_source",
        "valid",
        "test",
    ):
        assert key in loaded
    assert (loaded["model"], loaded["dataset"], loaded["k"], loaded["data_source"]) == (
        "pop",
        "small_matrix",
        3,
        "simulated",
    )
    assert loaded["relevance_threshold"] == 2.0
    for stage in ("valid", "test"):
        for metric in (
            "ndcg",
            "graded_ndcg",
            "precision",
            "recall",
            "hr",
            "mrr",
            "map",
            "coverage",
            "mean_popularity",
        ):
            assert isinstance(loaded[stage][f"{metric}@3"], float)
        assert loaded[stage]["users"] == 2
    assert loaded["valid"]["ndcg@3"] == pytest.approx(valid.summary["ndcg@3"])
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary left behind
    # NaN becomes null (strict JSON)
    payload["valid"]["ndcg@3"] = float("nan")
    loaded = json.loads(write_metrics_json(payload, path).read_text())
    assert loaded["valid"]["ndcg@3"] is None
    assert metrics_payload("m", "d", "temporal", "full", 10, None, None)["valid"] is None


def test_metrics_json_is_sealed_readable_and_records_what_made_it(tmp_path) -> None:
    checkpoint = tmp_path / "SASRec.epoch=3.pth"
    checkpoint.write_bytes(b"weights")
    payload = {"model": "SASRec", "dataset": "small_matrix", "fit_on": "train", "checkpoint": str(checkpoint),
               "models": {"bce": {"checkpoint": str(checkpoint), "best_epoch": 3}}, "valid": {"ndcg@10": 0.25}}  # fmt: skip
    path = write_metrics_json(payload, tmp_path / "m.json", rewritten_by="notebook 03_train (make report)")
    text = path.read_text()
    assert text.startswith('{\n  "model": "SASRec",') and text.endswith("}\n")  # indented, human-readable
    on_disk = json.loads(text)
    assert list(on_disk) == [*payload, "integrity"]  # the seal is one extra top-level key
    assert read_metrics_json(path) == payload
    origin = metrics_made_by(path)
    assert origin["version"] and origin["rewritten_by"] == "notebook 03_train (make report)"
    assert (origin["dataset"], origin["fit_on"], origin["model"]) == ("small_matrix", "train", "SASRec")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert origin["checkpoints"] == {
        "checkpoint": {"path": str(checkpoint), "bytes": 7, "sha256": digest},
        "models.bce.checkpoint": {"path": str(checkpoint), "bytes": 7, "sha256": digest},
    }


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ("truncated", "is not valid JSON ("),
        ("hand-edited", "does not match its checksum (edited or damaged)"),
        ("unsealed", "carries no integrity entry (written by an older version or by hand)"),
        ("bit-flipped", "does not match its checksum"),
    ],
)
def test_damaged_metrics_json_is_refused_in_one_line(tmp_path, damage: str, problem: str) -> None:
    path = write_metrics_json({"model": "pop", "test": {"ndcg@10": 0.1234}}, tmp_path / "m.json")
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "hand-edited":
        path.write_text(text.replace("0.1234", "0.9234"))
    elif damage == "unsealed":
        path.write_text(json.dumps({"model": "pop", "test": {"ndcg@10": 0.1234}}))
    else:
        raw = bytearray(path.read_bytes())
        raw[text.index("pop")] ^= 0x02  # "pop" -> "rop"
        path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError) as caught:
        read_metrics_json(path, hint="run notebook 04_evaluate (make report) to rewrite it")
    message = str(caught.value)
    assert message.startswith(f"metrics file {path} ") and problem in message and "\n" not in message
    assert message.endswith("; run notebook 04_evaluate (make report) to rewrite it")
    if damage == "truncated":
        assert "): it was cut short or damaged;" in message
    if damage in ("hand-edited", "bit-flipped"):  # parsable: the recorded writer names the command by default
        assert "; rerun `python " in str(pytest.raises(IntegrityError, read_metrics_json, path).value)
    with pytest.raises(MissingDataError, match="is missing; rerun the command or notebook that wrote it"):
        read_metrics_json(tmp_path / "none.json")


def test_to_dict_is_json_ready() -> None:
    result = evaluate(TableScorer(SCORES), hand_task(), k=3)
    d = result.to_dict()
    assert (d["task_name"], d["protocol"], d["k"]) == ("hand", "full", 3)
    assert d["summary"]["users"] == 2
    json.dumps(d)


def test_empty_task_and_metric_defined_for_no_user() -> None:
    import warnings

    task = hand_task().subset(np.array([], dtype=np.int64))
    result = evaluate(TableScorer(SCORES), task, k=3)
    assert len(result.per_user) == 0 and "ndcg@3" in result.per_user.columns
    assert result.summary["users_total"] == 0 and math.isnan(result.summary["ndcg@3"])
    full = evaluate(TableScorer(SCORES), hand_task(), k=3)
    per_user = full.per_user.iloc[[2]]  # the user without relevant targets: ndcg NaN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ci = bootstrap_ci(per_user, ["ndcg@3", "graded_ndcg@3"], n_boot=50)
    assert math.isnan(ci.loc[0, "low"]) and ci.loc[1, "mean"] == 0.0


def test_summary_says_over_which_users_each_metric_averages() -> None:
    s = evaluate(TableScorer(SCORES), hand_task(), k=3).summary
    # binary metrics: rows 0 and 1 have a relevant target; graded NDCG: all three have a positive gain
    for name in ("ndcg", "precision", "recall", "hr", "mrr", "map"):
        assert s[f"users_{name}@3"] == 2
    assert s["users_graded_ndcg@3"] == 3 and s["users_mean_popularity@3"] == 3


def test_popularity_defaults_to_the_task_popularity() -> None:
    task = hand_task()
    task.item_popularity = np.array([0.0, 0, 0, 6, 0, 3, 0])  # items 3 and 5 popular
    per_user = evaluate(TableScorer(SCORES), task, k=3).per_user
    # row 0 ranks 3, 5, 2 -> (6 + 3 + 0) / 3; row 1 ranks 1, 2, 3 -> 2; row 2 ranks 3, 4, 5 -> 3
    assert per_user["mean_popularity@3"].tolist() == pytest.approx([3.0, 2.0, 3.0])
    explicit = evaluate(TableScorer(SCORES), task, k=3, item_popularity=np.ones(7)).per_user
    assert explicit["mean_popularity@3"].tolist() == pytest.approx([1.0, 1.0, 1.0])


def _per_user(values: list[float], users: list[int] | None = None) -> pd.DataFrame:
    users = users if users is not None else list(range(len(values)))
    return pd.DataFrame({"user": users, "ndcg@10": values})


def test_paired_difference_of_identical_models() -> None:
    rng = np.random.default_rng(1)
    values = rng.random(50).tolist()
    out = paired_difference(_per_user(values), _per_user(values), "ndcg@10", n_boot=200, n_permutations=500)
    assert (out["difference"], out["low"], out["high"], out["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert out["users"] == 50 and not out["exact"]


def test_paired_difference_of_a_constantly_better_model() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(40)
    better = base + 0.1
    out = paired_difference(
        _per_user(better.tolist()), _per_user(base.tolist()), "ndcg@10", n_permutations=999
    )
    assert out["difference"] == pytest.approx(0.1)
    assert out["low"] == pytest.approx(0.1) and out["high"] == pytest.approx(0.1)  # the interval excludes 0
    # only the all-equal sign patterns (probability 2 / 2**40) reach the observed sum: none of 999
    assert out["p_value"] == pytest.approx(1 / 1000)
    assert out["mean_a"] == pytest.approx(base.mean() + 0.1) and out["mean_b"] == pytest.approx(base.mean())
    # 5 users: all 32 sign patterns enumerated, 2 of them reach |sum| = 5 * 0.1 -> p = 2 / 32
    small = paired_difference(_per_user(better[:5].tolist()), _per_user(base[:5].tolist()), "ndcg@10")
    assert small["exact"] and small["p_value"] == pytest.approx(2 / 32)


def test_paired_difference_exact_p_value_by_hand() -> None:
    # differences 3, -1, 1 (users matched by id, not by row): |sum| = 3; the 8 sign patterns give |sums|
    # 3, 1, 5, 3, 3, 5, 1, 3 -> 6 of 8 reach 3 (matched by row, the differences 1, 0, 2 would give 4 of 8)
    a = _per_user([4.0, 2.0, 3.0], users=[7, 8, 9])
    b = _per_user([3.0, 2.0, 1.0], users=[8, 9, 7])
    out = paired_difference(a, b, "ndcg@10")
    assert out["difference"] == pytest.approx(1.0) and out["p_value"] == pytest.approx(6 / 8)
    # a user undefined (NaN) in one model is left out of both
    a.loc[a["user"] == 8, "ndcg@10"] = np.nan
    out = paired_difference(a, b, "ndcg@10")
    assert (
        out["users"] == 2
        and out["difference"] == pytest.approx(2.0)
        and out["p_value"] == pytest.approx(2 / 4)
    )


def test_paired_difference_rejects_different_users_and_bad_input() -> None:
    with pytest.raises(ConfigError, match="per_user_a has 3 users and per_user_b 2, 2 in common"):
        paired_difference(_per_user([1.0, 2.0, 3.0]), _per_user([1.0, 2.0]), "ndcg@10")
    with pytest.raises(ConfigError, match="per_user_b has no column 'ndcg@10'"):
        paired_difference(_per_user([1.0]), pd.DataFrame({"user": [0]}), "ndcg@10")
    with pytest.raises(ConfigError, match="each user once"):
        paired_difference(_per_user([1.0, 2.0], users=[1, 1]), _per_user([1.0, 2.0], users=[1, 1]), "ndcg@10")


def test_paired_table_compares_every_model_with_the_reference() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(60)
    frames = {
        "pop": pd.DataFrame({"user": np.arange(60), "ndcg@10": base, "hr@10": base > 0.5}),
        "sasrec": pd.DataFrame({"user": np.arange(60), "ndcg@10": base + 0.2, "hr@10": base > 0.5}),
        "random": pd.DataFrame({"user": np.arange(60), "ndcg@10": base, "hr@10": base > 0.5}),
    }
    table = paired_table(frames, "pop", ["ndcg@10", "hr@10"], n_boot=100, n_permutations=99)
    assert table[["model", "metric"]].values.tolist() == [
        ["sasrec", "ndcg@10"], ["sasrec", "hr@10"], ["random", "ndcg@10"], ["random", "hr@10"]
    ]  # fmt: skip
    assert table["difference"].tolist() == pytest.approx([0.2, 0.0, 0.0, 0.0])
    assert table["p_value"].tolist() == pytest.approx([0.01, 1.0, 1.0, 1.0])
    # Holm: the smallest p times 4 comparisons, the others capped at 1
    assert table["p_holm"].tolist() == pytest.approx([0.04, 1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="reference model 'ease' is not among pop, sasrec, random"):
        paired_table(frames, "ease", ["ndcg@10"])


def test_eval_config_validates_and_refuses_unknown_keys() -> None:
    config = EvalConfig.from_dict({"k": 20, "protocols": ["full", "sampled"], "relevance": "original"})
    assert config.protocols == ("full", "sampled") and config.k == 20
    assert config.relevance_for(explicit_negatives=True) == "liked"
    assert config.relevance_for(explicit_negatives=False) == "all"
    assert config.evaluate_kwargs() == {"k": 20, "num_negatives": 100, "seed": 0, "batch_size": 512,
                                        "gain_clip": 5.0}  # fmt: skip
    assert EvalConfig.from_dict(config.to_dict()) == config
    assert EvalConfig(**EvalConfig().to_dict()) == EvalConfig()
    with pytest.raises(ConfigError, match="unknown evaluation setting\\(s\\) 'kk', 'negatives'; known: k,"):
        EvalConfig.from_dict({"kk": 1, "negatives": 3})
    for field, value, message in [
        ("k", 0, "evaluation k must be an integer >= 1; got 0"),
        ("k", True, "evaluation k must be an integer"),
        ("num_negatives", 2.5, "num_negatives must be an integer"),
        ("protocols", ("full", "sampeld"), "protocols must be a non-empty list"),
        ("protocols", (), "protocols must be a non-empty list"),
        ("relevance", "liked_only", "relevance must be one of threshold, liked, all, original"),
        ("relevance_threshold", float("nan"), "relevance_threshold must be a finite number"),
        ("alpha", 1.0, "alpha must be in \\(0, 1\\)"),
        ("gain_clip", 0, "gain_clip must be positive"),
        ("batch_size", -1, "batch_size must be an integer >= 1"),
        ("n_boot", 0, "n_boot must be an integer >= 1"),
    ]:
        with pytest.raises(ConfigError, match=message):
            EvalConfig(**{field: value})
    with pytest.raises(ConfigError, match="relevance_threshold only applies to relevance 'threshold'"):
        EvalConfig(relevance="liked", relevance_threshold=1.0)


def test_candidate_counts_with_excluded_items_inside_and_outside_the_history() -> None:
    # row 0 excludes item 1, which is also its history; row 2 excludes item 5, outside its history
    task = hand_task()
    task.exclude = _csr([{1: 1.0}, {}, {5: 1.0}], 7)
    result = evaluate(TableScorer(SCORES), task, k=3)
    # rankable: row 0 = 6 items - {1} = 5 (item 1 blocked once); row 1 = 6; row 2 = 6 - {2, 5} = 4
    assert result.per_user["n_candidates"].tolist() == [5, 6, 4]
    # row 2 now ranks 3, 4, 6: item 5 (score 6) is excluded, item 6 (score 5) takes its place
    assert result.summary["coverage@3"] == pytest.approx(1.0)  # {3, 5, 2} | {1, 2, 3} | {3, 4, 6}
    task.mask_history = False
    assert evaluate(TableScorer(SCORES), task, k=3).per_user["n_candidates"].tolist() == [5, 6, 5]
