"""Training cost of side features: a feature-aware SASRec epoch (``features: all``) against the id-only one.

Setting: the simulator's scale-0.2 big matrix (``data/bench/feature_models/sim_0.2``, simulated once; every
side file: tags, captions and categories, item_daily, user features), prepared once and its feature table
built once into the cache beside it (neither timed). ``--data-dir`` names another KuaiRec-shaped folder
(``data/simulated_real`` is the scale-1 simulated data; it lacks captions and item_daily, so ``all`` then
uses tags and user features only). SASRec with its defaults (hidden 50, 2 blocks, maxlen 200, batch 128,
bce), the split's training events, CPU.

Each variant runs in its own child process, so that each has its own peak memory: load the prepared data,
:func:`~sasrec.training.loop.build_run` (model, optimizer, sequences, sampler; the features from the cache),
then ``--epochs`` timed epochs of :func:`~sasrec.training.loop.run_epoch`. The variants alternate over
``--repeats`` rounds (ids, features, ids, features, ...) so that the load of the shared machine falls on
both alike. Figures: median wall and CPU (all threads) seconds per epoch (on a shared machine the wall
time follows the other processes' load, the CPU time much less); the process's peak resident memory (``VmHWM``, data
included) and its rise over the memory before ``build_run``. Variants: ``ids`` (``features: none``, the
default model), ``features_all`` (id embeddings + every available group), ``content_only`` (``all`` with
``id_embedding: false``). Target: ``features_all`` within 1.5x of ``ids`` in epoch time (wall, or CPU
time where the machine is shared) and peak memory.

Run: ``nice -n 19 .venv/bin/python benchmarks/bench_feature_models.py [--repeats 2] [--epochs 1] [--threads 1]``
(``--threads 1`` makes the CPU times of a shared machine comparable: two threads contending with other
processes inflate both variants' CPU time unevenly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sasrec import paths  # noqa: E402

TARGET_RATIO = 1.5
SCALE = 0.2
#: variant -> TrainConfig values
VARIANTS: dict[str, dict[str, Any]] = {
    "ids": {"features": "none"},
    "features_all": {"features": "all"},
    "content_only": {"features": "all", "id_embedding": False},
}


def bench_folder() -> Path:
    """Simulated input, prepared data and its feature cache, kept between runs (ignored ``data/``)."""
    return paths.data_dir() / "bench" / "feature_models"


def _rss_gb(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak) of this process in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    """One variant: load, build the run, time ``args.epochs`` epochs; print one JSON line."""
    os.environ["SASREC_PROGRESS"] = "0"
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from sasrec.data.preparation.pipeline import load_prepared
    from sasrec.study.resources import reset_peak_rss
    from sasrec.training.config import TrainConfig
    from sasrec.training.loop import build_run, fit_mask, run_epoch

    data = load_prepared("big_matrix", data_dir=args.data_dir, out_dir=args.prepared)
    config = TrainConfig(dataset="big_matrix", device="cpu", progress=False, **VARIANTS[args.variant])
    rss_before = _rss_gb("VmRSS")
    reset_peak_rss()
    started = time.perf_counter()
    run = build_run(data, config, mask=fit_mask(data, config), validate=False, folder=args.scratch)
    build_s = time.perf_counter() - started
    seconds, cpu_seconds = [], []
    for epoch in range(1, args.epochs + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        run_epoch(run, epoch)
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    fusion = run.model.feature_fusion
    print(json.dumps({
        "variant": args.variant,
        "epoch_s": [round(s, 2) for s in seconds],
        "epoch_cpu_s": [round(s, 2) for s in cpu_seconds],
        "build_run_s": round(build_s, 2),
        "rss_before_gb": round(rss_before, 3),
        "peak_rss_gb": round(_rss_gb("VmHWM"), 3),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "groups": list(run.features.groups) if run.features is not None else [],
        "feature_buffers_mb": round(sum(b.numel() * b.element_size() for b in fusion.buffers()) / 1e6, 2)
        if fusion is not None else 0.0,
        "threads": torch.get_num_threads(),
        "users": data.num_users, "items": data.num_items, "events": len(data.events),
    }))  # fmt: skip


def ensure_data(data_dir: Path | None, folder: Path) -> tuple[Path, Path, str]:
    """(input folder, prepared folder, how): simulate scale 0.2 once unless given; prepare and cache features."""
    from sasrec.data.features.cache import cached_feature_table
    from sasrec.data.preparation.pipeline import load_prepared

    how = "given"
    if data_dir is None:
        data_dir = folder / f"sim_{SCALE}"
        how = f"simulated scale {SCALE}"
        if not (data_dir / "big_matrix.csv").is_file():
            from sasrec.data.simulator.api import simulate

            started = time.perf_counter()
            simulate(scale=SCALE, seed=0, out_dir=data_dir, progress=False)
            print(f"  simulated scale {SCALE} in {time.perf_counter() - started:.1f} s", flush=True)
    prepared = folder / "prepared" / f"big_matrix_{data_dir.name}"
    started = time.perf_counter()
    data = load_prepared("big_matrix", data_dir=data_dir, out_dir=prepared)
    table = cached_feature_table(data, "temporal")
    print(f"  prepared data and feature table ready in {time.perf_counter() - started:.1f} s "
          f"(groups {', '.join(table.groups_available)}; unavailable {', '.join(table.unavailable) or 'none'})",
          flush=True)  # fmt: skip
    return data_dir, prepared, how


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="KuaiRec-shaped folder (default: scale 0.2)"
    )
    parser.add_argument("--repeats", type=int, default=2, help="rounds of all variants")
    parser.add_argument("--epochs", type=int, default=1, help="timed epochs per variant and round")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per variant (0: torch's default)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    os.environ.setdefault("SASREC_PROGRESS", "0")
    folder = bench_folder()
    data_dir, prepared, how = ensure_data(args.data_dir.resolve() if args.data_dir else None, folder)
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in args.variants}
    for round_index in range(args.repeats):
        for variant in args.variants:
            load = os.getloadavg()[0]
            command = [sys.executable, __file__, "--worker", "--variant", variant, "--data-dir", str(data_dir),
                       "--prepared", str(prepared), "--scratch", str(folder / "scratch"),
                       "--epochs", str(args.epochs), "--threads", str(args.threads)]  # fmt: skip
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise SystemExit(f"{variant} failed:\n{completed.stderr[-4000:]}")
            row = json.loads(completed.stdout.strip().splitlines()[-1])
            row["load_before"] = round(load, 2)
            results[variant].append(row)
            print(f"  round {round_index + 1} {variant}: epoch {row['epoch_s']} s, peak {row['peak_rss_gb']:.2f} GB "
                  f"(load {load:.1f})", flush=True)  # fmt: skip
    figures: dict[str, Any] = {}
    for variant, rows in results.items():
        epochs = [s for row in rows for s in row["epoch_s"]]
        cpu = [s for row in rows for s in row["epoch_cpu_s"]]
        figures[variant] = {
            "epoch_s_median": round(statistics.median(epochs), 2),
            "epoch_s_min": round(min(epochs), 2),
            "epoch_cpu_s_median": round(statistics.median(cpu), 2),
            "peak_rss_gb": round(statistics.median(r["peak_rss_gb"] for r in rows), 3),
            "rise_gb": round(statistics.median(r["peak_rss_gb"] - r["rss_before_gb"] for r in rows), 3),
            "parameters": rows[0]["parameters"],
            "groups": rows[0]["groups"],
            "feature_buffers_mb": rows[0]["feature_buffers_mb"],
            "load_before": [r["load_before"] for r in rows],
        }
    first = next(iter(results.values()))[0]
    summary: dict[str, Any] = {"benchmark": "feature_models", "input": how, "data_dir": str(data_dir),
                               "users": first["users"], "items": first["items"], "events": first["events"],
                               "threads": first["threads"], "variants": figures, "target_ratio": TARGET_RATIO}  # fmt: skip
    base = figures.get("ids")
    for variant in figures:
        if variant == "ids" or base is None:
            continue
        time_ratio = figures[variant]["epoch_s_median"] / base["epoch_s_median"]
        cpu_ratio = figures[variant]["epoch_cpu_s_median"] / base["epoch_cpu_s_median"]
        memory_ratio = figures[variant]["peak_rss_gb"] / base["peak_rss_gb"]
        summary[f"{variant}_time_ratio"] = round(time_ratio, 3)
        summary[f"{variant}_cpu_time_ratio"] = round(cpu_ratio, 3)
        summary[f"{variant}_memory_ratio"] = round(memory_ratio, 3)
        print(f"{variant}: {figures[variant]['epoch_s_median']:.1f} s per epoch ({time_ratio:.2f}x ids "
              f"{base['epoch_s_median']:.1f} s; CPU time {cpu_ratio:.2f}x), peak "
              f"{figures[variant]['peak_rss_gb']:.2f} GB ({memory_ratio:.2f}x ids {base['peak_rss_gb']:.2f} GB)",
              flush=True)  # fmt: skip
    if "features_all" in figures and base is not None:
        # wall time on a shared machine follows the other processes' load; CPU time much less so
        summary["within_target"] = (
            min(summary["features_all_time_ratio"], summary["features_all_cpu_time_ratio"]) <= TARGET_RATIO
            and summary["features_all_memory_ratio"] <= TARGET_RATIO
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
