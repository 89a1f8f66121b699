"""The training loop shared by every sequential model: epochs, validation, early stopping, checkpoints.

Adam(betas=(0.9, 0.98)) as the reference SASRec; validation on the split's validation events after every
``eval_every`` epochs; the best-on-validation weights are kept; the test events are never used.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.models.base import SequentialRecommender, build_model
from sasrec.paths import atomic_path
from sasrec.progress import progress_enabled
from sasrec.training.checkpoints import (
    CHECKPOINT_FORMAT,
    _read_checkpoint,
    _rng_state,
    _set_rng_state,
    check_fingerprint,
    checkpoint_name,
    log_name,
    run_dir,
)
from sasrec.training.config import TrainConfig, resolve_device
from sasrec.training.losses import bce_loss, chunked_cross_entropy, gbce_beta, gbce_loss, sampled_softmax_loss
from sasrec.training.negatives import NegativeSampler
from sasrec.training.sequences import item_popularity, training_sequences

if TYPE_CHECKING:
    from sasrec.evaluation.protocol import EvalResult


# ------------------------------------------------------------------------------------------------ train
@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the model with the best-on-validation weights restored, in eval mode.
        log: one row per epoch: epoch, loss, seconds, and ``valid_<metric>`` where evaluated.
        best_epoch: epoch of the best validation NDCG@k (0 if never evaluated).
        best_valid: validation summary of the best epoch.
        checkpoint_path: the last checkpoint written (None when ``out_dir`` writing was disabled).
        config: the configuration used.
        stopped_early: whether patience ran out.
        popularity: (I+1,) training-event counts per item (the scorer's fallback).
    """

    model: SequentialRecommender
    log: pd.DataFrame
    best_epoch: int
    best_valid: dict[str, float]
    checkpoint_path: Path | None
    config: TrainConfig
    stopped_early: bool = False
    popularity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def _check_resume(saved: TrainConfig, config: TrainConfig) -> None:
    for name in ("split", "maxlen", "hidden_units", "num_blocks", "num_heads", "loss", "explicit_negatives"):
        if getattr(saved, name) != getattr(config, name):
            raise ConfigError(
                f"cannot resume: {name} is {getattr(config, name)!r} but the checkpoint was trained with "
                f"{getattr(saved, name)!r}"
            )


def _batch_loss(
    model: SequentialRecommender,
    sampler: NegativeSampler,
    users: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    window: torch.Tensor,
    config: TrainConfig,
    beta: float,
) -> torch.Tensor:
    """Loss of one batch (B users) under ``config.loss``; positions whose loss target is 0 contribute nothing.

    The model decides what it is trained on (:meth:`SequentialRecommender.training_batch`): next items for
    causal models, masked items for BERT4Rec; the losses and negatives are the same for every model.
    """
    inputs, targets = model.training_batch(inputs, targets, window, sampler.generator)
    hidden = model(inputs)  # (B, T, d)
    valid = targets != 0  # (B, T)
    if config.loss == "bce":
        negatives, disliked = sampler.bce_negatives(users, targets, explicit=config.explicit_negatives)
        logits = model.score_items(hidden, torch.stack([targets, negatives], dim=-1))  # (B, T, 2): one lookup
        pos_logits, neg_logits = logits[..., 0], logits[..., 1]  # (B, T) each
        weight = None
        if config.weighted_dislike:
            weight = torch.where(disliked, float(config.dislike_weight), 1.0)  # (B, T)
        loss = bce_loss(pos_logits, neg_logits, valid, weight)
    elif config.loss == "ce":
        loss = chunked_cross_entropy(
            hidden[valid], model.output_embeddings(), targets[valid], config.ce_chunk_size
        )
    else:
        negatives = sampler.uniform(users, (config.num_negatives,))  # (B, K) shared by a row's positions
        pos_logits = model.score_items(hidden, targets)[valid]  # (N,)
        neg_emb = model.output_embeddings()[negatives]  # (B, K, d)
        neg_logits = torch.matmul(hidden, neg_emb.transpose(1, 2))[valid]  # (N, K)
        if config.loss == "sampled_softmax":
            loss = sampled_softmax_loss(pos_logits, neg_logits)
        else:
            loss = gbce_loss(pos_logits, neg_logits, beta)
    if config.l2_emb > 0:
        loss = loss + config.l2_emb * torch.linalg.vector_norm(model.output_embeddings())  # as the reference
    return loss


def evaluate_model(
    scorer: SequentialScorer, task: EvalTask, config: TrainConfig, progress: bool | None = False
) -> EvalResult:
    """Evaluate a SASRec scorer on ``task`` with the config's K, protocol, negatives and seed."""
    from sasrec.evaluation.protocol import evaluate

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


def _evaluate_valid(
    model: SequentialRecommender,
    task: EvalTask,
    config: TrainConfig,
    popularity: np.ndarray,
    device: torch.device,
) -> dict[str, float]:
    scorer = SequentialScorer(model, popularity=popularity, batch_size=config.eval_batch_size, device=device)
    return {key: float(value) for key, value in evaluate_model(scorer, task, config).summary.items()}


