"""The ``train`` command: the original project's ``python main.py`` with the same flags, and more.

Training (``--dataset --train_dir ...``, any registered ``--model``), evaluation of a checkpoint
(``--inference_only=true``), the big-to-small test (``--training_dataset=big_matrix``), top-N
recommendations (``--generate_recommendations=true``) and resuming (``--resume=true``, from
``--state_dict_path`` or the newest complete checkpoint of the run folder). Settings may come from
``--config FILE.yaml`` (same names as the flags); explicit flags win; a named model's presets fill the rest.
Under ``torchrun --nproc_per_node=N -m sasrec train ...`` the run is data-parallel (DDP); rank 0 validates,
evaluates and writes. Paths typed here resolve from the current directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sasrec.cli.common import check_data_dir, dataset_argument, features_argument, str2bool
from sasrec.config import load_yaml_mapping
from sasrec.data.cold_start import COLD_START_PROTOCOLS
from sasrec.data.contracts import SPLITS, PreparedData
from sasrec.data.preparation.splits import check_split_usable, default_split
from sasrec.data.tasks import build_cross_task, build_eval_task
from sasrec.errors import ConfigError, MissingDataError
from sasrec.evaluation.metrics import headline_metrics
from sasrec.evaluation.protocol import EvalResult
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.locks import locked
from sasrec.models.targets import TARGETS
from sasrec.paths import check_writable, user_path
from sasrec.training.checkpoints import latest_checkpoint, load_checkpoint, run_dir
from sasrec.training.config import (
    EVAL_PROTOCOLS,
    FIT_POLICIES,
    LOSSES,
    RELEVANCE_RULES,
    TrainConfig,
    fit_to_catalogue,
    resolve_device,
)
from sasrec.training.distributed import DistContext, context_from_env, init_process_group, shutdown
from sasrec.training.loop import evaluate_model, require_relevant, train, validation_task

logger = logging.getLogger(__name__)
# Flags that steer the command rather than the training run.
COMMAND_FLAGS = (
    "data_dir",
    "inference_only",
    "state_dict_path",
    "generate_recommendations",
    "top_n",
    "training_dataset",
    "metrics_json",
    "resume",
    "wait",
)
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# Settings an evaluation takes from the checkpoint; a flag that contradicts one is refused.
CHECKPOINT_SETTINGS = ("model", "split", "maxlen", "loss", "relevance", "relevance_threshold", "cold_start",
                       "cold_start_frac", "cold_user_events", "cold_start_seed", "features",
                       "id_embedding")  # fmt: skip
# Settings an evaluation of a checkpoint takes from the flags.
EVALUATION_SETTINGS = ("k", "eval_protocol", "num_eval_negatives", "seed")


def _optional_float(value: str) -> float | None:
    if value.strip().lower() in {"none", "null", ""}:
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {value!r}") from None


def add_parser(subparsers: Any) -> None:
    """Register ``train`` (every flag of the original ``main.py`` plus the study's).

    The flags are added in named steps, in the order ``--help`` lists them: the original project's run and
    architecture flags, its checkpoint and recommendation flags, then the study's data, evaluation and
    training flags.
    """
    from sasrec.models.base import MODELS, _load_registry

    _load_registry()
    parser = subparsers.add_parser(
        "train",
        help="train a sequential model, evaluate a checkpoint, or write recommendations (the original main.py)",
        description=(
            "Train SASRec (Kang & McAuley, ICDM 2018) or a rival (--model) on a prepared KuaiRec matrix or SASRec "
            "text file, evaluate a checkpoint (--inference_only=true; --training_dataset for the big-to-small "
            "test), or write top-N recommendations (--generate_recommendations=true). Paths resolve from the "
            "current directory."
        ),
    )
    _add_original_run_flags(parser)
    _add_original_checkpoint_flags(parser)
    _add_study_data_flags(parser, sorted(MODELS))
    _add_study_evaluation_flags(parser)
    _add_study_training_flags(parser)
    parser.set_defaults(func=run, _train_parser=parser)


def _add_original_run_flags(parser: argparse.ArgumentParser) -> None:
    """The original project's dataset, run name, optimisation and architecture flags, and the device."""
    add = parser.add_argument
    add("--dataset", help="small_matrix, big_matrix, *_no_remapping, or a SASRec text-file path")
    add("--train_dir", help="run name: checkpoints go to models/<dataset>_<train_dir>/ (default: default)")
    add("--batch_size", type=int, help="users per batch (per process under torchrun)")
    add("--lr", type=float)
    add("--maxlen", type=int)
    add("--hidden_units", type=int)
    add("--num_blocks", type=int)
    add("--num_epochs", type=int)
    add("--num_heads", type=int)
    add("--dropout_rate", type=float)
    add("--l2_emb", type=float)
    add("--device", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")


def _add_original_checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    """The original project's flags of evaluation, negatives, recommendations and the big-to-small test."""
    add = parser.add_argument
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


def _add_study_data_flags(parser: argparse.ArgumentParser, models: list[str]) -> None:
    """The study's model, data folder, loss, split, fitting policy and seed."""
    add = parser.add_argument
    add(
        "--model",
        choices=models,
        help="model to train (default sasrec); its presets fill unset flags",
    )
    add(
        "--data-dir",
        "--data_dir",
        dest="data_dir",
        help="folder of the KuaiRec CSVs (default: data/raw, else data/simulated)",
    )
    add("--loss", choices=LOSSES)
    add(
        "--target",
        choices=TARGETS,
        help="which fitted views are positives: views (default), liked, relevant, graded (weighted by watch_ratio)",
    )
    add(
        "--split",
        choices=SPLITS,
        help="default temporal; leave_one_out for SASRec text files (they have no time)",
    )
    add(
        "--fit_on",
        choices=FIT_POLICIES,
        help="fitting policy: train (default) or train_valid (retrain for the selected epochs)",
    )
    add(
        "--cold_start",
        choices=COLD_START_PROTOCOLS,
        help="cold-start protocol: none (default), items (withhold videos) or users (test cold users)",
    )
    add("--cold_start_frac", type=float, help="fraction of videos withheld / users made cold (default 0.1)")
    add("--cold_user_events", type=int, help="training events a cold user keeps (k, default 5)")
    add("--cold_start_seed", type=int, help="seed of the withheld videos / cold users (default 0)")
    add("--seed", type=int)


def _add_study_evaluation_flags(parser: argparse.ArgumentParser) -> None:
    """The study's metric cut-off, protocol, relevance rule, metrics file and YAML settings file."""
    add = parser.add_argument
    add("--k", type=int, help="metric cut-off (default 10)")
    add("--eval_protocol", choices=EVAL_PROTOCOLS)
    add("--num_eval_negatives", type=int)
    add("--relevance", choices=RELEVANCE_RULES, help="relevance rule (default threshold: watch_ratio > 2.0)")
    add(
        "--relevance_threshold",
        type=_optional_float,
        help="relevant if watch_ratio > this (default: dataset's)",
    )
    add("--metrics_json", help="write validation and test metrics to this JSON file")
    add("--config", help="YAML mapping of these flags' names to values (explicit flags win)")


def _add_study_training_flags(parser: argparse.ArgumentParser) -> None:
    """The study's loss parameters, early stopping, speed switches, resuming, waiting and progress bars."""
    add = parser.add_argument
    add("--num_negatives", type=int, help="negatives of sampled_softmax / gbce")
    add("--gbce_t", type=float, help="gSASRec calibration t (default 0.75)")
    add("--mask_prob", type=float, help="BERT4Rec masking probability (default 0.2)")
    add("--dislike_weight", type=float, help="weight of disliked negatives (default 2.0)")
    add("--patience", type=int, help="epochs without a better validation NDCG@k before stopping (0: never)")
    add("--min_epochs", type=int, help="never stop early before this epoch")
    add("--eval_every", type=int, help="validate every this many epochs")
    add(
        "--attention_dropout",
        type=_optional_float,
        help="dropout of attention probabilities (default: dropout_rate)",
    )
    add("--fast_dropout", type=str2bool, metavar="BOOL", help="cheap CPU dropout masks (default true)")
    add(
        "--features",
        type=features_argument,
        metavar="{none,all,GROUP[,GROUP...]}",
        help="side features fused into every model's item (and user) representation: none (default), all "
        "(every available group) or a comma list of tags, categories, caption, item_daily, user",
    )
    add(
        "--id_embedding",
        type=str2bool,
        metavar="BOOL",
        help="keep the item id embeddings beside the features (default true; false: content only)",
    )
    add(
        "--id_dropout",
        type=float,
        help="probability of dropping an item's id embedding at a training step, so the features alone learn "
        "to represent it, as for a video never seen in training (default 0; needs --features)",
    )
    add("--amp", type=str2bool, metavar="BOOL", help="bf16 autocast on CUDA (no effect on CPU)")
    add("--compile", type=str2bool, metavar="BOOL", help="torch.compile the model")
    add(
        "--resume",
        type=str2bool,
        metavar="BOOL",
        help="continue training (from --state_dict_path or the newest checkpoint)",
    )
    add(
        "--wait",
        type=str2bool,
        metavar="BOOL",
        help="wait for another run writing the same run folder (default: refuse)",
    )
    add("--progress", type=str2bool, metavar="BOOL", help="progress bars (default true)")


# -------------------------------------------------------------------------------------------- settings
def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the YAML file and explicit flags (flags win); only keys that were given."""
    parser: argparse.ArgumentParser = args._train_parser
    actions = {action.dest: action for action in parser._actions}
    known = set(CONFIG_FIELDS) | set(COMMAND_FLAGS)
    merged: dict[str, Any] = {}
    if args.config:
        config_path = user_path(args.config)
        if not config_path.is_file():
            raise MissingDataError(
                f"--config={args.config}: config file {config_path} does not exist; expected a YAML "
                "mapping of flag names to values"
            )
        for raw_key, value in load_yaml_mapping(config_path).items():
            key = str(raw_key).replace("-", "_")
            if key not in known:
                raise ConfigError(
                    f"config file {config_path}: unknown parameter {raw_key!r}; expected flag names such as "
                    "dataset, train_dir, model, lr, maxlen, num_epochs, loss"
                )
            action = actions.get(key)
            if isinstance(value, str) and action is not None and callable(action.type):
                try:
                    value = action.type(value)
                except (argparse.ArgumentTypeError, ValueError) as exc:
                    raise ConfigError(f"config file {config_path}: {key}: {exc}") from None
            if action is not None and action.choices is not None and value not in action.choices:
                choices = ", ".join(map(str, action.choices))
                raise ConfigError(f"config file {config_path}: {key} must be one of {choices}; got {value!r}")
            merged[key] = value
    for key in known:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    for key in ("data_dir", "state_dict_path", "metrics_json"):
        if merged.get(key):
            merged[key] = str(user_path(merged[key]))
    if merged.get("dataset"):
        merged["dataset"] = dataset_argument(str(merged["dataset"]))
    if merged.get("training_dataset"):
        merged["training_dataset"] = dataset_argument(str(merged["training_dataset"]), "--training_dataset")
    return merged


def _is_text_path(dataset: str) -> bool:
    """Whether ``dataset`` names a SASRec text file rather than a KuaiRec matrix."""
    from sasrec.data.preparation.params import DATASETS, NO_REMAPPING_SUFFIX

    return dataset.removesuffix(NO_REMAPPING_SUFFIX) not in DATASETS


def _config(settings: dict[str, Any], **overrides: Any) -> TrainConfig:
    values = {key: settings[key] for key in CONFIG_FIELDS if key in settings}
    values.update(overrides)
    try:
        return TrainConfig.for_model(values.pop("model", "sasrec"), **values)
    except TypeError as exc:  # a YAML value of the wrong type
        raise ConfigError(f"invalid training parameter: {exc}") from None


def _load(dataset: str, data_dir: str | None, progress: bool | None) -> PreparedData:
    from sasrec.data.preparation.pipeline import load_prepared

    return load_prepared(dataset, data_dir=Path(data_dir) if data_dir else None, progress=progress)


# -------------------------------------------------------------------------------------------- printing
def _format_summary(label: str, summary: dict[str, float], k: int) -> str:
    names = headline_metrics(k)
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
    from sasrec.models.base import model_class

    name = model_class(config.model).checkpoint_prefix
    payload = metrics_payload(
        name, data_name, config.split, config.eval_protocol, config.k, valid, test, extra
    )
    payload["fit_on"] = config.fit_on
    written = write_metrics_json(payload, Path(path))
    print(f"metrics written to {written}")


def _recommend(
    checkpoint: Path, data: PreparedData, top_n: int, device: str, loaded: tuple | None = None
) -> None:
    """Top-N lists of every user through the public :class:`~sasrec.inference.recommender.Recommender`
    (``loaded``: the checkpoint's ``(model, config, payload)`` when already in memory)."""
    from sasrec.inference.recommend import write_recommendations
    from sasrec.inference.recommender import Recommender

    recommender = (
        Recommender.from_loaded(*loaded, checkpoint, device=device)
        if loaded is not None
        else Recommender.from_checkpoint(checkpoint, device=device)
    )
    frame = recommender.recommend_dataset(data, top_n=top_n)
    stem = checkpoint.parent / f"recommendations.{data.name}.{recommender.config.split}.top{top_n}"
    made_by = {"checkpoint": str(checkpoint), "dataset": data.name, "fingerprint": data.fingerprint,
               "split": recommender.config.split, "top_n": top_n}  # fmt: skip
    parquet_path, csv_path = write_recommendations(frame, stem, made_by=made_by)
    n_users = frame["user_id"].nunique()
    n_fallback = frame.loc[frame["fallback"], "user_id"].nunique()
    print(
        f"recommendations: top {top_n} for {n_users} users ({n_fallback} by the popularity fallback) "
        f"written to {parquet_path} and {csv_path} (checksums in {stem.name}.manifest.json)"
    )


# ------------------------------------------------------------------------------------------ evaluation
def _test_task(data: PreparedData, config: TrainConfig, maxlen: int) -> Any:
    task = build_eval_task(data, config.split, "test", maxlen=maxlen, **config.relevance_arguments(),
                           cold_start=config.cold_start_spec())  # fmt: skip
    try:
        return require_relevant(task, "test", config)
    except ConfigError as exc:
        if config.cold_start_spec() is None:
            raise
        tested = "withheld videos" if config.cold_start == "items" else "cold users"
        raise ConfigError(
            f"{exc}; under cold_start={config.cold_start} only the {tested}' test events are targets: raise "
            "cold_start_frac or choose another relevance"
        ) from None


def _evaluate(model: Any, popularity: np.ndarray, task: Any, config: TrainConfig, device: Any) -> EvalResult:
    scorer = SequentialScorer(
        model, popularity=popularity, batch_size=config.eval_batch_size, device=device, amp=config.amp
    )
    result = evaluate_model(scorer, task, config, config.progress)
    if len(scorer.fallback_rows):
        print(f"{task.name}: {len(scorer.fallback_rows)} users had no input and were scored by popularity")
    return result


# ------------------------------------------------------------------------------------------- inference
def _check_against_checkpoint(settings: dict[str, Any], saved: TrainConfig, checkpoint: Path) -> None:
    """Refuse a flag that contradicts the checkpoint (one line naming both values)."""
    for name in CHECKPOINT_SETTINGS:
        if name in settings and settings[name] != getattr(saved, name):
            raise ConfigError(
                f"--{name}={settings[name]} contradicts checkpoint {checkpoint.name}, trained with {name}="
                f"{getattr(saved, name)}; evaluation takes {name} from the checkpoint (omit the flag)"
            )


def _existing_checkpoint(path: str) -> Path:
    """The checkpoint file of ``--state_dict_path``, refused in one line when missing or a folder."""
    checkpoint = Path(path)
    if not checkpoint.exists():
        raise MissingDataError(
            f"--state_dict_path={path}: checkpoint {checkpoint} does not exist; expected a .pth file "
            "written by train (in models/<dataset>_<train_dir>/)"
        )
    if not checkpoint.is_file():
        raise ConfigError(f"--state_dict_path={path}: {checkpoint} is a folder, not a checkpoint (.pth) file")
    return checkpoint


def _check_inference_inputs(settings: dict[str, Any]) -> Path:
    """Before any work: the checkpoint exists, the outputs can be written, the evaluation values are valid."""
    path = settings.get("state_dict_path")
    if not path:
        raise ConfigError("--inference_only / --generate_recommendations need --state_dict_path=<checkpoint>")
    checkpoint = _existing_checkpoint(path)
    if settings.get("metrics_json"):
        check_writable(settings["metrics_json"], "metrics file (--metrics_json)")
    if settings.get("generate_recommendations"):
        check_writable(
            checkpoint.parent / "recommendations.parquet", "recommendation files (beside --state_dict_path)"
        )
    _config({key: settings[key] for key in (*EVALUATION_SETTINGS, "device") if key in settings})
    return checkpoint


def _inference(settings: dict[str, Any]) -> int:
    """Evaluate and/or recommend from a checkpoint; split, maxlen, loss and relevance come from it."""
    checkpoint = _check_inference_inputs(settings)
    ignored = sorted(
        k
        for k in ("hidden_units", "num_blocks", "num_heads", "dropout_rate", "lr", "num_epochs")
        if k in settings
    )
    if ignored:
        print(
            f"note: {', '.join('--' + k for k in ignored)} ignored: the checkpoint's architecture and training settings apply"
        )
    progress = settings.get("progress")
    training_name = settings.get("training_dataset")
    data = _load(settings["dataset"], settings.get("data_dir"), progress)
    train_data = _load(training_name, settings.get("data_dir"), progress) if training_name else data
    model, saved, payload = load_checkpoint(checkpoint, train_data)
    _check_against_checkpoint(settings, saved, checkpoint)
    device = resolve_device(settings.get("device") or "auto")
    model.to(device)
    overrides = {key: settings[key] for key in EVALUATION_SETTINGS if key in settings}
    config = dataclasses.replace(saved, **overrides, device=str(device), progress=progress)
    config.validate()
    popularity = payload["popularity"].numpy()
    print(
        f"checkpoint {checkpoint} ({payload.get('model_name', 'sasrec')} trained on {payload['dataset']}, "
        f"weights of epoch {payload['epoch']}, fit on {saved.fit_on})"
    )
    extra = {"checkpoint": str(checkpoint), "trained_on": payload["dataset"], "config": saved.to_dict(),
             "fit_events": payload.get("fit_events")}  # fmt: skip
    if settings.get("inference_only"):
        if training_name and config.cold_start_spec() is not None:
            raise ConfigError(
                f"checkpoint {checkpoint.name} was trained under cold_start={config.cold_start}; the "
                "big-to-small test has no cold-start protocol: evaluate it without --training_dataset"
            )
        if training_name:
            task = build_cross_task(train_data, data, maxlen=model.maxlen, **config.relevance_arguments())
            result = _evaluate(model, popularity, require_relevant(task, "test", config), config, device)
            print(_format_summary(f"test {task.name}", result.summary, config.k))
            extra.update({"task": task.name, **{f"task_{k}": v for k, v in task.meta.items()}})
            if settings.get("metrics_json"):
                _write_metrics(
                    settings["metrics_json"], f"{train_data.name}->{data.name}", config, None, result, extra
                )
        else:
            results = {}
            for stage in ("valid", "test"):
                task = build_eval_task(
                    data, config.split, stage, maxlen=model.maxlen, **config.relevance_arguments(),
                    cold_start=config.cold_start_spec(),
                )  # fmt: skip
                results[stage] = _evaluate(
                    model, popularity, require_relevant(task, stage, config), config, device
                )
                print(_format_summary(f"{stage} {task.name}", results[stage].summary, config.k))
            if settings.get("metrics_json"):
                _write_metrics(
                    settings["metrics_json"], data.name, config, results["valid"], results["test"], extra
                )
    if settings.get("generate_recommendations"):
        _recommend(
            checkpoint, train_data, int(settings.get("top_n") or 10), str(device), (model, saved, payload)
        )
    return 0


# -------------------------------------------------------------------------------------------- training
def _check_training_flags(settings: dict[str, Any]) -> None:
    """Refuse flag combinations that do not say what to do with a checkpoint."""
    if settings.get("state_dict_path") and not settings.get("resume"):
        raise ConfigError(
            "--state_dict_path is given without --inference_only=true, --generate_recommendations=true or "
            "--resume=true: say whether to evaluate, recommend from, or continue training the checkpoint"
        )
    if settings.get("training_dataset"):
        raise ConfigError(
            "--training_dataset is only used with --inference_only=true (the big-to-small test)"
        )
    if settings.get("resume") and settings.get("state_dict_path"):
        _existing_checkpoint(settings["state_dict_path"])


def _setup_training(
    settings: dict[str, Any],
) -> tuple[DistContext, TrainConfig, PreparedData, Path, torch.device]:
    """Everything checked before any training: settings, output paths (up front), data, split, device, ranks."""
    context = context_from_env()
    draft = _config(settings)  # validates every value before any work
    name = Path(settings["dataset"]).stem if _is_text_path(settings["dataset"]) else settings["dataset"]
    folder = run_dir(name, draft.train_dir)
    if context.is_main:
        check_writable(folder, f"run folder of --train_dir={draft.train_dir}", folder=True)
        if settings.get("metrics_json"):
            check_writable(settings["metrics_json"], "metrics file (--metrics_json)")
    data = _load(settings["dataset"], settings.get("data_dir"), settings.get("progress"))
    config = _config(settings, split=default_split(data, settings.get("split")))
    # gSASRec's 256 negatives on a small catalogue: capped (a warning), the run records the value used
    config = fit_to_catalogue(config, data.num_items, data.name)
    check_split_usable(
        data, config.split
    )  # a split with no validation or test user: one line, nothing written
    device = resolve_device(config.device)
    if context.distributed and device.type == "cuda":  # one GPU per process, chosen by torchrun's LOCAL_RANK
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
        config = dataclasses.replace(config, device=str(device))
    return init_process_group(device, context), config, data, folder, device


def _describe(config: TrainConfig, data: PreparedData, device: torch.device, context: DistContext) -> str:
    variants = (", explicit negatives" if config.explicit_negatives else "") + (
        ", weighted dislikes" if config.weighted_dislike else ""
    )
    variants += f", target {config.target}" if config.target != "views" else ""
    processes = f" x {context.world_size} processes ({context.backend})" if context.distributed else ""
    cold = f", cold start {config.cold_start}" if config.cold_start_spec() is not None else ""
    if config.features != "none":
        cold += f", features {config.features}" + ("" if config.id_embedding else " without id embeddings")
    return (
        f"training {config.model} on {data.name} ({data.num_users} users, {data.num_items} items, split "
        f"{config.split}, loss {config.loss}{variants}, fit on {config.fit_on}{cold}) on {device}{processes}"
    )


def _report(result: Any, data: PreparedData, config: TrainConfig, test_task: Any, device: torch.device,
            settings: dict[str, Any]) -> None:  # fmt: skip
    """Rank 0 after training: the best epoch's validation result (reused), the test metrics, files."""
    print(f"best epoch {result.best_epoch}; checkpoint {result.checkpoint_path}")
    valid = result.best_valid_result
    if valid is None:  # resumed after the best epoch was already found: validate once
        valid = _evaluate(result.model, result.popularity, validation_task(data, config), config, device)
    test = _evaluate(result.model, result.popularity, test_task, config, device)
    print(
        _format_summary(f"valid {valid.task_name} (best epoch {result.best_epoch})", valid.summary, config.k)
    )
    print(_format_summary(f"test {test.task_name}", test.summary, config.k))
    if settings.get("metrics_json"):
        extra = {
            "checkpoint": str(result.checkpoint_path) if result.checkpoint_path else None,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "epochs_run": int(result.log["epoch"].max()) if len(result.log) else 0,
            "config": config.to_dict(),
            **_adjustments(settings, config),
            "fit_events": result.fit_events,
            "log": result.log.replace({np.nan: None}).to_dict("records"),
        }
        _write_metrics(settings["metrics_json"], data.name, config, valid, test, extra)
    if settings.get("generate_recommendations") and result.checkpoint_path is not None:
        _recommend(result.checkpoint_path, data, int(settings.get("top_n") or 10), str(device))


def _adjustments(settings: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """``{"adjusted": {name: {"requested", "used"}}}`` for values lowered to fit the data, else empty."""
    requested = _config(settings, split=config.split)
    adjusted = {
        name: {"requested": getattr(requested, name), "used": getattr(config, name)}
        for name in ("num_negatives",)
        if getattr(requested, name) != getattr(config, name)
    }
    return {"adjusted": adjusted} if adjusted else {}


def _remove_leftovers(folder: Path) -> None:
    """Temporaries of a killed checkpoint write (never complete-looking: they have a hidden .tmp name)."""
    from sasrec.paths import find_temporaries, remove_stale_temporaries, target_of_temporary

    for target in {target_of_temporary(path) for path in find_temporaries(folder)} - {None}:
        remove_stale_temporaries(target)  # files or folders; logs what it removed or restored


def _training(settings: dict[str, Any]) -> int:
    """Train (or resume) under the run folder's lock, then report validation and test metrics."""
    _check_training_flags(settings)
    context, config, data, folder, device = _setup_training(settings)
    test_task = _test_task(data, config, config.maxlen)
    hint = "wait for it to finish, or pass --wait=true to wait for it"
    lock = locked(folder, what="run folder", wait=bool(settings.get("wait")), hint=hint)
    with lock if context.is_main else contextlib.nullcontext():  # rank 0 writes the run folder
        if context.is_main:
            _remove_leftovers(folder)
        resume_from = None
        if settings.get("resume"):
            path = settings.get("state_dict_path")
            resume_from = Path(path) if path else latest_checkpoint(folder, config)
            if context.is_main:
                print(f"resuming from {resume_from}")
        if context.is_main:
            print(_describe(config, data, device, context), flush=True)
        result = train(data, config, out_dir=folder, resume_from=resume_from, on_epoch=_print_epoch(config.k),
                       context=context)  # fmt: skip
        if context.is_main:
            _report(result, data, config, test_task, device, settings)
    shutdown(context)
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
    check_data_dir(settings.get("data_dir"), (settings["dataset"], settings.get("training_dataset") or ""))
    if settings.get("inference_only") or (
        settings.get("generate_recommendations")
        and settings.get("state_dict_path")
        and not settings.get("resume")
    ):
        return _inference(settings)
    return _training(settings)
