"""Project plumbing: pinned dependencies in both manifests, the CLI's error contract, the report."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sasrec.errors import MissingDataError
from sasrec.study import report

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
        "relevance_threshold": 1.5, "n_boot": 200, "num_negatives": 100, "protocols": ["full", "sampled"],
        "trained_models": ["sasrec_bce"], "table": table, "paired": paired, "overview": overview,
        "fit_events": [{"model": "pop", "stage": "test", "events": 100, "sha256": "abc"}],
    }  # fmt: skip


def test_summary_fills_every_number_and_setting_from_the_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "evaluation.json").write_text(json.dumps(_evaluation_payload()))
    experiments = {
        "dataset": "small_matrix", "k": 5, "variants": {"bce": {"model": "sasrec"}}, "grid": {"lr": [0.001]},
        "runs": [{"variant": "bce", "lr": 0.001, "num_epochs": 5, "valid_ndcg@5": 0.4567}],
        "best": {"config": {"variant": "bce", "lr": 0.001, "num_epochs": 5}, "valid_ndcg@5": 0.4567,
                 "test": {"ndcg@5": 0.3012, "precision@5": 0.0456, "recall@5": 0.2789, "hr@5": 0.5, "users": 12}},
    }  # fmt: skip
    (metrics / "experiments.json").write_text(json.dumps(experiments))
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
    assert "Kendall's tau between the two model rankings is -0.33" in text
    path = report.write_summary(tmp_path)
    assert path == tmp_path / "README.md" and "0.3012" in path.read_text(encoding="utf-8")
    assert not list(tmp_path.glob(".README.md.*"))  # atomic write leaves no temporary file


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
