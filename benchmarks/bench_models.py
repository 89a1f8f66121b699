"""Training throughput of every sequential model on CPU, each with its preset loss.

Setting: KuaiRec big-matrix size (7,176 users, 10,728 items, the synthetic sequences of
``bench_train.py``), maxlen 200, batch 128, each model's :data:`~sasrec.training.config.MODEL_PRESETS`
(SASRec hidden 50 with bce and, for comparison, with full cross-entropy; gSASRec gbce with 256 negatives;
BERT4Rec hidden 64 with cross-entropy on its masked positions; GRU4Rec hidden 100 with cross-entropy).
One training step is the shared loop's ``_batch_loss``, backward and an Adam step. All variants run in one
process on the same data: ``--warmup`` untimed batches, then ``--batches`` timed ones; the figure is
sequence positions (batch x maxlen) per second from the median batch time, and the number of positions
that carry a loss term per batch (every non-padding position for the causal models, the masked ones for
BERT4Rec).

Run: ``.venv/bin/python benchmarks/bench_models.py`` (about 2-3 minutes on the 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
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
from sasrec.training.losses import gbce_beta  # noqa: E402
from sasrec.training.negatives import NegativeSampler  # noqa: E402
from sasrec.training.sequences import training_sequences  # noqa: E402

BATCH, MAXLEN = 128, 200
#: variant -> (model, explicit configuration values over its preset)
VARIANTS: dict[str, tuple[str, dict]] = {
    "sasrec_bce": ("sasrec", {"loss": "bce"}),
    "sasrec_ce": ("sasrec", {"loss": "ce"}),
    "gsasrec_gbce": ("gsasrec", {}),
    "bert4rec_ce": ("bert4rec", {}),
    "gru4rec_ce": ("gru4rec", {}),
}


def run_variant(variant: str, data: PreparedData, batches: int, warmup: int) -> dict[str, float]:
    """Time ``warmup + batches`` training steps of ``variant``; return its figures."""
    name, values = VARIANTS[variant]
    config = TrainConfig.for_model(name, dataset="synthetic_big", device="cpu", progress=False,
                                   maxlen=MAXLEN, batch_size=BATCH, **values)  # fmt: skip
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    train_mask = np.ones(len(data.events), dtype=bool)
    sampler = NegativeSampler(data, train_mask, device=torch.device("cpu"), generator=generator)
    seqs = training_sequences(data, "temporal", MAXLEN)
    users_t, inputs_t, targets_t, window_t = (
        torch.from_numpy(a) for a in (seqs.users, seqs.inputs, seqs.targets, seqs.window)
    )
    model = build_model(name, NUM_ITEMS, **config.to_dict()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    beta = gbce_beta(config.num_negatives, NUM_ITEMS, config.gbce_t)
    order = torch.randperm(len(users_t), generator=torch.Generator().manual_seed(1)).split(BATCH)
    times, loss_positions = [], []
    for step in range(warmup + batches):
        rows = order[step]
        started = time.perf_counter()
        loss = train_module._batch_loss(
            model, sampler, users_t[rows], inputs_t[rows], targets_t[rows], window_t[rows], config, beta
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss.detach())
        if step >= warmup:
            times.append(time.perf_counter() - started)
    # loss positions of the timed batches: the targets, or for BERT4Rec fresh masks drawn at the same rate
    check = torch.Generator().manual_seed(0)
    for rows in order[: warmup + batches]:
        _, targets = model.training_batch(inputs_t[rows], targets_t[rows], window_t[rows], check)
        loss_positions.append(int((targets != 0).sum()))
    median = statistics.median(times)
    return {
        "hidden_units": config.hidden_units,
        "loss": config.loss,
        "ms_per_batch_median": round(median * 1000, 1),
        "ms_per_batch_min": round(min(times) * 1000, 1),
        "positions_per_s": round(BATCH * MAXLEN / median),
        "loss_positions_per_batch": round(statistics.mean(loss_positions[warmup:])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    data = synthetic_prepared()
    print(f"Training throughput per model on CPU ({torch.get_num_threads()} threads): users {NUM_USERS}, "
          f"items {NUM_ITEMS}, batch {BATCH}, maxlen {MAXLEN}, presets; {args.warmup} warm-up + "
          f"{args.batches} timed batches per variant (data built in {time.perf_counter() - started:.1f} s)",
          flush=True)  # fmt: skip
    figures: dict[str, dict[str, float]] = {}
    for variant in args.variants.split(","):
        figures[variant] = fig = run_variant(variant, data, args.batches, args.warmup)
        print(f"  {variant:<14} hidden {fig['hidden_units']:>3}  median {fig['ms_per_batch_median']:8.1f} ms/batch"
              f"  min {fig['ms_per_batch_min']:8.1f}  {fig['positions_per_s']:9,} positions/s"
              f"  ({fig['loss_positions_per_batch']:,} loss positions per batch)", flush=True)  # fmt: skip
    print(f"total {time.perf_counter() - started:.0f} s")
    print(json.dumps({"benchmark": "models", **figures}))


if __name__ == "__main__":
    main()
