"""Tests of SASRec training: sequences, negative sampling, losses, loop, checkpoints, scorer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import sasrec.training.loop as train_module
from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import CheckpointMismatchError, ConfigError, MissingDataError
from sasrec.evaluation.protocol import EvalResult
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.models.sasrec import SASRec
from sasrec.training.checkpoints import checkpoint_name, load_checkpoint
from sasrec.training.config import TrainConfig, resolve_device
from sasrec.training.loop import train
from sasrec.training.losses import bce_loss, chunked_cross_entropy, gbce_beta, gbce_loss, sampled_softmax_loss
from sasrec.training.negatives import NegativeSampler
from sasrec.training.sequences import item_popularity, length_groups, training_sequences
from tests.conftest import make_prepared


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this module runs on one thread (tests/conftest.py)."""


def _small_data(name: str = "toy", n_users: int = 10, n_items: int = 14, per_user: int = 9) -> PreparedData:
    """Users with ``per_user`` events each: last one test, one before validation, the rest training."""
    rng = np.random.default_rng(7)
    rows = []
    for user in range(1, n_users + 1):
        items = rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False)
        ratios = rng.uniform(0.0, 3.0, size=per_user)
        for position, (item, ratio) in enumerate(zip(items, ratios, strict=True)):
            split = 2 if position == per_user - 1 else 1 if position == per_user - 2 else 0
            rows.append((user, int(item), float(position), float(ratio), split))
    return make_prepared(rows, num_users=n_users, num_items=n_items, name=name)


def _config(**kwargs: object) -> TrainConfig:
    params: dict = {
        "dataset": "toy",
        "hidden_units": 8,
        "num_blocks": 1,
        "maxlen": 6,
        "batch_size": 4,
        "num_epochs": 2,
        "device": "cpu",
        "progress": False,
        "num_negatives": 3,
    }
    params.update(kwargs)
    return TrainConfig(**params)


# ------------------------------------------------------------------------------------------------- data
def test_training_sequences_are_the_reference_windows(tiny_data: PreparedData) -> None:
    seqs = training_sequences(tiny_data, "temporal", maxlen=3)
    # user 1 trains on 1, 2, 3; user 2 on 2, 3; user 3 has a single training event and is left out.
    assert seqs.users.tolist() == [1, 2]
    assert seqs.inputs.tolist() == [[0, 1, 2], [0, 0, 2]]
    assert seqs.targets.tolist() == [[0, 2, 3], [0, 0, 3]]
    short = training_sequences(tiny_data, "temporal", maxlen=1)
    assert short.inputs.tolist() == [[2], [2]]
    assert short.targets.tolist() == [[3], [3]]


def test_item_popularity_counts_training_events(tiny_data: PreparedData) -> None:
    train_mask, _ = tiny_data.stage_masks("temporal", "valid")
    assert item_popularity(tiny_data, train_mask).tolist() == [0, 1, 2, 2, 1, 0]


# --------------------------------------------------------------------------------------------- sampler
def _sampler(data: PreparedData, seed: int = 0) -> NegativeSampler:
    generator = torch.Generator().manual_seed(seed)
    train_mask, _ = data.stage_masks("temporal", "valid")
    return NegativeSampler(data, train_mask, device=torch.device("cpu"), generator=generator)


def test_uniform_negatives_are_exactly_the_non_training_items(tiny_data: PreparedData) -> None:
    sampler = _sampler(tiny_data)
    users = torch.tensor([1, 2, 3])
    draws = sampler.uniform(users, (6000,))  # (3, 6000)
    # Training items: user 1 {1, 2, 3}; user 2 {2, 3}; user 3 {4}; items are 1..5.
    expected = {0: [4, 5], 1: [1, 4, 5], 2: [1, 2, 3, 5]}
    for row, allowed in expected.items():
        values, counts = np.unique(draws[row].numpy(), return_counts=True)
        assert values.tolist() == allowed
        np.testing.assert_allclose(counts / counts.sum(), 1 / len(allowed), atol=0.03)


