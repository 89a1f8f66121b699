"""End-to-end time of ``python -m sasrec train`` on an Amazon Games-shaped SASRec text file (the user's view).

The SASRec paper's Amazon Games file has 31,013 users, 23,715 items and ~287k lines (``user item`` per line,
each user's items in time order, at least 5 per user, 9.3 on average). The original project took 133 s end
to end on it (maxlen 50, hidden 50, 2 blocks, 2 epochs: 40.7 s of training, the rest its per-user sampled
evaluation; ``../shared/PERF_NOTES.md``). Target: at least 3x faster, <= 44 s.

The file here is synthetic, with that shape: per-user lengths 5 + floor(lognormal) (mean ~9.3, median 7,
99th percentile ~40, a few hundred at most), item popularity ~ 1 / (rank + 20)^0.75, and sequential
structure (with probability 0.6 the next item follows the previous one at an offset of 1..5, else a fresh
popularity draw), so that training has something to learn. The command runs with its defaults (batch 128,
dropout 0.2, bce, full-ranking validation every epoch, leave_one_out split for text files, test on the best
epoch) and ``--maxlen=50 --hidden_units=50 --num_blocks=2 --num_epochs=2``, in a fresh project root
(``SASREC_ROOT``: a temporary folder), so preparation runs as on a first use.

The whole command's wall time is measured from outside (interpreter start and imports included); its
parts from inside, by timing wrappers installed around the command's own steps before it runs: data
preparation (``load_prepared``), building the run (sequences, sampler, validation task), each training
epoch, each validation pass, the test task and test pass, checkpoint writing; "other" is the rest
(interpreter start, imports, printing).

Run: ``.venv/bin/python benchmarks/bench_train_command.py [--epochs 2] [--threads N] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NUM_USERS, NUM_ITEMS = 31_013, 23_715
ORIGINAL_SECONDS = 132.6  # the original project on the real file (PERF_NOTES, measured 2026-11-30)
TARGET_SECONDS = 44.0

#: Run inside the command's process: wraps its steps with timers, then runs ``python -m sasrec`` as usual.
BOOTSTRAP = r"""
import atexit, json, os, sys, time
import sasrec.cli.train as cli
import sasrec.training.loop as loop
parts = []
def timed(module, name, label):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            parts.append((label, time.perf_counter() - started))
    setattr(module, name, wrapper)
timed(cli, "_load", "prepare")
timed(cli, "_test_task", "test_task")
timed(cli, "_evaluate", "test_pass")
timed(loop, "build_run", "build_run")
timed(loop, "run_epoch", "train_epoch")
timed(loop, "validate", "validation_pass")
timed(loop, "save", "checkpoints")
@atexit.register
def _write():
    with open(os.environ["SASREC_BENCH_PARTS"], "w") as out:
        json.dump(parts, out)
from sasrec.cli import main
sys.argv = ["sasrec"] + sys.argv[1:]
sys.exit(main())
"""


def games_like_lengths(rng: np.random.Generator, sigma: float = 1.15) -> np.ndarray:
    """(NUM_USERS,) events per user: 5 + floor(lognormal), mean ~9.3 (the lognormal's mean is 4.8)."""
    mu = np.log(4.8) - sigma**2 / 2
    return 5 + np.floor(rng.lognormal(mu, sigma, NUM_USERS)).astype(np.int64)


def games_like_file(path: Path, seed: int = 0, follow: float = 0.6) -> dict[str, float]:
    """Write a SASRec-format ``user item`` file shaped like Amazon Games; return its statistics."""
    rng = np.random.default_rng(seed)
    lengths = games_like_lengths(rng)
    n = int(lengths.sum())
    starts = np.zeros(NUM_USERS, dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    popularity = 1.0 / (np.arange(1, NUM_ITEMS + 1) + 20.0) ** 0.75
    fresh = rng.choice(NUM_ITEMS, size=n, p=popularity / popularity.sum())  # (n,) popularity draws
    offsets = rng.integers(1, 6, size=n)  # (n,) step to the next item when following the previous one
    reset = rng.random(n) >= follow  # (n,) a fresh draw instead of following
    reset[starts] = True
    last_reset = np.maximum.accumulate(np.where(reset, np.arange(n), 0))  # (n,) index of the walk's start
    walked = np.cumsum(np.where(reset, 0, offsets))  # (n,) offsets summed since the first event
    items = (fresh[last_reset] + walked - walked[last_reset]) % NUM_ITEMS + 1  # (n,) in 1..NUM_ITEMS
    users = np.repeat(np.arange(1, NUM_USERS + 1), lengths)
    with open(path, "w") as out:
        out.write("\n".join(f"{u} {i}" for u, i in zip(users.tolist(), items.tolist(), strict=True)) + "\n")
    widths = np.minimum(lengths - 2, 50)  # training events under leave_one_out, capped at maxlen
    return {
        "lines": n,
        "users": NUM_USERS,
        "items_used": int(len(np.unique(items))),
        "mean_length": round(float(lengths.mean()), 2),
        "median_length": float(np.median(lengths)),
        "p99_length": float(np.percentile(lengths, 99)),
        "max_length": int(lengths.max()),
        "mean_training_width_at_maxlen_50": round(float(widths.mean()), 2),
    }


def summarise(parts: list[tuple[str, float]], wall: float) -> dict[str, float]:
    """Seconds per part (summed over calls; epochs and validation passes also listed one by one)."""
    figures: dict[str, float] = {"wall_seconds": round(wall, 1)}
    for label in (
        "prepare",
        "build_run",
        "train_epoch",
        "validation_pass",
        "test_task",
        "test_pass",
        "checkpoints",
    ):
        values = [seconds for name, seconds in parts if name == label]
        figures[f"{label}_seconds"] = round(sum(values), 1)
        if label in ("train_epoch", "validation_pass"):
            figures[f"{label}_each"] = [round(v, 1) for v in values]  # type: ignore[assignment]
    accounted = sum(seconds for _, seconds in parts)
    figures["other_seconds"] = round(wall - accounted, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the command")
    parser.add_argument(
        "--keep", default=None, help="project root to use and keep (default: a temporary one)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_train_command_"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").touch()
    try:
        data_file = root / "games_like.txt"
        started = time.perf_counter()
        stats = games_like_file(data_file, seed=args.seed)
        print(
            f"synthetic Games-shaped file: {stats} ({time.perf_counter() - started:.1f} s to write)",
            flush=True,
        )
        env = {**os.environ, "SASREC_ROOT": str(root), "SASREC_BENCH_PARTS": str(root / "parts.json")}
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        command = [sys.executable, "-c", BOOTSTRAP, "train", f"--dataset={data_file}", "--maxlen=50",
                   "--hidden_units=50", "--num_blocks=2", f"--num_epochs={args.epochs}", "--progress=false"]  # fmt: skip
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        print(done.stdout[-3000:], done.stderr[-3000:] if done.returncode else "", flush=True)
        if done.returncode:
            raise SystemExit(f"the command failed with status {done.returncode}")
        figures = summarise(json.loads((root / "parts.json").read_text()), wall)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"load average before the run: {load:.2f}")
    for key, value in figures.items():
        print(f"  {key:<24} {value}")
    speedup = ORIGINAL_SECONDS / wall
    print(f"end to end {wall:.1f} s: {speedup:.2f}x the original project's {ORIGINAL_SECONDS} s (target <= "
          f"{TARGET_SECONDS:.0f} s, 3x)")  # fmt: skip
    print(json.dumps({"benchmark": "train_command", "epochs": args.epochs, **figures, "data": stats,
                      "speedup_over_original": round(speedup, 2), "load_average": round(load, 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
