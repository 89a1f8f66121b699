"""Full-softmax cross-entropy training steps on CPU: before/after the fused loss, against their compute bound.

Setting: as ``bench_models.py`` (the scale-1 big-matrix shape of ``bench_train.py``: 7,176 users, 10,728
items, every window full; maxlen 200, batch 128, each model's preset), for the three models trained with
full cross-entropy (SASRec ``ce``, BERT4Rec on its masked positions, GRU4Rec). One training step is the
shared loop's ``_batch_loss``, backward and an Adam step. Three steps per model, on the same batches:

* ``before``: the loss as it was until this benchmark was added (kept below as ``_RecomputingCrossEntropy``:
  forward keeps each row's log-sum-exp, backward recomputes the logits in chunks of ``ce_chunk_size`` rows);
* ``after``: the package's :func:`~sasrec.training.losses.chunked_cross_entropy` (gradients formed in the
  forward pass, cache-sized chunks: three matrix products over the loss positions, nothing recomputed);
* ``rest``: the same step with the loss replaced by a fixed linear function of the loss positions' hidden
  states (what the model costs without the logits: embeddings, layers, backward through them, Adam).

The compute bound of a step is ``rest`` plus the time of the logits' three matrix products at the measured
matrix-product throughput of this machine: forward ``(N, d) x (d, I+1)``, then ``(N, I+1) x (I+1, d)`` and
``(I+1, N) x (N, d)`` for the two gradients, 2 N d (I+1) FLOPs each, N the loss positions of the batch,
timed here with the same shapes, the same chunking and the same thread count. Figures are medians over
``--batches`` timed batches after ``--warmup`` untimed ones; the machine is shared, so treat them as +-20%.

Run: ``.venv/bin/python benchmarks/bench_ce.py [--threads 2] [--batches 3]`` (about 2 minutes on the 2-core
CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_train import NUM_ITEMS, NUM_USERS, synthetic_prepared  # noqa: E402

from sasrec.data.contracts import PreparedData  # noqa: E402
from sasrec.models.base import build_model  # noqa: E402
from sasrec.training import loop as train_module  # noqa: E402
from sasrec.training.config import TrainConfig  # noqa: E402
from sasrec.training.losses import chunk_rows  # noqa: E402
from sasrec.training.negatives import NegativeSampler  # noqa: E402
from sasrec.training.sequences import training_sequences  # noqa: E402

BATCH, MAXLEN = 128, 200
#: variant -> model (each with its preset: SASRec with loss ce, BERT4Rec and GRU4Rec as preset)
VARIANTS: dict[str, tuple[str, dict]] = {
    "sasrec_ce": ("sasrec", {"loss": "ce"}),
    "bert4rec_ce": ("bert4rec", {}),
    "gru4rec_ce": ("gru4rec", {}),
}


class _RecomputingCrossEntropy(torch.autograd.Function):
    """The loss before: forward keeps each row's log-sum-exp, backward recomputes the logits chunk by chunk."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
        row_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n = hidden.shape[0]
        lse = torch.empty(n, dtype=hidden.dtype)
        target_logits = (hidden * weight[targets]).sum(-1)  # (N,)
        for start in range(0, n, chunk_size):
            logits = hidden[start : start + chunk_size] @ weight.T  # (c, I+1)
            logits[:, 0] = float("-inf")
            lse[start : start + chunk_size] = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size, ctx.row_weight = chunk_size, row_weight
        terms = lse - target_logits if row_weight is None else (lse - target_logits) * row_weight
        return terms.sum() / max(n, 1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, targets, lse = ctx.saved_tensors
        n, chunk_size = hidden.shape[0], ctx.chunk_size
        scale = grad_out / max(n, 1)
        grad_hidden, grad_weight = torch.empty_like(hidden), torch.zeros_like(weight)
        for start in range(0, n, chunk_size):
            h = hidden[start : start + chunk_size]  # (c, d)
            logits = h @ weight.T  # (c, I+1)
            logits[:, 0] = float("-inf")
            probs = torch.exp(logits - lse[start : start + chunk_size, None])  # (c, I+1)
            probs[torch.arange(h.shape[0]), targets[start : start + chunk_size]] -= 1.0
            if ctx.row_weight is not None:
                probs *= (scale * ctx.row_weight[start : start + chunk_size])[:, None]
            else:
                probs *= scale
            grad_hidden[start : start + chunk_size] = probs @ weight  # (c, d)
            grad_weight.addmm_(probs.T, h)  # (I+1, d)
        return grad_hidden, grad_weight, None, None, None


def _before_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 2048,
    position_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss before, called as the loop calls :func:`~sasrec.training.losses.chunked_cross_entropy`."""
    return _RecomputingCrossEntropy.apply(hidden, weight, targets, int(chunk_size), position_weight)


def _rest_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 2048,
    position_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """A linear stand-in for the loss: dense gradients into the hidden states and the item table, no logits."""
    probe = torch.linspace(-1.0, 1.0, hidden.shape[1])  # (d,)
    return (hidden @ probe).mean() + weight.sum() * 1e-6


@contextmanager
def _loss(function: Callable | None) -> Iterator[None]:
    """Replace the loop's cross-entropy by ``function`` (None: the package's own) for the block."""
    original = train_module.chunked_cross_entropy
    train_module.chunked_cross_entropy = function or original
    try:
        yield
    finally:
        train_module.chunked_cross_entropy = original


LOSSES: dict[str, Callable | None] = {"before": _before_loss, "after": None, "rest": _rest_loss}


def time_variant(variant: str, data: PreparedData, batches: int, warmup: int) -> dict:
    """Median ms of each of :data:`LOSSES`' steps and of the logits' matrix products, taken in turn per batch.

    Every round runs the three steps on the same batch, then the matrix products, so that the load of the shared
    machine falls on all of them alike; the first ``warmup`` rounds are not timed.
    """
    name, values = VARIANTS[variant]
    config = TrainConfig.for_model(name, dataset="synthetic_big", device="cpu", progress=False,
                                   maxlen=MAXLEN, batch_size=BATCH, **values)  # fmt: skip
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    sampler = NegativeSampler(data, np.ones(len(data.events), dtype=bool), device=torch.device("cpu"),
                              generator=generator)  # fmt: skip
    seqs = training_sequences(data, "temporal", MAXLEN)
    users, inputs, targets, window = (
        torch.from_numpy(a) for a in (seqs.users, seqs.inputs, seqs.targets, seqs.window)
    )
    model = build_model(name, NUM_ITEMS, **config.to_dict()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    order = torch.randperm(len(users), generator=torch.Generator().manual_seed(1)).split(BATCH)
    check = torch.Generator().manual_seed(0)  # loss positions of the timed batches (BERT4Rec: fresh masks)
    n = round(statistics.mean(
        int((model.training_batch(inputs[rows], targets[rows], window[rows], check)[1] != 0).sum())
        for rows in order[:batches]
    ))  # fmt: skip
    classes = NUM_ITEMS + 1
    rows_per_chunk = chunk_rows(config.ce_chunk_size, classes, torch.float32, torch.device("cpu"))
    times: dict[str, list[float]] = {key: [] for key in (*LOSSES, "matmul")}
    for step in range(warmup + batches):
        rows = order[step]
        for key, loss in LOSSES.items():
            with _loss(loss):
                started = time.perf_counter()
                value = train_module._batch_loss(model, sampler, users[rows], inputs[rows], targets[rows],
                                                 window[rows], config, 1.0)  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                optimizer.step()
                float(value.detach())
                elapsed = time.perf_counter() - started
            if step >= warmup:
                times[key].append(elapsed)
        seconds = matmul_seconds(n, config.hidden_units, classes, rows_per_chunk, repeats=1)
        if step >= warmup:
            times["matmul"].append(seconds)
    ms = {key: round(statistics.median(values) * 1000, 1) for key, values in times.items()}
    fastest = {key: min(values) * 1000 for key, values in times.items()}
    flops = 3 * 2 * n * config.hidden_units * classes
    bound = ms["rest"] + ms["matmul"]
    return {"hidden_units": config.hidden_units, "loss_positions": n, "classes": classes,
            "chunk_rows": rows_per_chunk, "before_ms": ms["before"], "after_ms": ms["after"], "rest_ms": ms["rest"],
            "after_ms_min": round(min(times["after"]) * 1000, 1), "logits_gflop": round(flops / 1e9, 1),
            "matmul_ms": ms["matmul"], "matmul_gflops": round(flops / ms["matmul"] / 1e6, 1),
            "bound_ms": round(bound, 1), "after_over_bound": round(ms["after"] / bound, 2),
            "before_over_bound": round(ms["before"] / bound, 2), "speedup": round(ms["before"] / ms["after"], 2),
            "after_over_bound_fastest": round(fastest["after"] / (fastest["rest"] + fastest["matmul"]), 2)}  # fmt: skip


def matmul_seconds(n: int, d: int, classes: int, rows: int, repeats: int = 3) -> float:
    """Fastest time of the logits' three matrix products over ``n`` rows in chunks of ``rows`` (out= buffers)."""
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(n, d, generator=g), torch.randn(classes, d, generator=g)  # (N, d), (I+1, d)
    logits, grad_hidden, grad_weight = torch.empty(rows, classes), torch.empty(n, d), torch.zeros(classes, d)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for start in range(0, n, rows):
            h = hidden[start : start + rows]  # (c, d)
            chunk = logits[: h.shape[0]]  # (c, I+1)
            torch.mm(h, weight.T, out=chunk)
            torch.mm(chunk, weight, out=grad_hidden[start : start + rows])
            grad_weight.addmm_(chunk.T, h)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (the bound is measured with as many)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    data = synthetic_prepared()
    print(f"Full-softmax CE steps on CPU ({args.threads} threads): users {NUM_USERS}, items {NUM_ITEMS}, batch {BATCH}, "
          f"maxlen {MAXLEN}; {args.warmup} warm-up + {args.batches} timed batches each", flush=True)  # fmt: skip
    figures: dict[str, dict] = {}
    for variant in args.variants.split(","):
        figures[variant] = fig = time_variant(variant, data, args.batches, args.warmup)
        print(f"  {variant:<12} N {fig['loss_positions']:>6,}  before {fig['before_ms']:7.1f} ms  after {fig['after_ms']:7.1f} ms  "
              f"rest {fig['rest_ms']:6.1f} ms  matmuls {fig['matmul_ms']:6.1f} ms ({fig['matmul_gflops']} GFLOP/s)  "
              f"bound {fig['bound_ms']:7.1f} ms  after/bound {fig['after_over_bound']}x", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s")
    load = os.getloadavg()[0]
    print(json.dumps({"benchmark": "ce", "load_average": [round(load_before, 2), round(load, 2)], "threads": args.threads, "batch": BATCH, "maxlen": MAXLEN,
                      "items": NUM_ITEMS, "variants": figures}))  # fmt: skip


if __name__ == "__main__":
    main()
