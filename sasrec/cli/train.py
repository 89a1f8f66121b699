"""The ``train`` command: the original project's ``python main.py`` with the same flags, and more.

Training (``--dataset --train_dir ...``), evaluation of a checkpoint (``--inference_only=true``), the
big-to-small test (``--training_dataset=big_matrix``), top-N recommendations
(``--generate_recommendations=true``) and resuming (``--resume=true --state_dict_path=...``). Settings may
come from ``--config params/<file>.yaml`` (same names as the flags); explicit flags win.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from sasrec.cli.common import str2bool
from sasrec.config import load_yaml_mapping
from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_cross_task, build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.training.checkpoints import load_checkpoint
from sasrec.training.config import EVAL_PROTOCOLS, LOSSES, TrainConfig, resolve_device
from sasrec.training.loop import evaluate_model, train
from sasrec.training.sequences import item_popularity

COMMAND_FLAGS = (
    "data_dir",
    "inference_only",
    "state_dict_path",
    "generate_recommendations",
    "top_n",
    "training_dataset",
    "metrics_json",
    "resume",
)
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


def _optional_float(value: str) -> float | None:
    if value.strip().lower() in {"none", "null", ""}:
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {value!r}") from None


def add_parser(subparsers: Any) -> None:
    """Register ``train`` (every flag of the original ``main.py`` plus the study's)."""
    parser = subparsers.add_parser(
        "train",
        help="train SASRec, evaluate a checkpoint, or write recommendations (the original main.py)",
        description=(
            "Train SASRec (Kang & McAuley, ICDM 2018) on a prepared KuaiRec matrix or SASRec text file, "
            "evaluate a checkpoint (--inference_only=true; --training_dataset for the big-to-small test), "
            "or write top-N recommendations (--generate_recommendations=true)."
        ),
    )
    add = parser.add_argument
    # The original project's flags.
    add("--dataset", help="small_matrix, big_matrix, *_no_remapping, or a SASRec text-file path")
    add("--train_dir", help="run name: checkpoints go to models/<dataset>_<train_dir>/ (default: default)")
    add("--batch_size", type=int)
    add("--lr", type=float)
    add("--maxlen", type=int)
    add("--hidden_units", type=int)
    add("--num_blocks", type=int)
    add("--num_epochs", type=int)
    add("--num_heads", type=int)
    add("--dropout_rate", type=float)
    add("--l2_emb", type=float)
    add("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    add("--inference_only", type=str2bool, metavar="BOOL", help="evaluate --state_dict_path, do not train")
    add("--state_dict_path", help="checkpoint to evaluate, recommend from, or resume")
    add("--explicit_negatives", type=str2bool, metavar="BOOL", help="half the negatives from disliked videos")
    add(
        "--weighted_dislike",
        type=str2bool,
        metavar="BOOL",
        help="weight disliked negatives (implies explicit)",
    )
    add("--generate_recommendations", type=str2bool, metavar="BOOL", help="write top-N lists (parquet + CSV)")
    add("--top_n", type=int, help="length of the recommendation lists (default 10)")
    add("--training_dataset", help="dataset the checkpoint was trained on (big-to-small test)")
    # The study's flags.
    add(
        "--data-dir",
        "--data_dir",
        dest="data_dir",
        help="folder of the KuaiRec CSVs (default: data/raw, else data/simulated)",
    )
    add("--loss", choices=LOSSES)
    add("--split", choices=("temporal", "leave_last_n", "leave_one_out"))
    add("--seed", type=int)
    add("--k", type=int, help="metric cut-off (default 10)")
    add("--eval_protocol", choices=EVAL_PROTOCOLS)
    add("--num_eval_negatives", type=int)
    add(
        "--relevance_threshold",
        type=_optional_float,
        help="relevant if watch_ratio > this (default: dataset's)",
    )
    add("--metrics_json", help="write validation and test metrics to this JSON file")
    add("--config", help="YAML mapping of these flags' names to values (explicit flags win)")
    add("--num_negatives", type=int, help="negatives of sampled_softmax / gbce")
    add("--gbce_t", type=float, help="gSASRec calibration t (default 0.75)")
    add("--dislike_weight", type=float, help="weight of disliked negatives (default 2.0)")
    add("--patience", type=int, help="evaluations without improvement before stopping (0: never)")
    add("--eval_every", type=int, help="validate every this many epochs")
    add(
        "--attention_dropout",
        type=_optional_float,
        help="dropout of attention probabilities (default: dropout_rate)",
    )
    add("--fast_dropout", type=str2bool, metavar="BOOL", help="cheap CPU dropout masks (default true)")
    add("--resume", type=str2bool, metavar="BOOL", help="continue training from --state_dict_path")
    add("--progress", type=str2bool, metavar="BOOL", help="progress bars (default true)")
    parser.set_defaults(func=run, _train_parser=parser)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge TrainConfig defaults, the YAML file and explicit flags (flags win)."""
    parser: argparse.ArgumentParser = args._train_parser
    actions = {action.dest: action for action in parser._actions}
    known = set(CONFIG_FIELDS) | set(COMMAND_FLAGS)
    merged: dict[str, Any] = {}
    if args.config:
        for raw_key, value in load_yaml_mapping(args.config).items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ConfigError(
                    f"config file {args.config}: unknown parameter {raw_key!r}; expected flag names such as "
                    "dataset, train_dir, lr, maxlen, num_epochs, loss"
                )
            action = actions.get(key)
            if isinstance(value, str) and action is not None and callable(action.type):
                try:
                    value = action.type(value)
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    raise ConfigError(f"config file {args.config}: {key}: {exc}") from None
            if action is not None and action.choices is not None and value not in action.choices:
                raise ConfigError(
                    f"config file {args.config}: {key} must be one of {', '.join(map(str, action.choices))}; got {value!r}"
                )
            merged[key] = value
    for key in known:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    return merged


def _config(settings: dict[str, Any], **overrides: Any) -> TrainConfig:
    values = {key: settings[key] for key in CONFIG_FIELDS if key in settings}
    values.update(overrides)
    try:
        return TrainConfig(**values)
    except TypeError as exc:  # a YAML value of the wrong type
        raise ConfigError(f"invalid training parameter: {exc}") from None


def _load(dataset: str, data_dir: str | None) -> PreparedData:
    from sasrec.data.preparation.pipeline import load_prepared

    return load_prepared(dataset, data_dir=Path(data_dir) if data_dir else None)


def _format_summary(label: str, summary: dict[str, float], k: int) -> str:
    names = [f"ndcg@{k}", f"graded_ndcg@{k}", f"precision@{k}", f"recall@{k}", f"hr@{k}"]
    parts = [f"{name} {summary[name]:.4f}" for name in names if name in summary]
    users = summary.get("users")
    return f"{label}: " + "  ".join(parts) + (f"  (users {int(users)})" if users is not None else "")


def _print_epoch(k: int):
    def show(row: dict[str, Any]) -> None:
        text = f"epoch {row['epoch']:3d}  loss {row['loss']:.4f}  {row['seconds']:.1f}s"
        for name in (f"ndcg@{k}", f"hr@{k}", f"recall@{k}"):
            if f"valid_{name}" in row:
                text += f"  valid {name} {row[f'valid_{name}']:.4f}"
        print(text, flush=True)

    return show


def _write_metrics(
    path: str, data_name: str, config: TrainConfig, valid: Any, test: Any, extra: dict
) -> None:
    from sasrec.evaluation.results import metrics_payload, write_metrics_json

    payload = metrics_payload(
        "SASRec", data_name, config.split, config.eval_protocol, config.k, valid, test, extra
    )
    written = write_metrics_json(payload, Path(path))
    print(f"metrics written to {written}")


def _recommend(
    scorer: SequentialScorer, data: PreparedData, config: TrainConfig, top_n: int, checkpoint: Path
) -> None:
    from sasrec.inference.recommend import recommend, write_recommendations

    frame = recommend(scorer, data, top_n=top_n, split=config.split, maxlen=config.maxlen)
    stem = checkpoint.parent / f"recommendations.{data.name}.{config.split}.top{top_n}"
    parquet_path, csv_path = write_recommendations(frame, stem)
    n_users = frame["user_id"].nunique()
    n_fallback = frame.loc[frame["fallback"], "user_id"].nunique()
    print(
        f"recommendations: top {top_n} for {n_users} users ({n_fallback} by the popularity fallback) "
        f"written to {parquet_path} and {csv_path}"
    )


def _inference(settings: dict[str, Any]) -> int:
    """Evaluate and/or recommend from a checkpoint."""
    path = settings.get("state_dict_path")
    if not path:
        raise ConfigError("--inference_only / --generate_recommendations need --state_dict_path=<checkpoint>")
    checkpoint = Path(path)
    training_name = settings.get("training_dataset")
    data = _load(settings["dataset"], settings.get("data_dir"))
    train_data = _load(training_name, settings.get("data_dir")) if training_name else data
    model, saved, payload = load_checkpoint(checkpoint, train_data)
    device = resolve_device(settings.get("device") or "auto")
    model.to(device)
    # Evaluation settings come from the command line; the architecture and split from the checkpoint.
    eval_overrides = {
        key: settings[key]
        for key in ("k", "eval_protocol", "num_eval_negatives", "relevance_threshold", "seed")
        if key in settings
    }
    if settings.get("split", saved.split) != saved.split:
        raise ConfigError(
            f"--split={settings['split']} differs from the checkpoint's split {saved.split!r}: its test events "
            "would overlap the other split's training events"
        )
    config = dataclasses.replace(
        saved, **eval_overrides, device=str(device), progress=settings.get("progress")
    )
    config.validate()
    popularity = payload["popularity"].numpy() if "popularity" in payload else item_popularity(train_data)
    progress = settings.get("progress")
    print(
        f"checkpoint {checkpoint} (trained on {payload['dataset']}, epoch {payload['epoch']}, "
        f"best epoch {payload['best_epoch']})"
    )
    extra = {"checkpoint": str(checkpoint), "trained_on": payload["dataset"], "config": saved.to_dict()}
    if settings.get("inference_only"):
        if training_name:
            threshold = config.relevance_threshold
            task = build_cross_task(
                train_data,
                data,
                maxlen=model.maxlen,
                relevance_threshold=float(
                    threshold if threshold is not None else data.meta.get("relevance_threshold", 2.0)
                ),
            )
            scorer = SequentialScorer(model, popularity=popularity, batch_size=config.eval_batch_size)
            result = evaluate_model(scorer, task, config, progress)
            print(_format_summary(f"test {task.name}", result.summary, config.k))
            n_fallback = len(scorer.fallback_rows)
            if n_fallback:
                print(f"{n_fallback} users had no history and were scored by popularity")
            extra.update(
                {
                    "task": task.name,
                    "fallback_users": n_fallback,
                    **{f"task_{k}": v for k, v in task.meta.items()},
                }
            )
            if settings.get("metrics_json"):
                _write_metrics(
                    settings["metrics_json"], f"{train_data.name}->{data.name}", config, None, result, extra
                )
        else:
            results = {}
            for stage in ("valid", "test"):
                task = build_eval_task(
                    data,
                    config.split,
                    stage,
                    maxlen=model.maxlen,
                    relevance_threshold=config.relevance_threshold,
                )
                scorer = SequentialScorer(model, popularity=popularity, batch_size=config.eval_batch_size)
                results[stage] = evaluate_model(scorer, task, config, progress)
                print(_format_summary(f"{stage} {task.name}", results[stage].summary, config.k))
            if settings.get("metrics_json"):
                _write_metrics(
                    settings["metrics_json"], data.name, config, results["valid"], results["test"], extra
                )
    if settings.get("generate_recommendations"):
        scorer = SequentialScorer(model, popularity=popularity, batch_size=config.eval_batch_size)
        _recommend(scorer, train_data, config, int(settings.get("top_n") or 10), checkpoint)
    return 0


def _training(settings: dict[str, Any]) -> int:
    """Train (or resume), then report validation and test metrics of the best model."""
    resume = bool(settings.get("resume"))
    state_dict_path = settings.get("state_dict_path")
    if resume and not state_dict_path:
        raise ConfigError("--resume=true needs --state_dict_path=<checkpoint to continue from>")
    if state_dict_path and not resume:
        raise ConfigError(
            "--state_dict_path is given without --inference_only=true, --generate_recommendations=true or "
            "--resume=true: say whether to evaluate, recommend from, or continue training the checkpoint"
        )
    if settings.get("training_dataset"):
        raise ConfigError(
            "--training_dataset is only used with --inference_only=true (the big-to-small test)"
        )
    config = _config(settings)
    data = _load(settings["dataset"], settings.get("data_dir"))
    device = resolve_device(config.device)
    print(
        f"training SASRec on {data.name} ({data.num_users} users, {data.num_items} items, split {config.split}, "
        f"loss {config.loss}{', explicit negatives' if config.explicit_negatives else ''}"
        f"{', weighted dislikes' if config.weighted_dislike else ''}) on {device}",
        flush=True,
    )
    result = train(
        data, config, resume_from=state_dict_path if resume else None, on_epoch=_print_epoch(config.k)
    )
    print(f"best epoch {result.best_epoch}; checkpoint {result.checkpoint_path}")
    model = result.model
    results = {}
    for stage in ("valid", "test"):
        task = build_eval_task(
            data, config.split, stage, maxlen=config.maxlen, relevance_threshold=config.relevance_threshold
        )
        scorer = SequentialScorer(model, popularity=result.popularity, batch_size=config.eval_batch_size)
        results[stage] = evaluate_model(scorer, task, config, config.progress)
        print(_format_summary(f"{stage} {task.name} (best model)", results[stage].summary, config.k))
    if settings.get("metrics_json"):
        extra = {
            "checkpoint": str(result.checkpoint_path) if result.checkpoint_path else None,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "epochs_run": int(result.log["epoch"].max()) if len(result.log) else 0,
            "config": config.to_dict(),
            "log": result.log.replace({np.nan: None}).to_dict("records"),
        }
        _write_metrics(settings["metrics_json"], data.name, config, results["valid"], results["test"], extra)
    if settings.get("generate_recommendations") and result.checkpoint_path is not None:
        scorer = SequentialScorer(model, popularity=result.popularity, batch_size=config.eval_batch_size)
        _recommend(scorer, data, config, int(settings.get("top_n") or 10), result.checkpoint_path)
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m sasrec train``."""
    settings = _settings(args)
    if not settings.get("dataset"):
        raise ConfigError(
            "--dataset is required (small_matrix, big_matrix, *_no_remapping or a SASRec text file)"
        )
    top_n = settings.get("top_n")
    if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
        raise ConfigError(f"top_n must be a positive integer; got {top_n!r}")
    if settings.get("inference_only") or (
        settings.get("generate_recommendations")
        and settings.get("state_dict_path")
        and not settings.get("resume")
    ):
        return _inference(settings)
    return _training(settings)
