"""What users like and what videos are: training targets, side features and cold start, measured.

Three experiments on one dataset, each a set of *arms* (one model trained or fitted one way), every arm fit
on the same split's events under the same fitting policy, evaluated on the same task objects, and compared
with paired differences over the same users (:mod:`sasrec.evaluation.bootstrap`):

* :func:`target_experiment`: every model (trained and baseline) under each training target (``views``,
  ``liked``, ``relevant``, ``graded``; :mod:`sasrec.models.targets`); validation and test NDCG@K, the paired
  difference of each target against ``views`` and the target validation selects.
* :func:`twin_experiment`: each feature-aware model (``features: all``) against its id-only twin
  (``features: none``; the same model otherwise) on the standard protocol and on the item and user
  cold-start protocols (:mod:`sasrec.data.cold_start`), beside the side-feature baselines.
* :func:`ablation_experiment`: one model with every feature group, without each group and with each group
  alone, on the standard and item cold-start protocols.

Trained arms share one ``training`` mapping (the experiment's budget: epochs, patience, input length), which
the report states; they are selected on validation only and never saved as checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.cold_start import COLD_START_PROTOCOLS, ColdStart
from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.config import EvalConfig
from sasrec.models.targets import TARGETS
from sasrec.study.comparisons import (
    evaluate_models,
    evaluation_config,
    fit_baselines,
    paired_against,
    shared_relevance,
)
from sasrec.study.resources import measure
from sasrec.training.config import TrainConfig
from sasrec.training.features import FEATURE_SWITCHES

#: Protocol name -> what the report calls it.
PROTOCOL_NAMES = {"none": "standard", "items": "item cold-start", "users": "user cold-start"}


@dataclass
class Experiment:
    """The arms of one experiment, evaluated.

    Attributes:
        table: model, task, protocol, metric, mean, low, high of every arm (task names ``<stage>:<protocol>``).
        per_user: per-user metrics of every arm.
        arms: one row per arm: arm name, model, the varied setting(s), best epoch, seconds.
        paired: paired differences (arm minus its reference arm) on the test tasks.
        skipped: arms not run (model, target, reason): a target the model's loss contradicts.
    """

    table: pd.DataFrame
    per_user: pd.DataFrame
    arms: pd.DataFrame
    paired: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_json(self) -> dict[str, Any]:
        """The JSON payload (per-user rows are not stored)."""
        return {"table": self.table, "arms": self.arms, "paired": self.paired, "skipped": self.skipped}


# ------------------------------------------------------------------------------------------ settings
def cold_start_spec(protocol: str, cold_start: dict[str, Any]) -> ColdStart | None:
    """The :class:`ColdStart` of ``protocol`` with the ``cold_start`` mapping's fraction, k and seed."""
    if protocol not in COLD_START_PROTOCOLS:
        raise ConfigError(f"protocols: expected one of {', '.join(COLD_START_PROTOCOLS)}; got {protocol!r}")
    if protocol == "none":
        return None
    known = {"frac", "user_events", "seed"}
    unknown = sorted(set(cold_start) - known)
    if unknown:
        raise ConfigError(
            f"cold_start: unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}"
        )
    return ColdStart(protocol=protocol, **cold_start).validate("cold_start ")


def _cold_settings(spec: ColdStart | None) -> dict[str, Any]:
    """The TrainConfig fields of a protocol (``cold_start: none`` when ``spec`` is None)."""
    return spec.to_dict() if spec is not None else {"cold_start": "none"}


