"""Checkpoints: the original project's file names, a content digest checked on load, best and last files.

A run folder (``models/<dataset>_<train_dir>``) keeps at most three checkpoints of a configuration, named
with the original project's pattern ``<Model>.epoch=<n>.lr=<lr>.layer=<b>.head=<h>.hidden=<d>.maxlen=<l>``
where ``n`` is always the epoch whose weights the file holds:

* ``....pth``: the best-on-validation weights (what evaluation and inference load);
* ``....last.pth``: the latest epoch with everything needed to resume (weights, optimizer, early-stopping
  state, log and the best weights; every epoch is re-seeded from (seed, epoch, rank), so no random state is kept);
* ``....train_valid.pth``: under the ``train_valid`` fitting policy, the model retrained on training and
  validation events for the epoch count that validation selected.

Every checkpoint records the dataset's fingerprint, the configuration, the fitted events' digest and a
SHA-256 digest of its tensors; :func:`read_checkpoint` refuses a file whose tensors do not match it.

A model trained with side features also records them (``features``: the setting, the groups, their
``FeatureTable.schema()`` and digest) and carries their tensors as buffers of its state dict (inside the
tensor digest), so it scores without the side files; :func:`load_checkpoint` given a feature table refuses
one whose digest differs (:class:`CheckpointMismatchError`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sasrec.data.contracts import PreparedData
from sasrec.errors import CheckpointMismatchError, ConfigError, IntegrityError, MissingDataError
from sasrec.models.base import SequentialRecommender, model_class
from sasrec.paths import atomic_path, models_dir
from sasrec.training.config import TrainConfig
from sasrec.training.features import check_feature_table

if TYPE_CHECKING:
    from sasrec.data.features import FeatureTable

logger = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "sasrec-checkpoint/2"
READABLE_FORMATS = ("sasrec-checkpoint/1", CHECKPOINT_FORMAT)
KINDS = ("best", "last", "train_valid")
_SUFFIX = {"best": ".pth", "last": ".last.pth", "train_valid": ".train_valid.pth"}


# ------------------------------------------------------------------------------------------------ names
def _stem(config: TrainConfig, epoch: int | None) -> str:
    prefix = model_class(config.model).checkpoint_prefix
    epoch_part = f".epoch={epoch}" if epoch is not None else ""
    return (
        f"{prefix}{epoch_part}.lr={config.lr}.layer={config.num_blocks}.head={config.num_heads}"
        f".hidden={config.hidden_units}.maxlen={config.maxlen}"
    )


def checkpoint_name(config: TrainConfig, epoch: int, kind: str = "best") -> str:
    """File name of a checkpoint holding the weights of ``epoch``, e.g.
    ``SASRec.epoch=22.lr=0.001.layer=2.head=1.hidden=50.maxlen=200.pth`` (``.last.pth``, ``.train_valid.pth``)."""
    if kind not in KINDS:
        raise ConfigError(f"checkpoint kind must be one of {', '.join(KINDS)}; got {kind!r}")
    return _stem(config, epoch) + _SUFFIX[kind]


def log_name(config: TrainConfig) -> str:
    """Per-epoch log CSV beside the checkpoints (the checkpoint name without the epoch)."""
    return _stem(config, None) + ".log.csv"


def checkpoint_pattern(config: TrainConfig, kind: str) -> re.Pattern[str]:
    """Regular expression matching the file names of ``kind`` checkpoints of ``config``; group 1 = epoch."""
    name = checkpoint_name(config, 0, kind)
    prefix, rest = name.split(".epoch=0", 1)
    return re.compile(re.escape(prefix) + r"\.epoch=(\d+)" + re.escape(rest) + "$")


def run_dir(dataset_name: str, train_dir: str) -> Path:
    """``models/<dataset>_<train_dir>`` under the project root."""
    return models_dir() / f"{dataset_name}_{train_dir}"


def find_checkpoints(folder: Path, config: TrainConfig, kind: str) -> list[Path]:
    """``kind`` checkpoints of ``config`` in ``folder``, newest epoch last."""
    if not Path(folder).is_dir():
        return []
    pattern = checkpoint_pattern(config, kind)
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := pattern.match(p.name))]
    return [path for _, path in sorted(found)]


def prune_checkpoints(folder: Path, config: TrainConfig, kind: str, keep: Path | None) -> None:
    """Remove every ``kind`` checkpoint of ``config`` in ``folder`` except ``keep`` (superseded files)."""
    for old in find_checkpoints(folder, config, kind):
        if old != keep:
            old.unlink(missing_ok=True)


def latest_checkpoint(folder: Path, config: TrainConfig) -> Path:
    """The newest complete resume checkpoint (``.last.pth``) of ``config`` in ``folder``.

    Files that fail to load or to verify are skipped (an interrupted write never has the final name, but a
    damaged disk may); :class:`MissingDataError` when none is usable.
    """
    candidates = find_checkpoints(folder, config, "last")
    for path in reversed(candidates):
        try:
            read_checkpoint(path)
        except (ConfigError, IntegrityError) as exc:
            logger.warning("skipping damaged checkpoint %s: %s", path.name, exc)
            continue
        return path
    raise MissingDataError(
        f"no complete checkpoint to resume in {folder} for {_stem(config, None)} "
        f"({len(candidates)} damaged); start without --resume or pass --state_dict_path"
    )


# ---------------------------------------------------------------------------------------------- digests
def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state dict's tensors (in key order)."""
    h = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def events_digest(data: PreparedData, mask: np.ndarray) -> dict[str, Any]:
    """Which events a model was fit on: their count and a SHA-256 of their (user, item, position) triples.

    Two models fit under the same policy on the same data carry the same digest (tested).
    """
    rows = np.flatnonzero(np.asarray(mask, dtype=bool)).astype(np.int64)
    users = data.events["user"].to_numpy()[rows].astype(np.int64)
    items = data.events["item"].to_numpy()[rows].astype(np.int64)
    h = hashlib.sha256()
    for array in (rows, users, items):
        h.update(np.ascontiguousarray(array).tobytes())
    return {"dataset": data.name, "events": int(len(rows)), "sha256": h.hexdigest()}


