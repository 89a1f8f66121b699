"""Smoke tests of every ``python -m sasrec train`` command of the original project, on tiny simulated data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from sasrec.cli import main

TINY = ["--maxlen=20", "--hidden_units=16", "--device=cpu", "--num_epochs=1", "--progress=false"]


def _run(world: dict[str, Path], *args: str) -> int:
    return main(["train", f"--data-dir={world['raw']}", *args])


def _checkpoint(world: dict[str, Path], dataset: str, train_dir: str = "default", kind: str = "best") -> Path:
    """The run folder's single checkpoint of ``kind`` (best: ``*.pth``; last: ``*.last.pth``)."""
    folder = world["root"] / "models" / f"{dataset}_{train_dir}"
    found = sorted(folder.glob("SASRec.epoch=*.pth"))
    if kind == "best":
        found = [p for p in found if not p.name.endswith((".last.pth", ".train_valid.pth"))]
    else:
        found = [p for p in found if p.name.endswith(f".{kind}.pth")]
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
    last = _checkpoint(world, "small_matrix", "yaml", "last")
    assert last.name.startswith("SASRec.epoch=1.")
    assert "loss sampled_softmax" in capsys.readouterr().out
    # --resume without --state_dict_path continues from the newest complete checkpoint of the run folder
    assert _run(world, f"--config={config}", "--num_epochs=2", "--resume=true") == 0
    out = capsys.readouterr().out
    assert f"resuming from {last}" in out
    assert "epoch   2  loss" in out and "epoch   1  loss" not in out
    resumed = _checkpoint(world, "small_matrix", "yaml", "last")
    assert resumed.name.startswith("SASRec.epoch=2.") and not last.exists()  # one last checkpoint kept
    # an explicit --state_dict_path works too; a best-weights file cannot be resumed (one line)
    assert (
        _run(world, f"--config={config}", "--num_epochs=3", f"--state_dict_path={resumed}", "--resume=true")
        == 0
    )
    best = _checkpoint(world, "small_matrix", "yaml")
    assert (
        _run(world, f"--config={config}", "--num_epochs=4", f"--state_dict_path={best}", "--resume=true") == 2
    )
    assert ".last.pth" in capsys.readouterr().err