def test_user_who_trained_on_every_item_gets_unrestricted_negatives() -> None:
    data = make_prepared([(1, i, float(i), 1.0, 0) for i in (1, 2, 3)] + [(2, 1, 1.0, 1.0, 0)], 2, 3)
    draws = _sampler(data).uniform(torch.tensor([1, 2]), (600,))
    assert set(draws[0].tolist()) == {1, 2, 3}
    assert set(draws[1].tolist()) == {2, 3}


def test_explicit_negatives_contract(tiny_data: PreparedData) -> None:
    sampler = _sampler(tiny_data, seed=1)
    # Dislikes (liked = watch_ratio > 0.7) among training events: user 1 {1}, user 2 {3}, user 3 none.
    n = 4000
    targets = torch.full((3, n), 5)
    targets[:, :10] = 0  # padding
    targets[1, 10:20] = 3  # user 2's target equals their dislike there: never that negative
    negatives, disliked = sampler.bce_negatives(torch.tensor([1, 2, 3]), targets, explicit=True)
    assert (negatives[:, :10] == 0).all() and not disliked[:, :10].any()
    assert (negatives[0][disliked[0]] == 1).all()
    assert (negatives[1][disliked[1]] == 3).all()
    assert not disliked[2].any()  # no dislikes: uniform fallback
    assert not disliked[1, 10:20].any()
    share = disliked[0, 10:].float().mean().item()
    assert share == pytest.approx(0.5, abs=0.03)
    # Every other negative is a uniform non-training item.
    assert set(negatives[0, 10:][~disliked[0, 10:]].tolist()) == {4, 5}
    assert set(negatives[1, 20:][~disliked[1, 20:]].tolist()) == {1, 4, 5}
    assert set(negatives[2, 10:].tolist()) == {1, 2, 3, 5}
    plain, none_disliked = sampler.bce_negatives(torch.tensor([1]), targets[:1], explicit=False)
    assert not none_disliked.any() and set(plain[0, 10:].tolist()) == {4, 5}


def test_item_disliked_once_but_liked_again_is_not_a_dislike() -> None:
    rows = [(1, 1, 1.0, 0.1, 0), (1, 1, 2.0, 1.5, 0), (1, 2, 3.0, 0.2, 0)]
    sampler = _sampler(make_prepared(rows, 1, 4))
    negatives, disliked = sampler.bce_negatives(torch.tensor([1]), torch.full((1, 500), 3), explicit=True)
    assert set(negatives[0][disliked[0]].tolist()) == {2}


# ---------------------------------------------------------------------------------------------- losses
def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_bce_loss_with_dislike_weights_by_hand() -> None:
    pos = torch.tensor([[0.5, -1.0, 9.0]])
    neg = torch.tensor([[2.0, 0.0, -9.0]])
    valid = torch.tensor([[True, True, False]])
    weight = torch.tensor([[2.0, 1.0, 5.0]])
    expected = ((_softplus(-0.5) + 2 * _softplus(2.0)) + (_softplus(1.0) + _softplus(0.0))) / 2
    assert bce_loss(pos, neg, valid, weight).item() == pytest.approx(expected, rel=1e-6)
    unweighted = ((_softplus(-0.5) + _softplus(2.0)) + (_softplus(1.0) + _softplus(0.0))) / 2
    assert bce_loss(pos, neg, valid).item() == pytest.approx(unweighted, rel=1e-6)
    # Equals the reference's BCEWithLogits(pos, 1) + BCEWithLogits(neg, 0) over valid positions.
    ref = F.binary_cross_entropy_with_logits(pos[valid], torch.ones(2)) + F.binary_cross_entropy_with_logits(
        neg[valid], torch.zeros(2)
    )
    assert bce_loss(pos, neg, valid).item() == pytest.approx(ref.item(), rel=1e-6)


def test_padding_positions_do_not_change_the_bce_loss() -> None:
    pos = torch.tensor([[0.3, 1.0, -2.0]])
    neg = torch.tensor([[0.1, 0.2, 0.4]])
    valid = torch.tensor([[False, True, True]])
    changed_pos, changed_neg = pos.clone(), neg.clone()
    changed_pos[0, 0], changed_neg[0, 0] = -50.0, 50.0
    assert bce_loss(pos, neg, valid).item() == bce_loss(changed_pos, changed_neg, valid).item()


