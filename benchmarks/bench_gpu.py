"""Training and full-ranking throughput on the training device: fp32 vs bf16, one process vs DDP.

Setting: a scale-1 big matrix (7,176 users x 10,728 items, the synthetic sequences of ``bench_train.py``:
250..1,750 events per user, so every training row fills maxlen), maxlen 200, batch 128 per process, each
model's :data:`~sasrec.training.config.MODEL_PRESETS` (SASRec: hidden 50, 2 blocks, 1 head, dropout 0.2,
bce). Training is the package's own loop (``build_run``, then ``run_epoch`` over the epoch's first
batches), each batch timed from one optimizer step to the next (the device synchronised at each step);
figures are sequence positions per second (processes x batch x maxlen / median step time). Evaluation is
the full-ranking protocol of ``bench_eval.py`` (history masked, top 10 of all items) through
:class:`~sasrec.evaluation.scorers.SequentialScorer`, in users per second.

Variants, with the device ``auto`` picks (cuda, then cpu):

* CUDA: fp32 and bf16 (``TrainConfig.amp``: ``torch.autocast("cuda", dtype=torch.bfloat16)`` around each
  training batch; ``SequentialScorer(amp=True)`` for evaluation), 1 process, then DDP over every visible
  GPU (``torch.multiprocessing`` spawn, ``nccl``, one GPU per process, the loop's own DDP path) when there
  are at least two; every model preset by default.
* CPU (no GPU visible; the study's 2-core machines): a line says so; fp32 only (autocast is CUDA-only in the
  loop), SASRec only by default (the cross-entropy presets cost seconds per batch on CPU, see
  ``bench_models.py``), 1 process with torch's threads, then DDP with ``gloo`` over 2 processes of one
  thread each; evaluation of ``--cpu_eval_users`` users.

Run: ``.venv/bin/python benchmarks/bench_gpu.py [--models sasrec,bert4rec] [--batches 20]`` (about 2 minutes
on the 2-core CPU).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval import synthetic_task  # noqa: E402
from bench_train import NUM_ITEMS, NUM_USERS, synthetic_prepared  # noqa: E402

from sasrec.evaluation.protocol import evaluate  # noqa: E402
from sasrec.evaluation.scorers import SequentialScorer  # noqa: E402
from sasrec.training import loop  # noqa: E402
from sasrec.training.config import TrainConfig, resolve_device  # noqa: E402
from sasrec.training.distributed import SINGLE, DistContext, init_process_group, shutdown  # noqa: E402

BATCH, MAXLEN = 128, 200
ALL_MODELS = ("sasrec", "gsasrec", "bert4rec", "gru4rec")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache
def _data() -> Any:
    """The synthetic big matrix, built once per process."""
    return synthetic_prepared()


def train_step_times(
    model: str, device: str, amp: bool, batches: int, warmup: int, context: DistContext = SINGLE
) -> list[float]:
    """Seconds per training step of ``model`` on ``device`` (this process's shard of the first batches)."""
    data = _data()
    config = TrainConfig.for_model(model, dataset="synthetic_big", device=device, progress=False, maxlen=MAXLEN,
                                   batch_size=BATCH, amp=amp)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        run = loop.build_run(
            data,
            config,
            mask=loop.fit_mask(data, config),
            validate=False,
            folder=Path(folder),
            context=context,
        )
    shard = loop.epoch_shard
    loop.epoch_shard = lambda *args: shard(*args)[: (warmup + batches) * BATCH]  # type: ignore[assignment]
    ends: list[float] = []

    def step_done(*_: Any) -> None:
        _synchronize(run.device)
        ends.append(time.perf_counter())

    run.optimizer.register_step_post_hook(step_done)
    _synchronize(run.device)
    started = time.perf_counter()
    try:
        loop.run_epoch(run, 1)
    finally:
        loop.epoch_shard = shard  # type: ignore[assignment]
    times = np.diff([started, *ends])  # (steps,) a shard of many processes may hold fewer than asked
    return times[min(warmup, len(times) - 1) :].tolist()


def eval_users_per_s(device: str, amp: bool, users: int, repeats: int = 2) -> dict[str, float]:
    """Full-ranking evaluation of ``users`` big-matrix users (SASRec preset): best of ``repeats`` passes."""
    from sasrec.models.sasrec import SASRec

    task = synthetic_task()
    if users < len(task):
        task = task.subset(np.arange(users))
    torch.manual_seed(0)
    model = SASRec(NUM_ITEMS, hidden_units=50, num_blocks=2, num_heads=1, maxlen=MAXLEN).to(device).eval()
    best = float("inf")
    for _ in range(repeats):
        scorer = SequentialScorer(model, batch_size=512, device=device, amp=amp)
        _synchronize(torch.device(device))
        started = time.perf_counter()
        evaluate(scorer, task, k=10, protocol="full", batch_size=512, progress=False)
        _synchronize(torch.device(device))
        best = min(best, time.perf_counter() - started)
    return {"users": len(task), "seconds": round(best, 2), "users_per_s": round(len(task) / best)}


def _ddp_worker(
    rank: int, world: int, port: int, model: str, backend_device: str, amp: bool, batches: int, warmup: int,
    threads: int | None, out: str,
) -> None:  # fmt: skip
    """One DDP process: joins the group, times its steps; rank 0 writes the times."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})  # fmt: skip
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda", rank) if backend_device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    context = init_process_group(device, DistContext(rank=rank, world_size=world, local_rank=rank))
    try:
        times = train_step_times(model, str(device), amp, batches, warmup, context)
        if rank == 0:
            Path(out).write_text(json.dumps(times))
    finally:
        shutdown(context)


def ddp_step_times(
    model: str, device_type: str, world: int, amp: bool, batches: int, warmup: int, threads: int | None
) -> list[float]:
    """Step times of rank 0 in a ``world``-process DDP run (``nccl`` on CUDA, ``gloo`` on CPU)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        mp.spawn(_ddp_worker, args=(world, port, model, device_type, amp, batches, warmup, threads, str(out)),
                 nprocs=world, join=True)  # fmt: skip
        return json.loads(out.read_text())


def figures(times: list[float], processes: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "processes": processes,
        "ms_per_step_median": round(median * 1000, 1),
        "ms_per_step_min": round(min(times) * 1000, 1),
        "positions_per_s": round(processes * BATCH * MAXLEN / median),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (cuda, then cpu), cuda or cpu")
    parser.add_argument(
        "--models", default=None, help="comma-separated presets (default: all on CUDA, sasrec on CPU)"
    )
    parser.add_argument(
        "--batches", type=int, default=None, help="timed steps (default 20 on CUDA, 5 on CPU)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps (default 5 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--cpu_eval_users", type=int, default=2048)
    parser.add_argument("--no_ddp", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        gpus = torch.cuda.device_count()
        print(
            f"device: {gpus} CUDA GPU(s) visible, {torch.cuda.get_device_name(device)}; torch {torch.__version__}"
        )
    else:
        gpus = 0
        print(f"NO GPU AVAILABLE (torch.cuda.is_available() is False): CPU figures only, fp32, "
              f"{torch.get_num_threads()} threads; the bf16 and multi-GPU DDP variants need CUDA", flush=True)  # fmt: skip
    models = args.models.split(",") if args.models else list(ALL_MODELS if cuda else ("sasrec",))
    batches = args.batches or (20 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    precisions = ("fp32", "bf16") if cuda else ("fp32",)
    print(f"users {NUM_USERS}, items {NUM_ITEMS}, maxlen {MAXLEN}, batch {BATCH} per process, presets {models}; "
          f"{warmup} warm-up + {batches} timed steps", flush=True)  # fmt: skip
    results: dict[str, Any] = {
        "device": "cuda" if cuda else "cpu",
        "gpus": gpus,
        "training": {},
        "evaluation": {},
    }
    started = time.perf_counter()
    for model in models:
        for precision in precisions:
            amp = precision == "bf16"
            fig = figures(train_step_times(model, str(device), amp, batches, warmup), 1)
            results["training"][f"{model}_{precision}_1proc"] = fig
            print(f"  train {model:<9} {precision} 1 process   {fig['ms_per_step_median']:8.1f} ms/step  "
                  f"{fig['positions_per_s']:>10,} positions/s", flush=True)  # fmt: skip
            world = gpus if cuda else 2
            if args.no_ddp or world < 2:
                if not args.no_ddp:
                    print(f"  DDP skipped: {world} GPU visible (needs at least 2)")
                continue
            times = ddp_step_times(
                model, device.type, world, amp, batches, warmup, threads=None if cuda else 1
            )
            fig = figures(times, world)
            backend = "nccl" if cuda else "gloo, 1 thread each"
            results["training"][f"{model}_{precision}_ddp{world}"] = fig
            print(f"  train {model:<9} {precision} DDP x{world} ({backend}) {fig['ms_per_step_median']:8.1f} "
                  f"ms/step  {fig['positions_per_s']:>10,} positions/s", flush=True)  # fmt: skip
    eval_users = NUM_USERS if cuda else min(args.cpu_eval_users, NUM_USERS)
    for precision in precisions:
        fig = eval_users_per_s(str(device), precision == "bf16", eval_users)
        results["evaluation"][f"sasrec_{precision}"] = fig
        print(f"  evaluate sasrec {precision}: {fig['users']} users in {fig['seconds']} s, "
              f"{fig['users_per_s']:,} users/s (full ranking of {NUM_ITEMS} items)", flush=True)  # fmt: skip
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"benchmark": "gpu", **results}))


if __name__ == "__main__":
    main()
