"""Training throughput of SASRec on CPU: this package versus a straightforward port of the reference code.

Setting: the original defaults (hidden 50, 2 blocks, 1 head, maxlen 200, batch 128, dropout 0.2, bce with
one negative per position) on a scale-1-like big matrix (7,176 users, 10,728 items, synthetic sequences of
250..1,750 events per user: every row fills maxlen, as for most KuaiRec users). Each variant runs in its own
process (so that allocator settings of one do not leak into another): ``--warmup`` batches, then
``--batches`` timed batches; with ``--repeats R`` the variants run R rounds back to back (port, ours, ...,
port, ours, ...) so that the load of the shared machine falls on all of them alike. The figure is sequence
positions (batch x maxlen) per second from the median batch time over all rounds; the fastest batch and the
1-minute load average before each run are reported too (on the 2-core machine, another busy process makes
two-thread steps several times slower, so compare figures taken under the same load only).

The reference port (written here, after Kang & McAuley's code and its PyTorch port): a ``WarpSampler``
with 3 ``multiprocessing`` workers building each batch with per-position Python loops and rejection
sampling of negatives, feeding a queue; per-batch numpy-to-tensor copies; ``nn.MultiheadAttention`` with an
explicit causal mask; ``Conv1d`` feed-forward layers; Xavier-normal initialisation.

Ours is the package's own training loop: ``build_run`` (model, optimizer, sequences, negative sampler) and
``run_epoch`` over the epoch's first batches, each batch timed from one optimizer step to the next.
Variants: ``port`` (as the reference), ``ours`` (the defaults: reference dropout with fast masks, blocked
causal attention), ``ours_torch_dropout`` (torch's own dropout), ``ours_no_attention_dropout`` (attention
dropout 0: not the default, shows what the attention-probability dropout costs).

Run: ``.venv/bin/python benchmarks/bench_train.py [--repeats 3] [--threads 1]`` (a few minutes on the 2-core
CPU).
"""

# ruff: noqa: NPY002  (the reference port keeps the original code's legacy np.random calls)
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Process, Queue
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sasrec.data.contracts import PreparedData

NUM_USERS, NUM_ITEMS = 7176, 10728
BATCH, MAXLEN, HIDDEN, BLOCKS, HEADS, DROPOUT, LR = 128, 200, 50, 2, 1, 0.2, 0.001
VARIANTS = ("port", "ours", "ours_torch_dropout", "ours_no_attention_dropout")


