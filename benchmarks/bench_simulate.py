"""Benchmark of the KuaiRec-shaped simulator: time, rows, peak memory and calibration versus real KuaiRec.

Usage: ``.venv/bin/python benchmarks/bench_simulate.py [--scale 1.0] [--seed 0] [--out DIR]``.
Generates into a temporary folder (removed afterwards) unless ``--out`` is given, then reads the files
back and prints the calibration table against the real figures of ``../shared/KUAIREC.md``. The last
line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sasrec.data import simulator as sim
from sasrec.data.simulator.api import _transition_vs_popularity_ndcg  # noqa: E402
from sasrec.data.simulator.calibration import REAL_CALIBRATION

#: Real KuaiRec 2.0 figures (KUAIREC.md); per-user counts are at scale 1.
REAL = {
    **REAL_CALIBRATION,
    "per_user_big": {"mean": 1746, "median": 1846, "min": 100, "max": 16015},
    "video_duration_s": {"mean": 14.2, "median": 9.6, "max": 315.0},
    "sequential_ndcg10": {"popularity": 0.079, "transition": 0.193},
    "small_untimed_share": 0.0389,
    "small_observed_share": 0.996,
}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    table = pv.read_csv(path, convert_options=pv.ConvertOptions(include_columns=columns))
    return table.to_pandas()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=str, default=None, help="keep the files here (default: temp dir)")
    args = parser.parse_args()

    temp = None if args.out else tempfile.mkdtemp(prefix="bench_simulate_")
    out = Path(args.out) if args.out else Path(temp)
    try:
        started = time.perf_counter()
        summary = sim.simulate(scale=args.scale, seed=args.seed, out_dir=out, progress=False)
        seconds = time.perf_counter() - started
        peak_mb = _peak_rss_mb()
        counts = summary["counts"]
        sizes_mb = {p.name: round(p.stat().st_size / 2**20, 1) for p in sorted(out.iterdir()) if p.is_file()}
        print(f"simulate scale {args.scale} seed {args.seed}: {seconds:.1f} s, peak RSS {peak_mb:,.0f} MB")
        print(
            f"  users {counts['users']:,}, videos {counts['videos']:,}, big rows {counts['big_rows']:,}, "
            f"small rows {counts['small_rows']:,} ({counts['small_users']:,} x {counts['small_videos']:,})"
        )
        print("  files (MB): " + ", ".join(f"{k} {v}" for k, v in sizes_mb.items()))

        read_started = time.perf_counter()
        big = _read(out / "big_matrix.csv", ["user_id", "video_id", "video_duration", "watch_ratio"])
        small = _read(out / "small_matrix.csv", ["user_id", "video_id", "timestamp", "watch_ratio"])
        read_seconds = time.perf_counter() - read_started

        stats = {
            "big_matrix": sim.watch_ratio_statistics(big["watch_ratio"].to_numpy()),
            "small_matrix": sim.watch_ratio_statistics(small["watch_ratio"].to_numpy()),
        }
        print(
            f"\nwatch_ratio calibration (simulated vs real, relative error); read back in {read_seconds:.1f} s"
        )
        print(f"  {'matrix':<13} {'statistic':<13} {'simulated':>10} {'real':>8} {'rel.err':>8}")
        worst = 0.0
        for matrix in ("big_matrix", "small_matrix"):
            for name, real in REAL[matrix].items():
                value = stats[matrix][name]
                rel = value / real - 1
                worst = max(worst, abs(rel))
                print(f"  {matrix:<13} {name:<13} {value:>10.4f} {real:>8.4f} {rel:>+8.1%}")
            print(f"  {matrix:<13} {'max':<13} {stats[matrix]['max']:>10.1f}")

        per_user = big.groupby("user_id").size()
        per_user_figures = {
            "mean": float(per_user.mean()),
            "median": float(per_user.median()),
            "min": int(per_user.min()),
            "max": int(per_user.max()),
        }
        print(f"\nper-user big rows (real x scale {args.scale}):")
        for name, real in REAL["per_user_big"].items():
            print(f"  {name:<7} {per_user_figures[name]:>10.1f} {real * args.scale:>10.1f}")

        durations = big.drop_duplicates("video_id")["video_duration"].to_numpy() / 1000.0
        duration_figures = {
            "mean": float(durations.mean()),
            "median": float(np.median(durations)),
            "max": float(durations.max()),
        }
        print(
            "video duration (s): "
            + ", ".join(
                f"{k} {v:.1f} (real {REAL['video_duration_s'][k]})" for k, v in duration_figures.items()
            )
        )

        untimed = float(small["timestamp"].isna().mean())
        observed = counts["small_rows"] / (counts["small_users"] * counts["small_videos"])
        signal_started = time.perf_counter()
        signal = _transition_vs_popularity_ndcg(small)
        signal_seconds = time.perf_counter() - signal_started
        print(f"small matrix: observed {observed:.4f} (real 0.996), untimed {untimed:.4f} (real 0.0389)")
        print(
            f"sequential signal, NDCG@10 on small positives: popularity {signal['popularity']:.3f} "
            f"(real 0.079), transition {signal['transition']:.3f} (real 0.193), ratio "
            f"{signal['transition'] / max(signal['popularity'], 1e-12):.2f} (real 2.44); {signal_seconds:.1f} s"
        )
        result = {
            "benchmark": "simulate",
            "scale": args.scale,
            "seed": args.seed,
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak_mb, 1),
            "big_rows": counts["big_rows"],
            "small_rows": counts["small_rows"],
            "users": counts["users"],
            "videos": counts["videos"],
            "file_mb": sizes_mb,
            "watch_ratio": stats,
            "worst_relative_error": round(worst, 4),
            "per_user_big": per_user_figures,
            "video_duration_s": duration_figures,
            "small_observed_share": round(observed, 5),
            "small_untimed_share": round(untimed, 5),
            "sequential_ndcg10": {k: round(v, 4) for k, v in signal.items()},
            "read_back_seconds": round(read_seconds, 2),
        }
        print(json.dumps(result))
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