@pytest.mark.parametrize("loss", ["ce", "gbce", "sampled_softmax"])
def test_padding_columns_do_not_change_the_batch_loss(loss: str) -> None:
    """A batch with an extra all-padding column (inputs and targets 0) has exactly the same loss."""
    data = _small_data()
    config = _config(loss=loss, dropout_rate=0.0)
    torch.manual_seed(0)
    model = SASRec(data.num_items, hidden_units=8, num_blocks=1, maxlen=6, dropout_rate=0.0).eval()
    seqs = training_sequences(data, "temporal", maxlen=5)
    users = torch.from_numpy(seqs.users[:3])
    inputs, targets = torch.from_numpy(seqs.inputs[:3]), torch.from_numpy(seqs.targets[:3])
    window = torch.from_numpy(seqs.window[:3])
    pad = torch.zeros(3, 1, dtype=torch.long)
    beta = gbce_beta(3, data.num_items, 0.75)
    values = []
    padded = (torch.cat([pad, inputs], 1), torch.cat([pad, targets], 1), torch.cat([pad, window], 1))
    for x, y, w in ((inputs, targets, window), padded):
        sampler = _sampler(data, seed=5)
        values.append(train_module._batch_loss(model, sampler, users, x, y, w, config, beta).item())
    assert values[0] == pytest.approx(values[1], rel=1e-5)


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_chunked_cross_entropy_matches_full_softmax(chunk: int) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 8, 3, 3, 2, 5, 7])
    loss = chunked_cross_entropy(hidden, weight, targets, chunk)
    loss.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None
    logits = hidden @ weight.T
    logits = torch.cat([torch.full((7, 1), float("-inf"), dtype=torch.float64), logits[:, 1:]], 1)
    reference = F.cross_entropy(logits, targets)
    reference.backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(grads[0], hidden.grad)
    torch.testing.assert_close(grads[1], weight.grad)
    assert torch.equal(grads[1][0], torch.zeros(4, dtype=torch.float64))  # padding column excluded


def test_sampled_softmax_matches_formula() -> None:
    pos = torch.tensor([1.0, -0.5])
    neg = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    expected = [
        -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.0) + math.exp(2.0))),
        -math.log(math.exp(-0.5) / (math.exp(-0.5) + math.exp(1.0) + math.exp(-1.0))),
    ]
    assert sampled_softmax_loss(pos, neg).item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_gbce_matches_gsasrec_reference_formula() -> None:
    pos = torch.tensor([0.7, -1.2, 2.5], dtype=torch.float64)
    neg = torch.tensor([[0.1, -0.3], [1.5, 0.2], [-2.0, 0.0]], dtype=torch.float64)
    beta = gbce_beta(2, 50, 0.75)
    # gSASRec (Petrov & Macdonald 2023): transformed positive logit log(1 / (sigmoid(s)^-beta - 1)),
    # then BCEWithLogits over [transformed positive, negatives] with labels [1, 0, 0], mean over entries.
    eps = 1e-10
    probs = torch.clamp(torch.sigmoid(pos), eps, 1 - eps)
    adjusted = torch.clamp(probs.pow(-beta), 1 + eps, torch.finfo(torch.float64).max)
    transformed = torch.clamp(1.0 / (adjusted - 1), eps, torch.finfo(torch.float64).max).log()
    logits = torch.cat([transformed[:, None], neg], 1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    reference = F.binary_cross_entropy_with_logits(logits, labels)
    assert gbce_loss(pos, neg, beta).item() == pytest.approx(reference.item(), rel=1e-9)


def test_gbce_beta_limits() -> None:
    assert gbce_beta(100, 10729, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(100, 10729, 1.0) == pytest.approx(100 / 10728)  # t = 1: beta = alpha
    alpha = 5 / 9
    assert gbce_beta(5, 10, 0.5) == pytest.approx(alpha * (0.5 * (1 - 1 / alpha) + 1 / alpha))


# ---------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"lr": -1.0}, "lr"),
        ({"loss": "hinge"}, "loss"),
        ({"split": "random"}, "split"),
        ({"batch_size": 0}, "batch_size"),
        ({"dropout_rate": 1.5}, "dropout_rate"),
        ({"num_heads": 3}, "num_heads"),
        ({"loss": "ce", "explicit_negatives": True}, "explicit_negatives"),
        ({"eval_protocol": "both"}, "eval_protocol"),
        ({"device": "tpu"}, "device"),
        ({"gbce_t": 2.0}, "gbce_t"),
    ],
)
def test_config_errors_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        _config(**kwargs)


