"""Fair comparisons: every model fit on the same events, ranked over the same candidates for the same users.

* The fitting policy is read from the trained models' checkpoints (``fit_on``) and applied to every
  baseline: ``train`` fits parameters on the split's training events (the test stage's input adds the
  validation events); ``train_valid`` refits on training + validation events for the test stage. The
  digest of the fitted events is recorded for every model, so a reader (and a test) can check that two
  models saw the same events.
* Every model is evaluated on the same task objects (users, candidates, input, targets), under each
  protocol, with bootstrap intervals over users; claims rest on paired differences against the best
  baseline and popularity (:func:`paired_comparisons`), not on overlapping intervals.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import kendalltau

from sasrec.data.cold_start import ColdStart
from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.data.tasks import build_cross_task, build_eval_task, resolve_relevance
from sasrec.errors import ConfigError, DataValidationError
from sasrec.evaluation.config import EvalConfig
from sasrec.evaluation.metrics import headline_metrics
from sasrec.training.loop import policy_mask

#: Models that are not rivals of the trained ones: chance level and, on simulated data, the ceiling.
REFERENCE_MODELS = ("random", "oracle")


# ------------------------------------------------------------------------------------------- fitting
def fit_baselines(
    data: PreparedData,
    baselines: dict[str, dict[str, Any]],
    *,
    split: str,
    fit_on: str,
    seed: int = 0,
    stages: Sequence[str] = ("valid", "test"),
    cold_start: ColdStart | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {stage: fitted baseline}}`` under the policy; each carries ``fit_events`` (count and digest,
    and its ``target`` when a baseline's ``target`` parameter is not views) and ``fit_seconds``.

    Under ``train`` one fit serves both stages; under ``train_valid`` the test stage's model is refit.
    ``cold_start``: the cold-start protocol whose removed events no model is fit on (as the trained models).
    """
    from sasrec.models.baselines import make_baseline
    from sasrec.models.targets import describe_target
    from sasrec.training.checkpoints import events_digest

    fitted: dict[str, dict[str, Any]] = {}
    for name, params in baselines.items():
        params = side_feature_params(data, name, params, split)
        fitted[name], by_mask = {}, {}
        for stage in stages:
            mask = policy_mask(data, split, fit_on, stage, cold_start=cold_start)
            digest = events_digest(data, mask)
            if digest["sha256"] not in by_mask:
                started = time.perf_counter()
                model = make_baseline(name, seed=seed, split=split, **(params or {})).fit(data, mask)
                model.fit_seconds = time.perf_counter() - started
                # the training target beside the digest (nothing added under views)
                model.fit_events = {**digest, **describe_target(data, mask, model.target)}
                by_mask[digest["sha256"]] = model
            fitted[name][stage] = by_mask[digest["sha256"]]
    return fitted


def side_feature_params(
    data: PreparedData, name: str, params: dict[str, Any] | None, split: str
) -> dict[str, Any]:
    """A baseline's parameters with a ``features`` setting (``all``, ``tags,caption``...) of the ``content`` and
    ``hybrid`` baselines replaced by the dataset's side-feature vectors (the split's feature table, cached
    next to the prepared dataset; :func:`~sasrec.training.features.baseline_side_features`)."""
    from sasrec.models.content import CONTENT_BASELINES
    from sasrec.training.features import baseline_side_features

    params = dict(params or {})
    if name in CONTENT_BASELINES:
        setting = params.get("features", "all")
        if isinstance(setting, str):
            try:
                params["features"] = baseline_side_features(data, setting, split)
            except ConfigError as exc:
                raise ConfigError(f"baselines.{name}.features: {exc}") from None
    return params


