"""The training loop shared by every sequential model: epochs, validation, early stopping, checkpoints.

:func:`train` runs small named steps: :func:`build_run` (model, optimizer, sequences, sampler),
:func:`restore` (resume from a ``.last.pth`` checkpoint), :func:`run_epoch`, :func:`validate`, an
:class:`EarlyStopper` (patience counted in epochs, a minimum number of epochs) and :func:`save`
(best and last checkpoints, log CSV). Adam(betas=(0.9, 0.98)) as the reference SASRec. The test events
are never used: parameters are fit on the training events of the split, and under the ``train_valid``
policy the model is then retrained on training + validation events for the epoch count validation chose.

Randomness is re-seeded at every epoch from (seed, epoch, rank), so an interrupted run resumed from its
last checkpoint reproduces the uninterrupted one exactly, with one process or many (torchrun, see
:mod:`sasrec.training.distributed`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sasrec.data.cold_start import ColdStart
from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import CheckpointMismatchError, ConfigError
from sasrec.evaluation.protocol import EvalResult, evaluate
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.models.base import SequentialRecommender, build_model
from sasrec.models.targets import MASK_TARGETS, describe_target, event_weights, target_counts, target_rule
from sasrec.paths import atomic_path
from sasrec.progress import progress_enabled
from sasrec.training.checkpoints import (
    check_fingerprint,
    checkpoint_name,
    events_digest,
    find_checkpoints,
    log_name,
    prune_checkpoints,
    read_checkpoint,
    run_dir,
    saved_config,
    write_checkpoint,
)
from sasrec.training.config import FIT_POLICIES, TrainConfig, fit_to_catalogue, resolve_device
from sasrec.training.distributed import (
    SINGLE,
    DistContext,
    all_reduce_sum,
    broadcast_flags,
    epoch_shard,
)
from sasrec.training.features import RunFeatures, run_features
from sasrec.training.losses import (
    bce_loss,
    chunked_cross_entropy,
    gathered_logits,
    gbce_beta,
    gbce_loss,
    sampled_softmax_loss,
)
from sasrec.training.negatives import NegativeSampler
from sasrec.training.sequences import length_groups, training_sequences

if TYPE_CHECKING:
    from sasrec.data.features import FeatureTable

logger = logging.getLogger(__name__)
#: Configuration fields a resumed run must share with its checkpoint.
RESUME_INVARIANTS = (
    "model", "split", "maxlen", "hidden_units", "num_blocks", "num_heads", "loss", "explicit_negatives",
    "weighted_dislike", "fit_on", "seed", "batch_size", "lr", "target", "features", "id_embedding",
    "cold_start", "cold_start_frac", "cold_user_events", "cold_start_seed",
)  # fmt: skip


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the model to evaluate: best-on-validation weights (policy ``train``) or the model retrained on
            training + validation events (policy ``train_valid``), in eval mode.
        log: one row per epoch of the selection run: epoch, loss, seconds, ``valid_<metric>`` where evaluated.
        best_epoch: epoch of the best validation NDCG@k (0 if never evaluated).
        best_valid: validation summary of the best epoch.
        best_valid_result: the full validation result of the best epoch (reused, never recomputed).
        checkpoint_path: the checkpoint holding :attr:`model` (None when nothing was saved).
        best_checkpoint: the selection run's best-on-validation checkpoint (= ``checkpoint_path`` under the
            ``train`` policy; the model that validation metrics describe under ``train_valid``).
        last_checkpoint: the resume checkpoint of the selection run.
        config: the configuration used.
        stopped_early: whether patience ran out.
        popularity: (I+1,) counts of the fitted events per item (the scorer's fallback for empty inputs); of
            the target events under ``target`` liked or relevant, their weights under graded.
        fit_events: count and digest of the events the model's parameters were fit on.
    """

    model: SequentialRecommender
    log: pd.DataFrame
    best_epoch: int
    best_valid: dict[str, float]
    checkpoint_path: Path | None
    config: TrainConfig
    stopped_early: bool = False
    popularity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    best_valid_result: EvalResult | None = None
    last_checkpoint: Path | None = None
    fit_events: dict[str, Any] = field(default_factory=dict)
    best_checkpoint: Path | None = None


