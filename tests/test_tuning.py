"""Hyper-parameter search (sasrec.study.tuning): seeded, resumable after SIGKILL, validation only, one-line errors."""

from __future__ import annotations

import copy
import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError
from sasrec.study import tuning
from sasrec.study.context import Study

TRAINING = {"split": "temporal", "fit_on": "train", "num_epochs": 2, "eval_every": 1, "patience": 2,
            "min_epochs": 0, "maxlen": 20, "batch_size": 128, "lr": 0.001, "k": 10, "relevance": "threshold",
            "seed": 0, "device": "cpu"}  # fmt: skip
MODELS = {"sasrec_bce": {"model": "sasrec", "loss": "bce", "hidden_units": 8, "num_blocks": 1, "num_heads": 1,
                         "dropout_rate": 0.2}}  # fmt: skip
BASELINES: dict[str, dict[str, Any]] = {"pop": {}, "ease": {"l2": 500.0}}
TUNING = {
    "trials": 3,
    "epoch_cap": 2,
    "seed": 0,
    "patience": 2,
    "startup_trials": 1,
    "pruner": {"startup_trials": 1, "warmup_epochs": 1},
    "spaces": {
        "sasrec_bce": {
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "maxlen": [10, 20],
            "dropout_rate": {"low": 0.1, "high": 0.5},
        },  # fmt: skip
        "pop": {"target": ["views", "liked", "relevant"]},
        "ease": {"l2": {"low": 10.0, "high": 5000.0, "log": True}},
    },
}


def _paths(world: dict[str, Path], name: str) -> dict[str, str]:
    root = world["root"]
    return {"data_dir": str(world["raw"]), "processed_dir": str(root / "processed"),
            "models_dir": str(root / name / "models"), "reports_dir": str(root / name / "reports")}  # fmt: skip


def _study(world: dict[str, Path], name: str) -> Study:
    return Study.from_params(_paths(world, name))


@pytest.fixture(scope="module")
def data(world: dict[str, Path]) -> PreparedData:
    return _study(world, "prepare").load("small_matrix")


@pytest.fixture(scope="module")
def first(world: dict[str, Path], data: PreparedData) -> dict[str, Any]:
    """An uninterrupted seeded search (storage under the project ``first``)."""
    return tuning.tune_models(_study(world, "first"), data, TRAINING, MODELS, BASELINES, TUNING)


def _finished_params(storage: Path, model: str) -> list[tuple[dict[str, Any], float | None]]:
    import optuna
    from optuna.trial import TrialState

    found = optuna.load_study(study_name=model, storage=f"sqlite:///{storage}")
    done = found.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    return [(t.params, t.value) for t in sorted(done, key=lambda t: t.number)]


def test_seeded_search_gives_the_same_best_trial_twice(
    world: dict[str, Path], data: PreparedData, first: dict[str, Any]
) -> None:
    second = tuning.tune_models(_study(world, "second"), data, TRAINING, MODELS, BASELINES, TUNING)
    assert first["storage"] != second["storage"]
    for model in [*MODELS, *BASELINES]:
        one, two = first["models"][model], second["models"][model]
        assert one["trials"]["complete"] + one["trials"]["pruned"] == TUNING["trials"]
        assert (one["best_trial"], one["best_params"], one["best_valid_ndcg"]) == (
            two["best_trial"],
            two["best_params"],
            two["best_valid_ndcg"],
        )
        assert _finished_params(Path(first["storage"]), model) == _finished_params(
            Path(second["storage"]), model
        )
    # the search explored: three different learning rates; the best configuration is trained again with the
    # comparison's schedule into final/, and the best trial's folder is the only trial folder kept
    lrs = {params["lr"] for params, _ in _finished_params(Path(first["storage"]), "sasrec_bce")}
    assert len(lrs) == 3
    final = first["training"]["models"]["sasrec_bce"]
    assert Path(final["checkpoint"]).is_file() and Path(final["checkpoint"]).parent.name == "final"
    assert final["config"]["lr"] == first["models"]["sasrec_bce"]["best_params"]["lr"]
    assert final["config"]["num_epochs"] == TRAINING["num_epochs"] and final["reused_default"] is False
    folders = sorted(p.name for p in (Path(first["storage"]).parent / "small_matrix_sasrec_bce").iterdir())
    assert folders == ["final", f"trial{first['models']['sasrec_bce']['best_trial']:04d}"]
    assert first["baselines"]["ease"]["l2"] == first["models"]["ease"]["best_params"]["l2"]


