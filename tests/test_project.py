"""Project plumbing: pinned dependencies in both manifests, the CLI's error contract, the report and its
``make report`` steps (verify, the profile's lock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

import sasrec.cli
from sasrec.errors import IntegrityError, MissingDataError
from sasrec.evaluation.results import metrics_made_by, write_metrics_json
from sasrec.study import report
from sasrec.study.context import METRICS_NOTEBOOKS, Study, StudyPaths

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_lists_the_same_pinned_dependencies_as_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pyproject = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert set(pip_section) - {"-e ."} == pyproject
    assert "-e ." in pip_section
    assert all("==" in dep for dep in pyproject), "every dependency is pinned"
    assert "torch==2.13.0" in pyproject


def test_markdown_table_formats_floats_and_escapes_pipes() -> None:
    table = report.markdown_table(pd.DataFrame({"model": ["a|b"], "ndcg@10": [0.123456]}))
    assert table.splitlines() == ["| model | ndcg@10 |", "| --- | --- |", "| a\\|b | 0.1235 |"]


def test_summary_without_metrics_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="no metrics found"):
        report.build_summary(tmp_path)


def _row(model: str, task: str, metric: str, mean: float, protocol: str = "full") -> dict:
    return {"model": model, "task": task, "protocol": protocol, "metric": metric, "mean": mean,
            "low": mean - 0.01, "high": mean + 0.01}  # fmt: skip


def _evaluation_payload() -> dict:
    """An evaluation.json as notebook 04 writes it, with K = 5, a leave-one-out split and train_valid."""
    table = [
        _row("sasrec_bce", "test", "ndcg@5", 0.31),
        _row("markov", "test", "ndcg@5", 0.22),
        _row("pop", "test", "ndcg@5", 0.05),
        _row("random", "test", "ndcg@5", 0.01),
        *[{**_row(m, "test", "users_ndcg@5", 40.0), "low": None, "high": None} for m in ("pop", "random")],
        *[
            {**_row(m, "test", "users_graded_ndcg@5", 44.0), "low": None, "high": None}
            for m in ("pop", "random")
        ],
        _row("sasrec_bce", "test@all", "ndcg@5", 0.93, "sampled"),
        _row("markov", "test@all", "ndcg@5", 0.91, "sampled"),
        _row("pop", "test@all", "ndcg@5", 0.95, "sampled"),
        _row("sasrec_bce", "test@all", "ndcg@5", 0.30),
        _row("markov", "test@all", "ndcg@5", 0.20),
        _row("pop", "test@all", "ndcg@5", 0.06),
    ]
    paired = [
        {"model": "sasrec_bce", "reference": "markov", "metric": "ndcg@5", "difference": 0.09, "low": 0.03,
         "high": 0.15, "p_value": 0.004, "users": 40, "task": "test", "mean_model": 0.31},
        {"model": "pop", "reference": "markov", "metric": "ndcg@5", "difference": -0.17, "low": -0.2,
         "high": -0.1, "p_value": 0.0001, "users": 40, "task": "test", "mean_model": 0.05},
    ]  # fmt: skip
    overview = [
        {"task": "test", "protocol": "full", "users": 40, "mean_candidates": 69.4, "mean_targets": 60.1,
         "share_of_candidates_that_are_targets": 0.87, "chance ndcg@5": 0.01},
        {"task": "test@all", "protocol": "sampled", "users": 40, "mean_candidates": 123.0, "mean_targets": 23.0,
         "share_of_candidates_that_are_targets": 0.19, "chance ndcg@5": 0.62},
    ]  # fmt: skip
    return {
        "data_source": "KuaiRec-shaped simulator (scale 0.2, seed 0)", "dataset": "small_matrix",
        "split": "leave_one_out", "fit_on": "train_valid", "k": 5, "maxlen": 50, "relevance": "threshold",
        "relevance_threshold": 1.5, "n_boot": 200, "num_negatives": 50, "protocols": ["full", "sampled"],
        "trained_models": ["sasrec_bce"], "table": table, "paired": paired, "overview": overview,
        "fit_events": [{"model": "pop", "stage": "test", "events": 100, "sha256": "abc"}],
    }  # fmt: skip


def test_summary_fills_every_number_and_setting_from_the_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    write_metrics_json(_evaluation_payload(), metrics / "evaluation.json")
    experiments = {
        "dataset": "small_matrix", "k": 5, "variants": {"bce": {"model": "sasrec"}}, "grid": {"lr": [0.001]},
        "runs": [{"variant": "bce", "lr": 0.001, "num_epochs": 5, "valid_ndcg@5": 0.4567}],
        "best": {"config": {"variant": "bce", "lr": 0.001, "num_epochs": 5}, "valid_ndcg@5": 0.4567,
                 "test": {"ndcg@5": 0.3012, "precision@5": 0.0456, "recall@5": 0.2789, "hr@5": 0.5, "users": 12}},
    }  # fmt: skip
    write_metrics_json(experiments, metrics / "experiments.json")
    text = report.build_summary(tmp_path)
    assert "KuaiRec-shaped simulator (scale 0.2, seed 0)" in text and "not the real KuaiRec 2.0" in text
    for number in ("0.4567", "0.3012", "0.0456", "0.2789", "0.3100 [0.3000, 0.3200]", "69.4", "87%"):
        assert number in text, number
    # every protocol setting comes from the JSON, none is written in literally
    assert "leave_one_out split" in text and "K = 5" in text and "watch_ratio > 1.5" in text
    assert "train + valid events" in text and "fit_on: train_valid" in text
    assert "@10" not in text and "temporal" not in text
    assert "40 test users with at least one relevant target" in text and "over the 44 users" in text
    assert "best model sasrec_bce" in text and "order sasrec_bce, markov, pop, random" in text
    assert "better: sasrec_bce +0.0900 [+0.0300, +0.1500], p=0.004" in text and "worse: pop" in text
    assert "| sasrec_bce | +0.0900 [+0.0300, +0.1500] (p=0.004) |" in text  # the paired table, per reference
    # full: sasrec > markov > pop; sampled: pop > sasrec > markov on the same positives -> tau -0.33
    assert "Kendall's tau between the two model rankings is -0.33" in text and "Krichene" in text
    assert "positives + up to 50 negatives; 0 of 40 users had fewer eligible negatives" in text
    path = report.write_summary(tmp_path)
    assert path == tmp_path / "README.md" and "0.3012" in path.read_text(encoding="utf-8")
    assert not list(tmp_path.glob(".README.md.*"))  # atomic write leaves no temporary file


def test_summary_says_when_the_sampled_protocol_coincides_with_full_ranking(tmp_path: Path) -> None:
    """On dense data every user has fewer eligible negatives than asked: both protocols rank the same list."""
    payload = _evaluation_payload()
    payload["table"] = [
        r for r in payload["table"] if not (r["task"] == "test@all" and r["protocol"] == "sampled")
    ]
    payload["table"] += [{**r, "protocol": "sampled"} for r in payload["table"] if r["task"] == "test@all"]
    payload["table"].append({**_row("random", "test@all", "users_with_fewer_negatives", 40.0, "sampled"),
                             "low": None, "high": None})  # fmt: skip
    (tmp_path / "metrics").mkdir()
    write_metrics_json(payload, tmp_path / "metrics" / "evaluation.json")
    text = report.build_summary(tmp_path)
    assert "40 of 40 users had fewer eligible negatives" in text
    assert (
        "every user had fewer than 50 eligible negatives, so both protocols rank the same candidates" in text
    )
    assert "Kendall's tau between the two model rankings is 1.00" in text and "Krichene" not in text


def test_atomic_write_gives_the_umask_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    import os

    from sasrec.paths import atomic_path, atomic_write_text

    target = atomic_write_text(tmp_path / "out" / "file.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "hello"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "failed.txt") as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing half-written left behind


def test_damaged_metrics_are_refused_by_the_summary_and_the_notebooks(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    path = write_metrics_json(_evaluation_payload(), metrics / "evaluation.json")
    path.write_text(path.read_text().replace("0.31", "0.41"))  # a hand-edited number
    with pytest.raises(IntegrityError) as caught:
        report.build_summary(tmp_path)
    assert str(caught.value) == (
        f"metrics file {path} does not match its checksum (edited or damaged); run notebook 04_evaluate "
        "(make report) to rewrite it"
    )
    study = Study(paths=StudyPaths(reports_dir=str(tmp_path)))
    with pytest.raises(IntegrityError, match="run notebook 04_evaluate"):
        study.load_json("evaluation")
    path.write_text(json.dumps(_evaluation_payload()))  # unsealed: an older version or a hand-made file
    with pytest.raises(IntegrityError, match="carries no integrity entry"):
        report.load_metrics(tmp_path)
    with pytest.raises(MissingDataError, match="training.json is missing: run notebook 03_train"):
        study.load_json("training")
    study.__dict__["data_source"] = "a fake source"  # the cached property, without looking for data
    written = study.save_json({"dataset": "small_matrix", "models": {}}, "training")
    assert study.load_json("training") == {
        "data_source": "a fake source",
        "dataset": "small_matrix",
        "models": {},
    }
    assert metrics_made_by(written)["rewritten_by"] == "notebook 03_train (make report)"


# ------------------------------------------------------------------------------ make report: verify, lock
NOTEBOOK_NAMES = sorted(set(METRICS_NOTEBOOKS.values()))
# Holds the lock of report profile argv[1] until file argv[3] exists (touches argv[2] once held).
HOLDER = """
import pathlib, sys, time
from sasrec.study.profiles import profile_lock
with profile_lock(sys.argv[1]):
    pathlib.Path(sys.argv[2]).touch()
    while not pathlib.Path(sys.argv[3]).exists():
        time.sleep(0.05)