def synthetic_sequences(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of per-user item sequences: 250..1,750 events, items 1..NUM_ITEMS (repeats allowed)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(250, 1751, size=NUM_USERS)
    indptr = np.zeros(NUM_USERS + 2, dtype=np.int64)  # row 0 = padding user
    np.cumsum(lengths, out=indptr[2:])
    popularity = rng.zipf(1.3, size=NUM_ITEMS).astype(np.float64)
    items = rng.choice(np.arange(1, NUM_ITEMS + 1), size=int(indptr[-1]), p=popularity / popularity.sum())
    return indptr, items.astype(np.int64)


# ------------------------------------------------------------------------------------- reference port
def random_neq(low: int, high: int, seen: set[int]) -> int:
    t = np.random.randint(low, high)
    while t in seen:
        t = np.random.randint(low, high)
    return t


def sample_function(user_train: dict[int, list[int]], usernum: int, itemnum: int, batch_size: int, maxlen: int,
                    result_queue: Queue, seed: int) -> None:  # fmt: skip
    """The reference sampler: one Python loop per position, negatives by rejection."""

    def sample() -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        user = np.random.randint(1, usernum + 1)
        while len(user_train[user]) <= 1:
            user = np.random.randint(1, usernum + 1)
        seq = np.zeros([maxlen], dtype=np.int32)
        pos = np.zeros([maxlen], dtype=np.int32)
        neg = np.zeros([maxlen], dtype=np.int32)
        nxt = user_train[user][-1]
        idx = maxlen - 1
        ts = set(user_train[user])
        for i in reversed(user_train[user][:-1]):
            seq[idx] = i
            pos[idx] = nxt
            if nxt != 0:
                neg[idx] = random_neq(1, itemnum + 1, ts)
            nxt = i
            idx -= 1
            if idx == -1:
                break
        return user, seq, pos, neg

    np.random.seed(seed)
    while True:
        one_batch = [sample() for _ in range(batch_size)]
        result_queue.put(list(zip(*one_batch, strict=True)))


class WarpSampler:
    """The reference's multiprocessing sampler (3 workers feeding a queue)."""

    def __init__(self, user_train: dict[int, list[int]], usernum: int, itemnum: int, batch_size: int,
                 maxlen: int, n_workers: int = 3) -> None:  # fmt: skip
        self.result_queue: Queue = Queue(maxsize=n_workers * 10)
        self.processors = []
        for _ in range(n_workers):
            process = Process(
                target=sample_function,
                args=(
                    user_train,
                    usernum,
                    itemnum,
                    batch_size,
                    maxlen,
                    self.result_queue,
                    np.random.randint(2e9),
                ),
            )
            process.daemon = True
            process.start()
            self.processors.append(process)

    def next_batch(self):  # noqa: ANN201
        return self.result_queue.get()

    def close(self) -> None:
        for process in self.processors:
            process.terminate()
            process.join()


class PointWiseFeedForwardPort(torch.nn.Module):
    def __init__(self, hidden_units: int, dropout_rate: float) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout1 = torch.nn.Dropout(p=dropout_rate)
        self.relu = torch.nn.ReLU()
        self.conv2 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
        self.dropout2 = torch.nn.Dropout(p=dropout_rate)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = self.dropout2(self.conv2(self.relu(self.dropout1(self.conv1(inputs.transpose(-1, -2))))))
        outputs = outputs.transpose(-1, -2)
        outputs += inputs
        return outputs


class SASRecPort(torch.nn.Module):
    """The reference PyTorch port's model (nn.MultiheadAttention with an explicit mask)."""

    def __init__(self, item_num: int) -> None:
        super().__init__()
        self.dev = "cpu"
        self.item_emb = torch.nn.Embedding(item_num + 1, HIDDEN, padding_idx=0)
        self.pos_emb = torch.nn.Embedding(MAXLEN, HIDDEN)
        self.emb_dropout = torch.nn.Dropout(p=DROPOUT)
        self.attention_layernorms = torch.nn.ModuleList()
        self.attention_layers = torch.nn.ModuleList()
        self.forward_layernorms = torch.nn.ModuleList()
        self.forward_layers = torch.nn.ModuleList()
        self.last_layernorm = torch.nn.LayerNorm(HIDDEN, eps=1e-8)
        for _ in range(BLOCKS):
            self.attention_layernorms.append(torch.nn.LayerNorm(HIDDEN, eps=1e-8))
            self.attention_layers.append(torch.nn.MultiheadAttention(HIDDEN, HEADS, DROPOUT))
            self.forward_layernorms.append(torch.nn.LayerNorm(HIDDEN, eps=1e-8))
            self.forward_layers.append(PointWiseFeedForwardPort(HIDDEN, DROPOUT))

    def log2feats(self, log_seqs: np.ndarray) -> torch.Tensor:
        seqs = self.item_emb(torch.LongTensor(log_seqs).to(self.dev))
        seqs *= self.item_emb.embedding_dim**0.5
        positions = np.tile(np.array(range(log_seqs.shape[1])), [log_seqs.shape[0], 1])
        seqs += self.pos_emb(torch.LongTensor(positions).to(self.dev))
        seqs = self.emb_dropout(seqs)
        timeline_mask = torch.BoolTensor(log_seqs == 0).to(self.dev)
        seqs *= ~timeline_mask.unsqueeze(-1)
        tl = seqs.shape[1]
        attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool, device=self.dev))
        for i in range(len(self.attention_layers)):
            seqs = torch.transpose(seqs, 0, 1)
            q = self.attention_layernorms[i](seqs)
            mha_outputs, _ = self.attention_layers[i](q, seqs, seqs, attn_mask=attention_mask)
            seqs = q + mha_outputs
            seqs = torch.transpose(seqs, 0, 1)
            seqs = self.forward_layernorms[i](seqs)
            seqs = self.forward_layers[i](seqs)
            seqs *= ~timeline_mask.unsqueeze(-1)
        return self.last_layernorm(seqs)

    def forward(self, user_ids, log_seqs, pos_seqs, neg_seqs):  # noqa: ANN001, ANN201
        log_feats = self.log2feats(log_seqs)
        pos_embs = self.item_emb(torch.LongTensor(pos_seqs).to(self.dev))
        neg_embs = self.item_emb(torch.LongTensor(neg_seqs).to(self.dev))
        return (log_feats * pos_embs).sum(dim=-1), (log_feats * neg_embs).sum(dim=-1)