def test_a_finished_search_is_not_rerun(
    world: dict[str, Path], data: PreparedData, first: dict[str, Any]
) -> None:
    before = _finished_params(Path(first["storage"]), "sasrec_bce")
    again = tuning.tune_models(_study(world, "first"), data, TRAINING, MODELS, BASELINES, TUNING)
    assert _finished_params(Path(first["storage"]), "sasrec_bce") == before
    assert again["models"]["sasrec_bce"]["best_params"] == first["models"]["sasrec_bce"]["best_params"]
    changed = copy.deepcopy(TUNING)
    changed["epoch_cap"] = 1
    with pytest.raises(ConfigError, match="other tuning settings"):
        tuning.tune_models(_study(world, "first"), data, TRAINING, MODELS, BASELINES, changed)


def test_search_never_reads_the_test_split(
    world: dict[str, Path], data: PreparedData, first: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sasrec.data import tasks
    from sasrec.evaluation.protocol import evaluate
    from sasrec.models.baselines import make_baseline
    from sasrec.training import loop

    _history, test_targets = data.stage_masks("temporal", "test")
    events = data.events.copy()
    rng = np.random.default_rng(1)
    events.loc[test_targets, "watch_ratio"] = rng.uniform(0.0, 6.0, int(test_targets.sum())).astype(
        np.float32
    )
    events.loc[test_targets, "relevant"] = ~events.loc[test_targets, "relevant"]
    events.loc[test_targets, "liked"] = ~events.loc[test_targets, "liked"]
    poisoned = dataclasses.replace(data, events=events)
    # the poison is real: popularity's test NDCG@10 changes
    pop = make_baseline("pop", split="temporal").fit(data, data.stage_masks("temporal", "test")[0])
    clean_test = tasks.build_eval_task(data, "temporal", "test", maxlen=20, relevance="threshold")
    dirty_test = tasks.build_eval_task(poisoned, "temporal", "test", maxlen=20, relevance="threshold")
    assert evaluate(pop, clean_test).summary["ndcg@10"] != evaluate(pop, dirty_test).summary["ndcg@10"]

    stages: list[str] = []

    def recording(build: Any) -> Any:
        def wrapper(data: PreparedData, split: str, stage: str, **kwargs: Any) -> Any:
            stages.append(stage)
            return build(data, split, stage, **kwargs)

        return wrapper

    monkeypatch.setattr(tasks, "build_eval_task", recording(tasks.build_eval_task))
    monkeypatch.setattr(loop, "build_eval_task", recording(loop.build_eval_task))
    result = tuning.tune_models(_study(world, "poisoned"), poisoned, TRAINING, MODELS, BASELINES, TUNING)
    assert stages and set(stages) == {"valid"}
    for model in [*MODELS, *BASELINES]:
        assert result["models"][model]["best_params"] == first["models"][model]["best_params"]
        assert result["models"][model]["best_valid_ndcg"] == first["models"][model]["best_valid_ndcg"]


def _write_config(world: dict[str, Path], name: str) -> Path:
    config = {"paths": _paths(world, name), "progress": False, "dataset": "small_matrix", "training": TRAINING,
              "models": MODELS, "baselines": BASELINES, "tuning": TUNING}  # fmt: skip
    path = world["root"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _env(world: dict[str, Path]) -> dict[str, str]:
    return {**os.environ, "SASREC_ROOT": str(world["root"]), "SASREC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}


def _states(storage: Path) -> list[tuple[str, int, str, str | None]]:
    """(study, trial number, state, datetime_complete) of every stored trial, read with sqlite3."""
    with sqlite3.connect(storage) as db:
        return db.execute(
            "SELECT s.study_name, t.number, t.state, t.datetime_complete FROM trials t "
            "JOIN studies s ON s.study_id = t.study_id ORDER BY s.study_name, t.number"
        ).fetchall()


def test_killed_search_resumes_without_losing_or_repeating_a_trial(
    world: dict[str, Path], data: PreparedData, first: dict[str, Any]
) -> None:
    config = _write_config(world, "killed")
    storage = world["root"] / "killed" / "models" / "tuning" / "small_matrix.sqlite3"
    command = [sys.executable, "-m", "sasrec", "tune", "--config", str(config)]
    process = subprocess.Popen(command, env=_env(world), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if storage.is_file():
                try:
                    found = {state for s, _n, state, _d in _states(storage) if s == "sasrec_bce"}
                    if {"COMPLETE", "RUNNING"} <= found:  # mid-trial, after a first complete trial
                        break
                except sqlite3.OperationalError:  # tables not created yet
                    pass
            time.sleep(0.02)
        assert process.poll() is None, "the search ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    before = _states(storage)
    completed_before = {(s, n, d) for s, n, state, d in before if state == "COMPLETE"}
    running_before = {(s, n) for s, n, state, _d in before if state == "RUNNING"}
    assert (
        running_before
        and completed_before
        and len(completed_before) < TUNING["trials"] * (len(MODELS) + len(BASELINES))
    )

    rerun = subprocess.run(command, env=_env(world), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    after = _states(storage)
    # completed trials are kept as they were (never rerun), the killed RUNNING ones are failed and replaced
    assert completed_before <= {(s, n, d) for s, n, state, d in after if state == "COMPLETE"}
    assert all(state == "FAIL" for s, n, state, _d in after if (s, n) in running_before)
    assert not any(state == "RUNNING" for _s, _n, state, _d in after)
    for model in [*MODELS, *BASELINES]:
        numbers = [n for s, n, state, _d in after if s == model and state in ("COMPLETE", "PRUNED")]
        assert len(numbers) == len(set(numbers)) == TUNING["trials"]
        # seeded from the finished trials: the resumed search is the uninterrupted one
        assert _finished_params(storage, model) == _finished_params(Path(first["storage"]), model)


@pytest.mark.parametrize(
    ("spaces", "key"),
    [
        ({"lr": {"low": 0.1, "high": 0.01}}, "tuning.spaces.sasrec_bce.lr"),
        ({"lr": {"low": 0.0, "high": 0.01, "log": True}}, "tuning.spaces.sasrec_bce.lr"),
        ({"num_epochs": [1, 2]}, "tuning.spaces.sasrec_bce.num_epochs"),
        ({"hidden": [8, 16]}, "tuning.spaces.sasrec_bce.hidden"),
        ({"maxlen": []}, "tuning.spaces.sasrec_bce.maxlen"),
        ({"dropout_rate": 0.2}, "tuning.spaces.sasrec_bce.dropout_rate"),
    ],
)
def test_bad_search_space_is_refused_in_one_line_naming_the_key(spaces: dict[str, Any], key: str) -> None:
    mapping = {**TUNING, "spaces": {**TUNING["spaces"], "sasrec_bce": spaces}}
    with pytest.raises(ConfigError) as caught:
        tuning.TuningConfig.from_mapping(mapping, models=MODELS, baselines=BASELINES)
    assert str(caught.value).startswith(key + ":") and "\n" not in str(caught.value)


def test_every_model_needs_a_space_and_baseline_parameters_are_checked() -> None:
    missing = {**TUNING, "spaces": {k: v for k, v in TUNING["spaces"].items() if k != "pop"}}
    with pytest.raises(ConfigError, match=r"^tuning\.spaces\.pop: missing"):
        tuning.TuningConfig.from_mapping(missing, models=MODELS, baselines=BASELINES)
    bad = {**TUNING, "spaces": {**TUNING["spaces"], "ease": {"factors": [8, 16]}}}
    with pytest.raises(ConfigError, match=r"^tuning\.spaces\.ease\.factors: 'factors' is not a parameter"):
        tuning.TuningConfig.from_mapping(bad, models=MODELS, baselines=BASELINES)
    with pytest.raises(ConfigError, match=r"^tuning\.trials: expected an integer >= 1"):
        tuning.TuningConfig.from_mapping({**TUNING, "trials": 0}, models=MODELS, baselines=BASELINES)


def test_second_run_of_a_profile_is_refused_by_its_lock(world: dict[str, Path]) -> None:
    from sasrec.study.profiles import profile_lock

    folder = world["root"] / "params" / "tuningtest"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "08_tuning.yaml").write_text(_write_config(world, "locked").read_text(), encoding="utf-8")
    with profile_lock("tuningtest"):
        refused = subprocess.run([sys.executable, "-m", "sasrec", "tune", "--profile", "tuningtest"],
                                 env=_env(world), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "report profile tuningtest" in lines[0], refused.stderr
    assert not (world["root"] / "locked" / "models" / "tuning").exists()


def test_tuning_table_and_context_report_every_model(first: dict[str, Any]) -> None:
    table = tuning.tuning_table(first)
    assert list(table.index) == [*MODELS, *BASELINES]
    assert set(table["complete"] + table["pruned"]) == {TUNING["trials"]}
    context = tuning.tuning_context(first)
    assert [row["model"] for row in context["rows"]] == [*MODELS, *BASELINES]
    assert context["trials"] == 3 and context["epoch_cap"] == 2


def test_the_first_trial_of_every_search_is_the_default_configuration(first: dict[str, Any]) -> None:
    import optuna

    storage = f"sqlite:///{first['storage']}"
    defaults = {"sasrec_bce": {"lr": TRAINING["lr"], "maxlen": TRAINING["maxlen"], "dropout_rate": 0.2},
                "pop": {"target": "views"}, "ease": {"l2": 500.0}}  # fmt: skip
    for model, default in defaults.items():
        trials = sorted(optuna.load_study(study_name=model, storage=storage).trials, key=lambda t: t.number)
        assert trials[0].params == default and trials[0].user_attrs.get("default") is True
        assert not any(t.user_attrs.get("default") for t in trials[1:])
        record = first["models"][model]
        assert record["default_valid_ndcg"] == trials[0].value
        assert record["best_valid_ndcg"] >= record["default_valid_ndcg"]


def test_a_default_outside_its_space_is_refused_naming_the_key(
    world: dict[str, Path], data: PreparedData
) -> None:
    outside = {**TUNING, "spaces": {**TUNING["spaces"], "sasrec_bce": {"maxlen": [10, 15]}}}
    with pytest.raises(ConfigError) as caught:
        tuning.tune_models(_study(world, "outside"), data, TRAINING, MODELS, BASELINES, outside)
    message = str(caught.value)
    assert (
        message.startswith("tuning.spaces.sasrec_bce.maxlen: the default 20 lies outside")
        and "\n" not in message
    )


def test_a_default_trial_killed_midway_is_run_again(tmp_path: Path) -> None:

    config = tuning.TuningConfig.from_mapping(
        {**TUNING, "trials": 2, "spaces": {"sasrec_bce": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}}},
        models=MODELS,
    )
    storage = f"sqlite:///{tmp_path / 'search.sqlite3'}"

    def killed(trial: Any) -> float:
        trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tuning.run_study("sasrec_bce", storage, config, killed, first={"lr": 0.001})
    seen: list[float] = []

    def objective(trial: Any) -> float:
        seen.append(trial.suggest_float("lr", 1e-4, 1e-2, log=True))
        return -abs(seen[-1] - 0.003)

    found = tuning.run_study("sasrec_bce", storage, config, objective, first={"lr": 0.001})
    states = [(t.number, t.state.name, t.params.get("lr")) for t in found.trials]
    assert states[0] == (0, "FAIL", 0.001)  # the killed default trial, never counted
    assert states[1] == (1, "COMPLETE", 0.001) and found.trials[1].user_attrs["default"] is True
    assert len(seen) == 2 and seen[0] == 0.001 and seen[1] != 0.001


def test_final_model_reuses_the_default_or_keeps_it_when_validation_prefers_it(
    world: dict[str, Path], data: PreparedData, first: dict[str, Any]
) -> None:
    from sasrec.study.steps import model_configs

    checkpoint = first["training"]["models"]["sasrec_bce"]["checkpoint"]
    only_default = {**TUNING, "trials": 2, "spaces": {"sasrec_bce": {"maxlen": [20]}}}
    default_config = model_configs(data.name, TRAINING, MODELS)["sasrec_bce"].to_dict()
    summary = {"models": {"sasrec_bce": {"config": default_config, "checkpoint": checkpoint,
                                         "valid": {"ndcg@10": 0.5}, "marker": "default"}}}  # fmt: skip
    reused = tuning.tune_models(_study(world, "reuse"), data, TRAINING, MODELS, {}, only_default,
                                default_training=summary)["training"]["models"]["sasrec_bce"]  # fmt: skip
    assert reused["marker"] == "default" and reused["reused_default"] and reused["default_trial"]
    # a searched winner retrained with the schedule but below the default on validation: the default is kept
    searched = {**TUNING, "trials": 2, "spaces": {"sasrec_bce": {"maxlen": [10, 20]}}}
    better_default = {"models": {"sasrec_bce": {**summary["models"]["sasrec_bce"], "config": {},
                                                "valid": {"ndcg@10": 2.0}}}}  # fmt: skip
    kept = tuning.tune_models(_study(world, "kept"), data, TRAINING, MODELS, {}, searched,
                              default_training=better_default)["training"]["models"]["sasrec_bce"]  # fmt: skip
    assert kept["marker"] == "default" and kept["reused_default"] and kept["retrained_valid"] < 2.0


def test_headline_pairs_every_tuned_model_with_the_best_one() -> None:
    import pandas as pd

    from sasrec.study.comparisons import evaluation_config
    from sasrec.study.report import tuning_findings

    users = np.arange(1, 7)
    best = np.array([1.0, 1.0, 0.5, 0.5, 1.0, 0.0])
    close = best - np.array([0.0, 0.1, 0.0, 0.1, 0.0, 0.0])  # 0.0333 lower on average, most users tied
    low = best - 0.5  # every user 0.5 lower
    per_user = pd.concat(
        [pd.DataFrame({"model": m, "task": "test", "protocol": "full", "user": users, "ndcg@10": v})
         for m, v in (("a", best), ("b", close), ("c", low))]
    )  # fmt: skip
    table = pd.DataFrame({"model": ["a", "b", "c"], "tuned": [best.mean(), close.mean(), low.mean()]})
    config = evaluation_config({"n_boot": 200, "seed": 0})
    out = tuning._against_best(table, per_user, config, "ndcg@10")
    assert list(out["reference"]) == ["a"] * 3 and np.isnan(out.loc[0, "best"])
    assert out.loc[1, "best"] == pytest.approx(close.mean() - best.mean())
    assert out.loc[2, "best"] == pytest.approx(-0.5) and out.loc[2, "best_high"] == pytest.approx(-0.5)
    assert out.loc[1, "best_low"] < 0 <= out.loc[1, "best_high"]  # not below the best beyond its interval
    rows = out.assign(default=out["tuned"], low=-0.1, high=0.1, users=6).to_dict(orient="records")
    findings = tuning_findings({"tuning": {"trials": 3}, "comparison": {"table": rows, "kendall": {}}})
    assert findings[0].startswith("Headline ranking") and findings[0].endswith(
        "a 0.6667, b 0.6333, c 0.1667."
    )
    assert findings[1] == (
        "Paired ndcg@10 differences against the best tuned model a (test, 6 users): worse: c; "
        "not distinguishable: b."
    )