"""
# A stand-in for make: records its arguments and whether the profile's lock is held, exits with status 3.
FAKE_MAKE = """
import json, pathlib, sys
from sasrec.study.profiles import profile_dirs
from sasrec.locks import is_locked
executed = profile_dirs("fake")[1]
record = {"argv": sys.argv[1:], "locked": is_locked(executed), "executed": sorted(p.name for p in executed.iterdir())}
pathlib.Path(sys.argv[0]).with_suffix(".json").write_text(json.dumps(record))
sys.exit(3)
"""


@pytest.fixture
def fake_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with report profile ``fake``: every notebook executed, its HTML and sealed metrics."""
    root = tmp_path / "project"
    monkeypatch.setenv("SASREC_ROOT", str(root))
    monkeypatch.setattr(sasrec.cli, "COMMAND_MODULES", (("sasrec.cli.report", "add_parser"),))
    out = root / "reports" / "fake"
    for name in NOTEBOOK_NAMES:
        params = root / "params" / "fake" / f"{name}.yaml"
        params.parent.mkdir(parents=True, exist_ok=True)
        params.write_text("paths: {reports_dir: reports/fake}\n")
        (out / "executed").mkdir(parents=True, exist_ok=True)
        (out / "executed" / f"{name}.ipynb").write_text(json.dumps({"cells": [], "nbformat": 4}))
        (out / "html").mkdir(parents=True, exist_ok=True)
        (out / "html" / f"{name}.html").write_text("<html><body>ran</body></html>\n")
    for metrics in METRICS_NOTEBOOKS:
        write_metrics_json({"name": metrics, "mean": 0.5}, out / "metrics" / f"{metrics}.json")
    return root