def trained_scorers(
    training: dict[str, Any],
    data: PreparedData,
    *,
    amp: bool = False,
    stages: Sequence[str] = ("valid", "test"),
) -> dict[str, dict[str, Any]]:
    """``{model: {"valid": scorer, "test": scorer}}`` from a training summary (fingerprints checked).

    The validation stage uses the selection run's best checkpoint; the test stage the checkpoint of the
    policy (the same file under ``train``, the retrained one under ``train_valid``). Scorers fall back on the
    popularity of the fitted events for users without input. A checkpoint serving both stages is loaded once.
    """
    from sasrec.evaluation.scorers import SequentialScorer
    from sasrec.training.checkpoints import load_checkpoint

    keys = {"valid": "best_checkpoint", "test": "checkpoint"}
    scorers: dict[str, dict[str, Any]] = {}
    for name, info in training["models"].items():
        scorers[name], loaded = {}, {}
        for stage in stages:
            path = Path(info.get(keys[stage]) or info["checkpoint"])
            if path not in loaded:
                model, _, payload = load_checkpoint(path, data)
                loaded[path] = SequentialScorer(model, popularity=payload["popularity"].numpy(), amp=amp)
                loaded[path].fit_events = payload.get("fit_events")
            scorers[name][stage] = loaded[path]
    return scorers