def test_weighted_dislike_implies_explicit_negatives() -> None:
    assert _config(weighted_dislike=True).explicit_negatives is True


def test_auto_device_prefers_cuda_then_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else None
    resolved = resolve_device("auto").type
    assert resolved == expected or (expected is None and resolved in {"cpu", "mps"})


# ------------------------------------------------------------------------------------------ training
def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_training_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    data = _small_data()
    first = train(data, _config(explicit_negatives=True), out_dir=tmp_path / "a")
    second = train(data, _config(explicit_negatives=True), out_dir=tmp_path / "b")
    assert first.log["loss"].tolist() == second.log["loss"].tolist()
    _assert_same_state(_state(first.model), _state(second.model))
    other_seed = train(data, _config(explicit_negatives=True, seed=1), save=False)
    assert other_seed.log["loss"].tolist() != first.log["loss"].tolist()


def test_resume_equals_uninterrupted_training(tmp_path: Path) -> None:
    data = _small_data()
    full = train(data, _config(num_epochs=4, patience=10), out_dir=tmp_path / "full")
    half = train(data, _config(num_epochs=2, patience=10), out_dir=tmp_path / "resumed")
    resumed = train(
        data,
        _config(num_epochs=4, patience=10),
        out_dir=tmp_path / "resumed",
        resume_from=half.last_checkpoint,
    )
    columns = [c for c in full.log.columns if c != "seconds"]
    pd.testing.assert_frame_equal(full.log[columns], resumed.log[columns])
    assert resumed.best_epoch == full.best_epoch
    _assert_same_state(_state(full.model), _state(resumed.model))
    _, _, full_payload = load_checkpoint(full.last_checkpoint)
    _, _, resumed_payload = load_checkpoint(resumed.last_checkpoint)
    _assert_same_state(full_payload["last_model_state"], resumed_payload["last_model_state"])
    # the resumed run folder keeps one best and one last checkpoint, not every epoch's
    names = sorted(p.name for p in (tmp_path / "resumed").glob("*.pth"))
    assert names == sorted([resumed.checkpoint_path.name, resumed.last_checkpoint.name])


def _fake_validation(values: list[float]):
    """A stand-in for ``validate`` returning the given NDCG@10 values, one per call."""
    scores = iter(values)

    def fake(run: object) -> EvalResult:
        return EvalResult(summary={"ndcg@10": next(scores)}, per_user=pd.DataFrame(), protocol="full", k=10,
                          task_name="valid")  # fmt: skip

    return fake


def test_checkpoint_files_name_and_contents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _small_data()
    config = _config(num_epochs=3, lr=0.002)
    monkeypatch.setattr(train_module, "validate", _fake_validation([0.1, 0.3, 0.2]))
    result = train(data, config, out_dir=tmp_path)
    best = "SASRec.epoch=2.lr=0.002.layer=1.head=1.hidden=8.maxlen=6.pth"  # the epoch whose weights it holds
    last = "SASRec.epoch=3.lr=0.002.layer=1.head=1.hidden=8.maxlen=6.last.pth"
    assert checkpoint_name(config, 2) == best and checkpoint_name(config, 3, "last") == last
    assert result.checkpoint_path == tmp_path / best and result.last_checkpoint == tmp_path / last
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        best,
        last,
        "SASRec.lr=0.002.layer=1.head=1.hidden=8.maxlen=6.log.csv",
    ]  # superseded epochs' checkpoints removed, no temporary files left
    _, _, best_payload = load_checkpoint(result.checkpoint_path, data)
    assert best_payload["epoch"] == 2 and "optimizer_state" not in best_payload
    log = pd.read_csv(tmp_path / "SASRec.lr=0.002.layer=1.head=1.hidden=8.maxlen=6.log.csv")
    assert log["epoch"].tolist() == [1, 2, 3] and "valid_ndcg@10" in log.columns
    model, loaded_config, payload = load_checkpoint(result.last_checkpoint, data)
    assert loaded_config.lr == 0.002 and loaded_config.num_epochs == 3
    assert payload["dataset"] == "toy" and payload["fingerprint"] == data.fingerprint
    assert payload["item_ids"].tolist() == data.item_ids.tolist()
    assert payload["user_ids"].tolist() == data.user_ids.tolist()
    assert {"optimizer_state", "stopper", "log", "epoch", "last_model_state", "fit_events"} <= set(payload)
    _assert_same_state(_state(model), _state(result.model))


