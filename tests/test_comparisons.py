"""One fitting policy for every model: the same events, the same candidates, the same users.

Under ``fit_on=train`` every model (trained or baseline) is fit on the split's training events, for both
stages; under ``train_valid`` the test stage's models are fit on training + validation events (SASRec is
retrained for the selected epoch count). The fitted events are recorded as a digest, so these tests compare
digests across models. The popularity fallback of a trained model counts its fitted events only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError
from sasrec.evaluation.config import EvalConfig
from sasrec.study.comparisons import (
    fit_baselines,
    p_value_text,
    paired_summaries,
    paired_summary,
    policy_mask,
    setup_table,
    shared_relevance,
    trained_scorers,
)
from sasrec.training.checkpoints import events_digest, load_checkpoint
from sasrec.training.config import TrainConfig
from sasrec.training.loop import train
from tests.conftest import make_prepared


def _data() -> PreparedData:
    """12 users walking 15 items; per user 6 training, 2 validation and 2 test events (several relevant)."""
    rows = []
    for user in range(1, 13):
        for position in range(10):
            item = (user + position) % 15 + 1
            split = 0 if position < 6 else (1 if position < 8 else 2)
            rows.append((user, item, float(position), 2.5 if (user + position) % 3 == 0 else 0.8, split))
    return make_prepared(rows, num_users=12, num_items=15, name="policy")


def _config(**overrides: object) -> TrainConfig:
    values = {"dataset": "policy", "hidden_units": 8, "num_blocks": 1, "maxlen": 6, "dropout_rate": 0.0,
              "device": "cpu", "num_epochs": 3, "progress": False, "relevance_threshold": 2.0}  # fmt: skip
    return TrainConfig(**{**values, **overrides})


def test_policy_masks() -> None:
    data = _data()
    split = data.events["split_temporal"].to_numpy()
    for stage in ("valid", "test"):
        assert np.array_equal(policy_mask(data, "temporal", "train", stage), split == 0)
    assert np.array_equal(policy_mask(data, "temporal", "train_valid", "valid"), split == 0)
    assert np.array_equal(policy_mask(data, "temporal", "train_valid", "test"), split <= 1)
    with pytest.raises(ConfigError, match="fit_on"):
        policy_mask(data, "temporal", "everything", "test")


@pytest.mark.parametrize("fit_on", ["train", "train_valid"])
def test_a_trained_model_and_the_baselines_saw_the_same_events(fit_on: str, tmp_path: Path) -> None:
    data = _data()
    result = train(data, _config(fit_on=fit_on), out_dir=tmp_path)
    fitted = fit_baselines(data, {"pop": {}, "markov": {}}, split="temporal", fit_on=fit_on)
    train_events = events_digest(data, data.events["split_temporal"].to_numpy() == 0)
    for name in ("pop", "markov"):
        assert fitted[name]["valid"].fit_events == train_events  # validation: always the training events
        assert fitted[name]["test"].fit_events == result.fit_events  # test: the trained model's own events
    expected = (
        train_events
        if fit_on == "train"
        else events_digest(data, data.events["split_temporal"].to_numpy() <= 1)
    )
    assert result.fit_events == expected
    assert (fitted["pop"]["valid"] is fitted["pop"]["test"]) == (
        fit_on == "train"
    )  # one fit serves both stages
    _, _, payload = load_checkpoint(result.checkpoint_path)
    assert payload["fit_events"] == result.fit_events
    if fit_on == "train_valid":
        assert result.checkpoint_path.name.endswith(".train_valid.pth")
        assert (
            f".epoch={result.best_epoch}." in result.checkpoint_path.name
        )  # retrained for the chosen epochs


def test_the_popularity_fallback_counts_fitted_events_only(tmp_path: Path) -> None:
    data = _data()
    result = train(data, _config(), out_dir=tmp_path)
    split = data.events["split_temporal"].to_numpy()
    items = data.events["item"].to_numpy()
    fitted_counts = np.bincount(items[split == 0], minlength=data.num_items + 1)
    all_counts = np.bincount(items, minlength=data.num_items + 1)
    assert not np.array_equal(fitted_counts[1:], all_counts[1:])  # the test events would change the ranking
    assert np.array_equal(result.popularity[1:], fitted_counts[1:])
    summary = {
        "models": {
            "m": {"checkpoint": str(result.checkpoint_path), "best_checkpoint": str(result.checkpoint_path)}
        }
    }
    scorer = trained_scorers(summary, data)["m"]["test"]
    empty = scorer.score_sequences(np.zeros((1, 6), dtype=np.int64))  # a user with no input
    assert torch.equal(empty[0, 1:], torch.as_tensor(fitted_counts[1:], dtype=torch.float32))


def test_shared_tasks_refuse_the_per_model_original_rule() -> None:
    assert shared_relevance(EvalConfig(relevance="liked")) == {
        "relevance": "liked",
        "relevance_threshold": None,
    }
    assert shared_relevance(EvalConfig(relevance_threshold=1.5)) == {
        "relevance": "threshold",
        "relevance_threshold": 1.5,
    }
    with pytest.raises(ConfigError, match="original"):
        shared_relevance(EvalConfig(relevance="original"))


def test_amp_and_compile_flags_do_not_change_cpu_training(tmp_path: Path) -> None:
    data = _data()
    plain = train(data, _config(), save=False)
    with_amp = train(data, _config(amp=True), save=False)  # bf16 autocast applies on CUDA only
    assert plain.log["loss"].tolist() == with_amp.log["loss"].tolist()
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, with_amp.model.state_dict()[key])


# ------------------------------------------------------------------------------- compact paired tables
def _paired_rows() -> pd.DataFrame:
    """A hand-built ``paired`` table (K = 5): four models against markov (the best baseline) and pop, plus rows
    the compact table must leave out (another metric, another task)."""
    columns = ["model", "reference", "metric", "users", "mean_model", "difference", "low", "high", "p_value"]
    rows = [
        ("sasrec", "markov", "ndcg@5", 40, 0.30, 0.07552, 0.04, 0.11, 0.002),
        ("pop", "markov", "ndcg@5", 40, 0.2045, -0.02, -0.045, 0.005, 0.1234),
        ("random", "markov", "ndcg@5", 40, 0.1533, -0.07119, -0.09, -0.05, 0.00004),
        ("sasrec", "pop", "ndcg@5", 40, 0.30, 0.09551, 0.06218, 0.12853, 1 / 10001),
        ("markov", "pop", "ndcg@5", 40, 0.2245, 0.02, -0.005, 0.045, 0.1234),
        ("random", "pop", "ndcg@5", 38, 0.1533, -0.05119, -0.07, -0.03, 0.0003),
        ("sasrec", "pop", "recall@5", 40, 0.50, 0.9, 0.8, 1.0, 0.5),
        ("pop", "sasrec", "ndcg@5", 40, 0.90, 0.3, 0.2, 0.4, 0.5),
    ]
    tasks = ["test"] * 7 + ["valid"]
    return pd.DataFrame(rows, columns=columns).assign(task=tasks, p_holm=1.0, exact=False)


def test_paired_summary_is_one_row_per_model_and_one_column_per_reference() -> None:
    table = paired_summary(_paired_rows(), "test")
    assert list(table.columns) == ["vs markov", "vs pop"]  # references in the order they were chosen
    assert list(table.index) == ["sasrec", "markov", "pop", "random"]  # best mean ndcg@5 first
    assert table.index.name == "model (ndcg@5, 40 users)"  # K read from the data, not written in
    expected = {
        "sasrec": ["+0.0755 [+0.0400, +0.1100], p = 0.002", "+0.0955 [+0.0622, +0.1285], p = 0.0001"],
        "markov": ["", "+0.0200 [-0.0050, +0.0450], p = 0.12"],
        "pop": ["-0.0200 [-0.0450, +0.0050], p = 0.12", ""],
        "random": ["-0.0712 [-0.0900, -0.0500], p < 0.0001", "-0.0512 [-0.0700, -0.0300], p = 0.0003"],
    }
    assert table.to_dict(orient="index") == {
        model: dict(zip(["vs markov", "vs pop"], cells, strict=True)) for model, cells in expected.items()
    }
    assert paired_summary(_paired_rows(), "test", "recall@5").to_dict(orient="index") == {
        "sasrec": {"vs pop": "+0.9000 [+0.8000, +1.0000], p = 0.5"}
    }
    best_reference = _paired_rows()
    best_reference.loc[best_reference["model"] == "markov", "mean_model"] = (
        0.5  # a reference is the best model
    )
    table = paired_summary(best_reference, "test")
    assert list(table.columns) == ["vs markov", "vs pop"] and list(table.index)[:2] == ["markov", "sasrec"]
    assert list(paired_summaries(_paired_rows())) == ["test", "valid"]
    assert paired_summary(_paired_rows(), "small_matrix").empty and paired_summaries(pd.DataFrame()) == {}


def test_paired_summary_reuses_the_reports_paired_table() -> None:
    from sasrec.study.report import paired_markdown

    lines = paired_markdown(_paired_rows(), "test", "ndcg@5").splitlines()
    assert lines[0] == "| model (ndcg@5, 40 users) | vs markov | vs pop |"
    assert (
        lines[2]
        == "| sasrec | +0.0755 [+0.0400, +0.1100] (p=0.002) | +0.0955 [+0.0622, +0.1285] (p=0.0001) |"
    )
    assert len(lines) == 2 + 4


def test_p_value_text_never_uses_scientific_notation() -> None:
    assert [p_value_text(p) for p in (1.0, 0.5, 0.03125, 1 / 10001, 4e-5, float("nan"))] == [
        "1", "0.5", "0.031", "0.0001", "< 0.0001", "n/a",
    ]  # fmt: skip


def test_setup_table_has_one_row_per_setting() -> None:
    setup = {"dataset": "small_matrix", "split": "temporal", "fit_on": "train", "k": 10,
             "relevance_threshold": None, "protocols": ["full", "sampled"],
             "references": {"test": ["ease", "pop", "sasrec_bce"]}}  # fmt: skip
    table = setup_table(setup)
    assert list(table.columns) == ["setting", "value"]
    assert table.values.tolist() == [
        ["dataset", "small_matrix"],
        ["split", "temporal"],
        ["fit_on", "train"],
        ["k", "10"],
        ["relevance_threshold", "-"],
        ["protocols", "full, sampled"],
        ["references", "test: ease, pop, sasrec_bce"],
    ]
