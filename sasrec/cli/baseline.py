"""``python -m sasrec baseline``: fit a baseline, evaluate it on validation and test, write metrics JSON.

The fitting policy is the one every model of the study shares (``--fit_on``, as ``train``):

* ``train`` (default): parameters fit on the split's training events; the validation task's input is the
  training events, the test task's input adds the validation events (one fit serves both stages);
* ``train_valid``: the test stage refits on training + validation events.

Big-to-small (``--training_dataset big_matrix --dataset small_matrix``): the model is fit on the training
dataset under the same policy and ranks the small matrix's videos for its users from their whole big-matrix
history (:func:`sasrec.data.tasks.build_cross_task`). Paths typed here resolve from the current directory.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import yaml

from sasrec.cli.common import check_at_least, check_data_dir, dataset_argument, features_argument, str2bool
from sasrec.data.cold_start import COLD_START_PROTOCOLS, ColdStart, cold_start_of
from sasrec.data.contracts import SPLITS, PreparedData
from sasrec.data.preparation.splits import default_split
from sasrec.data.tasks import build_cross_task, build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import PROTOCOLS, EvalResult, evaluate
from sasrec.evaluation.results import metrics_payload, write_metrics_json
from sasrec.models.baselines import BASELINES, Baseline, default_target
from sasrec.models.content import CONTENT_BASELINES
from sasrec.models.targets import TARGETS
from sasrec.paths import check_writable, models_dir, user_path

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


def _fit_and_evaluate(
    args: argparse.Namespace,
    params: dict,
    data: PreparedData,
    split: str,
    tasks: dict[str, Any],
    eval_kwargs: dict,
    cold_start: ColdStart | None = None,
) -> tuple[dict[str, Baseline], dict[str, EvalResult], dict[str, float]]:
    """Fit under the policy and the cold-start protocol (:func:`~sasrec.study.comparisons.fit_baselines`) and
    evaluate each stage's task."""
    from sasrec.study.comparisons import fit_baselines

    models = fit_baselines(data, {args.model: params}, split=split, fit_on=args.fit_on, seed=args.seed,
                           stages=tuple(tasks), cold_start=cold_start)[args.model]  # fmt: skip
    timings: dict[str, float] = {}
    results, timed = {}, set()
    for stage, task in tasks.items():
        if id(models[stage]) not in timed:  # under fit_on=train one fit serves both stages
            timings[f"fit_{stage}_seconds"] = models[stage].fit_seconds
            timed.add(id(models[stage]))
        started = time.perf_counter()
        results[stage] = evaluate(models[stage], task, **eval_kwargs)
        timings[f"eval_{stage}_seconds"] = time.perf_counter() - started
    return models, results, timings


def _recommendations_stem(args: argparse.Namespace, rec_data: PreparedData, split: str) -> Path:
    """Where the recommendation files go: ``--recommendations_path`` or models/recommendations/...."""
    if args.recommendations_path:
        return user_path(args.recommendations_path)
    return models_dir() / "recommendations" / f"{args.model}_{rec_data.name}_{split}"


def _check_arguments(args: argparse.Namespace) -> tuple[str, str | None, Path | None]:
    """Every value, input and output checked before any work; returns the datasets and the data folder."""
    check_at_least(
        {"--k": args.k, "--maxlen": args.maxlen, "--top_n": args.top_n, "--batch_size": args.batch_size}
    )
    if args.eval_protocol == "sampled":
        check_at_least({"--num_eval_negatives": args.num_eval_negatives})
    check_at_least({"--seed": args.seed}, 0)
    dataset = dataset_argument(args.dataset, strict=False)  # an unknown name: refused by the loader, below
    training = (
        dataset_argument(args.training_dataset, "--training_dataset", strict=False)
        if args.training_dataset
        else None
    )
    data_dir = check_data_dir(args.data_dir, (dataset, training or ""))
    if args.metrics_json:
        check_writable(user_path(args.metrics_json), "metrics file (--metrics_json)")
    if args.generate_recommendations:
        if args.recommendations_path:
            stem = user_path(args.recommendations_path)
            what = "recommendation files (--recommendations_path)"
        else:
            stem, what = models_dir() / "recommendations" / args.model, "recommendation files"
        check_writable(stem.with_name(stem.name + ".parquet"), what)
    return dataset, training, data_dir