def test_default_checkpoint_folder_is_models_dataset_train_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path))
    result = train(_small_data(), _config(num_epochs=1, train_dir="run1"))
    assert result.checkpoint_path is not None
    assert result.checkpoint_path.parent == tmp_path / "models" / "toy_run1"


def test_checkpoint_of_other_dataset_is_rejected(tmp_path: Path) -> None:
    data = _small_data()
    result = train(data, _config(num_epochs=1), out_dir=tmp_path)
    other = _small_data(name="other", n_items=15)
    with pytest.raises(CheckpointMismatchError) as info:
        load_checkpoint(result.checkpoint_path, other)
    message = str(info.value)
    assert "toy" in message and "other" in message
    assert data.fingerprint in message and other.fingerprint in message
    with pytest.raises(CheckpointMismatchError):
        train(other, _config(num_epochs=2), out_dir=tmp_path / "x", resume_from=result.last_checkpoint)
    with pytest.raises(MissingDataError):
        load_checkpoint(tmp_path / "missing.pth")
    bogus = tmp_path / "bogus.pth"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(ConfigError, match="not a"):
        load_checkpoint(bogus)


def test_early_stopping_restores_best_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_module, "validate", _fake_validation([0.5, 0.7, 0.6, 0.4, 0.9]))
    result = train(_small_data(), _config(num_epochs=5, patience=2), out_dir=tmp_path)
    assert result.log["epoch"].tolist() == [1, 2, 3, 4]  # epochs 3 and 4 did not improve on epoch 2
    assert result.stopped_early and result.best_epoch == 2
    assert result.best_valid == {"ndcg@10": 0.7}
    _, _, payload = load_checkpoint(result.last_checkpoint)
    _assert_same_state(_state(result.model), payload["model_state"])
    assert any(
        not torch.equal(payload["model_state"][k], payload["last_model_state"][k])
        for k in payload["model_state"]
    )


def test_patience_counts_epochs_and_min_epochs_delays_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [0.5, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1, 0.05]
    monkeypatch.setattr(train_module, "validate", _fake_validation(values))
    every_two = train(_small_data(), _config(num_epochs=8, patience=2, eval_every=2), save=False)
    # evaluations at epochs 2 (0.5), 4 (0.7), 6 (0.6): 6 - 4 = 2 epochs without improvement -> stop after 6
    assert every_two.log["epoch"].tolist() == [1, 2, 3, 4, 5, 6] and every_two.best_epoch == 4
    monkeypatch.setattr(train_module, "validate", _fake_validation(values))
    delayed = train(_small_data(), _config(num_epochs=8, patience=2, min_epochs=6), save=False)
    assert delayed.log["epoch"].tolist() == [1, 2, 3, 4, 5, 6] and delayed.best_epoch == 2
    assert delayed.stopped_early


def test_eval_every_and_test_split_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stages: list[str] = []
    real = train_module.build_eval_task

    def spy(data: PreparedData, split: str, stage: str, **kwargs: object):
        stages.append(stage)
        return real(data, split, stage, **kwargs)

    monkeypatch.setattr(train_module, "build_eval_task", spy)
    result = train(_small_data(), _config(num_epochs=3, eval_every=2), save=False)
    assert stages == ["valid"]
    evaluated = result.log.dropna(subset=["valid_ndcg@10"])["epoch"].tolist()
    assert evaluated == [2, 3]  # every 2 epochs, and the last one


