"""The data and training steps the notebooks run, each one call, so notebooks stay thin.

Data: which folder the run uses and what it is (real KuaiRec 2.0 or the simulator), cleaning, split and
leakage tables. Training: every sequential model of a params file's ``models:`` mapping, trained on top of
the shared ``training:`` mapping, with early stopping on validation; the summary (checkpoints, best epochs,
validation results, the fitting policy and the fitted events) is written to ``metrics/<name>.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec import paths
from sasrec.data.contracts import SPLITS, PreparedData, split_column
from sasrec.errors import ConfigError
from sasrec.study.context import Study
from sasrec.study.resources import measure
from sasrec.training.config import TrainConfig


# ---------------------------------------------------------------------------------------------- data
def resolve_data_dir(
    data_dir: str | Path | None = "",
    *,
    simulate_scale: float | None = None,
    seed: int = 0,
    simulated_dir: str | Path | None = "",
) -> Path:
    """The raw data folder: ``data_dir`` when given, else real KuaiRec in data/raw, else the simulator's.

    The simulator's folder is ``simulated_dir`` when given (a profile at another scale keeps its own), else
    data/simulated. When the chosen folder is a simulator folder that does not exist yet and
    ``simulate_scale`` is given, the simulator writes it first (so a notebook runs on a fresh clone).
    """
    from sasrec.data import kuairec, simulator
    from sasrec.data.preparation.sources import default_data_dir

    if data_dir:
        folder = paths.resolve(data_dir)
        if not kuairec.has_official_matrices(folder) and simulate_scale is not None:
            simulator.simulate(scale=simulate_scale, seed=seed, out_dir=folder, progress=False)
        return folder
    if kuairec.has_official_matrices(paths.raw_dir()):
        return paths.raw_dir()
    if simulated_dir:
        folder = paths.resolve(simulated_dir)
        if not kuairec.has_official_matrices(folder) and simulate_scale is not None:
            simulator.simulate(scale=simulate_scale, seed=seed, out_dir=folder, progress=False)
        return folder
    if not kuairec.has_official_matrices(paths.simulated_dir()) and simulate_scale is not None:
        simulator.simulate(scale=simulate_scale, seed=seed, out_dir=paths.simulated_dir(), progress=False)
    return default_data_dir()


def describe_data_source(data_dir: str | Path) -> str:
    """One sentence saying which data a run used: real KuaiRec 2.0 or the simulator (scale, seed)."""
    from sasrec.data import simulator

    folder = paths.resolve(data_dir)
    if simulator.is_simulated(folder):
        info = json.loads((folder / "simulation.json").read_text(encoding="utf-8"))
        return (
            f"KuaiRec-shaped simulator (scale {info.get('scale')}, seed {info.get('seed')}) in {folder.name}/: "
            "simulated data, not the real KuaiRec 2.0"
        )
    return f"KuaiRec 2.0 (real archive) in {folder}"


def cleaning_table(prepared: dict[str, PreparedData]) -> pd.DataFrame:
    """Cleaning report of each prepared dataset (rows in, rows out, per reason)."""
    records = []
    for name, data in prepared.items():
        cleaning = data.meta.get("cleaning") or {}
        record = {"dataset": name, "rows_in": cleaning.get("rows_in"), "rows_out": cleaning.get("rows_out")}
        record.update({f"dropped: {k}": v for k, v in (cleaning.get("dropped") or {}).items()})
        record.update({f"flagged: {k}": v for k, v in (cleaning.get("flagged") or {}).items()})
        record.update({"events (timed)": len(data.events), "labels only (untimed)": len(data.labels)})
        records.append(record)
    return pd.DataFrame(records).set_index("dataset")


def split_statistics(prepared: dict[str, PreparedData]) -> pd.DataFrame:
    """Events and users per dataset, split method and part (train / valid / test)."""
    parts = pd.Categorical.from_codes([0, 1, 2], categories=["train", "valid", "test"])
    frames = []
    for name, data in prepared.items():
        users = data.events["user"].to_numpy()
        for split in SPLITS:
            frame = pd.DataFrame({"part": parts[data.events[split_column(split)].to_numpy()], "user": users})
            stats = frame.groupby("part", observed=True).agg(
                events=("user", "size"), users=("user", "nunique")
            )
            frames.append(stats.reset_index().assign(dataset=name, split=split))
    out = pd.concat(frames, ignore_index=True)[["dataset", "split", "part", "events", "users"]]
    out["part"] = out["part"].astype(str)
    return out


def sequence_lengths(prepared: dict[str, PreparedData]) -> dict[str, np.ndarray]:
    """Timed events per user of each dataset (dataset -> lengths), for the sequence-length figure."""
    return {name: np.bincount(data.events["user"].to_numpy())[1:] for name, data in prepared.items()}


def leakage_table(prepared: dict[str, PreparedData]) -> pd.DataFrame:
    """Recomputed leakage check of every dataset and split (raises on any leak)."""
    from sasrec.data.preparation.splits import check_no_leakage

    records = []
    for name, data in prepared.items():
        for split in SPLITS:
            result = check_no_leakage(data, split)
            records.append(
                {
                    "dataset": name,
                    "split": split,
                    **{k: v for k, v in result.items() if not isinstance(v, dict | list)},
                }
            )
    return pd.DataFrame(records)


# ------------------------------------------------------------------------------------------ training
def model_configs(
    dataset: str, training: dict[str, Any], models: dict[str, dict[str, Any]]
) -> dict[str, TrainConfig]:
    """One :class:`TrainConfig` per entry of ``models``: the shared ``training`` mapping, then the model's own
    mapping on top (its ``model`` key names the architecture; that model's presets fill what neither sets).

    Raises:
        ConfigError: an unknown key (named, with the model) or an invalid value.
    """
    configs = {}
    known = {f for f in TrainConfig.__dataclass_fields__}
    for name, spec in models.items():
        values = {**training, **(spec or {}), "dataset": dataset, "train_dir": name}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"models.{name}: unknown training parameter(s) {', '.join(unknown)}")
        try:
            configs[name] = TrainConfig.for_model(values.pop("model", "sasrec"), **values)
        except ConfigError as exc:
            raise ConfigError(f"models.{name}: {exc}") from None
    return configs


def shared_fit_on(configs: Iterable[TrainConfig]) -> str:
    """The fitting policy every configuration shares (a comparison has one).

    Raises:
        ConfigError: the configurations disagree (naming the policies).
    """
    policies = {config.fit_on for config in configs}
    if len(policies) != 1:
        raise ConfigError(
            f"every model of a comparison must share one fitting policy; got fit_on {sorted(policies)}"
        )
    return policies.pop()


def training_entry(result: Any, config: TrainConfig, cost: Any) -> dict[str, Any]:
    """One model's entry of a training summary (``metrics/training.json``'s ``models``): the checkpoint to
    evaluate, best epoch, epochs run, validation summary of the best epoch, seconds, peak memory, the
    configuration and the digest of the events it was fit on.

    Args:
        result: the :class:`~sasrec.training.loop.TrainResult`.
        config: the configuration it was trained with.
        cost: the :func:`~sasrec.study.resources.measure` of its training.
    """
    return {
        "checkpoint": str(result.checkpoint_path),
        "best_checkpoint": str(result.best_checkpoint),
        "best_epoch": int(result.best_epoch),
        "epochs_run": int(result.log["epoch"].max()) if len(result.log) else 0,
        "stopped_early": bool(result.stopped_early),
        "valid": {key: float(value) for key, value in result.best_valid.items()},
        "seconds": round(cost.seconds, 1),
        "peak_rss_gb": round(cost.peak_rss_gb, 2),
        "config": config.to_dict(),
        "fit_events": result.fit_events,
    }


def train_models(
    study: Study,
    data: PreparedData,
    training: dict[str, Any],
    models: dict[str, dict[str, Any]],
    *,
    summary_name: str = "training",
) -> pd.DataFrame:
    """Train every model of ``models`` on ``data`` with early stopping on validation; save checkpoints and logs.

    Every model shares the fitting policy (``training["fit_on"]``), the split and the seed. Returns the
    per-epoch log of all models (columns model, epoch, loss, valid metrics, seconds) and writes
    ``metrics/<summary_name>.json``: per model the checkpoint to evaluate, best epoch, validation summary
    of the best epoch, seconds, configuration and the digest of the events it was fit on.
    """
    from sasrec.training.loop import train

    configs = model_configs(data.name, training, models)
    shared_fit_on(configs.values())
    logs, summary = [], {}
    for name, config in configs.items():
        config = TrainConfig.from_dict({**config.to_dict(), "progress": study.progress})
        with measure() as cost:
            result = train(data, config, out_dir=study.models_dir / f"{data.name}_{name}")
        logs.append(result.log.assign(model=name))
        summary[name] = training_entry(result, config, cost)
    log = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()
    if len(log):
        log = log[["model", *[c for c in log.columns if c != "model"]]]
    first = next(iter(configs.values()))
    study.save_json(
        {"dataset": data.name, "split": first.split, "fit_on": first.fit_on, "k": first.k, "models": summary},
        summary_name,
    )
    return log


def training_table(training: dict[str, Any]) -> pd.DataFrame:
    """One row per trained model: best epoch, epochs run, validation metrics, seconds, checkpoint file name."""
    records = []
    for name, info in training["models"].items():
        valid = {
            f"valid {k}": v
            for k, v in (info.get("valid") or {}).items()
            if k.startswith(("ndcg@", "recall@"))
        }
        records.append(
            {"model": name, "best_epoch": info["best_epoch"], "epochs_run": info.get("epochs_run"), **valid,
             "seconds": info["seconds"], "peak_rss_gb": info.get("peak_rss_gb"),
             "checkpoint": Path(info["checkpoint"]).name}
        )  # fmt: skip
    return pd.DataFrame(records).set_index("model")


def trained_setting(training: dict[str, Any], name: str) -> Any:
    """A setting every trained model shares (``split``, ``maxlen``, ``fit_on``, ``k``...), read from their
    checkpoints' configurations; refuses models that disagree (they would not be comparable)."""
    values = {info["config"][name] for info in training["models"].values()}
    if len(values) != 1:
        raise ConfigError(
            f"the trained models disagree on {name}: {sorted(map(str, values))}; retrain them alike"
        )
    return values.pop()