class EarlyStopper:
    """Stop once ``patience`` epochs passed without a better value, never before ``min_epochs``.

    Patience counts epochs (not evaluations), so it means the same whatever ``eval_every`` is; 0 disables it.
    """

    def __init__(self, patience: int, min_epochs: int = 0) -> None:
        self.patience, self.min_epochs = int(patience), int(min_epochs)
        self.best_value, self.best_epoch = -math.inf, 0

    def update(self, epoch: int, value: float) -> bool:
        """Record the validation value of ``epoch``; return whether it is the best so far."""
        improved = self.best_epoch == 0 or (not math.isnan(value) and value > self.best_value)
        if improved:
            self.best_value, self.best_epoch = (value if not math.isnan(value) else -math.inf), epoch
        return improved

    def should_stop(self, epoch: int) -> bool:
        """Whether training should end after ``epoch``."""
        return (
            self.patience > 0
            and self.best_epoch > 0
            and epoch >= self.min_epochs
            and epoch - self.best_epoch >= self.patience
        )

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores to resume the stopper."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.best_value, self.best_epoch = float(state["best_value"]), int(state["best_epoch"])


@dataclass
class TrainingRun:
    """Everything one training run holds (built by :func:`build_run`)."""

    config: TrainConfig
    data: PreparedData
    device: torch.device
    context: DistContext
    model: SequentialRecommender
    engine: torch.nn.Module  # the model as called for training: itself, compiled, or DDP-wrapped
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    sampler: NegativeSampler
    tensors: dict[str, torch.Tensor]  # users, inputs, targets, window: (n,) and (n, maxlen)
    widths: np.ndarray  # (n,) non-padding width of each row of inputs (length groups)
    popularity: np.ndarray
    fit_events: dict[str, Any]
    valid_task: EvalTask | None
    beta: float
    folder: Path
    features: RunFeatures | None = None  # the side features the model holds (None: ids only)


@dataclass
class TrainState:
    """What changes from epoch to epoch (and what a resume restores)."""

    stopper: EarlyStopper
    log: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_valid: EvalResult | None = None
    best_summary: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    best_path: Path | None = None
    last_path: Path | None = None


# -------------------------------------------------------------------------------------------- the steps
def policy_mask(
    data: PreparedData, split: str, fit_on: str, stage: str, *, cold_start: ColdStart | None = None
) -> np.ndarray:
    """Events a model's parameters are fit on for ``stage``: the training events of ``split``; for the test
    stage under ``fit_on="train_valid"``, the training and validation events. Under a ``cold_start``
    protocol, minus its removed events (withheld videos' events, cold users' earlier events; see
    :mod:`sasrec.data.cold_start`); None or ``none`` leaves the mask unchanged."""
    if fit_on not in FIT_POLICIES:
        raise ConfigError(f"fit_on must be train or train_valid; got {fit_on!r}")
    history, _ = data.stage_masks(split, "test" if stage == "test" and fit_on == "train_valid" else "valid")
    if cold_start is not None and cold_start.active:
        history = history & cold_start.select(data, split).keep
    return history


def fit_mask(data: PreparedData, config: TrainConfig, *, refit: bool = False) -> np.ndarray:
    """Events whose items the parameters are fit on: the split's training events, plus its validation
    events when retraining under the ``train_valid`` policy (``refit``), minus the events the run's
    ``cold_start`` protocol removes. The training sequences, negatives and popularity are built from it."""
    fit_on = "train_valid" if refit else "train"
    return policy_mask(data, config.split, fit_on, "test", cold_start=config.cold_start_spec())


