"""The original grid (sasrec.study.experiments) run through Optuna's GridSampler: every point once, resumable,
a changed grid refused naming the storage file."""

from __future__ import annotations

import copy
import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError
from sasrec.study import experiments, tuning
from sasrec.study.context import Study

TRAINING = {"split": "temporal", "fit_on": "train", "hidden_units": 8, "num_heads": 1, "batch_size": 128,
            "l2_emb": 0.0, "k": 10, "seed": 0, "device": "cpu"}  # fmt: skip
VARIANTS = {"bce": {"model": "sasrec", "loss": "bce"}, "ce": {"model": "sasrec", "loss": "ce"}}
GRID = {"lr": [0.001], "maxlen": [10, 20], "num_blocks": [1], "dropout_rate": [0.2], "num_epochs": [1, 2]}
KEYS = ["variant", "lr", "maxlen", "num_blocks", "dropout_rate"]


def _study(world: dict[str, Path], name: str) -> Study:
    root = world["root"]
    return Study.from_params({"data_dir": str(world["raw"]), "processed_dir": str(root / "processed"),
                              "models_dir": str(root / name / "models"),
                              "reports_dir": str(root / name / "reports")})  # fmt: skip


@pytest.fixture(scope="module")
def data(world: dict[str, Path]) -> PreparedData:
    return _study(world, "prepare").load("small_matrix")


@pytest.fixture(scope="module")
def first(world: dict[str, Path], data: PreparedData) -> pd.DataFrame:
    """The grid run once, uninterrupted (project ``first``)."""
    return experiments.run_experiments(_study(world, "first"), data, TRAINING, VARIANTS, GRID)


def _load(path: Path) -> Any:
    import optuna

    return optuna.load_study(study_name=experiments.GRID_STUDY, storage=f"sqlite:///{path}")