@pytest.mark.parametrize("loss", ["ce", "sampled_softmax", "gbce"])
def test_every_loss_trains(loss: str) -> None:
    result = train(_small_data(), _config(loss=loss, num_epochs=1), save=False)
    assert np.isfinite(result.log["loss"]).all()


# ------------------------------------------------------------------------------------ batches by length
def _cost(groups: list[tuple[np.ndarray, int]], overhead: float) -> float:
    return sum(len(rows) * width + overhead for rows, width in groups)


@pytest.mark.parametrize("seed", range(6))
def test_length_groups_partition_the_batch_at_the_least_cost(seed: int) -> None:
    """Groups cover every row once, are as wide as their widest row, and reach the brute-force optimum."""
    import itertools

    rng = np.random.default_rng(seed)
    widths = rng.integers(1, 30, size=9) ** rng.integers(1, 3)  # skewed: a few long rows
    groups = length_groups(widths, max_groups=3, overhead=40.0)
    assert sorted(np.concatenate([rows for rows, _ in groups]).tolist()) == list(range(9))
    for rows, width in groups:
        assert width == widths[rows].max() and list(rows) == sorted(rows)  # batch order within a group
    ranked = np.sort(widths)
    best = min(
        sum(len(part) * part.max() + 40.0 for part in np.split(ranked, list(cuts)))
        for k in range(3)
        for cuts in itertools.combinations(range(1, 9), k)
    )
    assert _cost(groups, 40.0) == pytest.approx(best)


def test_length_groups_keep_alike_rows_together() -> None:
    same = length_groups(np.full(128, 200))
    assert len(same) == 1 and same[0][1] == 200 and same[0][0].tolist() == list(range(128))
    mixed = length_groups(np.r_[np.full(8, 50), np.full(120, 4)])  # a few long rows would pad many short
    assert [(len(rows), width) for rows, width in mixed] == [(8, 50), (120, 4)]


