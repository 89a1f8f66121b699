"""Fit and full-ranking evaluation time of every baseline on a KuaiRec big_matrix-sized synthetic matrix.

Default size: 7,176 users x 10,728 items, about 12.5M events (big_matrix's shape and 16% density);
``--scale s`` multiplies users, items and events per user by ``s`` (density unchanged). Items follow a
Zipf-like popularity, times are uniform, the temporal split is global (80% / 10% / 10% of time).

    .venv/bin/python benchmarks/bench_baselines.py [--scale 0.25] [--baselines pop,ease] [--batch_size 512]

Prints one line per baseline and a final JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sasrec.data.contracts import PreparedData, empty_labels
from sasrec.data.tasks import build_eval_task
from sasrec.evaluation.protocol import evaluate
from sasrec.models.baselines import BASELINES, make_baseline

USERS, ITEMS, EVENTS = 7176, 10728, 12_530_806


def synthetic_data(scale: float, seed: int = 0) -> PreparedData:
    """A big_matrix-shaped PreparedData (vectorised generation)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = max(2, round(USERS * scale)), max(2, round(ITEMS * scale))
    mean_per_user = EVENTS / USERS * scale
    per_user = rng.integers(int(0.2 * mean_per_user) + 1, int(1.8 * mean_per_user) + 2, size=n_users)
    users = np.repeat(np.arange(1, n_users + 1, dtype=np.int32), per_user)
    weights = 1.0 / (np.arange(n_items) + 10.0) ** 0.8
    item_of_rank = rng.permutation(n_items) + 1
    items = item_of_rank[rng.choice(n_items, size=len(users), p=weights / weights.sum())].astype(np.int32)
    times = rng.random(len(users))
    order = np.lexsort((times, users))
    users, items, times = users[order], items[order], times[order]
    split = np.where(times < 0.8, 0, np.where(times < 0.9, 1, 2)).astype(np.int8)
    watch_ratio = rng.gamma(1.2, 0.8, size=len(users)).astype(np.float32)
    events = pd.DataFrame(
        {
            "user": users,
            "item": items,
            "timestamp": times,
            "watch_ratio": watch_ratio,
            "liked": watch_ratio > 0.7,
            "relevant": watch_ratio > 2.0,
            "split_temporal": split,
            "split_leave_last_n": split,
            "split_leave_one_out": split,
        }
    )
    labels = empty_labels()
    return PreparedData(
        name=f"synthetic_x{scale:g}",
        events=events,
        labels=labels,
        user_ids=np.arange(-1, n_users, dtype=np.int64),
        item_ids=np.arange(-1, n_items, dtype=np.int64),
        meta={"relevance_threshold": 2.0},
    )


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--baselines", default=",".join(BASELINES))
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--sampled", action="store_true", help="also time the sampled protocol (pop)")
    args = parser.parse_args()
    os.environ.setdefault("SASREC_PROGRESS", "0")

    started = time.perf_counter()
    data = synthetic_data(args.scale)
    gen_s = time.perf_counter() - started
    started = time.perf_counter()
    task = build_eval_task(data, "temporal", "valid")
    task_s = time.perf_counter() - started
    train_mask = data.events["split_temporal"].to_numpy() == 0
    print(
        f"data: {data.num_users:,} users x {data.num_items:,} items, {len(data.events):,} events "
        f"({int(train_mask.sum()):,} train), generated in {gen_s:.1f} s; valid task {len(task):,} users "
        f"built in {task_s:.1f} s; torch threads {__import__('torch').get_num_threads()}"
    )
    figures: dict[str, object] = {
        "scale": args.scale,
        "users": data.num_users,
        "items": data.num_items,
        "events": len(data.events),
        "task_users": len(task),
        "build_task_seconds": round(task_s, 2),
        "baselines": {},
    }
    for name in args.baselines.split(","):
        started = time.perf_counter()
        model = make_baseline(name).fit(data, train_mask)
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        result = evaluate(model, task, k=10, batch_size=args.batch_size)
        eval_s = time.perf_counter() - started
        row = {
            "fit_seconds": round(fit_s, 2),
            "eval_seconds": round(eval_s, 2),
            "eval_users_per_second": round(len(task) / eval_s, 1),
            "ndcg@10": round(result.summary["ndcg@10"], 4),
            "peak_rss_gb": round(peak_rss_gb(), 2),
        }
        if args.sampled and name == "pop":
            started = time.perf_counter()
            evaluate(model, task, k=10, protocol="sampled", num_negatives=100, batch_size=args.batch_size)
            row["sampled_eval_seconds"] = round(time.perf_counter() - started, 2)
        figures["baselines"][name] = row  # type: ignore[index]
        print(
            f"{name:>8}: fit {fit_s:7.1f} s, full evaluation {eval_s:6.1f} s "
            f"({len(task) / eval_s:,.0f} users/s), ndcg@10 {result.summary['ndcg@10']:.4f}, "
            f"peak RSS {peak_rss_gb():.1f} GB"
            + (
                f", sampled evaluation {row['sampled_eval_seconds']:.1f} s"
                if "sampled_eval_seconds" in row
                else ""
            )
        )
        del model
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