def fit_events_table(*groups: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """model, stage, events, sha256 of what each fitted model or scorer was fit on (one row per stage)."""
    rows = []
    for group in groups:
        for model, stages in group.items():
            for stage, fitted in stages.items():
                events = getattr(fitted, "fit_events", None) or {}
                rows.append(
                    {
                        "model": model,
                        "stage": stage,
                        "events": events.get("events"),
                        "sha256": events.get("sha256"),
                    }
                )
    return pd.DataFrame(rows, columns=["model", "stage", "events", "sha256"])


# --------------------------------------------------------------------------------------------- tasks
def evaluation_config(evaluation: dict[str, Any]) -> EvalConfig:
    """The ``evaluation:`` mapping as an :class:`EvalConfig` (unknown keys refused)."""
    from sasrec.data.config import from_mapping

    return from_mapping(EvalConfig, evaluation, "evaluation")


def shared_relevance(evaluation: EvalConfig) -> dict[str, Any]:
    """The relevance arguments of tasks every model shares; ``original`` is refused (it differs per model and
    applies to the original project's sampled protocol, which the comparisons run separately)."""
    if evaluation.relevance == "original":
        raise ConfigError(
            "evaluation.relevance='original' depends on each model's training; the comparison's tasks are shared by "
            "every model: use threshold, liked or all (the sampled protocol is also run with the original rule)"
        )
    threshold = evaluation.relevance_threshold if evaluation.relevance == "threshold" else None
    return {"relevance": evaluation.relevance, "relevance_threshold": threshold}


def stage_tasks(data: PreparedData, split: str, maxlen: int, evaluation: EvalConfig) -> dict[str, EvalTask]:
    """Validation and test tasks of one split under the evaluation's relevance rule."""
    return {
        stage: build_eval_task(
            data,
            split,
            stage,
            maxlen=maxlen,
            **shared_relevance(evaluation),
        )  # fmt: skip
        for stage in ("valid", "test")
    }


def original_rule_tasks(data: PreparedData, split: str, maxlen: int) -> dict[str, EvalTask]:
    """Test tasks of the original project's relevance rules: ``test@all`` and ``test@liked``."""
    return {
        f"test@{rule}": build_eval_task(data, split, "test", maxlen=maxlen, relevance=rule)
        for rule in ("all", "liked")
    }


def original_rule_scorers(scorers: dict[str, Any], training: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each model on the task of its original rule: liked for models trained with explicit negatives,
    all test items otherwise; random on both (the chance level of each rule)."""
    trained = training["models"]
    out: dict[str, dict[str, Any]] = {}
    for name, scorer in scorers.items():
        test_scorer = scorer["test"] if isinstance(scorer, dict) else scorer
        if name == "random":
            out[name] = {"test@all": test_scorer, "test@liked": test_scorer}
            continue
        explicit = bool(trained.get(name, {}).get("config", {}).get("explicit_negatives", False))
        out[name] = {f"test@{resolve_relevance('original', explicit)}": test_scorer}
    return out


def cross_tasks(
    big: PreparedData, small: PreparedData, split: str, maxlen: int, evaluation: EvalConfig
) -> dict[str, EvalTask]:
    """The big-matrix hold-out (the split's test stage) and KuaiRec's big-to-small test."""
    return {
        "big_holdout": stage_tasks(big, split, maxlen, evaluation)["test"],
        "small_matrix": build_cross_task(
            big,
            small,
            maxlen=maxlen,
            **shared_relevance(evaluation),
        ),  # fmt: skip
    }


def oracle_scorer(task: EvalTask, data: PreparedData, ground_truth: pd.DataFrame) -> Any:
    """Scorer ranking by the simulator's expected watch_ratio (an upper bound; simulated data only)."""
    from sasrec.models.baselines import OracleScorer

    user_index = pd.Series(np.arange(len(task.users)), index=data.user_ids[task.users])
    item_index = pd.Series(np.arange(1, data.num_items + 1), index=data.item_ids[1:])
    rows = user_index.reindex(ground_truth["user_id"].to_numpy()).to_numpy()
    cols = item_index.reindex(ground_truth["video_id"].to_numpy()).to_numpy()
    keep = ~(np.isnan(rows) | np.isnan(cols))
    values = ground_truth["expected_watch_ratio"].to_numpy(dtype=np.float32)[keep] + 1e-3
    expected = sp.csr_matrix(
        (values, (rows[keep].astype(np.int64), cols[keep].astype(np.int64))),
        shape=(len(task.users), task.num_items + 1),
    )
    return OracleScorer(expected)


def oracle_scorers(tasks: dict[str, EvalTask], data: PreparedData, data_dir: str | Path) -> dict[str, Any]:
    """``{"oracle": {task: scorer}}`` from the simulator's ground truth; empty on real data.

    The ground truth covers the small matrix's pairs only, so the oracle is an upper bound where the
    targets are small-matrix rows.
    """
    from sasrec import paths
    from sasrec.data import simulator

    folder = paths.resolve(data_dir)
    if not simulator.is_simulated(folder):
        return {}
    ground_truth = simulator.load_ground_truth(folder)
    return {"oracle": {name: oracle_scorer(task, data, ground_truth) for name, task in tasks.items()}}


# ----------------------------------------------------------------------------------------- evaluating
def evaluate_models(
    scorers: dict[str, Any],
    tasks: dict[str, EvalTask],
    evaluation: EvalConfig,
    *,
    protocols: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Evaluate every scorer on every task and protocol with bootstrap intervals.

    Args:
        scorers: model name -> Scorer, or -> {task name: Scorer} (a model without an entry for a task is
            not evaluated on it).
        tasks: task name (``valid``, ``test``, ``small_matrix``...) -> EvalTask.
        evaluation: K, negatives, bootstrap settings and (unless ``protocols``) the protocols.

    Returns:
        (table, per_user): table rows are model, task, protocol, metric, mean, low, high (bootstrap interval;
        counts such as ``users`` and ``mean_candidates`` have no interval); per_user rows carry model, task
        and protocol columns.
    """
    from sasrec.evaluation.bootstrap import bootstrap_ci
    from sasrec.evaluation.protocol import evaluate

    rows, per_user = [], []
    for model_name, scorer_or_map in scorers.items():
        for task_name, task in tasks.items():
            scorer = _scorer_for(scorer_or_map, task_name)
            if scorer is None:
                continue
            for protocol in protocols or evaluation.protocols:
                result = evaluate(scorer, task, protocol=protocol, **evaluation.evaluate_kwargs())
                metric_names = [m for m in result.summary if "@" in m and m in result.per_user.columns]
                ci = bootstrap_ci(result.per_user, metric_names, n_boot=evaluation.n_boot, alpha=evaluation.alpha,
                                  seed=evaluation.seed)  # fmt: skip
                labels = {"model": model_name, "task": task_name, "protocol": protocol}
                rows.extend(ci.assign(**labels).to_dict(orient="records"))
                for key, value in result.summary.items():
                    if key not in metric_names and isinstance(value, int | float):
                        rows.append(
                            {**labels, "metric": key, "mean": float(value), "low": np.nan, "high": np.nan}
                        )
                per_user.append(result.per_user.assign(**labels))
    table = pd.DataFrame(rows)[["model", "task", "protocol", "metric", "mean", "low", "high"]]
    return table, pd.concat(per_user, ignore_index=True)


def _scorer_for(scorer_or_map: Any, task_name: str) -> Any:
    """The scorer of a model for ``task_name``: the model's only scorer, or its entry for that task."""
    return scorer_or_map.get(task_name) if isinstance(scorer_or_map, dict) else scorer_or_map


def for_tasks(scorers: dict[str, dict[str, Any]], stages: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Re-key per-stage scorers by task: ``stages`` maps task name -> stage (``{"small_matrix": "test"}``)."""
    return {
        name: {task: by_stage[stage] for task, stage in stages.items()} for name, by_stage in scorers.items()
    }


def best_baseline(
    table: pd.DataFrame, task: str, trained: Sequence[str], metric: str = "ndcg@10"
) -> str | None:
    """The baseline (neither a trained model nor random/oracle) with the highest ``metric`` on ``task``."""
    sub = table[(table["task"] == task) & (table["protocol"] == "full") & (table["metric"] == metric)]
    sub = sub[~sub["model"].isin([*trained, *REFERENCE_MODELS])]
    return None if sub.empty else str(sub.sort_values("mean", ascending=False)["model"].iloc[0])


def paired_comparisons(
    per_user: pd.DataFrame,
    task: str,
    references: Sequence[str],
    evaluation: EvalConfig,
    *,
    metrics: Sequence[str] = ("ndcg@10", "recall@10"),
    protocol: str = "full",
) -> pd.DataFrame:
    """Paired differences of every model against each reference model on ``task`` (bootstrap interval over
    the users both define the metric for, and a sign-flip permutation p-value)."""
    from sasrec.evaluation.bootstrap import paired_table

    sub = per_user[
        (per_user["task"] == task) & (per_user["protocol"] == protocol) & (per_user["model"] != "oracle")
    ]
    by_model = {
        name: frame.drop(columns=["model", "task", "protocol"])
        for name, frame in sub.groupby("model", sort=False)
    }
    frames = []
    for reference in references:
        if reference not in by_model:
            continue
        frames.append(
            paired_table(
                by_model,
                reference,
                list(metrics),
                n_boot=evaluation.n_boot,
                alpha=evaluation.alpha,
                seed=evaluation.seed,
            ).assign(task=task)  # fmt: skip
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def paired_against(
    per_user: pd.DataFrame,
    pairs: Sequence[tuple[str, str, str]],
    evaluation: EvalConfig,
    metrics: Sequence[str],
) -> pd.DataFrame:
    """Paired differences of chosen ``(model, reference, task)`` triples (a twin, a default configuration)
    rather than of every model against one reference (:func:`paired_comparisons`); a pair either model of
    which has no rows on the task is left out."""
    from sasrec.evaluation.bootstrap import paired_table

    frames = []
    for model, reference, task in pairs:
        sub = per_user[(per_user["task"] == task) & per_user["model"].isin([model, reference])]
        by_model = {
            name: frame.drop(columns=["model", "task", "protocol"]) for name, frame in sub.groupby("model")
        }
        if model not in by_model or reference not in by_model:
            continue
        frames.append(paired_table(by_model, reference, list(metrics), n_boot=evaluation.n_boot,
                                   alpha=evaluation.alpha, seed=evaluation.seed).assign(task=task))  # fmt: skip
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --------------------------------------------------------------------------------------------- tables
def metric_table(
    table: pd.DataFrame, task: str, protocol: str = "full", metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Wide table (one row per model, "mean [low, high]" per metric) of one task and protocol, best first.

    ``metrics`` default: the headline metrics at the table's K (read from its ``ndcg@K`` rows).
    """
    if metrics is None:
        metrics = headline_metrics(int(headline_metric(table).split("@")[1]))
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


def headline_metric(frame: pd.DataFrame) -> str:
    """The headline metric ``ndcg@K`` of a results or paired table, K read from its ``metric`` column.

    Raises:
        DataValidationError: the table has no ``ndcg@K`` rows.
    """
    found = (
        [str(m) for m in dict.fromkeys(frame["metric"]) if str(m).startswith("ndcg@")] if len(frame) else []
    )
    if not found:
        raise DataValidationError("the table has no ndcg@K rows: cannot tell its headline metric")
    return found[0]


def paired_rows(paired: pd.DataFrame, task: str, metric: str | None = None) -> pd.DataFrame:
    """The paired differences of one task and metric (default: the headline ``ndcg@K``, K read from the data),
    grouped by reference in the order the references were chosen, models best first within each (the order
    of every paired table and figure: see :func:`paired_order`)."""
    if paired.empty:
        return paired
    metric = metric or headline_metric(paired)
    sub = paired[(paired["task"] == task) & (paired["metric"] == metric)]
    models, references = paired_order(sub)
    keys = {"reference": {name: i for i, name in enumerate(references)},
            "model": {name: i for i, name in enumerate(models)}}  # fmt: skip
    return sub.sort_values(["reference", "model"], key=lambda column: column.map(keys[column.name]),
                           kind="stable").reset_index(drop=True)  # fmt: skip


def paired_order(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(models by their mean, best first; references in the order they appear) of paired rows of one task
    and metric."""
    means = rows.groupby("model", sort=False)["mean_model"].first()
    models = means.sort_values(ascending=False, kind="stable").index
    return [str(m) for m in models], [str(r) for r in dict.fromkeys(rows["reference"])]


def p_value_text(p_value: float) -> str:
    """A p-value with two significant digits, never in scientific notation (``0.0001``, ``0.031``, ``1``)."""
    if pd.isna(p_value):
        return "n/a"
    text = f"{p_value:.2g}"
    return "< 0.0001" if "e" in text else text


def paired_cell(row: Any) -> str:
    """``difference [low, high], p = x`` of one paired row (``+0.0955 [+0.0622, +0.1285], p = 0.0001``)."""
    if pd.isna(row.difference):
        return "n/a (no shared users)"
    p_value = p_value_text(row.p_value)
    p_text = f"p {p_value}" if p_value.startswith("<") else f"p = {p_value}"
    return f"{row.difference:+.4f} [{row.low:+.4f}, {row.high:+.4f}], {p_text}"


def paired_summary(
    paired: pd.DataFrame,
    task: str,
    metric: str | None = None,
    *,
    cell: Callable[[Any], str] = paired_cell,
) -> pd.DataFrame:
    """The compact paired table of ``task``: one row per model (best mean first), one column ``vs REFERENCE``
    per reference (in the order the references were chosen), each cell ``cell(row)`` of the paired row
    (default ``difference [low, high], p = x``), empty where a model is its own reference.

    ``metric`` default: the headline ``ndcg@K`` (K read from the data). The index is named
    ``model (METRIC, N users)``; an empty frame when ``task`` has no rows. The long table (every metric,
    Holm-adjusted p-values) stays in ``Comparison.paired`` and the metrics JSON.
    """
    sub = paired_rows(paired, task, metric)
    if sub.empty:
        return pd.DataFrame()
    metric = str(sub["metric"].iloc[0])
    models, references = paired_order(sub)
    cells = sub.assign(cell=[cell(row) for row in sub.itertuples()])
    wide = cells.pivot(index="model", columns="reference", values="cell").reindex(
        index=models, columns=references
    )
    wide = wide.fillna("").rename(columns=lambda ref: f"vs {ref}").rename_axis(None, axis=1)
    return wide.rename_axis(f"model ({metric}, {int(sub['users'].max())} users)")


def paired_summaries(paired: pd.DataFrame, metric: str | None = None) -> dict[str, pd.DataFrame]:
    """:func:`paired_summary` of every task of ``paired`` (``test``; ``big_holdout``, ``small_matrix``)."""
    if paired.empty:
        return {}
    return {str(task): paired_summary(paired, task, metric) for task in dict.fromkeys(paired["task"])}


def setup_value(value: Any) -> str:
    """One setting as text: lists joined by commas, mappings as ``key: value`` pairs, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return "; ".join(f"{key}: {setup_value(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(setup_value(item) for item in value)
    return str(value)


def setup_table(setup: dict[str, Any]) -> pd.DataFrame:
    """A comparison's set-up (dataset, split, fitting policy, K, relevance, protocols...) as a two-column
    table: setting, value (text), one row per setting in the set-up's order."""
    return pd.DataFrame(
        {"setting": list(setup), "value": [setup_value(value) for value in setup.values()]},
        columns=["setting", "value"],
    )


def protocol_overview(table: pd.DataFrame, per_user: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """Per task and protocol: users, mean candidates and targets per user, the share of candidates that are
    the user's own targets, and the chance level (the random scorer's ``metric``)."""
    keyed = table.set_index(["model", "task", "protocol", "metric"])["mean"]
    rows = []
    for (task, protocol), group in per_user.groupby(["task", "protocol"], sort=False):
        first = next((m for m in group["model"].unique() if m != "oracle"), group["model"].iloc[0])
        users = group[(group["model"] == first) & (group["n_relevant"] > 0)]
        candidates = users["n_candidates"].to_numpy(dtype=np.float64)
        targets = np.minimum(users["n_targets"].to_numpy(dtype=np.float64), candidates)
        rows.append(
            {
                "task": task,
                "protocol": protocol,
                "users": int(len(users)),
                "mean_candidates": float(candidates.mean()) if len(users) else np.nan,
                "mean_targets": float(targets.mean()) if len(users) else np.nan,
                "share_of_candidates_that_are_targets": float((targets / np.maximum(candidates, 1)).mean())
                if len(users)
                else np.nan,
                f"chance {metric}": float(keyed.get(("random", task, protocol, metric), np.nan)),
            }
        )
    return pd.DataFrame(rows)


def results_by_activity(
    per_user: pd.DataFrame, task: str, protocol: str = "full", metric: str = "ndcg@10"
) -> pd.DataFrame:
    """Mean ``metric`` per model and user-activity bucket (quantiles of history length)."""
    from sasrec.study.eda import activity_buckets

    sub = per_user[
        (per_user["task"] == task) & (per_user["protocol"] == protocol) & (per_user["model"] != "oracle")
    ].dropna(subset=[metric])
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
    return {"metric": metric, "first": first, "second": second, "kendall_tau": float(tau), "p_value": float(p_value),
            "models": int(len(wide))}  # fmt: skip


def sampled_vs_full(table: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """model, protocol, metric: full ranking on ``test`` beside the original sampled protocol (each model's
    original rule), for the protocol figure."""
    full = table[(table["task"] == "test") & (table["protocol"] == "full") & (table["metric"] == metric)]
    sampled = table[
        table["task"].str.startswith("test@") & (table["protocol"] == "sampled") & (table["metric"] == metric)
    ]
    sampled = sampled[~((sampled["model"] == "random") & (sampled["task"] == "test@liked"))]
    frame = pd.concat([full.assign(protocol="full"), sampled.assign(protocol="sampled")])
    return frame[["model", "protocol", "mean"]].rename(columns={"mean": metric}).reset_index(drop=True)


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


# ------------------------------------------------------------------------------------ whole comparisons
@dataclass
class Comparison:
    """Everything one comparison produced (the notebook shows it; :meth:`to_json` is what the report reads).

    Attributes:
        setup: dataset(s), split, fitting policy, K, relevance rule and threshold, protocols, maxlen.
        table: model, task, protocol, metric, mean, low, high (bootstrap intervals over users).
        per_user: per-user metrics with model, task and protocol columns.
        paired: paired differences of every model against each reference (best baseline, popularity).
        overview: per task and protocol: candidates per user, users, chance level.
        fit_events: per model and stage, the number and digest of the events it was fit on.
    """

    setup: dict[str, Any]
    table: pd.DataFrame
    per_user: pd.DataFrame
    paired: pd.DataFrame
    overview: pd.DataFrame
    fit_events: pd.DataFrame

    def to_json(self) -> dict[str, Any]:
        """The JSON payload of the comparison (per-user rows are not stored)."""
        return {**self.setup, "table": self.table, "paired": self.paired, "overview": self.overview,
                "fit_events": self.fit_events}  # fmt: skip


def _setup(training: dict[str, Any], evaluation: EvalConfig, **extra: Any) -> dict[str, Any]:
    from sasrec.study.steps import trained_setting

    return {
        **extra,
        "split": trained_setting(training, "split"),
        "fit_on": trained_setting(training, "fit_on"),
        "maxlen": max(int(info["config"]["maxlen"]) for info in training["models"].values()),
        "k": evaluation.k,
        "relevance": evaluation.relevance,
        "relevance_threshold": evaluation.relevance_threshold,
        "protocols": list(evaluation.protocols),
        "num_negatives": evaluation.num_negatives,
        "n_boot": evaluation.n_boot,
        "trained_models": list(training["models"]),
    }


def best_trained(
    table: pd.DataFrame, task: str, trained: Sequence[str], prefix: str, metric: str
) -> str | None:
    """The trained model whose name starts with ``prefix`` with the highest ``metric`` on ``task``."""
    sub = table[(table["task"] == task) & (table["protocol"] == "full") & (table["metric"] == metric)]
    sub = sub[sub["model"].isin([m for m in trained if m.startswith(prefix)])]
    return None if sub.empty else str(sub.sort_values("mean", ascending=False)["model"].iloc[0])


def _paired(
    per_user: pd.DataFrame, table: pd.DataFrame, task: str, setup: dict[str, Any], evaluation: EvalConfig
) -> pd.DataFrame:
    """Paired differences against the best baseline, popularity and the best SASRec variant."""
    metric = f"ndcg@{evaluation.k}"
    trained = setup["trained_models"]
    candidates = (
        best_baseline(table, task, trained, metric),
        "pop",
        best_trained(table, task, trained, "sasrec", metric),
    )
    references = list(dict.fromkeys(m for m in candidates if m))
    setup.setdefault("references", {})[task] = references
    return paired_comparisons(per_user, task, references, evaluation,
                              metrics=(metric, f"recall@{evaluation.k}", f"graded_ndcg@{evaluation.k}"))  # fmt: skip


def within_matrix(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    evaluation: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
) -> Comparison:
    """Every baseline and trained model on ``data``'s validation and test stages, under the trained models'
    split and fitting policy (read from their checkpoints), plus the original project's sampled protocol
    with its own relevance rule when ``sampled`` is among the protocols."""
    config = evaluation_config(evaluation)
    setup = _setup(training, config, dataset=data.name)
    tasks = stage_tasks(data, setup["split"], setup["maxlen"], config)
    fitted = fit_baselines(data, baselines, split=setup["split"], fit_on=setup["fit_on"], seed=config.seed)
    trained = trained_scorers(training, data)
    scorers: dict[str, Any] = {**fitted, **trained, **oracle_scorers(tasks, data, study.data_path)}
    table, per_user = evaluate_models(scorers, tasks, config, protocols=["full"])
    if "sampled" in config.protocols:
        rule_tasks = original_rule_tasks(data, setup["split"], setup["maxlen"])
        more, more_users = evaluate_models(original_rule_scorers(scorers, training), rule_tasks, config,
                                           protocols=["full", "sampled"])  # fmt: skip
        table, per_user = (
            pd.concat([table, more], ignore_index=True),
            pd.concat([per_user, more_users], ignore_index=True),
        )
    paired = _paired(per_user, table, "test", setup, config)
    return Comparison(setup, table, per_user, paired, protocol_overview(table, per_user, f"ndcg@{config.k}"),
                      fit_events_table(fitted, trained))  # fmt: skip


def cross_dataset(
    study: Any,
    big: PreparedData,
    small: PreparedData,
    training: dict[str, Any],
    evaluation: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
) -> Comparison:
    """KuaiRec's test: every model fit on the same big-matrix events (the trained models' policy), measured
    on the big-matrix hold-out and on the fully observed small matrix."""
    config = evaluation_config(evaluation)
    setup = _setup(training, config, train_dataset=big.name, test_dataset=small.name)
    tasks = cross_tasks(big, small, setup["split"], setup["maxlen"], config)
    fitted = fit_baselines(
        big, baselines, split=setup["split"], fit_on=setup["fit_on"], seed=config.seed, stages=("test",)
    )
    trained = trained_scorers(training, big, stages=("test",))
    stages = {"big_holdout": "test", "small_matrix": "test"}
    scorers: dict[str, Any] = {**for_tasks(fitted, stages), **for_tasks(trained, stages)}
    scorers.update(oracle_scorers({"small_matrix": tasks["small_matrix"]}, big, study.data_path))
    table, per_user = evaluate_models(scorers, tasks, config, protocols=["full"])
    paired = pd.concat([_paired(per_user, table, task, setup, config) for task in tasks], ignore_index=True)
    return Comparison(setup, table, per_user, paired, protocol_overview(table, per_user, f"ndcg@{config.k}"),
                      fit_events_table(fitted, trained))  # fmt: skip