def validation_task(data: PreparedData, config: TrainConfig) -> EvalTask:
    """The split's validation task (under the run's cold-start protocol: no removed event as input or
    target); refuses (one line) a split or relevance rule that leaves no user."""
    task = build_eval_task(data, config.split, "valid", maxlen=config.maxlen, **config.relevance_arguments(),
                           cold_start=config.cold_start_spec())  # fmt: skip
    return require_relevant(task, "validation", config, data.name)


def require_relevant(task: EvalTask, what: str, config: TrainConfig, dataset: str | None = None) -> EvalTask:
    """``task``, or a one-line refusal when no user has a relevant target (nothing could be measured)."""
    n_relevant = int((np.diff(task.relevant.indptr) > 0).sum()) if len(task) else 0
    if n_relevant == 0 or not np.any(task.relevant.data > 0):
        raise ConfigError(
            f"split={config.split!r} with relevance {relevance_text(config)} leaves no {what} user with a relevant "
            f"target{f' in {dataset}' if dataset else ''} ({len(task)} users have {what} events); choose another "
            "split, relevance or relevance_threshold"
        )
    return task


def relevance_text(config: TrainConfig) -> str:
    """The relevance rule in words for messages (``watch_ratio > 2.0``, ``liked``, ``all``)."""
    arguments = config.relevance_arguments()
    if arguments["relevance"] != "threshold":
        return repr(arguments["relevance"])
    threshold = arguments["relevance_threshold"]
    return f"watch_ratio > {threshold if threshold is not None else 'the dataset threshold'}"


def build_run(
    data: PreparedData,
    config: TrainConfig,
    *,
    mask: np.ndarray,
    validate: bool,
    folder: Path,
    context: DistContext = SINGLE,
    features: FeatureTable | None = None,
) -> TrainingRun:
    """Model (seeded), optimizer, training sequences of the ``mask`` events, negative sampler, validation task.

    Under ``config.features`` other than ``none`` the model holds the selected side-feature groups of
    ``features`` (default: the split's table cached next to the prepared dataset, :func:`run_features`).
    """
    device = resolve_device(config.device)
    # the training target: the inputs stay every view, the weights select (liked, relevant) or weight (graded)
    # the positions whose target event counts; None under views (the loss as before)
    weights = event_weights(data, mask, config.target)  # (n_events,) or None
    sequences = training_sequences(data, config.split, config.maxlen, mask=mask, weights=weights)
    if len(sequences.users) == 0:
        targets = "" if weights is None else f" and a target event ({target_rule(data, config.target)})"
        raise ConfigError(
            f"dataset {data.name} has no user with at least 2 training events{targets} under split "
            f"{config.split!r}"
        )
    # more negatives than the catalogue allows (gSASRec's preset on a small dataset): capped, with a warning;
    # the run's config (checkpoints) records the value used
    config = fit_to_catalogue(config, data.num_items, data.name)
    valid_task = validation_task(data, config) if validate else None
    cold = config.cold_start_spec()
    # a video withheld under item cold-start has no behaviour: its behavioural aggregates are blanked
    blank = cold.select(data, config.split).items if cold is not None and cold.protocol == "items" else None
    side = run_features(data, config.features, config.split, table=features, blank_items=blank)
    torch.manual_seed(config.seed)
    model = build_model(
        config.model, data.num_items, **config.to_dict(), **(side.model_kwargs() if side is not None else {})
    )
    if side is not None:
        model.load_features(side.bundle)
        model.set_fitted_items(torch.from_numpy(data.item_counts(mask) > 0))  # ids of unfitted items unused
        model.id_dropout = float(config.id_dropout)
    model = model.to(device)
    engine: torch.nn.Module = torch.compile(model) if config.compile else model
    if context.distributed:
        device_ids = (
            [device.index if device.index is not None else context.local_rank]
            if device.type == "cuda"
            else None
        )
        # the feature buffers never change: no broadcast of them at every step
        engine = torch.nn.parallel.DistributedDataParallel(
            engine, device_ids=device_ids, **({"broadcast_buffers": False} if side is not None else {})
        )
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    tensors = {
        name: torch.from_numpy(getattr(sequences, name)).to(device)
        for name in ("users", "inputs", "targets", "window")
    }
    if sequences.weights is not None:
        tensors["weights"] = torch.from_numpy(sequences.weights).to(device)  # (n, maxlen) aligned with window
    return TrainingRun(
        config=config, data=data, device=device, context=context, model=model, engine=engine,
        optimizer=config.make_optimizer(model.parameters()),
        generator=generator, sampler=NegativeSampler(data, mask, device=device, generator=generator, unavailable=blank),
        tensors=tensors, widths=(sequences.inputs != 0).sum(axis=1),
        popularity=target_counts(data, mask, config.target).astype(np.float32),
        fit_events={**events_digest(data, mask), **describe_target(data, mask, config.target)},
        valid_task=valid_task, beta=gbce_beta(config.num_negatives, data.num_items, config.gbce_t), folder=folder,
        features=side,
    )  # fmt: skip


