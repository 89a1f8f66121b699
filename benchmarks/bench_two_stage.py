"""Benchmark of the two-stage ranker at simulator scale 1.0: 7,176 users x 200 candidates.

Targets: LightGBM lambdarank training on 7,176 users x 200 candidates within 5 minutes on 2 cores; ranking
(``predict``) of 7,176 users x 200 candidates within 10 s; peak memory within 4 GB.

The features are synthetic, of the pipeline's realistic width (4 retrievers' score and rank, the vote count,
the 13 event and cross features and 48 side-feature columns: 70 columns), with graded labels 0..3 driven by a
few of them plus noise (building real features at scale 1 needs the trained scale-1 models); the ranker's
parameters are the full profile's (``params/full/09_two_stage.yaml``). Peak memory is this process's maximum
resident set size (``ru_maxrss``).

Usage: ``.venv/bin/python benchmarks/bench_two_stage.py [--users 7176] [--candidates 200] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sasrec.models.ranker import LightGBMRanker  # noqa: E402

TARGET_FIT_S = 300.0
TARGET_RANK_S = 10.0
TARGET_PEAK_GB = 4.0
WIDTH = 70


def synthetic(users: int, candidates: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (n, WIDTH) float32, labels (n,) 0..3, groups (users,)) with a learnable signal."""
    rng = np.random.default_rng(seed)
    n = users * candidates
    x = rng.standard_normal((n, WIDTH), dtype=np.float32)
    signal = 1.5 * x[:, 0] + x[:, 3] - 0.5 * x[:, 10] + rng.standard_normal(n, dtype=np.float32)
    labels = np.digitize(signal, [1.5, 2.5, 3.2]).astype(np.int32)  # mostly 0, a few 1..3 per user
    return x, labels, np.full(users, candidates, dtype=np.int64)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=7176)
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    x, y, groups = synthetic(args.users, args.candidates)
    params = {"num_leaves": 31, "learning_rate": 0.05, "n_estimators": 200, "min_child_samples": 20,
              "num_threads": args.threads, "seed": 0}  # fmt: skip
    ranker = LightGBMRanker(params)
    started = time.perf_counter()
    ranker.fit(x, y, groups, [f"f{j}" for j in range(WIDTH)])
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    scores = ranker.predict(x)
    rank_s = time.perf_counter() - started
    assert scores.shape == (len(x),)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    figures = {
        "users": args.users,
        "candidates": args.candidates,
        "rows": int(len(x)),
        "columns": WIDTH,
        "threads": args.threads,
        "features": "synthetic, realistic width",
        "n_estimators": params["n_estimators"],
        "fit_s": round(fit_s, 2),
        "rank_s": round(rank_s, 2),
        "peak_rss_gb": round(peak_gb, 2),
        "target_fit_s": TARGET_FIT_S,
        "target_rank_s": TARGET_RANK_S,
        "target_peak_gb": TARGET_PEAK_GB,
        "within_targets": bool(
            fit_s <= TARGET_FIT_S and rank_s <= TARGET_RANK_S and peak_gb <= TARGET_PEAK_GB
        ),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
