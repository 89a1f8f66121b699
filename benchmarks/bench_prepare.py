"""Benchmark of ``sasrec.data.preparation``: a scale-1 big_matrix (about 12.5M rows) from CSV to sequences and splits.

Target (the original project's prepare_data.py took 130 s and 2.6 GB): at most 60 s wall and 6 GB peak
memory on 2 cores, text files included. Three runs, each in its own process pinned to 2 cores:

* cold: no parquet cache of the parsed CSV (the loader parses and validates the CSV, then caches it);
* warm: the parquet cache from the cold run is reused (sequences, splits and artifacts are rebuilt);
* reuse: ``load_prepared`` finds the artifacts of the warm run up to date and only reads them.

Peak memory is the worker's maximum resident set size, read by an intermediate process through
``resource.getrusage(RUSAGE_CHILDREN)``. The input is the simulator's scale-1 output under
``data/bench/simulated_scale1`` (generated once if absent); when the simulator is unavailable, a
KuaiRec-schema CSV of 12.5M rows is generated here instead.

Usage: ``.venv/bin/python benchmarks/bench_prepare.py [--data-dir DIR] [--cores 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sasrec import paths

TARGET_SECONDS = 60.0
TARGET_PEAK_GB = 6.0
BIG_MATRIX_ROWS = 12_530_806


def bench_data_dir() -> Path:
    """Default folder of the scale-1 input (ignored ``data/`` folder of the project)."""
    return paths.data_dir() / "bench" / "simulated_scale1"


def generate_plain_csv(out_dir: Path, n_rows: int = BIG_MATRIX_ROWS, seed: int = 0) -> Path:
    """Fallback input: a KuaiRec-schema big_matrix.csv with KuaiRec's sizes, time-sorted per user."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_users, n_videos = 7176, 10728
    users = np.sort(rng.integers(0, n_users, n_rows)).astype(np.int64)
    start_ms = 1_592_841_600_000 + rng.integers(0, 80 * 86_400_000, n_rows)  # 2020-06-23 + 80 days
    order = np.lexsort((start_ms, users))
    users, unix_ms = users[order], start_ms[order]
    video_duration = rng.integers(3_000, 60_000, n_rows)
    play_duration = (video_duration * rng.gamma(0.9, 1.0, n_rows)).astype(np.int64)
    local = pd.to_datetime(unix_ms, unit="ms", utc=True).tz_convert("Asia/Shanghai")
    table = pa.table(
        {
            "user_id": users,
            "video_id": rng.integers(0, n_videos, n_rows),
            "play_duration": play_duration,
            "video_duration": video_duration,
            "time": pa.array(local.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3].to_numpy(dtype=object)),
            "date": (local.year * 10_000 + local.month * 100 + local.day).to_numpy(),
            "timestamp": unix_ms / 1000.0,
            "watch_ratio": play_duration / video_duration,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "big_matrix.csv"
    with paths.atomic_path(target) as tmp:
        pacsv.write_csv(table, tmp, write_options=pacsv.WriteOptions(quoting_style="needed"))
    return target


def ensure_input(data_dir: Path) -> tuple[Path, str]:
    """Make sure ``data_dir/big_matrix.csv`` exists; returns (path, how it was made)."""
    csv_path = data_dir / "big_matrix.csv"
    if csv_path.is_file():
        return csv_path, "existing"
    started = time.perf_counter()
    try:
        from sasrec.data import simulator

        print(f"generating a scale-1 simulated KuaiRec into {data_dir} (once) ...", flush=True)
        simulator.simulate(scale=1.0, seed=0, out_dir=data_dir, progress=False)
        how = "simulator"
    except ImportError:
        print(
            f"simulator unavailable: generating a 12.5M-row KuaiRec-schema CSV into {data_dir} ...",
            flush=True,
        )
        generate_plain_csv(data_dir)
        how = "plain generator"
    print(f"  input ready in {time.perf_counter() - started:.1f} s", flush=True)
    return csv_path, how


def pin_cores(cores: int) -> list[int]:
    """Restrict this process (and its threads) to ``cores`` CPUs when the machine has more."""
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def worker(args: argparse.Namespace) -> None:
    """Run one prepare and print its figures as JSON (executed in a pinned child process)."""
    cpus = pin_cores(args.cores)
    os.environ["SASREC_ROOT"] = str(args.root)
    os.environ["SASREC_PROGRESS"] = "0"
    started = time.perf_counter()
    from sasrec.data.preparation.pipeline import load_prepared, prepare

    if args.mode == "reuse":
        data = load_prepared("big_matrix", data_dir=args.data_dir, out_dir=args.out)
        if not data.meta.get("reused"):
            raise SystemExit("load_prepared did not reuse the artifacts of the previous run")
        data.meta["timings"] = {"read_s": 0.0, "prepare_frame_s": 0.0, "write_s": 0.0}
    else:
        data = prepare(
            "big_matrix", data_dir=args.data_dir, out_dir=args.out, write_text=True, progress=False
        )
    total = time.perf_counter() - started
    counts = data.meta["counts"]
    print(
        json.dumps(
            {
                "cpus": cpus,
                "wall_s": round(total, 2),
                "read_s": data.meta["timings"]["read_s"],
                "sequences_and_splits_s": data.meta["timings"]["prepare_frame_s"],
                "write_s": data.meta["timings"]["write_s"],
                "rows_in": data.meta["cleaning"]["rows_in"],
                "events": counts["events"],
                "labels": counts["labels"],
                "users": counts["users"],
                "items": counts["items"],
                "splits": counts["splits"],
                "leakage_ok": all(check["ok"] for check in data.meta["leakage"].values()),
                "artifact_mb": round(sum(p.stat().st_size for p in Path(args.out).iterdir()) / 1e6, 1),
            }
        )
    )


def measure(args: argparse.Namespace) -> None:
    """Run the worker as a child and report its peak RSS (RUSAGE_CHILDREN) with its figures."""
    command = [sys.executable, __file__, "--worker", *args.forward]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    if completed.returncode != 0:
        print(json.dumps({"error": completed.stderr[-4000:], "returncode": completed.returncode}))
        return
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    figures.update({"process_wall_s": round(wall, 2), "peak_rss_gb": round(peak_kb * 1024 / 1e9, 3)})
    print(json.dumps(figures))


def run_measured(
    label: str, data_dir: Path, root: Path, out: Path, cores: int, mode: str = "prepare"
) -> dict[str, Any]:
    forward = ["--data-dir", str(data_dir), "--root", str(root), "--out", str(out), "--cores", str(cores)]
    forward += ["--mode", mode]
    command = [sys.executable, __file__, "--measure", "--", *forward]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    if "error" in figures:
        raise SystemExit(f"{label} run failed:\n{figures['error']}")
    within = figures["process_wall_s"] <= TARGET_SECONDS and figures["peak_rss_gb"] <= TARGET_PEAK_GB
    stages = (
        "artifacts read back by load_prepared"
        if mode == "reuse"
        else f"CSV/cache read and cleaning {figures['read_s']:.1f} s, sequences+splits+checks "
        f"{figures['sequences_and_splits_s']:.1f} s, writing {figures['write_s']:.1f} s"
    )
    print(
        f"{label:>5}: {figures['process_wall_s']:6.1f} s wall ({stages}), peak RSS {figures['peak_rss_gb']:.2f} GB "
        f"on CPUs {figures['cpus']}; {'within' if within else 'OVER'} target "
        f"({TARGET_SECONDS:.0f} s, {TARGET_PEAK_GB:.0f} GB)",
        flush=True,
    )
    figures["within_target"] = within
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding big_matrix.csv")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("prepare", "reuse"), default="prepare", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("forward", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.measure:
        measure(args)
        return

    data_dir = (args.data_dir or bench_data_dir()).resolve()
    csv_path, how = ensure_input(data_dir)
    print(f"input: {csv_path} ({csv_path.stat().st_size / 1e9:.2f} GB, {how})", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_prepare_", dir=paths.data_dir() / "bench"))
    try:
        root, out = scratch / "root", scratch / "out" / "big_matrix"
        root.mkdir(parents=True)
        cold = run_measured("cold", data_dir, root, out, args.cores)  # no parquet cache under root yet
        warm = run_measured("warm", data_dir, root, out, args.cores)  # parsed-CSV parquet cache reused
        reuse = run_measured("reuse", data_dir, root, out, args.cores, mode="reuse")  # load_prepared
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"rows in {cold['rows_in']:,}; events {cold['events']:,}; labels {cold['labels']:,}; users "
        f"{cold['users']:,}; items {cold['items']:,}; artifacts {cold['artifact_mb']} MB; leakage ok: "
        f"{cold['leakage_ok'] and warm['leakage_ok']}"
    )
    summary = {
        "benchmark": "prepare_big_matrix_scale1",
        "input": how,
        "input_gb": round(csv_path.stat().st_size / 1e9, 3),
        "rows_in": cold["rows_in"],
        "events": cold["events"],
        "cold_wall_s": cold["process_wall_s"],
        "cold_peak_rss_gb": cold["peak_rss_gb"],
        "warm_wall_s": warm["process_wall_s"],
        "warm_peak_rss_gb": warm["peak_rss_gb"],
        "cold_read_s": cold["read_s"],
        "warm_read_s": warm["read_s"],
        "cold_sequences_and_splits_s": cold["sequences_and_splits_s"],
        "warm_sequences_and_splits_s": warm["sequences_and_splits_s"],
        "cold_write_s": cold["write_s"],
        "warm_write_s": warm["write_s"],
        "reuse_wall_s": reuse["process_wall_s"],
        "reuse_peak_rss_gb": reuse["peak_rss_gb"],
        "cores": args.cores,
        "target_wall_s": TARGET_SECONDS,
        "target_peak_gb": TARGET_PEAK_GB,
        "within_target": bool(cold["within_target"] and warm["within_target"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