def _varied_data(n_users: int = 12) -> PreparedData:
    """Users with 4..15 events (last one test, one before validation): short and long rows in a batch."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(1, n_users + 1):
        per_user = int(rng.integers(4, 16))
        items = rng.choice(np.arange(1, 21), size=per_user, replace=False)
        for position, item in enumerate(items):
            split = 2 if position == per_user - 1 else 1 if position == per_user - 2 else 0
            rows.append((user, int(item), float(position), 3.0, split))
    return make_prepared(rows, num_users=n_users, num_items=20, name="varied")


def _epoch_state(data: PreparedData, config: TrainConfig, tmp_path: Path) -> tuple[float, dict]:
    run = train_module.build_run(
        data, config, mask=train_module.fit_mask(data, config), validate=False, folder=tmp_path
    )
    run.optimizer = torch.optim.SGD(run.model.parameters(), lr=0.5)  # Adam would amplify float noise
    loss = train_module.run_epoch(run, 1)
    return loss, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_grouped_batches_take_the_padded_batches_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without random draws (cross-entropy, no dropout), grouping by length changes nothing but rounding."""
    data, config = _varied_data(), _config(loss="ce", dropout_rate=0.0, maxlen=12, batch_size=6)
    seen: list[int] = []

    def spy(widths: np.ndarray) -> list[tuple[np.ndarray, int]]:
        groups = length_groups(widths, overhead=0.0)  # split wherever padding is saved
        seen.append(len(groups))
        return groups

    monkeypatch.setattr(train_module, "length_groups", spy)
    grouped_loss, grouped = _epoch_state(data, config, tmp_path)
    assert max(seen) > 1  # some batch was really computed in several groups
    monkeypatch.setattr(train_module, "length_groups", lambda widths: [(np.arange(len(widths)), 12)])
    padded_loss, padded = _epoch_state(data, config, tmp_path)  # every row padded to maxlen, one pass
    assert grouped_loss == pytest.approx(padded_loss, rel=1e-6)
    for key, value in padded.items():
        torch.testing.assert_close(grouped[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_grouped_training_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    """Grouping changes which dropout masks and negatives are drawn, never their seeding: runs repeat."""
    data, config = _varied_data(), _config(maxlen=12, batch_size=6, explicit_negatives=True)
    first = train(data, config, out_dir=tmp_path / "a")
    second = train(data, config, out_dir=tmp_path / "b")
    assert first.log["loss"].tolist() == second.log["loss"].tolist()
    _assert_same_state(_state(first.model), _state(second.model))


# ---------------------------------------------------------------------------------------------- scorer
def test_scorer_uses_last_maxlen_items_and_popularity_fallback(tiny_data: PreparedData) -> None:
    torch.manual_seed(0)
    model = SASRec(tiny_data.num_items, hidden_units=8, num_blocks=1, maxlen=2).eval()
    task = build_eval_task(tiny_data, "temporal", "test", maxlen=4)  # users 1 and 2
    task.sequences = task.sequences.copy()
    task.sequences[1] = 0  # user 2 without history
    popularity = np.array([0, 5, 4, 3, 2, 1], dtype=np.float32)
    scorer = SequentialScorer(model, popularity=popularity)
    scores = scorer.score(task, np.array([0, 1]))
    with torch.no_grad():
        expected = model.score_all(torch.tensor([[3, 4]]))[0]  # last 2 of user 1's 1, 2, 3, 4
    torch.testing.assert_close(scores[0, 1:], expected[1:])
    assert scores[0, 0] == float("-inf") and scores[1, 0] == float("-inf")
    torch.testing.assert_close(scores[1, 1:], torch.from_numpy(popularity[1:]))
    assert scorer.fallback_rows.tolist() == [1]
    assert scorer.fallback_users.tolist() == [2]
    assert not model.training


@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize(
    "n_items", [10, 400]
)  # dense logits per chunk (10 <= 64 x 5); gathered embeddings (400)
def test_gathered_logits_equal_the_direct_dot_products_and_gradients(chunk: int, n_items: int) -> None:
    from sasrec.training.losses import gathered_logits

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(n_items, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    items = torch.randint(0, n_items, (7, 5), generator=generator)
    items[0, 1] = items[0, 0]  # a repeated item: its weight gradient accumulates
    upstream = torch.randn(7, 5, dtype=torch.float64, generator=generator)
    direct = torch.einsum("nd,nkd->nk", hidden, weight[items])
    (direct * upstream).sum().backward()
    expected = (hidden.grad.clone(), weight.grad.clone())
    hidden.grad, weight.grad = None, None
    chunked = gathered_logits(hidden, weight, items, chunk)
    (chunked * upstream).sum().backward()
    torch.testing.assert_close(chunked, direct)
    torch.testing.assert_close(hidden.grad, expected[0])
    torch.testing.assert_close(weight.grad, expected[1])
    assert torch.autograd.gradcheck(lambda h, w: gathered_logits(h, w, items, chunk), (hidden, weight))


def test_sampled_losses_draw_negatives_for_every_position(monkeypatch: pytest.MonkeyPatch) -> None:
    """gSASRec's k negatives per positive: each position gets its own draw (not one set per sequence)."""
    data = _small_data()
    config = _config(loss="gbce", num_negatives=3, dropout_rate=0.0)
    drawn: list[torch.Tensor] = []
    real = NegativeSampler.uniform

    def spy(self: NegativeSampler, users: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        out = real(self, users, shape)
        drawn.append(out)
        return out

    monkeypatch.setattr(NegativeSampler, "uniform", spy)
    torch.manual_seed(0)
    model = SASRec(data.num_items, hidden_units=8, num_blocks=1, maxlen=5, dropout_rate=0.0)
    seqs = training_sequences(data, "temporal", maxlen=5)
    tensors = [torch.from_numpy(a) for a in (seqs.users, seqs.inputs, seqs.targets, seqs.window)]
    beta = gbce_beta(3, data.num_items, 0.75)
    train_module._batch_loss(model, _sampler(data, seed=1), *tensors, config, beta)
    (negatives,) = drawn
    n_positions = int((torch.from_numpy(seqs.targets) != 0).sum())
    assert negatives.shape == (n_positions, 3)  # (N, K): one draw per loss position
    first_user = int((torch.from_numpy(seqs.targets[0]) != 0).sum())  # positions of the first sequence
    assert first_user > 1 and len({tuple(row) for row in negatives[:first_user].tolist()}) > 1
