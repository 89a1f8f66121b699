"""The benchmark summary (``reports/bench.md``) is rendered from ``reports/bench.json`` without re-running anything."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_renders_present_benchmarks_and_skips_failed_ones() -> None:
    results = {
        "bench_train": {"returncode": 0, "seconds": 50.0, "measured_at": "2026-11-30 12:00 UTC", "commit": "abc1234",
                        "figures": {"port": {"ms_per_batch_median": 600.0, "positions_per_s": 42667},
                                    "ours": {"ms_per_batch_median": 200.0, "positions_per_s": 128000},
                                    "speedup_ours_over_port": 3.0, "speedup_ours_over_port_fastest": 3.2}},
        "bench_eval": {"returncode": 1, "seconds": 1.0, "figures": None},
    }  # fmt: skip
    text = _run_all().render_markdown(results)
    assert "| ours | 200.0 | 128,000 |" in text
    assert "Speed-up over the port: 3.0x on medians, 3.2x" in text
    assert "`bench_eval`: ?, commit ?, 1.0 s, exit 1" in text
    assert "## Evaluation" not in text  # a failed benchmark has no table


def test_committed_summary_matches_committed_figures() -> None:
    bench_json, bench_md = ROOT / "reports" / "bench.json", ROOT / "reports" / "bench.md"
    if not bench_md.exists():
        pytest.skip("reports/bench.md not generated yet")
    assert bench_md.read_text() == _run_all().render_markdown(json.loads(bench_json.read_text())), (
        "reports/bench.md is stale: run `python benchmarks/run_all.py --summary`"
    )