def _states(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


@pytest.fixture
def train_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every call of the training loop (grid trials and the best configuration's retraining)."""
    from sasrec.training import loop

    calls: list[dict[str, Any]] = []
    real = loop.train

    def counting(data: PreparedData, config: Any, **kwargs: Any) -> Any:
        calls.append({"train_dir": config.train_dir, "maxlen": config.maxlen, "loss": config.loss})
        return real(data, config, **kwargs)

    monkeypatch.setattr(loop, "train", counting)
    return calls


def _points(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return sorted(frame[KEYS].drop_duplicates().itertuples(index=False, name=None))


def test_every_grid_point_is_one_trial_and_the_frame_is_rebuilt_from_the_storage(
    world: dict[str, Path], data: PreparedData, first: pd.DataFrame
) -> None:
    study = _study(world, "first")
    path = experiments.grid_storage_path(study, data.name)
    assert path.name == "small_matrix_grid.sqlite3" and path != tuning.storage_path(study, data.name)
    expected = experiments.experiment_grid(GRID, list(VARIANTS))
    assert _points(first) == sorted(expected.itertuples(index=False, name=None))
    assert len(first) == len(expected) * len(GRID["num_epochs"])
    # one COMPLETE trial per point, trial numbers are the run ids, one row per listed epoch count
    assert _states(path) == [(n, "COMPLETE") for n in range(len(expected))]
    assert sorted(first["run"].unique()) == list(range(len(expected)))
    assert (first.groupby("run")["num_epochs"].apply(sorted) == pd.Series([[1, 2]] * 4)).all()
    assert list(first.columns[:7]) == ["run", *KEYS, "num_epochs"] and first.columns[-1] == "seconds"
    assert first["valid_ndcg@10"].is_monotonic_decreasing
    # the results frame is the stored trials' user attributes alone; the value is the best listed epoch
    found = _load(path)
    pd.testing.assert_frame_equal(experiments.grid_results(found, GRID, list(VARIANTS)), first)
    for t in found.trials:
        assert t.value == max(row["valid_ndcg@10"] for row in t.user_attrs["epochs"])
    payload = json.loads(study.metrics_path("experiments").read_text())
    assert payload["storage"] == str(path) and payload["sampler"] == "GridSampler"
    assert payload["trials"] == {"complete": 4, "failed": 0, "running": 0} and payload["points"] == 4
    best = first.iloc[0]
    assert payload["best"]["config"] == {key: best[key] for key in [*KEYS, "num_epochs"]}
    assert payload["best"]["trial"] == best["run"] and len(payload["runs"]) == len(first)
    assert set(payload["best"]["test"]) >= {"ndcg@10", "users"}


def test_a_trial_trains_what_the_grid_point_trains_directly(
    world: dict[str, Path], data: PreparedData, first: pd.DataFrame, tmp_path: Path
) -> None:
    from sasrec.training.loop import train

    row = first[first["run"] == 0].set_index("num_epochs")
    point = row.iloc[0]
    hyper = {key: point[key] for key in KEYS[1:]}
    config = experiments._grid_config(data, TRAINING, VARIANTS[point["variant"]], hyper, train_dir="direct",
                                      num_epochs=2, eval_every=1, patience=0, fit_on="train",
                                      progress=False)  # fmt: skip
    log = train(data, config, out_dir=tmp_path / "direct").log.set_index("epoch")
    for epochs in GRID["num_epochs"]:
        assert row.loc[epochs, "valid_ndcg@10"] == pytest.approx(
            float(log.loc[epochs, "valid_ndcg@10"]), abs=1e-12
        )


def test_a_finished_grid_trains_nothing_new_and_a_stale_running_trial_is_failed_and_replaced(
    world: dict[str, Path], data: PreparedData, first: pd.DataFrame, train_calls: list[dict[str, Any]]
) -> None:
    again = experiments.run_experiments(_study(world, "first"), data, TRAINING, VARIANTS, GRID)
    assert [c["train_dir"] for c in train_calls] == ["grid_best"]  # only the selected configuration's retrain
    pd.testing.assert_frame_equal(again, first)

    # a killed run: its storage with trial 2 left RUNNING (no value, no end time), as SIGKILL leaves it
    study = _study(world, "killed")
    path = experiments.grid_storage_path(study, data.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(experiments.grid_storage_path(_study(world, "first"), data.name), path)
    with sqlite3.connect(path) as db:
        (trial_id,) = db.execute("SELECT trial_id FROM trials WHERE number = 2").fetchone()
        db.execute(
            "UPDATE trials SET state = 'RUNNING', datetime_complete = NULL WHERE trial_id = ?", (trial_id,)
        )
        db.execute("DELETE FROM trial_values WHERE trial_id = ?", (trial_id,))
    killed_point = _load(path).trials[2].params
    train_calls.clear()
    resumed = experiments.run_experiments(study, data, TRAINING, VARIANTS, GRID)
    assert [c["train_dir"] for c in train_calls] == ["grid004", "grid_best"]  # the missing point only
    assert _states(path) == [(0, "COMPLETE"), (1, "COMPLETE"), (2, "FAIL"), (3, "COMPLETE"), (4, "COMPLETE")]
    assert _load(path).trials[4].params == killed_point
    # the same results (wall seconds aside), the killed point's run id now the new trial's
    expected = first.assign(run=first["run"].replace({2: 4}))
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), expected.drop(columns="seconds"))
    payload = json.loads(study.metrics_path("experiments").read_text())
    assert payload["trials"] == {"complete": 4, "failed": 1, "running": 0}


def test_a_changed_grid_is_refused_naming_the_storage(
    world: dict[str, Path], data: PreparedData, first: pd.DataFrame, train_calls: list[dict[str, Any]]
) -> None:
    study = _study(world, "first")
    path = experiments.grid_storage_path(study, data.name)
    before = _states(path)
    changed = copy.deepcopy(GRID)
    changed["lr"] = [0.001, 0.0005]
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*other grid settings") as error:
        experiments.run_experiments(study, data, TRAINING, VARIANTS, changed)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="other grid settings"):
        experiments.run_experiments(study, data, {**TRAINING, "hidden_units": 16}, VARIANTS, GRID)
    assert train_calls == [] and _states(path) == before
    with pytest.raises(ConfigError, match="grid.num_epochs"):
        experiments.run_experiments(study, data, TRAINING, VARIANTS, {**GRID, "num_epochs": []})
    with pytest.raises(ConfigError, match=r"grid.maxlen: the list repeats a value"):
        experiments.run_experiments(study, data, TRAINING, VARIANTS, {**GRID, "maxlen": [10, 10]})
