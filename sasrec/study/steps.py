"""Study orchestration: the steps the notebooks run, each one call, so notebooks stay thin.

Every function takes explicit paths (resolved from the project root) and writes its results as JSON under
``<reports_dir>/metrics`` so that :mod:`sasrec.report` can fill in the results summary.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import kendalltau

from sasrec import paths
from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.data.tasks import build_cross_task, build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.results import json_ready

VARIANTS: dict[str, dict[str, Any]] = {
    "bce": {"loss": "bce"},
    "explicit_negatives": {"loss": "bce", "explicit_negatives": True},
    "weighted_dislike": {"loss": "bce", "explicit_negatives": True, "weighted_dislike": True},
    "ce": {"loss": "ce"},
}
HEADLINE_METRICS = ("ndcg@10", "graded_ndcg@10", "precision@10", "recall@10", "hr@10")


# ----------------------------------------------------------------------------------------------- I/O
def metrics_dir(reports_dir: str | Path) -> Path:
    """``<reports_dir>/metrics`` (created)."""
    out = paths.resolve(reports_dir) / "metrics"
    out.mkdir(parents=True, exist_ok=True)
    return out


def figures_dir(reports_dir: str | Path) -> Path:
    """``<reports_dir>/figures`` (created)."""
    out = paths.resolve(reports_dir) / "figures"
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_json(payload: dict[str, Any], reports_dir: str | Path, name: str) -> Path:
    """Write ``payload`` atomically to ``<reports_dir>/metrics/<name>.json``."""
    path = metrics_dir(reports_dir) / f"{name}.json"
    paths.atomic_write_text(path, json.dumps(json_ready(payload), indent=2, allow_nan=False) + "\n")
    return path


def load_json(reports_dir: str | Path, name: str) -> dict[str, Any]:
    """Read ``<reports_dir>/metrics/<name>.json``; a clear error names the notebook that writes it."""
    path = metrics_dir(reports_dir) / f"{name}.json"
    if not path.is_file():
        from sasrec.errors import MissingDataError

        raise MissingDataError(f"{path} is missing: run the notebook that writes it first (make report)")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- data
def resolve_data_dir(
    data_dir: str | Path | None = "", *, simulate_scale: float | None = None, seed: int = 0
) -> Path:
    """The raw data folder: ``data_dir`` when given, else real KuaiRec in data/raw, else the simulator's.

    When the chosen folder is a simulator folder that does not exist yet and ``simulate_scale`` is given,
    the simulator writes it first (so a notebook runs on a fresh clone).
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


def load_dataset(
    dataset: str, data_dir: str | Path, processed_dir: str | Path = "data/processed", **params: Any
) -> PreparedData:
    """Prepared ``dataset`` from ``data_dir``, reusing ``<processed_dir>/<dataset>`` when up to date."""
    from sasrec.data.preparation.pipeline import load_prepared

    out = paths.resolve(processed_dir) / Path(dataset).stem
    return load_prepared(dataset, data_dir=paths.resolve(data_dir), out_dir=out, **params)


# ------------------------------------------------------------------------------------------ training
def variant_config(variant: str, **overrides: Any):  # -> TrainConfig
    """The TrainConfig of a named variant (``VARIANTS``) with hyperparameter overrides."""
    from sasrec.training.config import TrainConfig

    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
    return TrainConfig(**{**overrides, **VARIANTS[variant], "train_dir": overrides.get("train_dir", variant)})