def _executed(root: Path) -> list[str]:
    return sorted(
        p.name for p in (root / "reports" / "fake" / "executed").iterdir() if not p.name.startswith(".")
    )


def test_report_verify_removes_exactly_the_notebooks_whose_outputs_are_damaged(
    fake_profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, out = fake_profile, fake_profile / "reports" / "fake"
    assert sasrec.cli.main(["report", "verify", "--profile", "fake"]) == 0
    assert capsys.readouterr().out == "reports/fake/executed: the outputs of every executed notebook verify\n"
    evaluation = out / "metrics" / "evaluation.json"
    evaluation.write_text(evaluation.read_text().replace("0.5", "0.6"))  # hand-edited
    (out / "metrics" / "training_big.json").unlink()  # 05 writes two files; one is missing
    prepare = out / "metrics" / "prepare.json"
    prepare.write_bytes(prepare.read_bytes()[:40])  # cut short
    (out / "html" / "01_eda.html").write_text("<html><body>half")  # nbconvert killed
    (out / "executed" / "06_experiments.ipynb.partial.ipynb").write_text("{")  # papermill killed: kept
    assert sasrec.cli.main(["report", "verify", "--profile", "fake"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "removed reports/fake/executed/01_eda.ipynb and reports/fake/html/01_eda.html: its HTML "
        "reports/fake/html/01_eda.html is cut short (killed during nbconvert); make report reruns 01_eda",
        f"removed reports/fake/executed/02_prepare_data.ipynb and reports/fake/html/02_prepare_data.html: metrics "
        f"file {prepare} is not valid JSON (Expecting property name enclosed in double quotes: line 4 column 3): it "
        "was cut short or damaged; make report reruns 02_prepare_data",
        f"removed reports/fake/executed/04_evaluate.ipynb and reports/fake/html/04_evaluate.html: metrics file "
        f"{evaluation} does not match its checksum (edited or damaged); make report reruns 04_evaluate",
        "removed reports/fake/executed/05_cross_dataset.ipynb and reports/fake/html/05_cross_dataset.html: its "
        "metrics file reports/fake/metrics/training_big.json is missing; make report reruns 05_cross_dataset",
        "reports/fake/executed: 4 executed notebook(s) removed",
    ]
    kept = ["03_train", "06_experiments", "07_features", "08_tuning", "09_two_stage"]
    assert _executed(root) == sorted([f"{n}.ipynb" for n in kept] + ["06_experiments.ipynb.partial.ipynb"])
    assert sorted(p.name for p in (out / "html").iterdir()) == [f"{n}.html" for n in kept]
    assert sasrec.cli.main(["report", "verify", "--profile", "nope"]) == 2
    assert capsys.readouterr().err == (
        f"error: --profile nope: {root / 'params' / 'nope'} does not exist; choose one of fake\n"
    )


def _child(root: Path, code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "SASREC_ROOT": str(root), "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_report_run_holds_the_profile_lock_verifies_then_runs_make(
    fake_profile: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = fake_profile
    held, release = tmp_path / "held", tmp_path / "release"
    holder = _child(root, HOLDER, "fake", str(held), str(release))
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()
            time.sleep(0.05)
        assert sasrec.cli.main(["report", "run", "--profile", "fake", "--no-wait"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"error: report profile fake {root / 'reports' / 'fake' / 'executed'} is being written by pid "
            f"{holder.pid} since "
        )
        assert err.endswith(
            "; wait for it to finish, or run again without --no-wait (make report without WAIT=false) to wait "
            "for it\n"
        )
        assert err.count("\n") == 1 and "(python -c fake " in err
    finally:
        release.touch()
        holder.communicate(timeout=60)
    metrics = root / "reports" / "fake" / "metrics" / "experiments.json"
    metrics.write_text(metrics.read_text().replace('"mean": 0.5', '"mean": 1.5'))
    fake_make = tmp_path / "make.py"
    fake_make.write_text(FAKE_MAKE)
    command = ["report", "run", "--profile", "fake", "--make", f"{sys.executable} {fake_make}", "--", "-k"]
    assert sasrec.cli.main(command) == 3  # make's exit status
    out = capsys.readouterr().out
    assert out.startswith("removed reports/fake/executed/06_experiments.ipynb and reports/fake/html/06_")
    record = json.loads(fake_make.with_suffix(".json").read_text())
    assert record["argv"] == ["report-inner", "PROFILE=fake", "-k"]
    assert record["locked"] is True  # make runs while the profile is held
    assert "06_experiments.ipynb" not in record["executed"] and "05_cross_dataset.ipynb" in record["executed"]


def test_scratch_notebook_run_writes_outside_the_committed_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m sasrec report notebook` sends every output to reports/scratch and models/scratch."""
    import papermill

    from sasrec.study import notebooks

    seen: dict = {}

    def fake_execute(source: str, target: str, parameters: dict, **kwargs: object) -> None:
        seen.update(source=source, target=target, parameters=parameters)
        Path(target).write_text("{}", encoding="utf-8")

    import shutil

    repository = Path(__file__).resolve().parents[1]
    for folder in ("notebooks", "params"):
        shutil.copytree(repository / folder, tmp_path / folder)
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path))
    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    out = notebooks.run_notebook("03_train", assignments=["training.num_epochs=3"])
    assert Path(seen["source"]) == tmp_path / "notebooks" / "03_train.ipynb"
    assert out == tmp_path / "reports" / "scratch" / "executed" / "03_train.ipynb" and out.is_file()
    assert seen["parameters"]["paths"]["reports_dir"] == "reports/scratch"
    assert seen["parameters"]["paths"]["models_dir"] == "models/scratch"
    assert seen["parameters"]["training"]["num_epochs"] == 3
    assert not Path(seen["target"]).exists()  # written under a temporary name, then renamed
    assert not (tmp_path / "reports" / "metrics").exists()


def test_make_lab_allows_root_and_passes_extra_flags() -> None:
    root = Path(__file__).resolve().parents[1]
    dry_run = subprocess.run(["make", "-n", "lab", "LAB_ARGS=--port 8899 --no-browser"], cwd=root,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    lab_line = next(line for line in dry_run.splitlines() if "jupyter lab" in line)
    assert "--port 8899 --no-browser" in lab_line
    assert ("--allow-root" in lab_line) == (os.getuid() == 0)