def protocol_tasks(
    data: PreparedData,
    split: str,
    maxlen: int,
    evaluation: EvalConfig,
    specs: dict[str, ColdStart | None],
    stages: Sequence[str] = ("valid", "test"),
    *,
    cold_validation: bool = False,
) -> dict[str, EvalTask]:
    """``{"<stage>:<protocol>": task}``: each stage's task under each protocol (cold-start tasks test only the
    withheld videos' or cold users' events); with ``cold_validation``, under each cold-start protocol also its
    cold validation task ``valid_cold:<protocol>`` (targets: the validation events the protocol removes)."""
    tasks = {
        f"{stage}:{protocol}": build_eval_task(
            data, split, stage, maxlen=maxlen, **shared_relevance(evaluation), cold_start=spec
        )
        for protocol, spec in specs.items()
        for stage in stages
    }
    if cold_validation:
        tasks.update({f"valid_cold:{protocol}": build_eval_task(data, split, "valid", maxlen=maxlen,
                                                               **shared_relevance(evaluation), cold_start=spec,
                                                               cold_targets=True)
                      for protocol, spec in specs.items() if spec is not None})  # fmt: skip
    return tasks


def selection_task(protocol: str) -> str:
    """The validation task that chooses a setting for ``protocol``: the cold validation task of a cold-start
    protocol (the mirror of its test task), the standard validation task otherwise."""
    return "valid:none" if protocol == "none" else f"valid_cold:{protocol}"


def arm_config(
    data: PreparedData, training: dict[str, Any], spec: dict[str, Any], name: str, **overrides: Any
) -> TrainConfig:
    """One arm's :class:`TrainConfig`: ``training``, the model's mapping, then ``overrides`` on top."""
    from sasrec.study.steps import model_configs

    return model_configs(data.name, training, {name: {**(spec or {}), **overrides}})[name]


