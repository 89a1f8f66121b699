"""``python -m sasrec baseline``: fit a baseline, evaluate it on validation and test, write metrics JSON.

Stages (no test data ever reaches a fitted model's inputs before the test stage):

* validation: fit on the split's training events, evaluate the validation task (input = training events);
* test: refit on training + validation events, evaluate the test task (input = training + validation
  events), so a baseline sees exactly what a model retrained for the test stage would see;
* big-to-small (``--training_dataset big_matrix --dataset small_matrix``): validation is the training
  dataset's own validation stage (fit on its training events); the test refits on *all* events of the
  training dataset and ranks the small matrix's videos for its users (:func:`sasrec.data.build_cross_task`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sasrec.cli.common import str2bool
from sasrec.data.contracts import SPLITS, PreparedData
from sasrec.data.tasks import build_cross_task, build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import PROTOCOLS, EvalResult, evaluate
from sasrec.evaluation.results import metrics_payload, write_metrics_json
from sasrec.models.baselines import BASELINES, Baseline, make_baseline
from sasrec.paths import models_dir, resolve

TABLE_METRICS = ("ndcg", "graded_ndcg", "precision", "recall", "hr", "mrr", "map", "coverage")


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``["l2=200", "neighbors=50"]`` -> ``{"l2": 200, "neighbors": 50}`` (values parsed as YAML scalars)."""
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param expects KEY=VALUE (e.g. l2=200); got {item!r}")
        try:
            params[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--param {item!r}: value {value!r} is not a number, string or null") from None
    return params


def format_table(results: dict[str, EvalResult | None], k: int) -> str:
    """Human-readable table: one row per stage, one column per metric."""
    names = [f"{m}@{k}" for m in TABLE_METRICS]
    header = f"{'stage':<8}{'users':>8}" + "".join(f"{n:>16}" for n in names)
    lines = [header]
    for stage, result in results.items():
        if result is None:
            continue
        values = "".join(f"{result.summary.get(n, float('nan')):>16.4f}" for n in names)
        lines.append(f"{stage:<8}{int(result.summary['users']):>8}{values}")
    return "\n".join(lines)


def _fit_timed(
    name: str, seed: int, split: str, params: dict, data: PreparedData, mask: np.ndarray
) -> tuple[Baseline, float]:
    started = time.perf_counter()
    model = make_baseline(name, seed=seed, split=split, **params).fit(data, mask)
    return model, time.perf_counter() - started


def run(args: argparse.Namespace) -> int:
    """Execute the ``baseline`` command."""
    from sasrec.data.preparation.pipeline import load_prepared

    params = parse_params(args.param)
    reserved = sorted({"seed", "split"} & set(params))
    if reserved:
        raise ConfigError(f"--param {reserved[0]}=... is not allowed: use --{reserved[0]}")
    if args.maxlen < 1 or args.top_n < 1:
        raise ConfigError(f"--maxlen and --top_n must be positive; got {args.maxlen} and {args.top_n}")
    data_dir = Path(args.data_dir) if args.data_dir else None
    data = load_prepared(args.dataset, data_dir=data_dir)
    split = args.split
    eval_kwargs: dict[str, Any] = {
        "k": args.k,
        "protocol": args.eval_protocol,
        "num_negatives": args.num_eval_negatives,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "progress": False if args.no_progress else None,
    }
    timings: dict[str, float] = {}
    # Validation always happens on the dataset the model is fitted on: the training dataset of a
    # big-to-small run, else the dataset itself.
    rec_data = load_prepared(args.training_dataset, data_dir=data_dir) if args.training_dataset else data
    valid_mask, _ = rec_data.stage_masks(split, "valid")
    valid_model, timings["fit_valid_seconds"] = _fit_timed(
        args.model, args.seed, split, params, rec_data, valid_mask
    )
    valid_task = build_eval_task(
        rec_data, split, "valid", maxlen=args.maxlen, relevance_threshold=args.relevance_threshold
    )
    started = time.perf_counter()
    valid = evaluate(valid_model, valid_task, **eval_kwargs)
    timings["eval_valid_seconds"] = time.perf_counter() - started
    del valid_model
    if args.training_dataset:  # refit on every training event, then rank the test dataset's videos
        test_mask = np.ones(len(rec_data.events), dtype=bool)
        threshold = (
            args.relevance_threshold
            if args.relevance_threshold is not None
            else float(data.meta.get("relevance_threshold", 2.0))
        )
        test_task = build_cross_task(rec_data, data, maxlen=args.maxlen, relevance_threshold=threshold)
    else:  # refit on train + valid events
        test_mask, _ = data.stage_masks(split, "test")
        test_task = build_eval_task(
            data, split, "test", maxlen=args.maxlen, relevance_threshold=args.relevance_threshold
        )
    test_model, timings["fit_test_seconds"] = _fit_timed(
        args.model, args.seed, split, params, rec_data, test_mask
    )
    started = time.perf_counter()
    test = evaluate(test_model, test_task, **eval_kwargs)
    timings["eval_test_seconds"] = time.perf_counter() - started

    print(f"baseline {args.model} on {test_task.name} ({args.eval_protocol} protocol, k={args.k})")
    print(format_table({"valid": valid, "test": test}, args.k))
    extra: dict[str, Any] = {
        "data_source": data.meta.get("data_source"),
        "training_dataset": args.training_dataset,
        "valid_task": valid.task_name,
        "test_task": test.task_name,
        "num_eval_negatives": args.num_eval_negatives if args.eval_protocol == "sampled" else None,
        "seed": args.seed,
        "maxlen": args.maxlen,
        "baseline_params": params,
        "timings": {key: round(value, 3) for key, value in timings.items()},
    }
    payload = metrics_payload(
        args.model, args.dataset, split, args.eval_protocol, args.k, valid, test, extra=extra
    )
    if args.metrics_json:
        path = write_metrics_json(payload, resolve(args.metrics_json))
        print(f"metrics written to {path}")
    if args.generate_recommendations:
        from sasrec.inference.recommend import recommend, write_recommendations

        # Input: each user's train + valid events of the split (with --training_dataset: of the training
        # dataset, scored by the model refitted on all its events).
        frame = recommend(test_model, rec_data, top_n=args.top_n, split=split, maxlen=args.maxlen)
        stem = (
            resolve(args.recommendations_path)
            if args.recommendations_path
            else models_dir() / "recommendations" / f"{args.model}_{rec_data.name}_{split}"
        )
        parquet_path, csv_path = write_recommendations(frame, stem)
        print(f"recommendations ({len(frame):,} rows) written to {parquet_path} and {csv_path}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``baseline --dataset NAME --model MODEL [--metrics_json PATH] ...``."""
    parser = subparsers.add_parser(
        "baseline",
        help="fit and evaluate a baseline (random, pop, itemknn, ease, als, markov)",
        description=(
            "Fit a baseline on the split's training events, evaluate on validation; refit on training + "
            "validation events, evaluate on test. With --training_dataset, test is big-to-small."
        ),
    )
    parser.add_argument("--dataset", required=True, help="small_matrix, big_matrix, *_no_remapping or .txt")
    parser.add_argument("--model", required=True, choices=BASELINES)
    parser.add_argument("--metrics_json", "--metrics-json", default=None, help="write metrics JSON here")
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None, help="folder of the CSVs")
    parser.add_argument("--split", default="temporal", choices=SPLITS)
    parser.add_argument("--eval_protocol", "--eval-protocol", default="full", choices=PROTOCOLS)
    parser.add_argument("--num_eval_negatives", "--num-eval-negatives", type=int, default=100)
    parser.add_argument(
        "--relevance_threshold",
        "--relevance-threshold",
        type=float,
        default=None,
        help="relevant = watch_ratio > threshold (default: the dataset's, 2.0)",
    )
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--maxlen", type=int, default=200, help="history length of the input sequences")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=512, help="users per eval batch")
    parser.add_argument(
        "--training_dataset",
        "--training-dataset",
        default=None,
        help="fit on this dataset's events and test big-to-small on --dataset",
    )
    parser.add_argument(
        "--generate_recommendations",
        "--generate-recommendations",
        type=str2bool,
        nargs="?",
        const=True,
        default=False,
    )
    parser.add_argument("--top_n", "--top-n", type=int, default=10)
    parser.add_argument(
        "--recommendations_path",
        "--recommendations-path",
        default=None,
        help="output stem (writes STEM.parquet and STEM.csv; default models/recommendations/...)",
    )
    parser.add_argument(
        "--param", action="append", default=None, metavar="KEY=VALUE", help="baseline parameter, repeatable"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(func=run)