def run_port(batches: int, warmup: int) -> list[float]:
    indptr, items = synthetic_sequences()
    user_train = {u: items[indptr[u] : indptr[u + 1]].tolist() for u in range(1, NUM_USERS + 1)}
    torch.manual_seed(0)
    np.random.seed(0)
    model = SASRecPort(NUM_ITEMS)
    for _, param in model.named_parameters():
        try:
            torch.nn.init.xavier_normal_(param.data)
        except ValueError:
            pass
    model.train()
    sampler = WarpSampler(user_train, NUM_USERS, NUM_ITEMS, BATCH, MAXLEN, n_workers=3)
    bce = torch.nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, betas=(0.9, 0.98))
    times = []
    try:
        for step in range(warmup + batches):
            started = time.perf_counter()
            u, seq, pos, neg = sampler.next_batch()
            u, seq, pos, neg = np.array(u), np.array(seq), np.array(pos), np.array(neg)
            pos_logits, neg_logits = model(u, seq, pos, neg)
            pos_labels, neg_labels = torch.ones(pos_logits.shape), torch.zeros(neg_logits.shape)
            optimizer.zero_grad()
            indices = np.where(pos != 0)
            loss = bce(pos_logits[indices], pos_labels[indices])
            loss += bce(neg_logits[indices], neg_labels[indices])
            loss.backward()
            optimizer.step()
            if step >= warmup:
                times.append(time.perf_counter() - started)
    finally:
        sampler.close()
    return times


# ----------------------------------------------------------------------------------------------- ours
def synthetic_prepared() -> PreparedData:
    """A PreparedData holding the synthetic sequences as training events (liked at random)."""
    indptr, items = synthetic_sequences()
    users = np.repeat(np.arange(NUM_USERS + 1), np.diff(indptr)).astype(np.int32)
    n = len(items)
    rng = np.random.default_rng(1)
    zeros = np.zeros(n, dtype=np.int8)
    events = pd.DataFrame(
        {
            "user": users,
            "item": items.astype(np.int32),
            "timestamp": np.arange(n, dtype=np.float64),
            "watch_ratio": rng.uniform(0, 2, n).astype(np.float32),
            "liked": rng.random(n) < 0.6,
            "relevant": np.zeros(n, dtype=bool),
            "split_temporal": zeros,
            "split_leave_last_n": zeros,
            "split_leave_one_out": zeros,
        }
    )
    labels = pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                           {"user": "int32", "item": "int32", "watch_ratio": "float32", "liked": "bool",
                            "relevant": "bool"}.items()})  # fmt: skip
    return PreparedData(
        name="synthetic_big",
        events=events,
        labels=labels,
        user_ids=np.arange(-1, NUM_USERS, dtype=np.int64),
        item_ids=np.arange(-1, NUM_ITEMS, dtype=np.int64),
        meta={"relevance_threshold": 2.0},
    )


