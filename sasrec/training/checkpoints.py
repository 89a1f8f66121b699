"""Checkpoints: the original project's file names, atomic writes, fingerprint checks, loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sasrec.data.contracts import PreparedData
from sasrec.errors import CheckpointMismatchError, ConfigError, MissingDataError
from sasrec.models.base import SequentialRecommender, model_class
from sasrec.paths import models_dir
from sasrec.training.config import TrainConfig

CHECKPOINT_FORMAT = "sasrec-checkpoint/1"


# ----------------------------------------------------------------------------------------- checkpoints
def checkpoint_name(config: TrainConfig, epoch: int) -> str:
    """The original project's file name: ``SASRec.epoch=<n>.lr=<lr>.layer=<b>.head=<h>.hidden=<d>.maxlen=<l>.pth``.

    The first part is the model's name (``SASRec``, ``gSASRec``, ``BERT4Rec``, ``GRU4Rec``).
    """
    prefix = model_class(config.model).checkpoint_prefix
    return (
        f"{prefix}.epoch={epoch}.lr={config.lr}.layer={config.num_blocks}.head={config.num_heads}"
        f".hidden={config.hidden_units}.maxlen={config.maxlen}.pth"
    )


def log_name(config: TrainConfig) -> str:
    """Per-epoch log CSV beside the checkpoint (the checkpoint name without the epoch)."""
    prefix = model_class(config.model).checkpoint_prefix
    return (
        f"{prefix}.lr={config.lr}.layer={config.num_blocks}.head={config.num_heads}"
        f".hidden={config.hidden_units}.maxlen={config.maxlen}.log.csv"
    )


def run_dir(dataset_name: str, train_dir: str) -> Path:
    """``models/<dataset>_<train_dir>`` under the project root."""
    return models_dir() / f"{dataset_name}_{train_dir}"


def _read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MissingDataError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise ConfigError(f"checkpoint {p} cannot be read as a SASRec checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"checkpoint {p} is not a {CHECKPOINT_FORMAT} file written by `python -m sasrec train` "
            "(the original project's .pth files hold bare weights without ids or config)"
        )
    return payload


def check_fingerprint(payload: dict[str, Any], data: PreparedData, path: str | Path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``data`` is the dataset the checkpoint was trained on."""
    if payload["fingerprint"] != data.fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained on dataset {payload['dataset']!r} (fingerprint {payload['fingerprint']}, "
            f"{len(payload['item_ids']) - 1} items) but the data given is {data.name!r} (fingerprint "
            f"{data.fingerprint}, {data.num_items} items); pass the training dataset (--training_dataset)"
        )


def load_checkpoint(
    path: str | Path, data: PreparedData | None = None, *, map_location: str | torch.device = "cpu"
) -> tuple[SequentialRecommender, TrainConfig, dict[str, Any]]:
    """Load a checkpoint written by :func:`train`: (model with the best weights, in eval mode; config; payload).

    Raises:
        MissingDataError: no such file.
        ConfigError: not a checkpoint of this project.
        CheckpointMismatchError: ``data`` is given and its fingerprint differs from the checkpoint's.
    """
    payload = _read_checkpoint(path, map_location)
    if data is not None:
        check_fingerprint(payload, data, path)
    config = TrainConfig.from_dict({**payload["config"], "device": "cpu"})
    model = model_class(payload.get("model_name", "sasrec"))(**payload["model_kwargs"])
    model.load_state_dict(payload["model_state"])
    model.to(map_location)
    model.eval()
    return model, config, payload


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["sampler"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