def restore(run: TrainingRun, path: Path) -> TrainState:
    """Training state of a ``.last.pth`` checkpoint (weights, optimizer, stopper, log, best weights)."""
    payload = read_checkpoint(path, run.device)
    check_fingerprint(payload, run.data, path)
    recorded = (payload.get("features") or {}).get("digest")
    current = run.features.digest if run.features is not None else None
    if recorded != current:
        raise CheckpointMismatchError(
            f"cannot resume from {path}: it was trained with feature table digest {recorded} but this run's is "
            f"{current}; resume with the same features and side files, or start without --resume"
        )
    saved = saved_config(payload)
    for name in RESUME_INVARIANTS:
        if getattr(saved, name) != getattr(run.config, name):
            raise ConfigError(
                f"cannot resume from {path}: {name} is {getattr(run.config, name)!r} but the checkpoint was "
                f"trained with {getattr(saved, name)!r}"
            )
    if "optimizer_state" not in payload:
        raise ConfigError(
            f"cannot resume from {path}: it holds weights only; resume from a .last.pth checkpoint"
        )
    run.model.load_state_dict(payload["last_model_state"])
    run.optimizer.load_state_dict(payload["optimizer_state"])
    stopper = EarlyStopper(run.config.patience, run.config.min_epochs)
    if "stopper" in payload:
        stopper.load(payload["stopper"])
    else:  # format 1
        stopper.best_epoch = int(payload["best_epoch"])
        stopper.best_value = float(payload["best_valid"].get(f"ndcg@{run.config.k}", -math.inf))
    state = TrainState(
        stopper=stopper, log=[dict(row) for row in payload["log"]], epoch=int(payload["epoch"])
    )
    state.best_state = payload["model_state"] if stopper.best_epoch > 0 else None
    state.best_summary = dict(payload["best_valid"])
    state.stopped_early = bool(payload.get("stopped_early", False)) or stopper.should_stop(state.epoch)
    state.last_path = Path(path)
    best = run.folder / checkpoint_name(run.config, stopper.best_epoch, "best")
    state.best_path = best if stopper.best_epoch > 0 and best.is_file() else None
    return state


def _seed_epoch(run: TrainingRun, epoch: int) -> None:
    """Re-seed dropout and negative sampling from (seed, epoch, rank): resuming is exact at any epoch."""
    seed = (run.config.seed * 1_000_003 + epoch * 7_919 + run.context.rank) % (2**63 - 1)
    torch.manual_seed(seed)
    run.generator.manual_seed(seed)