def train_variants(
    data: PreparedData,
    variants: Sequence[str],
    *,
    models_dir: str | Path = "models",
    reports_dir: str | Path = "reports",
    summary_name: str = "training",
    **hyperparameters: Any,
) -> pd.DataFrame:
    """Train each SASRec variant on ``data`` with early stopping on validation; save checkpoints and logs.

    Returns the per-epoch log of all variants (columns variant, epoch, loss, valid metrics, seconds) and
    writes ``<reports_dir>/metrics/<summary_name>.json`` (checkpoint, best epoch, validation metrics).
    """
    from sasrec.training.loop import train

    logs, summary = [], {}
    for variant in variants:
        config = variant_config(variant, dataset=data.name, **hyperparameters)
        out_dir = paths.resolve(models_dir) / f"{data.name}_{config.train_dir}"
        started = time.perf_counter()
        result = train(data, config, out_dir=out_dir)
        seconds = time.perf_counter() - started
        log = result.log.copy()
        log.insert(0, "variant", variant)
        logs.append(log)
        summary[variant] = {
            "checkpoint": str(result.checkpoint_path),
            "best_epoch": int(result.best_epoch),
            "valid": result.best_valid,
            "seconds": round(seconds, 1),
            "config": asdict(config),
        }
    log_frame = pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()
    save_json({"dataset": data.name, "variants": summary}, reports_dir, summary_name)
    return log_frame


def load_sasrec(checkpoint: str | Path, data: PreparedData):
    """(scorer, config) of a checkpoint checked against ``data``'s fingerprint."""
    from sasrec.evaluation.scorers import SequentialScorer
    from sasrec.training.checkpoints import load_checkpoint

    model, config, _ = load_checkpoint(paths.resolve(checkpoint), data)
    return SequentialScorer(model, popularity=item_popularity(data)), config


def item_popularity(data: PreparedData, mask: np.ndarray | None = None) -> np.ndarray:
    """(I+1,) event counts per item (index 0 = 0)."""
    items = data.events["item"].to_numpy() if mask is None else data.events["item"].to_numpy()[mask]
    return np.bincount(items, minlength=data.num_items + 1).astype(np.float64)


# -------------------------------------------------------------------------------------- evaluation
def oracle_scorer(task: EvalTask, data: PreparedData, ground_truth: pd.DataFrame):
    """Scorer ranking by the simulator's expected watch_ratio (an upper bound; simulated data only)."""
    from sasrec.models.baselines import OracleScorer

    user_index = pd.Series(np.arange(len(task.users)), index=data.user_ids[task.users])
    item_index = pd.Series(np.arange(1, data.num_items + 1), index=data.item_ids[1:])
    rows = user_index.reindex(ground_truth["user_id"].to_numpy()).to_numpy()
    cols = item_index.reindex(ground_truth["video_id"].to_numpy()).to_numpy()
    keep = ~(np.isnan(rows) | np.isnan(cols))
    expected = sp.csr_matrix(
        (
            ground_truth["expected_watch_ratio"].to_numpy(dtype=np.float32)[keep] + 1e-3,
            (rows[keep].astype(np.int64), cols[keep].astype(np.int64)),
        ),
        shape=(len(task.users), task.num_items + 1),
    )
    return OracleScorer(expected)