def _write_log(log: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(log).to_csv(tmp, index=False)


def train(
    data: PreparedData,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    save: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train SASRec on ``data``'s training events of ``config.split``; validate on its validation events.

    Adam(betas=(0.9, 0.98)) as the reference; validation NDCG@k every ``eval_every`` epochs with
    ``sasrec.evaluate.evaluate``; early stopping after ``patience`` evaluations without improvement; the
    best-on-validation weights are restored at the end. The test events are never used. Deterministic
    on CPU for a given seed; resuming from a checkpoint reproduces the uninterrupted run exactly.

    Args:
        data: prepared dataset.
        config: hyperparameters.
        out_dir: checkpoint folder (default ``models/<dataset>_<train_dir>``).
        resume_from: checkpoint to continue from (its last-epoch weights, optimizer and RNG states).
        save: write a checkpoint and the log CSV after every epoch.
        on_epoch: called with each epoch's log row (the command line prints it).
    """
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    model = build_model(config.model, data.num_items, **config.to_dict()).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))

    train_mask, _ = data.stage_masks(config.split, "valid")
    sequences = training_sequences(data, config.split, config.maxlen)
    if len(sequences.users) == 0:
        raise ConfigError(
            f"dataset {data.name} has no user with at least 2 training events under split {config.split!r}"
        )
    sampler = NegativeSampler(data, train_mask, device=device, generator=generator)
    users_t = torch.from_numpy(sequences.users).to(device)
    inputs_t = torch.from_numpy(sequences.inputs).to(device)
    targets_t = torch.from_numpy(sequences.targets).to(device)
    window_t = torch.from_numpy(sequences.window).to(device)
    popularity = item_popularity(data, train_mask)
    valid_task = build_eval_task(
        data, config.split, "valid", maxlen=config.maxlen, relevance_threshold=config.relevance_threshold
    )
    beta = gbce_beta(config.num_negatives, data.num_items, config.gbce_t)
    metric = f"ndcg@{config.k}"

    log: list[dict[str, Any]] = []
    start_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_valid, best_value, bad_evals = 0, {}, -math.inf, 0
    if resume_from is not None:
        payload = _read_checkpoint(resume_from, device)
        check_fingerprint(payload, data, resume_from)
        _check_resume(TrainConfig.from_dict({**payload["config"], "device": "cpu"}), config)
        model.load_state_dict(payload["last_model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        _set_rng_state(payload["rng"], generator, device)
        log = [dict(row) for row in payload["log"]]
        start_epoch = int(payload["epoch"])
        best_state = payload["model_state"] if payload["best_epoch"] > 0 else None
        best_epoch = int(payload["best_epoch"])
        best_valid = dict(payload["best_valid"])
        best_value = float(best_valid.get(metric, -math.inf))
        bad_evals = int(payload["bad_evals"])

    folder = Path(out_dir) if out_dir is not None else run_dir(data.name, config.train_dir)
    checkpoint_path: Path | None = Path(resume_from) if resume_from is not None else None
    written_by_us: Path | None = None
    stopped_early = 0 < config.patience <= bad_evals
    show = progress_enabled(config.progress)
    n_users = len(sequences.users)
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
        if stopped_early:
            break
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n_users, generator=generator, device=device)
        batches = order.split(config.batch_size)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not show, leave=False)
        for rows in bar:
            loss = _batch_loss(
                model, sampler, users_t[rows], inputs_t[rows], targets_t[rows], window_t[rows], config, beta
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total += value * len(rows)
            count += len(rows)
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch, "loss": total / max(count, 1)}
        if epoch % config.eval_every == 0 or epoch == config.num_epochs:
            summary = _evaluate_valid(model, valid_task, config, popularity, device)
            row.update({f"valid_{key}": value for key, value in summary.items()})
            current = summary.get(metric, float("nan"))
            if best_state is None or (not math.isnan(current) and current > best_value):
                best_value = current if not math.isnan(current) else -math.inf
                best_epoch, best_valid = epoch, summary
                best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
                bad_evals = 0
            else:
                bad_evals += 1
            stopped_early = 0 < config.patience <= bad_evals
        row["seconds"] = time.perf_counter() - started
        log.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if save:
            checkpoint_path = folder / checkpoint_name(config, epoch)
            payload = {
                "format": CHECKPOINT_FORMAT,
                "model_state": best_state if best_state is not None else model.state_dict(),
                "last_model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "model_name": config.model,
                "model_kwargs": model.model_kwargs(),
                "config": config.to_dict(),
                "dataset": data.name,
                "fingerprint": data.fingerprint,
                "item_ids": torch.tensor(np.array(data.item_ids, dtype=np.int64)),
                "user_ids": torch.tensor(np.array(data.user_ids, dtype=np.int64)),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_valid": best_valid,
                "bad_evals": bad_evals,
                "stopped_early": stopped_early,
                "rng": _rng_state(generator, device),
                "log": log,
                "popularity": torch.from_numpy(popularity),
            }
            with atomic_path(checkpoint_path) as tmp:
                torch.save(payload, tmp)
            _write_log(log, folder / log_name(config))
            if written_by_us is not None and written_by_us != checkpoint_path and written_by_us.exists():
                written_by_us.unlink()
            written_by_us = checkpoint_path

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        log=pd.DataFrame(log),
        best_epoch=best_epoch,
        best_valid=best_valid,
        checkpoint_path=checkpoint_path,
        config=config,
        stopped_early=stopped_early,
        popularity=popularity,
    )