def run_epoch(run: TrainingRun, epoch: int, *, show: bool = False) -> float:
    """One pass over this rank's shard of the users; returns the mean training loss over all ranks.

    For next-item training, each batch (a seeded random draw of users, as before) is computed in groups of
    rows of similar length, each cut to its own width (:func:`~sasrec.training.sequences.length_groups`)
    instead of padded to ``maxlen``: the models are invariant to left padding and the step's loss is still
    the mean over all the batch's loss positions (one backward pass, one optimizer step), so each step
    minimises the same objective on the same users. Only the random draws (dropout masks, negatives) differ
    from a padded batch's, since fewer are drawn; they stay seeded, so runs and resumes are exactly
    reproducible. A batch whose rows all fill ``maxlen`` (most KuaiRec users at maxlen 200) is computed
    exactly as before, and so is every batch of a model that builds its own training batch (BERT4Rec).
    """
    config, t = run.config, run.tensors
    _seed_epoch(run, epoch)
    run.engine.train()
    order = epoch_shard(len(t["users"]), epoch, config.seed, run.context)  # (n_shard,) on the CPU
    # Next-item training (the default training batch) reads inputs and targets only: rows are grouped by the
    # width of their inputs. A model that builds its own batch draws its corruption over the whole window
    # (BERT4Rec's masks): its rows stay padded to maxlen, so its random draws are unchanged.
    next_item = run.model.trims_training_padding
    total = torch.zeros(2, dtype=torch.float64, device=run.device)  # (sum of batch losses x rows, rows)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.amp and run.device.type == "cuda"
        else nullcontext()
    )
    bar = tqdm(
        order.split(config.batch_size), desc=f"epoch {epoch}", unit="batch", disable=not show, leave=False
    )
    for rows in bar:
        with autocast:
            parts = []  # (mean loss over the group's loss positions, their number) per group
            groups = (
                length_groups(run.widths[rows.numpy()])
                if next_item
                else [(np.arange(len(rows)), config.maxlen)]
            )
            for group, width in groups:
                index = rows[torch.from_numpy(group)].to(run.device)  # (b,)
                weights = t["weights"][index, -width:] if "weights" in t else None  # (b, width) or None
                parts.append(
                    batch_loss_terms(
                        run.model, run.engine, run.sampler, t["users"][index], t["inputs"][index, -width:],
                        t["targets"][index, -width:], t["window"][index, -width:], config, run.beta,
                        weights=weights,
                    )
                )  # fmt: skip
            n_terms = sum(n for _, n in parts)
            mean_loss = parts[0][0] if len(parts) == 1 else sum(m * n for m, n in parts) / max(n_terms, 1)
            n_global = all_reduce_sum(torch.tensor(float(n_terms), device=run.device), run.context)
            # DDP averages gradients over ranks: scaling by n_local / n_global * world makes that average the
            # gradient of the mean over the global batch (one DDP step == one step on the union of shards).
            loss = mean_loss * (n_terms * run.context.world_size / n_global.clamp(min=1.0))
            loss = loss + _regulariser(run.model, config)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        value = float(mean_loss.detach())
        total += torch.tensor([value * len(rows), len(rows)], dtype=torch.float64, device=run.device)
        bar.set_postfix(loss=f"{value:.4f}")
    bar.close()
    total = all_reduce_sum(total, run.context)
    return float(total[0] / total[1].clamp(min=1.0))


def validate(run: TrainingRun) -> EvalResult:
    """Validation result of the current weights (rank 0 only; full ranking unless configured otherwise)."""
    scorer = SequentialScorer(
        run.model, popularity=run.popularity, batch_size=run.config.eval_batch_size, device=run.device
    )
    assert run.valid_task is not None
    return evaluate_model(scorer, run.valid_task, run.config)


def checkpoint_metadata(
    run: TrainingRun, best_epoch: int, best_valid: dict[str, float], log: list[dict[str, Any]]
) -> dict[str, Any]:
    """What every checkpoint of ``run`` records besides its weights: the architecture, the configuration, the
    data it belongs to (name, fingerprint, id maps, the items that exist), the fitted events and the log;
    with side features, their groups, schema and digest (``features``)."""
    config, data = run.config, run.data
    return {
        "model_name": config.model,
        "model_kwargs": run.model.model_kwargs(),
        "config": config.to_dict(),
        "dataset": data.name,
        "fingerprint": data.fingerprint,
        "item_ids": torch.tensor(np.array(data.item_ids, dtype=np.int64)),
        "user_ids": torch.tensor(np.array(data.user_ids, dtype=np.int64)),
        "existing_items": torch.from_numpy(data.existing_items()),
        "best_epoch": best_epoch,
        "best_valid": best_valid,
        "popularity": torch.from_numpy(run.popularity),
        "fit_events": run.fit_events,
        "log": log,
        # the side features (groups, schema, digest); their tensors are buffers of the model's state dict
        **({"features": run.features.describe(config.id_embedding)} if run.features is not None else {}),
    }


