"""Smoke tests of every ``python -m sasrec train`` command of the original project, on tiny simulated data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sasrec.cli import main
from sasrec.data.simulator.api import simulate

TINY = ["--maxlen=20", "--hidden_units=16", "--device=cpu", "--num_epochs=1", "--progress=false"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A KuaiRec-shaped folder (simulator, scale 0.02) and a project root in tmp; one thread."""
    root = tmp_path_factory.mktemp("root")
    raw = tmp_path_factory.mktemp("kuairec")
    simulate(scale=0.02, seed=0, out_dir=raw, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SASREC_ROOT", str(root))
        patch.setenv("SASREC_PROGRESS", "0")
        yield {"root": root, "raw": raw}
    torch.set_num_threads(threads)


def _run(world: dict[str, Path], *args: str) -> int:
    return main(["train", f"--data-dir={world['raw']}", *args])


def _checkpoint(world: dict[str, Path], dataset: str, train_dir: str = "default") -> Path:
    found = sorted((world["root"] / "models" / f"{dataset}_{train_dir}").glob("SASRec.epoch=*.pth"))
    assert len(found) == 1, found
    return found[0]


def test_train_then_inference_and_recommendations(
    world: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    metrics = world["root"] / "metrics.json"
    assert _run(world, "--dataset=small_matrix", "--train_dir=default", "--dropout_rate=0.2", *TINY,
                f"--metrics_json={metrics}") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "epoch   1  loss" in out and "test small_matrix/temporal/test" in out
    payload = json.loads(metrics.read_text())
    assert payload["model"] == "SASRec" and payload["dataset"] == "small_matrix"
    assert payload["valid"]["ndcg@10"] is not None and payload["test"]["ndcg@10"] is not None
    checkpoint = _checkpoint(world, "small_matrix")
    assert checkpoint.name == "SASRec.epoch=1.lr=0.001.layer=2.head=1.hidden=16.maxlen=20.pth"

    inference = world["root"] / "inference.json"
    assert _run(world, "--dataset=small_matrix", "--train_dir=default", "--device=cpu",
                f"--state_dict_path={checkpoint}", "--inference_only=true", f"--metrics_json={inference}") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "valid small_matrix/temporal/valid" in out and "test small_matrix/temporal/test" in out
    # The checkpoint holds the best model: inference reproduces the training run's final metrics.
    assert json.loads(inference.read_text())["test"]["ndcg@10"] == pytest.approx(payload["test"]["ndcg@10"])

    assert _run(world, "--dataset=small_matrix", "--train_dir=default", "--device=cpu",
                f"--state_dict_path={checkpoint}", "--generate_recommendations=true", "--top_n=5") == 0  # fmt: skip
    parquet = checkpoint.parent / "recommendations.small_matrix.temporal.top5.parquet"
    frame = pd.read_parquet(parquet)
    assert (checkpoint.parent / "recommendations.small_matrix.temporal.top5.csv").is_file()
    assert list(frame.columns) == ["user_id", "rank", "video_id", "score", "fallback"]
    ranks = frame.groupby("user_id")["rank"]
    assert (
        ranks.max().le(5).all() and ranks.max().max() == 5
    )  # dense small matrix: some users have < 5 unseen
    assert (ranks.count() == ranks.max()).all()  # ranks 1..n without gaps
    raw_small = pd.read_csv(world["raw"] / "small_matrix.csv", usecols=["user_id", "video_id"])
    assert set(frame["video_id"]) <= set(raw_small["video_id"])  # original ids
    # input = train + valid events of the temporal split; those and untimed views are never recommended,
    # so every user with something left gets recommendations
    from sasrec.data.preparation.pipeline import load_prepared

    data = load_prepared("small_matrix", data_dir=world["raw"])
    known = pd.concat(
        [data.events.loc[data.events["split_temporal"] <= 1, ["user", "item"]], data.labels[["user", "item"]]]
    ).drop_duplicates()
    known = pd.DataFrame({"user_id": data.user_ids[known["user"]], "video_id": data.item_ids[known["item"]]})
    counts = known.groupby("user_id").size()
    assert set(frame["user_id"]) == set(counts.index[counts < data.num_items])
    seen = set(zip(known["user_id"], known["video_id"], strict=True))
    assert not seen & set(zip(frame["user_id"], frame["video_id"], strict=True))


@pytest.mark.parametrize("flag", ["--explicit_negatives=true", "--weighted_dislike=true"])
def test_negative_variants_train(world: dict[str, Path], flag: str, capsys: pytest.CaptureFixture) -> None:
    train_dir = flag[2:12]
    assert _run(world, "--dataset=small_matrix", f"--train_dir={train_dir}", *TINY, flag) == 0
    assert "explicit negatives" in capsys.readouterr().out
    assert _checkpoint(world, "small_matrix", train_dir).is_file()


def test_big_to_small_inference(world: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert _run(world, "--dataset=big_matrix", "--train_dir=default", *TINY) == 0
    checkpoint = _checkpoint(world, "big_matrix")
    metrics = world["root"] / "cross.json"
    assert _run(world, "--dataset=small_matrix_no_remapping", "--train_dir=default", "--device=cpu",
                f"--state_dict_path={checkpoint}", "--inference_only=true", "--training_dataset=big_matrix",
                f"--metrics_json={metrics}") == 0  # fmt: skip
    assert "test big_matrix->small_matrix_no_remapping" in capsys.readouterr().out
    payload = json.loads(metrics.read_text())
    assert payload["valid"] is None and payload["test"]["users_total"] > 0

    # Without --training_dataset the checkpoint does not match the data: one line, exit status 2.
    assert _run(world, "--dataset=small_matrix_no_remapping", "--device=cpu",
                f"--state_dict_path={checkpoint}", "--inference_only=true") == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fingerprint" in err and "big_matrix" in err


def test_yaml_config_and_resume(world: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    config = world["root"] / "params.yaml"
    config.write_text(
        "dataset: small_matrix\ntrain_dir: yaml\nmaxlen: 20\nhidden_units: 16\nnum_epochs: 3\n"
        "device: cpu\nprogress: 'false'\nloss: sampled_softmax\nnum_negatives: 5\n"
    )
    assert _run(world, f"--config={config}", "--num_epochs=1") == 0  # the explicit flag wins
    checkpoint = _checkpoint(world, "small_matrix", "yaml")
    assert checkpoint.name.startswith("SASRec.epoch=1.")
    assert "loss sampled_softmax" in capsys.readouterr().out
    assert (
        _run(
            world, f"--config={config}", "--num_epochs=2", f"--state_dict_path={checkpoint}", "--resume=true"
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "epoch   2  loss" in out and "epoch   1  loss" not in out
    resumed = checkpoint.parent / checkpoint.name.replace("epoch=1.", "epoch=2.")
    assert resumed.is_file() and checkpoint.is_file()  # the checkpoint resumed from is kept


def test_text_file_dataset(world: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [
        f"{user} {item}" for user in range(1, 9) for item in rng.choice(np.arange(1, 30), 12, replace=False)
    ]
    text = tmp_path / "toy.txt"
    text.write_text("\n".join(lines) + "\n")
    assert _run(world, f"--dataset={text}", "--train_dir=txt", *TINY) == 0
    assert _checkpoint(world, "toy", "txt").is_file()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--dataset=small_matrix", "--state_dict_path=/no/such.pth", "--inference_only=true"],
            "does not exist",
        ),
        (["--dataset=small_matrix", "--state_dict_path=/no/such.pth"], "--resume=true"),
        (["--dataset=small_matrix", "--inference_only=true"], "--state_dict_path"),
        (["--dataset=small_matrix", "--lr=-1", "--device=cpu"], "lr"),
        (["--dataset=no_such_matrix", "--device=cpu"], "no_such_matrix"),
        (["--train_dir=x"], "--dataset"),
    ],
)
def test_errors_are_one_line(
    world: dict[str, Path], capsys: pytest.CaptureFixture, args: list[str], needle: str
) -> None:
    assert _run(world, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_bad_config_file_and_flag(world: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    config = world["root"] / "bad.yaml"
    config.write_text("dataset: small_matrix\nlearning_rate: 0.1\n")
    assert _run(world, f"--config={config}") == 2
    assert "learning_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        _run(world, "--dataset=small_matrix", "--inference_only=maybe")
    assert info.value.code == 2