def _train_arm(study: Any, data: PreparedData, config: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """Train one arm (validation-selected epoch, nothing saved); its scorer and what the arms table records."""
    from sasrec.evaluation.scorers import SequentialScorer
    from sasrec.training.loop import train

    config = TrainConfig.from_dict({**config.to_dict(), "progress": study.progress})
    with measure() as cost:
        result = train(data, config, save=False)
    scorer = SequentialScorer(result.model, popularity=result.popularity)
    scorer.fit_events = result.fit_events
    info = {"best_epoch": int(result.best_epoch), "epochs_run": int(result.log["epoch"].max()),
            "seconds": round(cost.seconds, 1)}  # fmt: skip
    return scorer, info


def _feature_arm(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    name: str,
    spec: dict[str, Any],
    cold: ColdStart | None,
    features: str,
) -> tuple[Any, dict[str, Any]]:
    """Train model ``name`` under cold-start protocol ``cold`` with side features ``features`` (``none``: the
    id-only twin, which has no feature path and so no id dropout either)."""
    overrides = {**_cold_settings(cold), "features": features}
    if features == "none":
        overrides["id_dropout"] = 0.0
    return _train_arm(study, data, arm_config(data, training, spec, name, **overrides))


def _split_and_maxlen(training: dict[str, Any]) -> tuple[str, str, int]:
    return (
        str(training.get("split", "temporal")),
        str(training.get("fit_on", "train")),
        int(training["maxlen"]),
    )


# --------------------------------------------------------------------------------------- experiments
def target_experiment(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    models: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
    evaluation: dict[str, Any],
    targets: Sequence[str] = TARGETS,
) -> Experiment:
    """Every model under every training target, on the standard protocol (arm ``<model>|<target>``).

    Trained models use the experiment's ``training`` mapping with their own mapping on top; baselines their
    ``baselines`` parameters. Paired differences: each target against the model's ``views`` arm on test.
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or "views" not in targets:
        raise ConfigError(
            f"targets must include views and name only {', '.join(TARGETS)}; got {list(targets)}"
        )
    config = evaluation_config(evaluation)
    split, fit_on, maxlen = _split_and_maxlen(training)
    tasks = protocol_tasks(data, split, maxlen, config, {"none": None})
    scorers: dict[str, Any] = {}
    arms = []
    skipped = []
    for name, spec in models.items():
        for target in targets:
            try:
                arm_settings = arm_config(data, training, spec, name, target=target)
            except ConfigError as exc:  # a target the model's loss contradicts: recorded, not trained
                skipped.append({"model": name, "target": target, "reason": str(exc)})
                continue
            scorer, info = _train_arm(study, data, arm_settings)
            scorers[f"{name}|{target}"] = scorer
            arms.append(
                {"arm": f"{name}|{target}", "model": name, "kind": "trained", "target": target, **info}
            )
    for name, params in baselines.items():
        for target in targets:
            arm = f"{name}|{target}"
            stages = fit_baselines(data, {name: {**(params or {}), "target": target}}, split=split, fit_on=fit_on,
                                   seed=config.seed, stages=("valid", "test"))[name]  # fmt: skip
            scorers[arm] = {f"{stage}:none": model for stage, model in stages.items()}
            arms.append({"arm": arm, "model": name, "kind": "baseline", "target": target,
                         "best_epoch": None, "epochs_run": None,
                         "seconds": round(sum({id(m): m.fit_seconds for m in stages.values()}.values()), 1)})  # fmt: skip
    table, per_user = evaluate_models(scorers, tasks, config, protocols=["full"])
    pairs = [
        (f"{m}|{t}", f"{m}|views", "test:none")
        for m in [*models, *baselines]
        for t in targets
        if t != "views"
    ]
    return Experiment(
        table,
        per_user,
        pd.DataFrame(arms),
        paired_against(per_user, pairs, config, (f"ndcg@{config.k}", f"hr@{config.k}")),
        pd.DataFrame(skipped),
    )


def twin_experiment(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    models: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
    evaluation: dict[str, Any],
    *,
    protocols: Sequence[str] = COLD_START_PROTOCOLS,
    cold_start: dict[str, Any] | None = None,
    features: str | Sequence[str] = "all",
) -> Experiment:
    """Each model with side features against its id-only twin, under each protocol.

    ``features``: one ``features`` setting, or candidate settings (e.g. ``["all", "tags,categories,caption,
    user"]``) among which validation chooses per model and protocol, on the protocol's own validation task
    (:func:`selection_task`: under a cold-start protocol the cold validation task, so the choice is made for
    cold videos or users without reading test). Arms ``<model>|<protocol>|ids`` and
    ``<model>|<protocol>|features`` (the chosen candidate; the others stay as ``...|features:<setting>``,
    and the arms table records every candidate's validation NDCG@K); baselines (the side-feature ones
    included, fitted on the protocol's events) ``<baseline>|<protocol>``. Paired differences: each
    feature-aware arm (chosen or not) against its twin on the protocol's test task.
    """
    config = evaluation_config(evaluation)
    candidates = [features] if isinstance(features, str) else list(dict.fromkeys(features))
    if not candidates or "none" in candidates:
        raise ConfigError(f"features: expected feature settings other than none; got {features!r}")
    split, fit_on, maxlen = _split_and_maxlen(training)
    specs = {protocol: cold_start_spec(protocol, cold_start or {}) for protocol in protocols}
    tasks = protocol_tasks(data, split, maxlen, config, specs, cold_validation=len(candidates) > 1)
    scorers: dict[str, Any] = {}
    arms = []
    for protocol, spec in specs.items():
        for name, model_spec in models.items():
            for variant, setting in (
                ("ids", "none"),
                *((_candidate_arm(c, candidates), c) for c in candidates),
            ):
                arm = f"{name}|{protocol}|{variant}"
                scorer, info = _feature_arm(study, data, training, name, model_spec, spec, setting)
                scorers[arm] = {task: scorer for task in tasks if task.endswith(f":{protocol}")}
                arms.append({"arm": arm, "model": name, "kind": "trained", "protocol": protocol,
                             "features": setting, **info})  # fmt: skip
        fitted = fit_baselines(data, baselines, split=split, fit_on=fit_on, seed=config.seed, cold_start=spec)
        for name, stages in fitted.items():
            arm = f"{name}|{protocol}"
            scorers[arm] = {f"{stage}:{protocol}": model for stage, model in stages.items()}
            arms.append({"arm": arm, "model": name, "kind": "baseline", "protocol": protocol,
                         "features": (baselines[name] or {}).get("features", "none" if name not in
                                                                 ("content", "hybrid") else "all"),
                         "best_epoch": None, "epochs_run": None,
                         "seconds": round(sum({id(m): m.fit_seconds for m in stages.values()}.values()), 1)})  # fmt: skip
    table, per_user = evaluate_models(scorers, tasks, config, protocols=["full"])
    table, per_user, arms_frame = _choose_candidates(table, per_user, pd.DataFrame(arms), config.k)
    feature_arms = arms_frame[(arms_frame["kind"] == "trained") & (arms_frame["features"] != "none")]
    pairs = [(a.arm, f"{a.model}|{a.protocol}|ids", f"test:{a.protocol}") for a in feature_arms.itertuples()]
    return Experiment(
        table,
        per_user,
        arms_frame,
        paired_against(per_user, pairs, config, (f"ndcg@{config.k}", f"hr@{config.k}")),
    )


def _candidate_arm(setting: str, candidates: Sequence[str]) -> str:
    """The arm suffix of a feature-aware candidate: ``features`` when it is the only one."""
    return "features" if len(candidates) == 1 else f"features:{setting}"


def _choose_candidates(
    table: pd.DataFrame, per_user: pd.DataFrame, arms: pd.DataFrame, k: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per trained model and protocol, the feature candidate with the best NDCG@k on the protocol's selection
    task (ties: the first listed) becomes arm ``<model>|<protocol>|features``; every candidate's selection
    score is recorded (``selection_ndcg``, ``chosen``)."""
    metric = f"ndcg@{k}"
    arms = arms.assign(selection_ndcg=np.nan, chosen=False)
    renames: dict[str, str] = {}
    trained = arms[(arms["kind"] == "trained") & (arms["features"] != "none")]
    for (model, protocol), group in trained.groupby(["model", "protocol"], sort=False):
        rows = table[(table["task"] == selection_task(protocol)) & (table["metric"] == metric)]
        scores = rows.set_index("model")["mean"].reindex(group["arm"]).astype(float)
        arms.loc[group.index, "selection_ndcg"] = scores.to_numpy()
        chosen = group.index[int(np.nanargmax(scores.fillna(-np.inf).to_numpy()))]
        arms.loc[chosen, "chosen"] = True
        renames[str(arms.loc[chosen, "arm"])] = f"{model}|{protocol}|features"
    arms["arm"] = arms["arm"].replace(renames)
    return (table.assign(model=table["model"].replace(renames)),
            per_user.assign(model=per_user["model"].replace(renames)), arms)  # fmt: skip


def ablation_experiment(
    study: Any,
    data: PreparedData,
    training: dict[str, Any],
    name: str,
    spec: dict[str, Any],
    evaluation: dict[str, Any],
    *,
    protocols: Sequence[str] = ("none", "items"),
    cold_start: dict[str, Any] | None = None,
    groups: Sequence[str] = tuple(FEATURE_SWITCHES),
    available: Sequence[str] | None = None,
) -> Experiment:
    """One model with every group, without each group (``-g``) and with each group alone (``+g``), under each
    protocol (arms ``<protocol>|<setting>``). Paired differences: every arm against ``all`` on its test task.

    ``available``: the groups the data's side files provide (default ``groups``); an unavailable group is
    left out of the ablation (it would duplicate ``all``).
    """
    config = evaluation_config(evaluation)
    split, _, maxlen = _split_and_maxlen(training)
    groups = [g for g in groups if available is None or g in available]
    if len(groups) < 2:
        raise ConfigError(f"the ablation needs at least 2 available feature groups; got {groups}")
    settings = {"all": ",".join(groups), "ids only": "none"}
    settings.update({f"-{g}": ",".join(x for x in groups if x != g) for g in groups})
    settings.update({f"+{g}": g for g in groups})
    specs = {protocol: cold_start_spec(protocol, cold_start or {}) for protocol in protocols}
    tasks = protocol_tasks(data, split, maxlen, config, specs)
    scorers: dict[str, Any] = {}
    arms = []
    for protocol, cold in specs.items():
        for label, setting in settings.items():
            arm = f"{protocol}|{label}"
            scorer, info = _feature_arm(study, data, training, name, spec, cold, setting)
            scorers[arm] = {task: scorer for task in tasks if task.endswith(f":{protocol}")}
            arms.append({"arm": arm, "model": name, "protocol": protocol, "setting": label, "features": setting,
                         **info})  # fmt: skip
    table, per_user = evaluate_models(scorers, tasks, config, protocols=["full"])
    pairs = [(f"{p}|{label}", f"{p}|all", f"test:{p}") for p in specs for label in settings if label != "all"]
    return Experiment(
        table,
        per_user,
        pd.DataFrame(arms),
        paired_against(per_user, pairs, config, (f"ndcg@{config.k}", f"hr@{config.k}")),
    )


# ---------------------------------------------------------------------------------------------- tables
def _metric(table: pd.DataFrame, task: str, metric: str) -> pd.DataFrame:
    sub = table[(table["task"] == task) & (table["metric"] == metric)]
    return sub.set_index("model")[["mean", "low", "high"]]


def _cell(mean: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(mean):
        return ""
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return f"{fmt.format(mean)} [{fmt.format(low)}, {fmt.format(high)}]"


def _interval_cell(values: pd.DataFrame, arm: str) -> str:
    """``mean [low, high]`` of ``arm``'s row of a :func:`_metric` frame."""
    return _cell(*values.loc[arm, ["mean", "low", "high"]].to_numpy(dtype=float))


def _paired_cell(paired: pd.DataFrame, arm: str, metric: str) -> str:
    """``+d [low, high] (p=...)``: ``arm``'s paired difference on ``metric`` ("" when it has none)."""
    diff = paired[(paired["model"] == arm) & (paired["metric"] == metric)] if len(paired) else paired
    if diff.empty:
        return ""
    interval = _cell(*diff[["difference", "low", "high"]].iloc[0].to_numpy(dtype=float), signed=True)
    return f"{interval} (p={diff['p_value'].iloc[0]:.2g})"


def target_table(experiment: Experiment | dict[str, Any], k: int = 10) -> pd.DataFrame:
    """model x target: validation and test NDCG@K, the paired test difference against ``views`` (with its
    interval and p-value) and whether validation selects the target (the model's best validation NDCG@K)."""
    table, arms, paired = _parts(experiment)
    metric = f"ndcg@{k}"
    valid, test = _metric(table, "valid:none", metric), _metric(table, "test:none", metric)
    rows = []
    for arm in arms.itertuples():
        rows.append({"model": arm.model, "target": arm.target, f"valid {metric}": float(valid.loc[arm.arm, "mean"]),
                     f"test {metric}": _interval_cell(test, arm.arm),
                     "vs views (test)": _paired_cell(paired, arm.arm, metric)})  # fmt: skip
    out = pd.DataFrame(rows)
    best = out.groupby("model", sort=False)[f"valid {metric}"].transform("max")
    out["selected"] = np.where(out[f"valid {metric}"] == best, "yes", "")
    out.loc[out.duplicated(["model", "selected"]) & (out["selected"] == "yes"), "selected"] = (
        ""  # ties: first
    )
    return out


def selected_targets(experiment: Experiment | dict[str, Any], k: int = 10) -> dict[str, str]:
    """model -> the target validation selects (highest validation NDCG@K; ties: the first listed)."""
    table = target_table(experiment, k)
    return {str(r.model): str(r.target) for r in table[table["selected"] == "yes"].itertuples()}


def twin_table(experiment: Experiment | dict[str, Any], k: int = 10) -> pd.DataFrame:
    """Per model and protocol: id-only and feature-aware test NDCG@K and HR@K, and the paired difference."""
    table, arms, paired = _parts(experiment)
    rows = []
    trained = arms[arms["kind"] == "trained"]
    for (model, protocol), _ in trained.groupby(["model", "protocol"], sort=False):
        task = f"test:{protocol}"
        row: dict[str, Any] = {"model": model, "protocol": PROTOCOL_NAMES[protocol]}
        chosen = arms[arms["arm"] == f"{model}|{protocol}|features"]
        row["features"] = str(chosen["features"].iloc[0]) if len(chosen) and "features" in chosen else ""
        for metric in (f"ndcg@{k}", f"hr@{k}"):
            values = _metric(table, task, metric)
            for variant in ("ids", "features"):
                row[f"{variant} {metric}"] = _interval_cell(values, f"{model}|{protocol}|{variant}")
            row[f"features - ids {metric}"] = _paired_cell(paired, f"{model}|{protocol}|features", metric)
        row["users"] = int(table[(table["task"] == task) & (table["metric"] == "users")
                                 & (table["model"] == f"{model}|{protocol}|ids")]["mean"].iloc[0])  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def candidate_table(experiment: Experiment | dict[str, Any], k: int = 10) -> pd.DataFrame:
    """Per trained model, protocol and feature candidate: the features setting, its NDCG@K on the protocol's
    selection task (:func:`selection_task`), whether validation chose it, its test NDCG@K and the paired
    test difference against the id-only twin (empty when the experiment had one candidate)."""
    table, arms, paired = _parts(experiment)
    metric = f"ndcg@{k}"
    if "chosen" not in arms:
        return pd.DataFrame()
    candidates = arms[(arms["kind"] == "trained") & (arms["features"] != "none")]
    if candidates.groupby(["model", "protocol"]).size().max() < 2:
        return pd.DataFrame()
    rows = []
    for arm in candidates.itertuples():
        rows.append({"model": arm.model, "protocol": PROTOCOL_NAMES[arm.protocol], "features": arm.features,
                     f"selection {metric}": float(arm.selection_ndcg), "chosen": "yes" if arm.chosen else "",
                     f"test {metric}": _interval_cell(_metric(table, f"test:{arm.protocol}", metric), arm.arm),
                     "features - ids (test)": _paired_cell(paired, arm.arm, metric)})  # fmt: skip
    return pd.DataFrame(rows)


def baseline_protocol_table(experiment: Experiment | dict[str, Any], k: int = 10) -> pd.DataFrame:
    """The baselines' test NDCG@K under each protocol (one column per protocol)."""
    table, arms, _ = _parts(experiment)
    rows = []
    for model, group in arms[arms["kind"] == "baseline"].groupby("model", sort=False):
        row = {"model": model}
        for arm in group.itertuples():
            row[PROTOCOL_NAMES[arm.protocol]] = _interval_cell(
                _metric(table, f"test:{arm.protocol}", f"ndcg@{k}"), arm.arm
            )
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(experiment: Experiment | dict[str, Any], k: int = 10) -> pd.DataFrame:
    """Per protocol and setting: test NDCG@K and the paired difference against every group (``all``)."""
    table, arms, paired = _parts(experiment)
    metric = f"ndcg@{k}"
    rows = []
    for arm in arms.itertuples():
        rows.append({"protocol": PROTOCOL_NAMES[arm.protocol], "setting": arm.setting,
                     f"test {metric}": _interval_cell(_metric(table, f"test:{arm.protocol}", metric), arm.arm),
                     "vs all": _paired_cell(paired, arm.arm, metric)})  # fmt: skip
    return pd.DataFrame(rows)


def twin_paired(experiment: Experiment | dict[str, Any], k: int = 10) -> pd.DataFrame:
    """The twins' paired differences in the shape :func:`sasrec.study.plots.plot_paired_differences` reads:
    model = the architecture, reference = ``id-only twin``, task = the protocol's report name."""
    _, _, paired = _parts(experiment)
    out = paired[(paired["metric"] == f"ndcg@{k}") & paired["model"].str.endswith("|features")].copy()
    out["task"] = out["task"].str.split(":").str[1].map(PROTOCOL_NAMES)
    out["model"] = out["model"].str.split("|").str[0]
    out["reference"] = "id-only twin"
    return out


def best_feature_model(experiment: Experiment | dict[str, Any], k: int = 10) -> str:
    """The feature-aware model with the highest validation NDCG@K on the standard protocol."""
    table, arms, _ = _parts(experiment)
    valid = _metric(table, "valid:none", f"ndcg@{k}")
    names = [a for a in arms["arm"] if a.endswith("|none|features") and a in valid.index]
    if not names:
        raise ConfigError(
            "the twin experiment has no feature-aware arm on the standard protocol (protocol none)"
        )
    return str(valid.loc[names, "mean"].idxmax()).split("|")[0]


def _parts(experiment: Experiment | dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(table, arms, paired) of an :class:`Experiment` or of its JSON payload."""
    if isinstance(experiment, Experiment):
        return experiment.table, experiment.arms, experiment.paired
    return (pd.DataFrame(experiment["table"]), pd.DataFrame(experiment["arms"]),
            pd.DataFrame(experiment.get("paired") or []))  # fmt: skip


def payload(
    data: PreparedData,
    training: dict[str, Any],
    targets: Experiment,
    twins: Experiment,
    ablation: Experiment,
    ablation_model: str,
    *,
    cold_start: dict[str, Any] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
    baselines: dict[str, dict[str, Any]] | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """What ``metrics/features.json`` holds: the experiments' budget, the three experiments, the targets
    validation selects and those the parameter files configure (``models``, ``baselines``)."""
    params_targets = configured_targets(models or {}, baselines or {})
    specs = {p: cold_start_spec(p, cold_start or {}) for p in ("items", "users")}
    split = str(training.get("split", "temporal"))
    counts = {p: {"withheld_videos" if p == "items" else "cold_users":
                  int((spec.select(data, split).items if p == "items" else spec.select(data, split).users).sum())}
              for p, spec in specs.items()}  # fmt: skip
    return {
        "dataset": data.name,
        "k": k,
        "training": {
            key: training[key]
            for key in ("num_epochs", "patience", "min_epochs", "maxlen")
            if key in training
        },
        "cold_start": {**(cold_start or {}), "counts": counts},
        "targets": targets.to_json(),
        "twins": twins.to_json(),
        "ablation": ablation.to_json(),
        "ablation_model": ablation_model,
        "selected_targets": selected_targets(targets, k),
        "params_targets": params_targets,
    }


def configured_targets(
    models: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """model -> the training target its parameters configure (``views`` unless set; ``content``: ``liked``)."""
    from sasrec.models.baselines import default_target

    out = {name: str((spec or {}).get("target", "views")) for name, spec in models.items()}
    out.update(
        {name: str((spec or {}).get("target", default_target(name))) for name, spec in baselines.items()}
    )
    return out


def target_check(
    experiment: Experiment | dict[str, Any],
    models: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
    k: int = 10,
) -> pd.DataFrame:
    """Per model: the target validation selects and the one its parameters configure (``agrees``)."""
    selected = selected_targets(experiment, k)
    configured = configured_targets(models, baselines)
    rows = [{"model": name, "selected by validation": target, "configured": configured.get(name),
             "agrees": configured.get(name) == target} for name, target in selected.items()]  # fmt: skip
    return pd.DataFrame(rows)


def pick(
    mapping: dict[str, dict[str, Any]], names: Sequence[str], *, fill: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """The entries ``names`` of ``mapping`` in that order (``fill`` supplies names the mapping lacks).

    Raises:
        ConfigError: a name in neither, naming it and the known ones.
    """
    known = {**(fill or {}), **mapping}
    missing = [name for name in names if name not in known]
    if missing:
        raise ConfigError(f"unknown model(s) {', '.join(missing)}; expected some of {', '.join(known)}")
    return {name: known[name] for name in names}


def available_groups(data: PreparedData, training: dict[str, Any]) -> tuple[str, ...]:
    """The ``features`` switches whose groups the data's side files provide (the split's feature table)."""
    from sasrec.data.features.cache import cached_feature_table

    table = cached_feature_table(data, str(training.get("split", "temporal")))
    return tuple(s for s, groups in FEATURE_SWITCHES.items() if any(g in table.groups for g in groups))


# ---------------------------------------------------------------------------------------------- report
def _difference_sentence(
    paired: pd.DataFrame, arm: str, metric: str
) -> tuple[str, float, float, float] | None:
    row = paired[(paired["model"] == arm) & (paired["metric"] == metric)]
    if row.empty:
        return None
    diff, low, high = (float(row[c].iloc[0]) for c in ("difference", "low", "high"))
    if not np.isfinite(diff):  # no user with a relevant target under this protocol
        return None
    return f"{diff:+.4f} [{low:+.4f}, {high:+.4f}]", diff, low, high


def findings(payload: dict[str, Any]) -> list[str]:
    """Plain sentences for the report's key findings: where features help and where they do not, and
    whether the configured targets are those validation selects."""
    k = int(payload.get("k", 10))
    metric = f"ndcg@{k}"
    out = []
    twins = payload["twins"]
    paired = pd.DataFrame(twins.get("paired") or [])
    arms = pd.DataFrame(twins["arms"])
    for protocol in ("items", "none", "users"):
        helped, hurt, neither = [], [], []
        for model in arms[(arms["kind"] == "trained") & (arms["protocol"] == protocol)]["model"].unique():
            found = (
                _difference_sentence(paired, f"{model}|{protocol}|features", metric) if len(paired) else None
            )
            if found is None:
                continue
            text, _, low, high = found
            (helped if low > 0 else hurt if high < 0 else neither).append(f"{model} {text}")
        if helped or hurt or neither:
            parts = [f"better with features: {'; '.join(helped)}" if helped else "",
                     f"worse with features: {'; '.join(hurt)}" if hurt else "",
                     f"no clear difference: {'; '.join(neither)}" if neither else ""]  # fmt: skip
            out.append(f"Side features against the id-only twin ({PROTOCOL_NAMES[protocol]}, paired test {metric}): "
                       + "; ".join(p for p in parts if p) + ".")  # fmt: skip
    selected, configured = payload.get("selected_targets", {}), payload.get("params_targets", {})
    differ = sorted(m for m, t in selected.items() if configured.get(m) not in (None, t))
    chosen = ", ".join(f"{m}: {t}" for m, t in selected.items())
    out.append(f"Training targets selected by validation {metric}: {chosen}."
               + (f" The parameter files configure another target for {', '.join(differ)}." if differ else
                  " The parameter files use these targets."))  # fmt: skip
    return out


def report_context(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the report's preferences-and-content section shows, from ``metrics/features.json``."""
    if not payload:
        return None
    from sasrec.study.report import markdown_table

    k = int(payload.get("k", 10))
    skipped = pd.DataFrame(payload["targets"].get("skipped") or [])
    return {
        "k": k,
        "dataset": payload["dataset"],
        "budget": ", ".join(f"{key} {value}" for key, value in payload["training"].items()),
        "cold_start": payload["cold_start"],
        "targets": markdown_table(target_table(payload["targets"], k)),
        "skipped": ", ".join(f"{r.model} | {r.target}" for r in skipped.itertuples()) if len(skipped) else "",
        "twins": markdown_table(twin_table(payload["twins"], k)),
        "candidates": markdown_table(table) if len(table := candidate_table(payload["twins"], k)) else "",
        "baselines": markdown_table(baseline_protocol_table(payload["twins"], k)),
        "ablation_model": payload["ablation_model"],
        "ablation": markdown_table(ablation_table(payload["ablation"], k)),
        "findings": findings(payload),
    }
