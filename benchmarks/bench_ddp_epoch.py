"""Per-epoch training time of a real-size profile's model with 1 and 2 torchrun processes on the CPU.

Setting: the model ``sasrec_bce`` of ``params/real/05_cross_dataset.yaml`` (the real-size profile's big-matrix
training: 7,176 users x 10,728 videos at simulator scale 1.0, or the real archive in data/raw; maxlen 50,
batch 128 per process, hidden 50, 2 blocks), written as a ``train --config`` file by
``python -m sasrec report train-config`` exactly as ``make train-ddp DDP_PROFILE=real`` does, then trained
for ``--epochs`` epochs (no early stopping) by ``torchrun --standalone --nproc_per_node=N -m sasrec train``
with N = 1 (torch's own threads) and N = 2 (``gloo``; DistributedDataParallel, one thread per process). The
figures are the epochs' own seconds from the run's ``--metrics_json`` log (rank 0's clock; the median of the
epochs after the first) and the whole command's wall time, which adds start-up, preparation and
validation. The profile's data are simulated first when missing (about 45 s).

Run: ``.venv/bin/python benchmarks/bench_ddp_epoch.py [--epochs 3] [--processes 1,2]`` (about 4 minutes on
the 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sasrec.study.profiles import profile_train_config  # noqa: E402


def run_once(config: dict, processes: int, epochs: int, folder: Path) -> dict[str, float]:
    """Train with ``processes`` torchrun processes; per-epoch seconds and the command's wall time."""
    config_file = folder / f"config{processes}.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    metrics = folder / f"metrics{processes}.json"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [torchrun, "--standalone", f"--nproc_per_node={processes}", "-m", "sasrec", "train",
               f"--config={config_file}", f"--train_dir=bench_ddp_{processes}", f"--num_epochs={epochs}",
               "--patience=0", "--device=cpu", "--progress=false", f"--metrics_json={metrics}"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    payload = json.loads(metrics.read_text())
    shutil.rmtree(Path(payload["checkpoint"]).parent, ignore_errors=True)  # models/<dataset>_bench_ddp_<N>
    log = payload["log"]
    seconds = [row["seconds"] for row in log]
    steady = seconds[1:] or seconds
    return {"processes": processes, "epochs": len(seconds), "epoch_seconds": [round(s, 1) for s in seconds],
            "epoch_seconds_median": round(statistics.median(steady), 1), "command_wall_s": round(wall, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="real")
    parser.add_argument("--notebook", default="05_cross_dataset")
    parser.add_argument("--model", default="sasrec_bce")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    config = profile_train_config(args.profile, args.notebook, args.model)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
        for processes in map(int, args.processes.split(",")):
            runs[str(processes)] = run_once(config, processes, args.epochs, Path(tmp))
            print(runs[str(processes)], flush=True)
    one, two = runs.get("1"), runs.get("2")
    speedup = round(one["epoch_seconds_median"] / two["epoch_seconds_median"], 2) if one and two else None
    print(json.dumps({"profile": args.profile, "notebook": args.notebook, "model": args.model,
                      "dataset": config["dataset"], "maxlen": config["maxlen"], "batch_size": config["batch_size"],
                      "runs": runs, "speedup_2_over_1": speedup}))  # fmt: skip


if __name__ == "__main__":
    main()
