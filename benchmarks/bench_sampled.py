"""Sampled-protocol and full-ranking evaluation time at the size of a SASRec-format leave-one-out task.

30,901 users x 23,715 items (Amazon Games-sized, as in Kang & McAuley, ICDM 2018), about 9 history items
and one held-out target per user, as a leave-one-out split leaves them. A scorer returning random scores
stands in for the model, so the figures measure the protocol alone: candidate sampling (100 negatives per
user, the original project's protocol), ranking and metrics. Timed: a validation and a test pass of the
sampled protocol (target <= 20 s on the 2-core CPU, random scores included), and one full-ranking pass.
The random scores' own cost is printed beside them.

Run: ``.venv/bin/python benchmarks/bench_sampled.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sasrec.data.contracts import EvalTask
from sasrec.evaluation.protocol import evaluate

NUM_USERS, NUM_ITEMS, MAXLEN = 30_901, 23_715, 50


def synthetic_loo_task(stage: str, seed: int = 0) -> EvalTask:
    """A leave-one-out-shaped task: 3..15 distinct history items per user (mean 9) and one relevant target.

    The validation stage holds out the second-to-last item of each user's walk, the test stage the last
    one (its history includes the validation item), as :func:`sasrec.data.tasks.build_eval_task` does.
    """
    rng = np.random.default_rng(seed)
    n_cols = NUM_ITEMS + 1
    lengths = rng.integers(3, 16, size=NUM_USERS) + (1 if stage == "test" else 0)  # history lengths
    width = int(lengths.max()) + 1
    offsets = rng.integers(0, NUM_ITEMS, size=(NUM_USERS, 1))
    walk = (offsets + np.arange(width)[None, :] * 7) % NUM_ITEMS + 1  # (U, width) distinct: 7 is coprime
    in_history = np.arange(width)[None, :] < lengths[:, None]  # (U, width)
    rows = np.repeat(np.arange(NUM_USERS), lengths)
    history = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, walk[in_history])), shape=(NUM_USERS, n_cols)
    )
    target_items = walk[np.arange(NUM_USERS), lengths]  # (U,) the next item of each walk
    targets = sp.csr_matrix(
        (np.full(NUM_USERS, np.nan, dtype=np.float32), (np.arange(NUM_USERS), target_items)),
        shape=(NUM_USERS, n_cols),
    )  # text data: no watch_ratio, relevance from the liked flag
    relevant = sp.csr_matrix(
        (np.ones(NUM_USERS, dtype=np.float32), (np.arange(NUM_USERS), target_items)),
        shape=(NUM_USERS, n_cols),
    )
    sequences = np.where(in_history, walk, 0)[:, :width][:, -MAXLEN:].astype(np.int64)
    return EvalTask(
        name=f"synthetic_loo/{stage}",
        users=np.arange(1, NUM_USERS + 1, dtype=np.int64),
        sequences=sequences,
        history=history,
        targets=targets,
        relevant=relevant,
        candidates=None,
        mask_history=True,
        relevance_threshold=2.0,
    )


class RandomScores:
    """Uniform random scores, a fresh generator per batch (the protocol's cost, not a model's)."""

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        generator = torch.Generator().manual_seed(int(rows[0]))
        return torch.rand((len(rows), task.num_items + 1), generator=generator)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--num_negatives", type=int, default=100)
    parser.add_argument("--skip_full", action="store_true", help="time only the sampled passes")
    args = parser.parse_args()
    tasks = {stage: synthetic_loo_task(stage) for stage in ("valid", "test")}
    scorer = RandomScores()
    print(f"{NUM_USERS} users x {NUM_ITEMS} items, leave-one-out shaped, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    scoring = 0.0  # the scorer's own cost over both stages, for reference
    results = {}
    for task in tasks.values():
        t0 = time.perf_counter()
        for start in range(0, len(task), args.batch_size):
            scorer.score(task, np.arange(start, min(start + args.batch_size, len(task))))
        scoring += time.perf_counter() - t0
    started = time.perf_counter()
    for stage, task in tasks.items():
        results[stage] = evaluate(
            scorer,
            task,
            k=10,
            protocol="sampled",
            num_negatives=args.num_negatives,
            batch_size=args.batch_size,
            progress=False,
        )
    sampled_s = time.perf_counter() - started
    summary = results["test"].summary
    print(f"sampled, valid + test: {sampled_s:.2f} s (random scores alone {scoring:.2f} s); test hr@10 "
          f"{summary['hr@10']:.4f} (chance {10 / (args.num_negatives + 1):.4f}), mean candidates "
          f"{summary['mean_candidates']:.1f}")  # fmt: skip
    full_s = float("nan")
    if not args.skip_full:
        started = time.perf_counter()
        full = evaluate(
            scorer, tasks["test"], k=10, protocol="full", batch_size=args.batch_size, progress=False
        )
        full_s = time.perf_counter() - started
        print(f"full ranking, test: {full_s:.2f} s; ndcg@10 {full.summary['ndcg@10']:.5f}")
    print(json.dumps({"benchmark": "sampled", "users": NUM_USERS, "items": NUM_ITEMS,
                      "num_negatives": args.num_negatives, "sampled_valid_test_seconds": round(sampled_s, 2),
                      "random_scores_seconds": round(scoring, 2), "full_test_seconds": round(full_s, 2),
                      "sampled_hr@10": round(summary["hr@10"], 4)}))  # fmt: skip


if __name__ == "__main__":
    main()
