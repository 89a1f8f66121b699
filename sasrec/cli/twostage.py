"""``python -m sasrec twostage``: candidates from several retrievers, a LightGBM ranker, metrics JSON.

Stage 1 is fitted on the split's training events (``--fit_on``, the study's fitting policy); the ranker is
trained on the validation period and the pipeline evaluated on validation and test (full ranking, history
masked), as :func:`sasrec.study.two_stage.run_two_stage` does for notebook 09. ``--retrievers`` names
baselines (``itemknn``, ``pop``, ``content``...) and ``sasrec`` (or ``sequential``): the trained model of
``--checkpoint``. The metrics JSON is the one of ``train``/``baseline`` plus ``recall`` (recall@N of every
retriever and of the union, per stage), ``seconds`` (each stage) and ``importance`` (the ranker's gain).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

from sasrec.cli.common import check_at_least, check_data_dir, dataset_argument
from sasrec.data.contracts import SPLITS
from sasrec.errors import ConfigError

SEQUENTIAL_ALIASES = ("sasrec", "sequential")


def _training(checkpoint: str | None, data: Any) -> dict[str, Any]:
    """A one-model training summary of ``--checkpoint`` (empty without one)."""
    if checkpoint is None:
        return {"models": {}}
    from dataclasses import asdict

    from sasrec.paths import user_path
    from sasrec.training.checkpoints import load_checkpoint

    path = user_path(checkpoint)
    _, config, _ = load_checkpoint(path, data)
    info = {"checkpoint": str(path), "best_checkpoint": str(path), "config": asdict(config), "valid": {}}
    return {"models": {config.model: info}}


def run(args: argparse.Namespace) -> int:
    """Execute the ``twostage`` command."""
    from sasrec.data.preparation.pipeline import load_prepared
    from sasrec.evaluation.results import metrics_payload, write_metrics_json
    from sasrec.paths import check_writable, models_dir, user_path
    from sasrec.study.two_stage import SEQUENTIAL, run_two_stage

    check_at_least(
        {"--num_candidates": args.num_candidates, "--k": args.k, "--n_estimators": args.n_estimators}
    )
    dataset = dataset_argument(args.dataset, strict=False)
    data_dir = check_data_dir(args.data_dir, (dataset,))
    if args.metrics_json:
        check_writable(user_path(args.metrics_json), "metrics file (--metrics_json)")
    names = [name.strip() for name in args.retrievers.split(",") if name.strip()]
    retrievers = [SEQUENTIAL if name in SEQUENTIAL_ALIASES else name for name in names]
    if SEQUENTIAL in retrievers and not args.checkpoint:
        raise ConfigError("--retrievers names sasrec: pass its trained model with --checkpoint PATH")
    data = load_prepared(dataset, data_dir=data_dir, progress=False)
    training = _training(args.checkpoint if SEQUENTIAL in retrievers else None, data)
    evaluation = {"k": args.k, "protocols": ["full"], "n_boot": args.n_boot, "seed": args.seed}
    settings = {"retrievers": retrievers, "num_candidates": args.num_candidates, "features": args.features,
                "ranker": {"n_estimators": args.n_estimators, "num_threads": args.num_threads, "seed": args.seed}}  # fmt: skip
    split = args.split or "temporal"
    result = run_two_stage(SimpleNamespace(models_dir=models_dir()), data, training, evaluation, settings,
                           split=split, fit_on=args.fit_on, maxlen=args.maxlen, compare=False)  # fmt: skip
    table = result.table[result.table["model"] == "two_stage"]
    by_stage = {stage: dict(zip(rows["metric"], rows["mean"], strict=True))
                for stage, rows in table.groupby("task")}  # fmt: skip
    extra = {"valid": by_stage.get("valid"), "test": by_stage.get("test"), **result.to_json()}
    extra.pop("table")
    payload = metrics_payload(
        "two_stage", data.name, result.setup["split"], "full", args.k, None, None, extra=extra
    )
    for stage in ("valid", "test"):
        values = by_stage.get(stage) or {}
        print(f"{stage}: ndcg@{args.k} {values.get(f'ndcg@{args.k}', float('nan')):.4f}  "
              f"recall@{args.k} {values.get(f'recall@{args.k}', float('nan')):.4f}")  # fmt: skip
    print(result.recall.to_string(index=False))
    if args.metrics_json:
        path = write_metrics_json(payload, user_path(args.metrics_json))
        print(f"metrics written to {path}")
    return 0


def add_parser(subparsers: Any) -> None:
    """Register ``twostage --dataset NAME --retrievers LIST --num_candidates N [--metrics_json PATH] ...``."""
    parser = subparsers.add_parser(
        "twostage",
        help="two-stage recommendation: retrievers' top-N candidates re-ranked by LightGBM",
        description=(
            "Fit retrievers on training events, train a LightGBM lambdarank ranker on the validation period, "
            "evaluate the pipeline on validation and test. Paths resolve from the current directory."
        ),
    )
    parser.add_argument("--dataset", required=True, help="small_matrix, big_matrix, *_no_remapping or .txt")
    parser.add_argument("--retrievers", default="itemknn,pop",
                        help="comma list: sasrec (needs --checkpoint), itemknn, pop, content, ease, ...")  # fmt: skip
    parser.add_argument("--checkpoint", default=None, help="trained sequential model of the sasrec retriever")
    parser.add_argument(
        "--num_candidates", "--num-candidates", type=int, default=200, help="top-N per retriever"
    )
    parser.add_argument("--metrics_json", "--metrics-json", default=None, help="write metrics JSON here")
    parser.add_argument("--data-dir", "--data_dir", dest="data_dir", default=None, help="folder of the CSVs")
    parser.add_argument("--split", default=None, choices=SPLITS, help="default temporal")
    parser.add_argument("--fit_on", "--fit-on", default="train", choices=("train", "train_valid"))
    parser.add_argument("--maxlen", type=int, default=200, help="input length of the tasks (default 200)")
    parser.add_argument("--k", type=int, default=10, help="cut-off of the metrics (default 10)")
    parser.add_argument("--n_boot", type=int, default=200, help="bootstrap resamples (default 200)")
    parser.add_argument("--n_estimators", type=int, default=200, help="boosting rounds (default 200)")
    parser.add_argument("--num_threads", type=int, default=2, help="LightGBM threads (default 2)")
    parser.add_argument("--features", type=lambda v: v.lower() in {"1", "true", "yes"}, default=True,
                        help="pair crosses and side features from the feature table (default true)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run)