def run_ours(batches: int, warmup: int, **options: object) -> list[float]:
    """Per-batch seconds of the package's own training loop (``build_run`` then ``run_epoch``).

    ``run_epoch`` runs over the first ``warmup + batches`` batches of the epoch's seeded user order; a batch
    is timed from the end of the previous optimizer step to the end of its own (grouping, forward, loss,
    backward, step).
    """
    import tempfile

    from sasrec.training import loop
    from sasrec.training.config import TrainConfig

    data = synthetic_prepared()
    config = TrainConfig(dataset="synthetic_big", device="cpu", progress=False, maxlen=MAXLEN, batch_size=BATCH,
                         hidden_units=HIDDEN, num_blocks=BLOCKS, num_heads=HEADS, dropout_rate=DROPOUT, lr=LR,
                         **options)  # type: ignore[arg-type]  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        run = loop.build_run(
            data, config, mask=loop.fit_mask(data, config), validate=False, folder=Path(folder)
        )
    shard = loop.epoch_shard
    loop.epoch_shard = lambda *args: shard(*args)[: (warmup + batches) * BATCH]  # type: ignore[assignment]
    ends: list[float] = []
    run.optimizer.register_step_post_hook(lambda *_: ends.append(time.perf_counter()))
    started = time.perf_counter()
    loop.run_epoch(run, 1)
    times = np.diff([started, *ends])
    return times[warmup:].tolist()


def run_variant(variant: str, batches: int, warmup: int) -> list[float]:
    if variant == "port":
        return run_port(batches, warmup)
    options = {
        "ours": {},
        "ours_torch_dropout": {"fast_dropout": False},
        "ours_no_attention_dropout": {"attention_dropout": 0.0},
    }[variant]
    return run_ours(batches, warmup, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all variants, back to back")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        times = run_variant(args.child, args.batches, args.warmup)
        print(json.dumps({"variant": args.child, "times": times}))
        return

    variants = args.variants.split(",")
    print(f"SASRec training throughput on CPU ({torch.get_num_threads()} threads): users {NUM_USERS}, items "
          f"{NUM_ITEMS}, batch {BATCH}, maxlen {MAXLEN}, hidden {HIDDEN}, blocks {BLOCKS}, heads {HEADS}, "
          f"dropout {DROPOUT}, bce; {args.repeats} round(s) of {args.warmup} warm-up + {args.batches} timed "
          f"batches per variant", flush=True)  # fmt: skip
    times: dict[str, list[float]] = {v: [] for v in variants}
    run_medians: dict[str, list[float]] = {v: [] for v in variants}
    loads: list[float] = []
    for _ in range(args.repeats):
        for variant in variants:
            loads.append(os.getloadavg()[0])
            done = subprocess.run(
                [sys.executable, __file__, f"--child={variant}", f"--batches={args.batches}",
                 f"--warmup={args.warmup}"] + ([f"--threads={args.threads}"] if args.threads else []),
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            batch_times = json.loads(done.stdout.strip().splitlines()[-1])["times"]
            times[variant] += batch_times
            run_medians[variant].append(statistics.median(batch_times))
    figures: dict[str, object] = {}
    for variant in variants:
        median = statistics.median(times[variant])
        figures[variant] = {
            "ms_per_batch_median": round(median * 1000, 1),
            "ms_per_batch_min": round(min(times[variant]) * 1000, 1),
            "positions_per_s": round(BATCH * MAXLEN / median),
            "run_medians_ms": [round(m * 1000, 1) for m in run_medians[variant]],
        }
        print(f"  {variant:<26} median {median * 1000:7.1f} ms/batch  min {min(times[variant]) * 1000:7.1f}  "
              f"{BATCH * MAXLEN / median:9,.0f} positions/s", flush=True)  # fmt: skip
    load = {
        "mean": round(statistics.mean(loads), 2),
        "min": round(min(loads), 2),
        "max": round(max(loads), 2),
    }
    print(
        f"load average (1 min) before each variant: mean {load['mean']}, min {load['min']}, max {load['max']}"
    )
    figures["load_average"] = load
    if "port" in times and "ours" in times:
        speedup = statistics.median(times["port"]) / statistics.median(times["ours"])
        speedup_min = min(times["port"]) / min(times["ours"])
        print(f"speed-up of ours over the reference port: {speedup:.2f}x on medians, {speedup_min:.2f}x on the "
              f"fastest batches (target >= 3x)")  # fmt: skip
        figures["speedup_ours_over_port"] = round(speedup, 2)
        figures["speedup_ours_over_port_fastest"] = round(speedup_min, 2)
    print(json.dumps({"benchmark": "train", **figures}))


if __name__ == "__main__":
    main()