def evaluate_models(
    scorers: dict[str, Any],
    tasks: dict[str, EvalTask],
    *,
    k: int = 10,
    protocols: Sequence[str] = ("full",),
    num_negatives: int = 100,
    n_boot: int = 1000,
    seed: int = 0,
    popularity: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every scorer on every task and protocol.

    Args:
        scorers: model name -> Scorer, or -> {task name: Scorer} when a model is refitted per task.
        tasks: task name (e.g. ``valid``, ``test``) -> EvalTask.

    Returns:
        (table, per_user): table rows are model, task, protocol, metric, mean, low, high (bootstrap CI);
        per_user rows are the per-user metrics with model, task and protocol columns.
    """
    from sasrec.evaluation.bootstrap import bootstrap_ci
    from sasrec.evaluation.protocol import evaluate

    rows, per_user = [], []
    for model_name, scorer_or_map in scorers.items():
        for task_name, task in tasks.items():
            scorer = scorer_or_map.get(task_name) if isinstance(scorer_or_map, dict) else scorer_or_map
            if scorer is None:
                continue
            for protocol in protocols:
                result = evaluate(
                    scorer,
                    task,
                    k=k,
                    protocol=protocol,
                    num_negatives=num_negatives,
                    seed=seed,
                    item_popularity=popularity,
                )
                metric_names = [m for m in result.summary if "@" in m and m in result.per_user.columns]
                ci = bootstrap_ci(result.per_user, metric_names, n_boot=n_boot, seed=seed)
                ci = ci.assign(model=model_name, task=task_name, protocol=protocol)
                extra = {m: v for m, v in result.summary.items() if m not in metric_names}
                for key, value in extra.items():
                    if isinstance(value, int | float):
                        rows.append(
                            {
                                "model": model_name,
                                "task": task_name,
                                "protocol": protocol,
                                "metric": key,
                                "mean": float(value),
                                "low": np.nan,
                                "high": np.nan,
                            }
                        )
                rows.extend(ci.to_dict(orient="records"))
                per_user.append(result.per_user.assign(model=model_name, task=task_name, protocol=protocol))
    table = pd.DataFrame(rows)[["model", "task", "protocol", "metric", "mean", "low", "high"]]
    return table, pd.concat(per_user, ignore_index=True)


def metric_table(
    table: pd.DataFrame, task: str, protocol: str = "full", metrics: Sequence[str] = HEADLINE_METRICS
) -> pd.DataFrame:
    """Wide table (one row per model, "mean [low, high]" per metric) of one task and protocol, best first."""
    sub = table[(table["task"] == task) & (table["protocol"] == protocol) & table["metric"].isin(metrics)]
    wide = {
        column: sub.pivot(index="model", columns="metric", values=column).reindex(columns=list(metrics))
        for column in ("mean", "low", "high")
    }
    order = wide["mean"].sort_values(list(metrics)[0], ascending=False).index

    def cell(mean: float, low: float, high: float) -> str:
        if pd.isna(mean):
            return ""
        return f"{mean:.4f}" if pd.isna(low) else f"{mean:.4f} [{low:.4f}, {high:.4f}]"

    text = pd.DataFrame(
        np.vectorize(cell, otypes=[object])(wide["mean"], wide["low"], wide["high"]),
        index=wide["mean"].index,
        columns=list(metrics),
    )
    return text.loc[order].rename_axis("model").reset_index()


def results_by_activity(
    per_user: pd.DataFrame, task: str, protocol: str = "full", metric: str = "ndcg@10"
) -> pd.DataFrame:
    """Mean ``metric`` per model and user-activity bucket (quantiles of history length)."""
    from sasrec.study.eda import activity_buckets

    sub = per_user[(per_user["task"] == task) & (per_user["protocol"] == protocol)].dropna(subset=[metric])
    buckets = activity_buckets(sub["n_history"])
    return (
        sub.assign(activity_bucket=buckets)
        .groupby(["model", "activity_bucket"], observed=True)[metric]
        .mean()
        .reset_index()
    )


def rank_agreement(table: pd.DataFrame, first: str, second: str, metric: str = "ndcg@10") -> dict[str, Any]:
    """Kendall's tau between the model rankings of two tasks (e.g. big hold-out vs small matrix)."""
    sub = table[(table["metric"] == metric) & (table["protocol"] == "full")]
    wide = sub.pivot(index="model", columns="task", values="mean")[[first, second]].dropna()
    tau, p_value = kendalltau(wide[first], wide[second])
    return {
        "metric": metric,
        "first": first,
        "second": second,
        "kendall_tau": float(tau),
        "p_value": float(p_value),
        "models": int(len(wide)),
    }


def fit_baselines(
    names: Sequence[str],
    data: PreparedData,
    split: str,
    *,
    seed: int = 0,
    params: dict[str, dict] | None = None,
) -> dict[str, dict[str, Any]]:
    """Baselines fitted per stage: on training events for validation, on train+valid events for test."""
    from sasrec.models.baselines import make_baseline

    params = params or {}
    fitted: dict[str, dict[str, Any]] = {}
    for name in names:
        fitted[name] = {}
        for stage in ("valid", "test"):
            history_mask, _ = data.stage_masks(split, stage)
            fitted[name][stage] = make_baseline(name, seed=seed, **params.get(name, {})).fit(
                data, history_mask
            )
    return fitted


def stage_tasks(
    data: PreparedData, split: str, *, maxlen: int = 200, relevance_threshold: float | None = None
) -> dict[str, EvalTask]:
    """Validation and test tasks of one split."""
    return {
        stage: build_eval_task(data, split, stage, maxlen=maxlen, relevance_threshold=relevance_threshold)
        for stage in ("valid", "test")
    }


def cross_task(
    big: PreparedData, small: PreparedData, *, maxlen: int = 200, relevance_threshold: float = 2.0
) -> EvalTask:
    """The big-to-small task (histories from ``big``, fully observed targets from ``small``)."""
    return build_cross_task(big, small, maxlen=maxlen, relevance_threshold=relevance_threshold)


def with_overrides(config: Any, **overrides: Any) -> Any:
    """A copy of a dataclass config with fields replaced."""
    return replace(config, **overrides)


# ---------------------------------------------------------------------------- notebook conveniences
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
    from sasrec.data.contracts import SPLITS, split_column

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
    from sasrec.data.contracts import SPLITS
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


def training_table(training: dict[str, Any]) -> pd.DataFrame:
    """One row per trained variant: best epoch, validation metrics, seconds, checkpoint file name."""
    records = []
    for variant, info in training["variants"].items():
        valid = {f"valid {k}": v for k, v in (info.get("valid") or {}).items() if "@" in k}
        records.append(
            {
                "variant": variant,
                "best_epoch": info["best_epoch"],
                **valid,
                "seconds": info["seconds"],
                "checkpoint": Path(info["checkpoint"]).name,
            }
        )
    return pd.DataFrame(records).set_index("variant")


def sasrec_scorers(training: dict[str, Any], data: PreparedData) -> dict[str, Any]:
    """``sasrec_<variant>`` -> scorer for each checkpoint of a training summary (fingerprints checked)."""
    return {
        f"sasrec_{variant}": load_sasrec(info["checkpoint"], data)[0]
        for variant, info in training["variants"].items()
    }


def oracle_scorers(tasks: dict[str, EvalTask], data: PreparedData, data_dir: str | Path) -> dict[str, Any]:
    """``{"oracle": {task: scorer}}`` from the simulator's ground truth; empty on real data.

    The ground truth covers the small matrix's pairs only, so the oracle is an upper bound where the
    targets are small-matrix rows.
    """
    from sasrec.data import simulator

    folder = paths.resolve(data_dir)
    if not simulator.is_simulated(folder):
        return {}
    ground_truth = simulator.load_ground_truth(folder)
    return {"oracle": {name: oracle_scorer(task, data, ground_truth) for name, task in tasks.items()}}


def sampled_vs_full(table: pd.DataFrame, task: str, metric: str = "ndcg@10") -> pd.DataFrame:
    """model, protocol, metric value: the two protocols side by side for one task."""
    sub = table[(table["task"] == task) & (table["metric"] == metric)]
    return sub[["model", "protocol", "mean"]].rename(columns={"mean": metric}).reset_index(drop=True)


def cross_scorers(
    big: PreparedData, split: str, baselines: Sequence[str], *, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Baselines for the two cross-dataset tasks: fitted on big train+valid events for the big hold-out, and
    on every big event for the small-matrix test (whose users' whole big histories are the input)."""
    from sasrec.models.baselines import make_baseline

    history_mask, _ = big.stage_masks(split, "test")
    return {
        name: {
            "big_holdout": make_baseline(name, seed=seed).fit(big, history_mask),
            "small_matrix": make_baseline(name, seed=seed).fit(big, None),
        }
        for name in baselines
    }


def cross_comparison(table: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """model, big_holdout_ndcg, small_ndcg (full ranking) for the cross-dataset figure and findings."""
    sub = table[(table["metric"] == metric) & (table["protocol"] == "full")]
    wide = sub.pivot(index="model", columns="task", values="mean")
    out = pd.DataFrame(
        {
            "model": wide.index,
            "big_holdout_ndcg": wide.get("big_holdout"),
            "small_ndcg": wide.get("small_matrix"),
        }
    ).reset_index(drop=True)
    out["rank_big_holdout"] = out["big_holdout_ndcg"].rank(ascending=False, method="min")
    out["rank_small"] = out["small_ndcg"].rank(ascending=False, method="min")
    return out.sort_values("small_ndcg", ascending=False).reset_index(drop=True)