def _cold_start(args: argparse.Namespace) -> ColdStart | None:
    """The cold-start protocol of the flags (one-line refusal of a bad value), None under ``none``; the
    big-to-small test (``--training_dataset``) has none."""
    spec = cold_start_of(args)
    if spec is not None and args.training_dataset:
        raise ConfigError(
            f"--cold_start={args.cold_start} applies to the within-matrix split; the big-to-small test "
            "(--training_dataset) has no cold-start protocol: use --cold_start=none"
        )
    return spec


def _load(
    load_prepared: Any, flag: str, dataset: str, data_dir: Path | None, progress: bool | None
) -> PreparedData:
    """The prepared ``dataset``; a refusal of the name or its data names the flag."""
    try:
        return load_prepared(dataset, data_dir=data_dir, progress=progress)
    except ConfigError as exc:
        raise ConfigError(f"{flag}={dataset}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Execute the ``baseline`` command."""
    from sasrec.data.preparation.pipeline import load_prepared

    params = parse_params(args.param)
    reserved = sorted({"seed", "split", "target", "features"} & set(params))
    if reserved:
        raise ConfigError(f"--param {reserved[0]}=... is not allowed: use --{reserved[0]}")
    if args.features is not None and args.model not in CONTENT_BASELINES:
        raise ConfigError(
            f"--features applies to the side-feature baselines ({', '.join(CONTENT_BASELINES)}); "
            f"{args.model} reads no side features"
        )
    if args.target is None:  # each model's own default (content: liked, the rest: views)
        args.target = default_target(args.model)
    dataset, training, data_dir = _check_arguments(args)
    cold_start = _cold_start(args)
    progress = False if args.no_progress else None
    data = _load(load_prepared, "--dataset", dataset, data_dir, progress)
    # Validation and fitting happen on the dataset the model is fitted on: the training dataset of a
    # big-to-small run, else the dataset itself.
    rec_data = _load(load_prepared, "--training_dataset", training, data_dir, progress) if training else data
    split = default_split(rec_data, args.split)
    relevance = {"relevance": args.relevance, "relevance_threshold": args.relevance_threshold}
    eval_kwargs: dict[str, Any] = {"k": args.k, "protocol": args.eval_protocol, "num_negatives": args.num_eval_negatives,
                                   "seed": args.seed, "batch_size": args.batch_size, "progress": progress}  # fmt: skip
    valid_task = build_eval_task(
        rec_data, split, "valid", maxlen=args.maxlen, **relevance, cold_start=cold_start
    )
    if args.training_dataset:  # rank the test dataset's videos from each user's whole history
        test_task = build_cross_task(rec_data, data, maxlen=args.maxlen, **relevance)
    else:
        test_task = build_eval_task(
            data, split, "test", maxlen=args.maxlen, **relevance, cold_start=cold_start
        )

    fit_params = {**params, "target": args.target}  # the fitted events' positives (scoring: every view)
    if args.model in CONTENT_BASELINES:  # resolved into the split's side-feature vectors by fit_baselines
        fit_params["features"] = args.features or "all"
    models, results, timings = _fit_and_evaluate(args, fit_params, rec_data, split, {"valid": valid_task, "test": test_task},
                                                 eval_kwargs, cold_start)  # fmt: skip
    valid, test, test_model = results["valid"], results["test"], models["test"]

    target = f", target {args.target}" if args.target != "views" else ""
    cold = f", cold start {args.cold_start}" if cold_start is not None else ""
    print(
        f"baseline {args.model} on {test_task.name} ({args.eval_protocol} protocol, k={args.k}, fit on {args.fit_on}"
        f"{target}{cold})"
    )

    print(format_table({"valid": valid, "test": test}, args.k))
    extra: dict[str, Any] = {
        "data_source": data.meta.get("data_source"),
        "training_dataset": args.training_dataset,
        "fit_on": args.fit_on,
        "target": args.target,
        "fit_events": test_model.fit_events,
        "valid_task": valid.task_name,
        "test_task": test.task_name,
        "num_eval_negatives": args.num_eval_negatives if args.eval_protocol == "sampled" else None,
        "seed": args.seed,
        "maxlen": args.maxlen,
        "baseline_params": params,
        "timings": {key: round(value, 3) for key, value in timings.items()},
    }
    payload = metrics_payload(
        args.model, data.name, split, args.eval_protocol, args.k, valid, test, extra=extra
    )
    if args.metrics_json:
        path = write_metrics_json(payload, user_path(args.metrics_json))
        print(f"metrics written to {path}")
    if args.generate_recommendations:
        from sasrec.inference.recommend import recommend, write_recommendations

        # Input: each user's train + valid events of the split (with --training_dataset: of the training
        # dataset), scored by the model fitted under the policy for the test stage.
        frame = recommend(test_model, rec_data, top_n=args.top_n, split=split, maxlen=args.maxlen)
        stem = _recommendations_stem(args, rec_data, split)
        made_by = {"model": args.model, "dataset": rec_data.name, "fingerprint": rec_data.fingerprint, "split": split,
                   "fit_on": args.fit_on, "top_n": args.top_n, "fit_events": test_model.fit_events}  # fmt: skip
        parquet_path, csv_path = write_recommendations(frame, stem, made_by=made_by)
        print(
            f"recommendations ({len(frame):,} rows) written to {parquet_path} and {csv_path} (with a manifest)"
        )
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``baseline --dataset NAME --model MODEL [--metrics_json PATH] ...``.

    The flags are added in named steps, in the order ``--help`` lists them: data and fitting policy,
    evaluation and cold start, then the run, output and baseline-parameter flags.
    """
    parser = subparsers.add_parser(
        "baseline",
        help="fit and evaluate a baseline (random, pop, itemknn, ease, als, markov)",
        description=(
            "Fit a baseline under the study's fitting policy (--fit_on), evaluate on validation and test. "
            "With --training_dataset, test is big-to-small. Paths resolve from the current directory."
        ),
    )
    _add_data_flags(parser)
    _add_evaluation_flags(parser)
    _add_cold_start_flags(parser)
    _add_run_flags(parser)
    _add_output_flags(parser)
    parser.set_defaults(func=run)


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    """The dataset, model, metrics file, data folder, split, fitting policy and fitted target."""
    parser.add_argument("--dataset", required=True, help="small_matrix, big_matrix, *_no_remapping or .txt")
    parser.add_argument("--model", required=True, choices=(*BASELINES, *CONTENT_BASELINES))
    parser.add_argument(
        "--features",
        type=features_argument,
        default=None,
        help="side features of the content and hybrid models: all (their default) or a comma list of "
        "tags,categories,caption,item_daily,user (other baselines read no features)",
    )
    parser.add_argument("--metrics_json", "--metrics-json", default=None, help="write metrics JSON here")
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None, help="folder of the CSVs")
    parser.add_argument(
        "--split", default=None, choices=SPLITS, help="default temporal; leave_one_out for text files"
    )
    parser.add_argument(
        "--fit_on",
        "--fit-on",
        default="train",
        choices=("train", "train_valid"),
        help="fitting policy shared by every model (default train)",
    )
    parser.add_argument(
        "--target",
        default=None,
        choices=TARGETS,
        help="which fitted views are positives: views (default; liked for content), liked, relevant, graded "
        "(weighted by watch_ratio)",
    )


def _add_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """The relevance rule and the evaluation protocol."""
    parser.add_argument(
        "--relevance",
        default="threshold",
        choices=("threshold", "liked", "all"),
        help="relevance rule (default threshold: watch_ratio > 2.0)",
    )
    parser.add_argument("--eval_protocol", "--eval-protocol", default="full", choices=PROTOCOLS)
    parser.add_argument("--num_eval_negatives", "--num-eval-negatives", type=int, default=100)
    parser.add_argument(
        "--relevance_threshold",
        "--relevance-threshold",
        type=float,
        default=None,
        help="relevant = watch_ratio > threshold (default: the dataset's, 2.0)",
    )


def _add_cold_start_flags(parser: argparse.ArgumentParser) -> None:
    """The cold-start protocol and its fraction, kept events and seed."""
    parser.add_argument(
        "--cold_start",
        "--cold-start",
        default="none",
        choices=COLD_START_PROTOCOLS,
        help="cold-start protocol: none (default), items (withhold videos) or users (test cold users)",
    )
    parser.add_argument(
        "--cold_start_frac",
        "--cold-start-frac",
        type=float,
        default=0.1,
        help="fraction of videos withheld / users made cold (default 0.1)",
    )
    parser.add_argument(
        "--cold_user_events",
        "--cold-user-events",
        type=int,
        default=5,
        help="training events a cold user keeps (k, default 5)",
    )
    parser.add_argument(
        "--cold_start_seed",
        "--cold-start-seed",
        type=int,
        default=0,
        help="seed of the withheld videos / cold users (default 0)",
    )


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The cutoff, seed, history length, eval batch size and the big-to-small training dataset."""
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


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    """The recommendation files, the baseline parameters and the progress bars."""
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