def test_text_file_dataset(world: dict[str, Path], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lines = [
        f"{user} {item}" for user in range(1, 9) for item in rng.choice(np.arange(1, 30), 12, replace=False)
    ]
    text = tmp_path / "toy.txt"
    text.write_text("\n".join(lines) + "\n")
    metrics = tmp_path / "toy.json"
    assert _run(world, f"--dataset={text}", "--train_dir=txt", *TINY, f"--metrics_json={metrics}") == 0
    assert _checkpoint(world, "toy", "txt").is_file()
    assert json.loads(metrics.read_text())["split"] == "leave_one_out"  # text files have no time
    assert _run(world, f"--dataset={text}", "--train_dir=txt2", "--split=temporal", *TINY) == 2


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


def test_inference_takes_settings_from_the_checkpoint(
    world: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    assert _run(world, "--dataset=small_matrix", "--train_dir=ckpt", *TINY) == 0
    checkpoint = _checkpoint(world, "small_matrix", "ckpt")
    capsys.readouterr()
    for flag, value in (("--split", "leave_one_out"), ("--maxlen", "30"), ("--loss", "ce")):
        assert _run(world, "--dataset=small_matrix", f"--state_dict_path={checkpoint}", "--inference_only=true",
                    "--device=cpu", f"{flag}={value}") == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{flag}={value}" in err and "checkpoint" in err
    # the same values as the checkpoint's are accepted
    assert _run(world, "--dataset=small_matrix", f"--state_dict_path={checkpoint}", "--inference_only=true",
                "--device=cpu", "--split=temporal", "--maxlen=20") == 0  # fmt: skip
    # architecture flags cannot change a trained model: they are named as ignored, the checkpoint's apply
    capsys.readouterr()
    assert _run(world, "--dataset=small_matrix", f"--state_dict_path={checkpoint}", "--inference_only=true",
                "--device=cpu", "--hidden_units=64", "--num_blocks=3") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert (
        "note: --hidden_units, --num_blocks ignored: the checkpoint's architecture and training settings apply"
        in out
    )
    assert "hidden=16" in checkpoint.name


def test_unwritable_metrics_path_is_refused_before_training(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert _run(world, "--dataset=small_matrix", "--train_dir=blocked", *TINY,
                f"--metrics_json={blocked}/sub/m.json") == 2  # fmt: skip
    err = capsys.readouterr()
    assert len(err.err.strip().splitlines()) == 1 and "--metrics_json" in err.err
    assert "epoch" not in err.out  # refused before any training
    assert not (world["root"] / "models" / "small_matrix_blocked").exists()


def test_split_without_evaluable_users_is_refused(
    world: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    assert _run(world, "--dataset=small_matrix", "--train_dir=none", *TINY, "--relevance_threshold=1000") == 2
    captured = capsys.readouterr()
    assert "watch_ratio > 1000.0 leaves no test user with a relevant target" in captured.err
    assert "epoch" not in captured.out  # refused before training
    assert not list((world["root"] / "models").glob("small_matrix_none/*.pth"))


def test_paths_typed_on_the_command_line_resolve_from_the_current_directory(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(world, "--dataset=small_matrix", "--train_dir=cwd", *TINY, "--metrics_json=out/m.json") == 0
    assert (tmp_path / "out" / "m.json").is_file()
    assert not (world["root"] / "out").exists()


def test_train_valid_policy_retrains_for_the_selected_epochs(world: dict[str, Path]) -> None:
    metrics = world["root"] / "tv.json"
    assert _run(world, "--dataset=small_matrix", "--train_dir=tv", "--maxlen=20", "--hidden_units=16",
                "--device=cpu", "--num_epochs=2", "--progress=false", "--fit_on=train_valid",
                f"--metrics_json={metrics}") == 0  # fmt: skip
    payload = json.loads(metrics.read_text())
    assert payload["fit_on"] == "train_valid" and payload["checkpoint"].endswith(".train_valid.pth")
    best_epoch = payload["best_epoch"]
    assert f"SASRec.epoch={best_epoch}." in Path(payload["checkpoint"]).name
    from sasrec.data.preparation.pipeline import load_prepared

    data = load_prepared("small_matrix", data_dir=world["raw"])
    train_valid = int((data.events["split_temporal"] <= 1).sum())
    assert payload["fit_events"]["events"] == train_valid  # fit on training + validation events


def test_second_writer_of_a_run_folder_is_refused(
    world: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    import subprocess
    import sys

    from sasrec.training.checkpoints import run_dir

    folder = run_dir("small_matrix", "busy")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom sasrec.locks import locked\n"
         f"with locked({str(folder)!r}, what='run folder'):\n    print('held', flush=True)\n    time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = _run(world, "--dataset=small_matrix", "--train_dir=busy", *TINY)
    finally:
        holder.kill()
        holder.wait()
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and "--wait=true" in err
    assert not list(folder.glob("*.pth"))  # nothing written by the refused run


# ------------------------------------------------------------------------- negatives capped to the catalogue
@pytest.mark.parametrize(
    ("train_dir", "flags", "loss", "requested"),
    [
        ("gsasrec", ["--model=gsasrec"], "gbce", 256),  # the preset's 256 negatives
        ("softmax", ["--loss=sampled_softmax", "--num_negatives=1000"], "sampled_softmax", 1000),
    ],
)
def test_sampled_losses_cap_their_negatives_to_a_small_catalogue(
    world: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    train_dir: str,
    flags: list[str],
    loss: str,
    requested: int,
) -> None:
    import logging

    from sasrec.data.preparation.pipeline import load_prepared

    items = load_prepared("small_matrix", data_dir=world["raw"]).num_items
    used = items - 2  # the most negatives gBCE's calibration allows: negatives / (items - 1) < 1
    assert used < requested
    metrics = world["root"] / f"{train_dir}.json"
    with caplog.at_level(logging.WARNING, logger="sasrec"):
        assert _run(world, "--dataset=small_matrix", f"--train_dir={train_dir}", *TINY, *flags,
                    f"--metrics_json={metrics}") == 0  # fmt: skip
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"num_negatives={requested} capped to {used}: small_matrix has {items} items and loss {loss!r} needs "
        f"num_negatives < items - 1 ({items - 1}); the run records num_negatives={used}"
    ]
    payload = json.loads(metrics.read_text())
    assert payload["config"]["num_negatives"] == used and payload["config"]["loss"] == loss
    assert payload["adjusted"] == {"num_negatives": {"requested": requested, "used": used}}
    stored = torch.load(payload["checkpoint"], map_location="cpu", weights_only=False)
    assert stored["config"]["num_negatives"] == used  # the checkpoint says what was used


def test_fit_to_catalogue_keeps_a_fitting_config_and_refuses_a_tiny_catalogue() -> None:
    from sasrec.errors import ConfigError
    from sasrec.training.config import TrainConfig, fit_to_catalogue

    config = TrainConfig.for_model("gsasrec", device="cpu")
    assert config.num_negatives == 256
    assert fit_to_catalogue(config, 258, "big") is config  # 256 < 258 - 1: unchanged, the same object
    assert fit_to_catalogue(config, 257, "small").num_negatives == 255
    bce = TrainConfig(device="cpu", num_negatives=500)
    assert fit_to_catalogue(bce, 10, "small") is bce  # bce draws one negative per position
    with pytest.raises(ConfigError, match="needs at least 3 items"):
        fit_to_catalogue(config, 2, "two")


# --------------------------------------------------------------------------------- output paths up front
@pytest.mark.parametrize("where", ["proc", "under_a_file"])
def test_metrics_path_that_cannot_be_created_is_refused_before_training(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, where: str
) -> None:
    if where == "proc":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc on this system")
        target, reason = "/proc/nope/x.json", "/proc does not accept new folders"
    else:
        (tmp_path / "file").write_text("x")
        target, reason = f"{tmp_path / 'file'}/x.json", f"{tmp_path / 'file'} is a file"
    train_dir = f"refused_{where}"
    assert _run(world, "--dataset=small_matrix", f"--train_dir={train_dir}", *TINY,
                f"--metrics_json={target}") == 2  # fmt: skip
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in captured.err
    assert err.startswith("error: metrics file (--metrics_json): cannot create folder ") and reason in err
    assert "epoch" not in captured.out  # refused before any training
    assert not (world["root"] / "models" / f"small_matrix_{train_dir}").exists()


# ------------------------------------------------------------------------------ the parser, step by step
#: Every flag of ``train`` before its parser was split into steps: option strings, type, choices (MODELS:
#: the registry's, sorted), metavar and help, in the order --help lists them; every default is None.
FLAGS_BEFORE_THE_SPLIT = (
    (("--dataset",), None, None, None, "small_matrix, big_matrix, *_no_remapping, or a SASRec text-file path"),
    (("--train_dir",), None, None, None, "run name: checkpoints go to models/<dataset>_<train_dir>/ (default: default)"),
    (("--batch_size",), "int", None, None, "users per batch (per process under torchrun)"),
    (("--lr",), "float", None, None, None),
    (("--maxlen",), "int", None, None, None),
    (("--hidden_units",), "int", None, None, None),
    (("--num_blocks",), "int", None, None, None),
    (("--num_epochs",), "int", None, None, None),
    (("--num_heads",), "int", None, None, None),
    (("--dropout_rate",), "float", None, None, None),
    (("--l2_emb",), "float", None, None, None),
    (("--device",), None, None, None, "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"),
    (("--inference_only",), "str2bool", None, "BOOL", "evaluate --state_dict_path, do not train"),
    (("--state_dict_path",), None, None, None, "checkpoint to evaluate, recommend from, or resume"),
    (("--explicit_negatives",), "str2bool", None, "BOOL", "half the negatives from disliked videos"),
    (("--weighted_dislike",), "str2bool", None, "BOOL", "weight disliked negatives (implies explicit)"),
    (("--generate_recommendations",), "str2bool", None, "BOOL", "write top-N lists (parquet + CSV)"),
    (("--top_n",), "int", None, None, "length of the recommendation lists (default 10)"),
    (("--training_dataset",), None, None, None, "dataset the checkpoint was trained on (big-to-small test)"),
    (("--model",), None, "MODELS", None, "model to train (default sasrec); its presets fill unset flags"),
    (("--data-dir", "--data_dir"), None, None, None, "folder of the KuaiRec CSVs (default: data/raw, else data/simulated)"),
    (("--loss",), None, ("bce", "ce", "sampled_softmax", "gbce"), None, None),
    (("--split",), None, ("temporal", "leave_last_n", "leave_one_out"), None, "default temporal; leave_one_out for SASRec text files (they have no time)"),
    (("--fit_on",), None, ("train", "train_valid"), None, "fitting policy: train (default) or train_valid (retrain for the selected epochs)"),
    (("--seed",), "int", None, None, None),
    (("--k",), "int", None, None, "metric cut-off (default 10)"),
    (("--eval_protocol",), None, ("full", "sampled"), None, None),
    (("--num_eval_negatives",), "int", None, None, None),
    (("--relevance",), None, ("threshold", "liked", "all", "original"), None, "relevance rule (default threshold: watch_ratio > 2.0)"),
    (("--relevance_threshold",), "_optional_float", None, None, "relevant if watch_ratio > this (default: dataset's)"),
    (("--metrics_json",), None, None, None, "write validation and test metrics to this JSON file"),
    (("--config",), None, None, None, "YAML mapping of these flags' names to values (explicit flags win)"),
    (("--num_negatives",), "int", None, None, "negatives of sampled_softmax / gbce"),
    (("--gbce_t",), "float", None, None, "gSASRec calibration t (default 0.75)"),
    (("--mask_prob",), "float", None, None, "BERT4Rec masking probability (default 0.2)"),
    (("--dislike_weight",), "float", None, None, "weight of disliked negatives (default 2.0)"),
    (("--patience",), "int", None, None, "epochs without a better validation NDCG@k before stopping (0: never)"),
    (("--min_epochs",), "int", None, None, "never stop early before this epoch"),
    (("--eval_every",), "int", None, None, "validate every this many epochs"),
    (("--attention_dropout",), "_optional_float", None, None, "dropout of attention probabilities (default: dropout_rate)"),
    (("--fast_dropout",), "str2bool", None, "BOOL", "cheap CPU dropout masks (default true)"),
    (("--amp",), "str2bool", None, "BOOL", "bf16 autocast on CUDA (no effect on CPU)"),
    (("--compile",), "str2bool", None, "BOOL", "torch.compile the model"),
    (("--resume",), "str2bool", None, "BOOL", "continue training (from --state_dict_path or the newest checkpoint)"),
    (("--wait",), "str2bool", None, "BOOL", "wait for another run writing the same run folder (default: refuse)"),
    (("--progress",), "str2bool", None, "BOOL", "progress bars (default true)"),
)  # fmt: skip


def _train_parser() -> Any:
    import argparse

    from sasrec.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices["train"]


def test_train_flags_are_unchanged_by_the_split_into_steps() -> None:
    from sasrec.models.base import MODELS

    rows = []
    for action in _train_parser()._actions:
        if action.dest == "help":
            continue
        assert action.default is None and not action.required, action.dest
        choices = None if action.choices is None else tuple(action.choices)
        if action.dest == "model":
            assert choices == tuple(sorted(MODELS))
            choices = "MODELS"
        kind = getattr(action.type, "__name__", None) if action.type else None
        rows.append((tuple(action.option_strings), kind, choices, action.metavar, action.help))
    # the old flags, in their order (flags added later may sit between them)
    assert [row for row in rows if row in FLAGS_BEFORE_THE_SPLIT] == list(FLAGS_BEFORE_THE_SPLIT)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--dataset=small_matrix"], {"dataset": "small_matrix"}),
        (
            ["--model=gsasrec", "--data_dir=x", "--lr=0.1", "--inference_only=true",
             "--relevance_threshold=none", "--k=5"],
            {"lr": 0.1, "inference_only": True, "model": "gsasrec", "data_dir": "x", "k": 5},
        ),
        (
            ["--config=a.yaml", "--data-dir", "d", "--attention_dropout=0.3", "--resume=yes", "--loss", "gbce",
             "--split", "leave_one_out"],
            {"data_dir": "d", "loss": "gbce", "split": "leave_one_out", "config": "a.yaml",
             "attention_dropout": 0.3, "resume": True},
        ),
    ],
)  # fmt: skip
def test_train_namespace_is_unchanged_by_the_split_into_steps(argv: list[str], expected: dict) -> None:
    """The values parsed before the split (captured from the old parser)."""
    parsed = vars(_train_parser().parse_args(argv))
    assert parsed.pop("func").__name__ == "run" and parsed.pop("_train_parser") is not None
    assert {key: value for key, value in parsed.items() if value is not None} == expected
    dests = {flags[0].removeprefix("--").replace("-", "_") for flags, *_ in FLAGS_BEFORE_THE_SPLIT}
    assert dests <= set(parsed)  # every old flag, None where not given
