"""One fitting policy for every model: the same events, the same candidates, the same users.

Under ``fit_on=train`` every model (trained or baseline) is fit on the split's training events, for both
stages; under ``train_valid`` the test stage's models are fit on training + validation events (SASRec is
retrained for the selected epoch count). The fitted events are recorded as a digest, so these tests compare
digests across models. The popularity fallback of a trained model counts its fitted events only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError
from sasrec.evaluation.config import EvalConfig
from sasrec.study.comparisons import fit_baselines, policy_mask, shared_relevance, trained_scorers
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
