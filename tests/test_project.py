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
    return {
        "model": model,
        "task": task,
        "protocol": protocol,
        "metric": metric,
        "mean": mean,
        "low": mean - 0.01,
        "high": mean + 0.01,
    }


def test_summary_fills_every_number_from_the_metrics(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    table = [
        _row("sasrec_bce", "test", "ndcg@10", 0.31),
        _row("markov", "test", "ndcg@10", 0.22),
        _row("pop", "test", "ndcg@10", 0.05),
        _row("random", "test", "ndcg@10", 0.01),
        _row("sasrec_bce", "test", "ndcg@10", 0.93, "sampled"),
        _row("markov", "test", "ndcg@10", 0.91, "sampled"),
        _row("pop", "test", "ndcg@10", 0.95, "sampled"),
    ]
    (metrics / "evaluation.json").write_text(
        json.dumps(
            {
                "data_source": "KuaiRec-shaped simulator (scale 0.2, seed 0)",
                "dataset": "small_matrix",
                "split": "temporal",
                "table": table,
            }
        )
    )
    (metrics / "experiments.json").write_text(
        json.dumps(
            {
                "dataset": "small_matrix",
                "variants": ["bce"],
                "runs": [{"variant": "bce", "lr": 0.001, "num_epochs": 5, "valid_ndcg@10": 0.4567}],
                "best": {
                    "config": {"variant": "bce", "lr": 0.001, "num_epochs": 5},
                    "valid_ndcg@10": 0.4567,
                    "test": {
                        "ndcg@10": 0.3012,
                        "precision@10": 0.0456,
                        "recall@10": 0.2789,
                        "hr@10": 0.5,
                        "users": 12,
                    },
                },
            }
        )
    )
    text = report.build_summary(tmp_path)
    assert "KuaiRec-shaped simulator (scale 0.2, seed 0)" in text
    assert "not the real KuaiRec 2.0" in text
    for number in ("0.4567", "0.3012", "0.0456", "0.2789", "0.3100 [0.3000, 0.3200]"):
        assert number in text
    assert "best model sasrec_bce; order sasrec_bce, markov, pop, random" in text
    assert "1.41x" in text  # 0.31 / 0.22, intervals do not overlap
    # full: sasrec > markov > pop; sampled: pop > sasrec > markov -> 1 concordant, 2 discordant pairs
    assert "Kendall's tau between the two model rankings -0.33" in text
    path = report.write_summary(tmp_path)
    assert path == tmp_path / "README.md"
    assert "0.3012" in path.read_text(encoding="utf-8")
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
