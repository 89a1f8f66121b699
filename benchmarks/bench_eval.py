"""Full-ranking evaluation time of SASRec on CPU at KuaiRec's big-matrix size.

7,176 users, 10,728 items, SASRec with hidden 50, 2 blocks, 1 head, maxlen 200 (untrained weights: the
cost does not depend on them), every user's full 200-item input window, about 1,500 history items masked
per user and 50 targets per user. Scored with :class:`sasrec.evaluation.scorers.SequentialScorer` and
ranked with :func:`sasrec.evaluation.protocol.evaluate` (protocol ``full``, k = 10); the figures separate the
model's scoring from the ranking and metrics. Target: <= 15 s on the 2-core CPU.

Run: ``.venv/bin/python benchmarks/bench_eval.py``.
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
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.models.sasrec import SASRec

NUM_USERS, NUM_ITEMS, MAXLEN = 7176, 10728, 200


def synthetic_task(seed: int = 0, history_per_user: int = 1500, targets_per_user: int = 50) -> EvalTask:
    """A big-matrix-sized full-ranking task with random histories and targets (disjoint per user)."""
    rng = np.random.default_rng(seed)
    n_cols = NUM_ITEMS + 1
    per_user = history_per_user + targets_per_user
    # Distinct items per user: a random offset and stride walk over 1..NUM_ITEMS (vectorised).
    offsets = rng.integers(0, NUM_ITEMS, size=(NUM_USERS, 1))
    steps = np.arange(per_user)[None, :] * 7  # 7 is coprime with 10,728
    items = (offsets + steps) % NUM_ITEMS + 1  # (U, per_user) distinct per row
    history_items = np.sort(items[:, :history_per_user], axis=1)
    target_items = np.sort(items[:, history_per_user:], axis=1)
    indptr_h = np.arange(NUM_USERS + 1, dtype=np.int64) * history_per_user
    history = sp.csr_matrix(
        (np.ones(history_items.size, dtype=np.float32), history_items.ravel(), indptr_h),
        shape=(NUM_USERS, n_cols),
    )
    indptr_t = np.arange(NUM_USERS + 1, dtype=np.int64) * targets_per_user
    watch_ratio = rng.gamma(1.0, 1.0, size=target_items.size).astype(np.float32)
    targets = sp.csr_matrix((watch_ratio, target_items.ravel(), indptr_t), shape=(NUM_USERS, n_cols))
    relevant = sp.csr_matrix(
        ((watch_ratio > 2.0).astype(np.float32), target_items.ravel().copy(), indptr_t.copy()),
        shape=(NUM_USERS, n_cols),
    )
    sequences = items[:, history_per_user - MAXLEN : history_per_user].astype(
        np.int64
    )  # (U, 200) full windows
    return EvalTask(
        name="synthetic_big/full",
        users=np.arange(1, NUM_USERS + 1, dtype=np.int64),
        sequences=sequences,
        history=history,
        targets=targets,
        relevant=relevant,
        candidates=None,
        mask_history=True,
        relevance_threshold=2.0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    task = synthetic_task()
    torch.manual_seed(0)
    model = SASRec(NUM_ITEMS, hidden_units=50, num_blocks=2, num_heads=1, maxlen=MAXLEN).eval()
    print(f"full-ranking evaluation: {NUM_USERS} users x {NUM_ITEMS} items, SASRec hidden 50, 2 blocks, maxlen "
          f"{MAXLEN}, batch {args.batch_size}, {torch.get_num_threads()} threads")  # fmt: skip
    totals, scoring = [], []
    for _ in range(args.repeats):
        scorer = SequentialScorer(model, batch_size=args.batch_size)
        scored = 0.0
        original = scorer.score

        def timed_score(t, rows, original=original):  # noqa: ANN001, ANN202
            nonlocal scored
            started = time.perf_counter()
            out = original(t, rows)
            scored += time.perf_counter() - started
            return out

        scorer.score = timed_score  # type: ignore[method-assign]
        started = time.perf_counter()
        result = evaluate(scorer, task, k=10, protocol="full", batch_size=args.batch_size, progress=False)
        totals.append(time.perf_counter() - started)
        scoring.append(scored)
        print(f"  total {totals[-1]:6.2f} s  (model scoring {scored:5.2f} s, ranking and metrics "
              f"{totals[-1] - scored:5.2f} s)  ndcg@10 {result.summary['ndcg@10']:.4f}", flush=True)  # fmt: skip
    best = min(range(len(totals)), key=totals.__getitem__)
    print(f"best: {totals[best]:.2f} s for {NUM_USERS} users (target <= 15 s)")
    print(json.dumps({"benchmark": "eval", "users": NUM_USERS, "items": NUM_ITEMS, "seconds": round(totals[best], 2),
                      "scoring_seconds": round(scoring[best], 2), "users_per_s": round(NUM_USERS / totals[best])}))  # fmt: skip


if __name__ == "__main__":
    main()