def save(run: TrainingRun, state: TrainState, *, improved: bool) -> None:
    """Write the last checkpoint (and the best one when ``improved``), then remove superseded files."""
    config = run.config
    payload = checkpoint_metadata(run, state.stopper.best_epoch, state.best_summary, state.log)
    if improved and state.best_state is not None:
        best = run.folder / checkpoint_name(config, state.stopper.best_epoch, "best")
        write_checkpoint(
            {**payload, "model_state": state.best_state, "epoch": state.stopper.best_epoch}, best
        )
        state.best_path = best
    last = run.folder / checkpoint_name(config, state.epoch, "last")
    write_checkpoint(
        {
            **payload,
            "model_state": state.best_state if state.best_state is not None else run.model.state_dict(),
            "last_model_state": run.model.state_dict(),
            "optimizer_state": run.optimizer.state_dict(),
            "epoch": state.epoch,
            "stopper": state.stopper.state(),
            "stopped_early": state.stopped_early,
        },
        last,
    )
    state.last_path = last
    prune_checkpoints(run.folder, config, "best", state.best_path)
    prune_checkpoints(run.folder, config, "last", last)
    with atomic_path(run.folder / log_name(config)) as tmp:
        pd.DataFrame(state.log).to_csv(tmp, index=False)


# ------------------------------------------------------------------------------------------------- train
def train(
    data: PreparedData,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    save: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    context: DistContext = SINGLE,
    features: FeatureTable | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``data`` under the fitting policy ``config.fit_on``; never look at test.

    Args:
        data: prepared dataset.
        config: hyperparameters.
        out_dir: checkpoint folder (default ``models/<dataset>_<train_dir>``).
        resume_from: a ``.last.pth`` checkpoint to continue from.
        save: write best and last checkpoints and the log CSV (rank 0 only).
        on_epoch: called with each epoch's log row on rank 0 (the command line prints it).
        context: this process's place in a torchrun launch.
        features: the side-feature table to use under ``config.features`` (default: the split's table cached
            next to the prepared dataset).
    """
    config.validate()
    write = save and context.is_main
    folder = Path(out_dir) if out_dir is not None else run_dir(data.name, config.train_dir)
    mask = fit_mask(data, config)
    run = build_run(data, config, mask=mask, validate=True, folder=folder, context=context, features=features)
    state = (
        restore(run, Path(resume_from))
        if resume_from is not None
        else TrainState(stopper=EarlyStopper(config.patience, config.min_epochs))
    )
    show = progress_enabled(config.progress) and context.is_main
    for epoch in range(state.epoch + 1, config.num_epochs + 1):
        if state.stopped_early:
            break
        state.epoch = epoch
        _epoch_step(run, state, epoch, show=show, write=write, on_epoch=on_epoch)
    if state.best_state is not None:
        run.model.load_state_dict(state.best_state)
    run.model.eval()
    result = TrainResult(
        model=run.model, log=pd.DataFrame(state.log), best_epoch=state.stopper.best_epoch,
        best_valid=state.best_summary, checkpoint_path=state.best_path, config=run.config,
        stopped_early=state.stopped_early, popularity=run.popularity, best_valid_result=state.best_valid,
        last_checkpoint=state.last_path, fit_events=run.fit_events,
    )  # fmt: skip
    if result.checkpoint_path is None and write:
        found = find_checkpoints(folder, config, "best")
        result.checkpoint_path = found[-1] if found else None
    result.best_checkpoint = result.checkpoint_path
    if config.fit_on == "train_valid":
        result = refit(data, config, result, folder=folder, write=write, context=context, features=features)
    return result


def _epoch_step(
    run: TrainingRun,
    state: TrainState,
    epoch: int,
    *,
    show: bool,
    write: bool,
    on_epoch: Callable[[dict[str, Any]], None] | None,
) -> None:
    """Train one epoch, validate when due (rank 0), decide early stopping (broadcast), save."""
    config = run.config
    started = time.perf_counter()
    row: dict[str, Any] = {"epoch": epoch, "loss": run_epoch(run, epoch, show=show)}
    improved = stop = False
    if epoch % config.eval_every == 0 or epoch == config.num_epochs:
        if run.context.is_main:
            result = validate(run)
            row.update({f"valid_{key}": float(value) for key, value in result.summary.items()})
            improved = state.stopper.update(epoch, float(result.summary.get(f"ndcg@{config.k}", math.nan)))
            if improved:
                state.best_state = {
                    key: value.detach().clone() for key, value in run.model.state_dict().items()
                }
                state.best_valid, state.best_summary = (
                    result,
                    {k: float(v) for k, v in result.summary.items()},
                )
            stop = state.stopper.should_stop(epoch)
        improved, stop = broadcast_flags([improved, stop], run.context, run.device)
    state.stopped_early = stop
    row["seconds"] = time.perf_counter() - started
    state.log.append(row)
    if run.context.is_main and on_epoch is not None:
        on_epoch(row)
    if write:
        save(run, state, improved=improved)


def refit(
    data: PreparedData,
    config: TrainConfig,
    selected: TrainResult,
    *,
    folder: Path,
    write: bool,
    context: DistContext = SINGLE,
    features: FeatureTable | None = None,
) -> TrainResult:
    """The ``train_valid`` policy: retrain from scratch on training + validation events for the selected
    number of epochs, with the same seed (nothing looks at test); saves ``....train_valid.pth``. Side
    features are the selection run's (their daily aggregates stop before the validation period)."""
    epochs = max(selected.best_epoch, 1)
    run = build_run(
        data, config, mask=fit_mask(data, config, refit=True), validate=False, folder=folder, context=context,
        features=features,
    )  # fmt: skip
    for epoch in range(1, epochs + 1):
        run_epoch(run, epoch)
    run.model.eval()
    path = None
    if write:
        path = folder / checkpoint_name(config, epochs, "train_valid")
        metadata = checkpoint_metadata(
            run, selected.best_epoch, selected.best_valid, selected.log.to_dict("records")
        )
        write_checkpoint({**metadata, "model_state": run.model.state_dict(), "epoch": epochs}, path)
        prune_checkpoints(folder, config, "train_valid", path)
    logger.info(
        "retrained %s on training + validation events for %d epochs (fit_on=train_valid)",
        config.model,
        epochs,
    )
    return replace(
        selected, model=run.model, checkpoint_path=path, popularity=run.popularity, fit_events=run.fit_events
    )


# ------------------------------------------------------------------------------------------------ losses
def batch_loss_terms(
    model: SequentialRecommender,
    engine: torch.nn.Module,
    sampler: NegativeSampler,
    users: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    window: torch.Tensor,
    config: TrainConfig,
    beta: float,
    *,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """(mean loss over the batch's loss positions, number of those positions) under ``config.loss``.

    The model decides what it is trained on (:meth:`SequentialRecommender.training_batch`): next items for
    causal models, masked items for BERT4Rec; losses and negatives are shared by every model. ``engine``
    is the model as called for the forward pass (DDP wrapper or compiled module, or the model itself).

    ``weights`` (B, T), aligned with ``window``, are the target weights of the window's events
    (``config.target``, :mod:`sasrec.models.targets`); a model's loss target at position t is ``window[:, t]``
    or 0, so they are its positions' weights. ``liked`` / ``relevant``: only the positions whose target is a
    target event are loss positions (the mean runs over them; negatives are drawn as before); ``graded``:
    every position, its term scaled by the weight (``sum(w * loss) / N``, the weights of mean 1 keeping the
    scale of ``views``). None (``views``): every non-padding position, exactly as before.
    """
    inputs, targets = model.training_batch(inputs, targets, window, sampler.generator)
    hidden = engine(inputs, users=users) if model.user_features else engine(inputs)  # (B, T, d)
    valid = targets != 0  # (B, T)
    position_weight = None  # (B, T) the graded target's weights
    if weights is not None:
        if config.target in MASK_TARGETS:
            valid = valid & (weights > 0)  # (B, T) positions whose target event is a positive
        else:
            position_weight = torch.where(valid, weights, 0.0)  # (B, T)
    n_terms = int(valid.sum())
    if n_terms == 0:  # no target event among this group's positions: no loss, the same graph (DDP)
        return hidden.sum() * 0.0 + model.output_embeddings().sum() * 0.0, 0
    if config.loss == "bce":
        negatives, disliked = sampler.bce_negatives(users, targets, explicit=config.explicit_negatives)
        logits = model.score_items(hidden, torch.stack([targets, negatives], dim=-1))  # (B, T, 2): one lookup
        pos_logits, neg_logits = logits[..., 0], logits[..., 1]  # (B, T) each
        weight = None
        if config.weighted_dislike:
            weight = torch.where(disliked, float(config.dislike_weight), 1.0)  # (B, T)
        return bce_loss(pos_logits, neg_logits, valid, weight, position_weight), n_terms
    row_weight = None if position_weight is None else position_weight[valid]  # (N,)
    if config.loss == "ce":
        weight, target_rows = model.output_embeddings(), targets[valid]  # (R, d), (N,)
        if sampler.catalogue is not None:  # item cold-start: the withheld videos are not in the softmax
            weight, target_rows = weight[sampler.catalogue], sampler.catalogue_rows[target_rows]
        return chunked_cross_entropy(
            hidden[valid], weight, target_rows, config.ce_chunk_size, row_weight
        ), n_terms
    # K negatives drawn for every loss position (gSASRec's k negatives per positive), never a training item of the
    # user; drawn for the N positions in row order, so extra padding columns do not change the draw
    position_users = users[:, None].expand_as(targets)[valid]  # (N,)
    negatives = sampler.uniform(position_users, (config.num_negatives,))  # (N, K)
    pos_logits = model.score_items(hidden, targets)[valid]  # (N,)
    neg_logits = gathered_logits(
        hidden[valid], model.output_embeddings(), negatives, config.ce_chunk_size
    )  # (N, K)
    if config.loss == "sampled_softmax":
        return sampled_softmax_loss(pos_logits, neg_logits, row_weight), n_terms
    return gbce_loss(pos_logits, neg_logits, beta, row_weight), n_terms


def _regulariser(model: SequentialRecommender, config: TrainConfig) -> torch.Tensor | float:
    """The reference's L2 term on the item embeddings (``l2_emb``; 0 by default)."""
    if config.l2_emb > 0:
        return config.l2_emb * torch.linalg.vector_norm(model.output_embeddings())
    return 0.0


def _batch_loss(
    model: SequentialRecommender,
    sampler: NegativeSampler,
    users: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    window: torch.Tensor,
    config: TrainConfig,
    beta: float,
    *,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss of one batch in one process (mean over loss positions, plus the L2 term)."""
    mean_loss, _ = batch_loss_terms(
        model, model, sampler, users, inputs, targets, window, config, beta, weights=weights
    )
    return mean_loss + _regulariser(model, config)


def evaluate_model(
    scorer: SequentialScorer, task: EvalTask, config: TrainConfig, progress: bool | None = False
) -> EvalResult:
    """Evaluate a scorer on ``task`` with the config's K, protocol, negatives and seed."""
    return evaluate(
        scorer,
        task,
        k=config.k,
        protocol=config.eval_protocol,
        num_negatives=config.num_eval_negatives,
        seed=config.seed,
        batch_size=config.eval_batch_size,
        progress=progress,
    )
