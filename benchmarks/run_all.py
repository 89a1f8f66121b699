"""Run every benchmark script (``benchmarks/bench_*.py``) and collect their final JSON lines.

Usage: ``python benchmarks/run_all.py [NAME ...]`` (names like ``prepare``); results are written to
``reports/bench.json``. Targets: prepare <= 60 s and 6 GB at scale 1; simulate <= 180 s at scale 1;
SASRec training >= 3x a straightforward reference port; full-ranking evaluation of 7,176 users <= 15 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sasrec.paths import atomic_write_text  # noqa: E402


def main(names: list[str]) -> int:
    """Run the selected (default: all) benchmarks one after another; return non-zero if any failed."""
    scripts = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in names]
    results, failed = {}, 0
    for script in scripts:
        print(f"== {script.stem}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, check=False
        )
        print(completed.stdout[-4000:], completed.stderr[-2000:] if completed.returncode else "", flush=True)
        last_json = next(
            (line for line in reversed(completed.stdout.splitlines()) if line.startswith("{")), None
        )
        results[script.stem] = {
            "returncode": completed.returncode,
            "seconds": round(time.perf_counter() - started, 1),
            "figures": json.loads(last_json) if last_json else None,
        }
        failed += completed.returncode != 0
    atomic_write_text(ROOT / "reports" / "bench.json", json.dumps(results, indent=2) + "\n")
    print(f"wrote {ROOT / 'reports' / 'bench.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