def _digested(payload: dict[str, Any]) -> dict[str, str]:
    return {
        key: state_digest(payload[key])
        for key in ("model_state", "last_model_state")
        if isinstance(payload.get(key), dict)
    }


# ----------------------------------------------------------------------------------------- read / write
def write_checkpoint(payload: dict[str, Any], path: Path) -> Path:
    """Write ``payload`` atomically to ``path`` with the format tag and the digests of its tensors."""
    payload = {**payload, "format": CHECKPOINT_FORMAT}
    payload["digests"] = _digested(payload)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint written by :func:`write_checkpoint`.

    Raises:
        MissingDataError: no such file.
        ConfigError: not a checkpoint of this project (e.g. the original project's bare weights).
        IntegrityError: the file is truncated or its tensors differ from the recorded digest.
    """
    p = Path(path)
    if not p.is_file():
        raise MissingDataError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a readable checkpoint"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise IntegrityError(
            f"checkpoint {p} cannot be read (truncated or damaged: {reason}); retrain, or resume from "
            "another checkpoint of the run"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        raise ConfigError(
            f"checkpoint {p} is not a {CHECKPOINT_FORMAT} file written by `python -m sasrec train` "
            "(the original project's .pth files hold bare weights without ids or config)"
        )
    recorded = payload.get("digests") or {}
    for key, digest in _digested(payload).items():
        if key in recorded and recorded[key] != digest:
            raise IntegrityError(
                f"checkpoint {p}: the {key} tensors do not match their recorded SHA-256 (the file is damaged); "
                "retrain, or resume from another checkpoint of the run"
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


def saved_config(payload: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a checkpoint was trained with (device reset to cpu)."""
    return TrainConfig.from_dict({**payload["config"], "device": "cpu"})


def load_checkpoint(
    path: str | Path,
    data: PreparedData | None = None,
    *,
    map_location: str | torch.device = "cpu",
    features: FeatureTable | None = None,
) -> tuple[SequentialRecommender, TrainConfig, dict[str, Any]]:
    """Load a checkpoint: (model with the checkpoint's weights, in eval mode; its config; the payload).

    The model's side-feature tensors come from the checkpoint; ``features``, when given, is only checked
    against the digest the checkpoint records.

    Raises:
        MissingDataError: no such file.
        ConfigError: not a checkpoint of this project.
        IntegrityError: damaged file.
        CheckpointMismatchError: ``data`` is given and its fingerprint differs from the checkpoint's, or
            ``features`` is given and its digest (over the checkpoint's groups) differs from the recorded one.
    """
    payload = read_checkpoint(path, map_location)
    if data is not None:
        check_fingerprint(payload, data, path)
    if features is not None:
        check_feature_table(payload, features, path)
    config = saved_config(payload)
    model = model_class(payload.get("model_name", "sasrec"))(**payload["model_kwargs"])
    model.load_state_dict(payload["model_state"])
    model.to(map_location)
    model.eval()
    return model, config, payload
