"""Hyper-parameter search with Optuna: every model tuned with the same budget, on validation only.

One Optuna study per model (study name = model name) in one SQLite file per dataset,
``<models_dir>/tuning/<dataset>.sqlite3``, beside the trial checkpoints it points to (it is resumable
training state like a ``.last.pth``, not a report output: removing the reports keeps the search). Each
study samples with a seeded TPE sampler (Bergstra et al., NeurIPS 2011) and, for the trained models,
prunes with a median stopping rule over the per-epoch validation NDCG@k (Golovin et al., KDD 2017:
``MedianPruner``). Every model gets the same number of finished trials and every trained model the same
epoch cap. Only the split's validation stage is ever built here: the test split is never read.

Resuming: ``load_if_exists`` reopens the studies; trials left ``RUNNING`` by a killed process are marked
``FAIL`` (never counted) and replaced; ``COMPLETE`` and ``PRUNED`` trials are never rerun. The sampler of
a new trial is seeded from (seed, number of finished trials), so a resumed search samples what the
uninterrupted one would have.

The first trial of every study is the model's default configuration (its searched parameters as the
comparison's parameter files set them; a default outside its space is refused), so a search never returns a
configuration worse on validation than the default within the budget.

Final models: the best trial's configuration is trained once more with the comparison's own schedule (the
``training`` mapping's epochs, patience, minimum epochs and fitting policy, as notebook 03 trains the
defaults), so tuned and default models differ only in the searched parameters; when the best trial is the
default, the default's checkpoint is reused (training is deterministic under the seed).
:func:`tuned_comparison` evaluates tuned and default models on the same test task with paired intervals,
each tuned model against the best tuned model (the headline ranking) and Kendall's tau between the two
rankings.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError
from sasrec.study.context import Study
from sasrec.study.steps import model_configs, training_entry
from sasrec.training.config import TrainConfig

logger = logging.getLogger(__name__)

#: TrainConfig fields the search controls or that every model of a comparison shares: not tunable.
FIXED_TRAIN_FIELDS = frozenset(
    {"model", "dataset", "train_dir", "split", "fit_on", "seed", "num_epochs", "eval_every", "patience",
     "min_epochs", "k", "relevance", "relevance_threshold", "eval_protocol", "num_eval_negatives", "device",
     "progress", "cold_start", "cold_start_frac", "cold_user_events", "cold_start_seed"}
)  # fmt: skip
#: Baseline parameters shared by the comparison: not tunable.
FIXED_BASELINE_PARAMS = frozenset({"seed", "split", "progress", "num_threads", "block"})
_SETTINGS = {"trials", "epoch_cap", "seed", "patience", "startup_trials", "pruner", "spaces"}
_PRUNER = {"startup_trials", "warmup_epochs"}


# ------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class Param:
    """One searched parameter: categorical ``choices``, or a float/int range ``[low, high]`` (``log`` scale)."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False

    def suggest(self, trial: Any) -> Any:
        """The value of this parameter for an Optuna ``trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)

    def describe(self) -> Any:
        """The space as written in params (for the report and the stored study's settings)."""
        if self.choices is not None:
            return list(self.choices)
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.integer:
            out["int"] = True
        return out


def parse_param(key: str, name: str, spec: Any) -> Param:
    """A :class:`Param` from ``[choice, ...]`` or ``{low, high, log?, int?}``; errors name ``key``."""
    if isinstance(spec, list | tuple):
        if not spec:
            raise ConfigError(f"{key}: the list of choices is empty")
        if not all(v is None or isinstance(v, bool | int | float | str) for v in spec):
            raise ConfigError(
                f"{key}: choices must be numbers, strings, booleans or null; got {list(spec)!r}"
            )
        if len(set(map(repr, spec))) != len(spec):
            raise ConfigError(f"{key}: choices repeat a value: {list(spec)!r}")
        return Param(name, choices=tuple(spec))
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"low", "high", "log", "int"})
        if unknown or not {"low", "high"} <= set(spec):
            raise ConfigError(
                f"{key}: a range is {{low: A, high: B, log: true|false, int: true|false}}; got {spec!r}"
            )
        low, high = spec["low"], spec["high"]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"{key}: low and high must be numbers; got {low!r}, {high!r}")
        log, integer = bool(spec.get("log", False)), bool(spec.get("int", False))
        if not low < high:
            raise ConfigError(f"{key}: low must be below high; got low={low}, high={high}")
        if log and low <= 0:
            raise ConfigError(f"{key}: a log range needs low > 0; got low={low}")
        if integer and not (float(low).is_integer() and float(high).is_integer()):
            raise ConfigError(f"{key}: an int range needs integer low and high; got {low}, {high}")
        return Param(name, low=float(low), high=float(high), log=log, integer=integer)
    raise ConfigError(f"{key}: expected a list of choices or {{low, high, log}}; got {spec!r}")


@dataclass(frozen=True)
class TuningConfig:
    """The ``tuning:`` mapping: one budget for every model.

    Attributes:
        trials: finished trials (complete or pruned) per model.
        epoch_cap: most epochs of a trained model's trial.
        seed: seed of the TPE sampler (each trial's sampler: seed and the number of finished trials).
        patience: epochs without a better validation NDCG@k before a trial stops early (0: never).
        startup_trials: TPE's random start-up trials before it models the search history.
        pruner_startup_trials: complete trials before the median pruner prunes anything.
        pruner_warmup_epochs: epochs of a trial before it can be pruned.
        spaces: model -> parameter -> :class:`Param` (an empty mapping: nothing to tune).
        timeout: always None (the budget is the trial count, so runs are reproducible).
    """

    trials: int = 8
    epoch_cap: int = 20
    seed: int = 0
    patience: int = 5
    startup_trials: int = 4
    pruner_startup_trials: int = 2
    pruner_warmup_epochs: int = 3
    spaces: dict[str, dict[str, Param]] = field(default_factory=dict)
    timeout: None = None

    @classmethod
    def from_mapping(
        cls,
        mapping: dict[str, Any],
        *,
        models: dict[str, dict[str, Any]] | None = None,
        baselines: dict[str, dict[str, Any]] | None = None,
    ) -> TuningConfig:
        """Parse and check the ``tuning:`` mapping against the comparison's ``models`` and ``baselines``.

        Raises:
            ConfigError: one line naming ``tuning.<key>`` or ``tuning.spaces.<model>.<param>``.
        """
        if not isinstance(mapping, dict):
            raise ConfigError(f"tuning: expected a mapping; got {type(mapping).__name__}")
        unknown = sorted(set(mapping) - _SETTINGS)
        if unknown:
            raise ConfigError(
                f"tuning: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(_SETTINGS))}"
            )
        ints = {}
        for key, least in (
            ("trials", 1),
            ("epoch_cap", 1),
            ("seed", 0),
            ("patience", 0),
            ("startup_trials", 0),
        ):
            value = mapping.get(key, getattr(cls, key))
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"tuning.{key}: expected an integer >= {least}; got {value!r}")
            ints[key] = value
        pruner = mapping.get("pruner") or {}
        if not isinstance(pruner, dict) or set(pruner) - _PRUNER:
            raise ConfigError(
                f"tuning.pruner: expected {{startup_trials: N, warmup_epochs: N}}; got {pruner!r}"
            )
        for key in _PRUNER:
            value = pruner.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"tuning.pruner.{key}: expected an integer >= 0; got {value!r}")
        spaces = _parse_spaces(mapping.get("spaces"), models or {}, baselines or {})
        return cls(**ints, pruner_startup_trials=int(pruner.get("startup_trials", cls.pruner_startup_trials)),
                   pruner_warmup_epochs=int(pruner.get("warmup_epochs", cls.pruner_warmup_epochs)),
                   spaces=spaces)  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """Plain settings (spaces as written), stored with each study and in ``metrics/tuning.json``."""
        out = {k: v for k, v in asdict(self).items() if k != "spaces"}
        out["spaces"] = {m: {p: param.describe() for p, param in s.items()} for m, s in self.spaces.items()}
        return out


def _parse_spaces(
    spaces: Any, models: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Param]]:
    """Every model of the comparison needs an entry (``{}``: nothing to tune); unknown names are refused."""
    from sasrec.models.baselines import baseline_params

    if not isinstance(spaces, dict):
        raise ConfigError("tuning.spaces: expected one mapping per model (parameter: choices or range)")
    known = {*models, *baselines}
    extra = sorted(set(spaces) - known)
    if extra:
        raise ConfigError(
            f"tuning.spaces.{extra[0]}: not a model of this comparison ({', '.join(sorted(known))})"
        )
    missing = [name for name in [*models, *baselines] if name not in spaces]
    if missing:
        raise ConfigError(
            f"tuning.spaces.{missing[0]}: missing (write {missing[0]}: {{}} when it has nothing to tune)"
        )
    train_fields = set(TrainConfig.__dataclass_fields__)
    out: dict[str, dict[str, Param]] = {}
    for name in [*models, *baselines]:
        space = spaces[name] or {}
        if not isinstance(space, dict):
            raise ConfigError(f"tuning.spaces.{name}: expected a mapping of parameter: choices or range")
        if name in models:
            allowed, fixed = train_fields, FIXED_TRAIN_FIELDS
        else:
            allowed, fixed = set(baseline_params(name)), FIXED_BASELINE_PARAMS
        out[name] = {}
        for param, spec in space.items():
            key = f"tuning.spaces.{name}.{param}"
            if param in fixed or param not in allowed:
                why = "is fixed by the comparison" if param in fixed else "is not a parameter of this model"
                raise ConfigError(f"{key}: {param!r} {why}; tunable: {', '.join(sorted(allowed - fixed))}")
            out[name][param] = parse_param(key, param, spec)
    return out


# ---------------------------------------------------------------------------------------- the search
def storage_path(study: Study, dataset: str) -> Path:
    """``<models_dir>/tuning/<dataset>.sqlite3``: every model's study of one dataset."""
    return study.models_dir / "tuning" / f"{dataset}.sqlite3"


def _sampler(tuning: TuningConfig, finished: int) -> Any:
    """The TPE sampler of the next trial, seeded from (seed, finished trials): a resumed search samples what
    the uninterrupted one would have."""
    import optuna

    seed = int(np.random.SeedSequence([tuning.seed, finished]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tuning.startup_trials)


def _finished(optuna_study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def fail_stale_trials(optuna_study: Any) -> list[int]:
    """Mark the trials a killed process left ``RUNNING`` as ``FAIL`` (call under the storage's lock)."""
    from optuna.trial import TrialState

    stale = [t.number for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        optuna_study.tell(number, state=TrialState.FAIL)
    if stale:
        logger.info("study %s: trial(s) %s were left running by a killed run; marked failed",
                    optuna_study.study_name, stale)  # fmt: skip
    return stale


def open_study(
    name: str,
    storage: str,
    settings: dict[str, Any],
    *,
    what: str = "tuning settings",
    sampler: Any = None,
    pruner: Any = None,
) -> Any:
    """Open (or create) Optuna study ``name`` in ``storage`` with its stored ``settings`` checked, and the
    trials a killed process left running marked failed.

    A stored study whose settings differ from ``settings`` would mix two searches, so it is refused in one line
    naming the storage file and ``what`` differs.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", sampler=sampler,
                                pruner=pruner or optuna.pruners.NopPruner(), load_if_exists=True)  # fmt: skip
    plain = json.loads(json.dumps(settings))
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", plain)
    elif stored != plain:
        raise ConfigError(
            f"{storage.removeprefix('sqlite:///')}: study {name} was run with other {what}; remove the file "
            "(or use another models_dir) to run it again"
        )
    fail_stale_trials(study)
    return study


def run_trial(study: Any, trial: Any, objective: Callable[[Any], float]) -> None:
    """Run ``objective`` on ``trial`` and tell the study its value (``PRUNED`` when it raised
    :class:`optuna.TrialPruned`; ``FAIL``, re-raised, on any other exception or interruption)."""
    import optuna
    from optuna.trial import TrialState

    try:
        value = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, value)


def run_study(
    name: str,
    storage: str,
    tuning: TuningConfig,
    objective: Callable[[Any], float],
    *,
    pruner: Any = None,
    after_trial: Callable[[Any], None] | None = None,
    first: dict[str, Any] | None = None,
) -> Any:
    """Open (or resume) study ``name`` and run trials until ``tuning.trials`` are finished; return it.

    The stored settings (spaces, epoch cap, seed) must equal ``tuning``'s (:func:`open_study`).

    Args:
        first: the parameters of the first trial (the model's default configuration), enqueued until a
            finished trial carries them (user attribute ``default``): the search can only return a
            configuration at least as good on validation as the default, and a kill during the first trial
            reruns it.
    """
    from optuna.trial import TrialState

    settings = {**{k: v for k, v in tuning.settings().items() if k not in ("spaces", "trials")},
                "space": tuning.settings()["spaces"].get(name, {})}  # fmt: skip
    study = open_study(name, storage, settings, pruner=pruner)
    while len(finished := _finished(study)) < tuning.trials:
        study.sampler = _sampler(tuning, len(finished))
        is_default = first is not None and not any(t.user_attrs.get("default") for t in finished)
        if is_default and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            study.enqueue_trial(dict(first))
        trial = study.ask()
        if is_default:
            trial.set_user_attr("default", True)
        run_trial(study, trial, objective)
        if after_trial is not None:
            after_trial(study)
    return study


def default_point(name: str, space: dict[str, Param], defaults: dict[str, Any]) -> dict[str, Any]:
    """The default configuration's value of every searched parameter (the search's first trial).

    Args:
        name: the model (for messages).
        space: its searched parameters.
        defaults: its default configuration (TrainConfig fields, or a baseline's parameters).

    Raises:
        ConfigError: a default outside its space (naming ``tuning.spaces.<model>.<param>``): the default is
            trial 0 of every search, so the space must contain it.
    """
    point = {}
    for param_name, param in space.items():
        if param_name not in defaults:
            raise ConfigError(
                f"tuning.spaces.{name}.{param_name}: the default configuration of {name} sets no value; give "
                f"it one in the model's mapping (the default configuration is the search's first trial)"
            )
        value = defaults[param_name]
        if param.choices is not None:
            inside = any(repr(value) == repr(choice) for choice in param.choices)
        else:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            inside = number and param.low <= float(value) <= param.high
            if inside and param.integer and not float(value).is_integer():
                inside = False
        if not inside:
            raise ConfigError(
                f"tuning.spaces.{name}.{param_name}: the default {value!r} lies outside the space "
                f"{param.describe()!r}; widen it (the default configuration is the search's first trial)"
            )
        point[param_name] = int(value) if param.integer else value
    return point


def _best_trial(optuna_study: Any) -> Any | None:
    from optuna.trial import TrialState

    complete = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # highest value, lowest number on ties (deterministic)
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _trial_config(
    data: PreparedData, training: dict[str, Any], name: str, spec: dict[str, Any], params: dict[str, Any],
    tuning: TuningConfig, progress: bool,
) -> TrainConfig:  # fmt: skip
    """A trial's TrainConfig: the shared training mapping, the model's mapping, then the sampled values;
    ``num_epochs`` is the cap, selection under ``fit_on: train`` (no refit per trial)."""
    shared = {**training, "num_epochs": tuning.epoch_cap, "eval_every": 1, "patience": tuning.patience,
              "min_epochs": 0, "fit_on": "train", "progress": progress}  # fmt: skip
    try:
        config = model_configs(data.name, shared, {name: {**(spec or {}), **params}})[name]
        config.validate()
    except ConfigError as exc:
        raise ConfigError(f"tuning.spaces.{name}: sampled {params} is invalid ({exc})") from None
    return config


def _train_trial(
    data: PreparedData, config: TrainConfig, folder: Path, trial: Any | None, k: int
) -> dict[str, Any]:
    """Train one trial into ``folder`` (reporting validation NDCG@k per epoch to ``trial``'s pruner)."""
    import optuna

    from sasrec.study.resources import measure
    from sasrec.training.loop import train

    metric = f"valid_ndcg@{k}"

    def report(row: dict[str, Any]) -> None:
        value = row.get(metric)
        if trial is None or value is None or math.isnan(float(value)):
            return
        trial.report(float(value), int(row["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {row['epoch']}")

    shutil.rmtree(folder, ignore_errors=True)
    with measure() as cost:
        result = train(data, config, out_dir=folder, on_epoch=report)
    return training_entry(result, config, cost)


def _keep_best(optuna_study: Any, folder: Path) -> None:
    """Remove every trial folder but the best trial's (bounds the disk to one model per study)."""
    best = _best_trial(optuna_study)
    keep = None if best is None else f"trial{best.number:04d}"
    for path in folder.glob("trial*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def _study_record(optuna_study: Any, kind: str, space: dict[str, Param]) -> dict[str, Any]:
    """Counts, wall seconds and the best trial of one study."""
    from optuna.trial import TrialState

    trials = optuna_study.get_trials(deepcopy=False)
    states = pd.Series([t.state.name for t in trials], dtype=object)
    seconds = sum(
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.datetime_complete is not None and t.datetime_start is not None
    )
    best = _best_trial(optuna_study)
    return {
        "kind": kind,
        "no_parameters": not space,
        "space": {p: param.describe() for p, param in space.items()},
        "trials": {
            "complete": int((states == TrialState.COMPLETE.name).sum()),
            "pruned": int((states == TrialState.PRUNED.name).sum()),
            "failed": int((states == TrialState.FAIL.name).sum()),
        },
        "seconds": round(float(seconds), 1),
        "best_trial": None if best is None else int(best.number),
        "best_is_default": None if best is None else bool(best.user_attrs.get("default")),
        "default_valid_ndcg": next(
            (float(t.value) for t in trials if t.user_attrs.get("default") and t.value is not None), None
        ),
        "best_params": {} if best is None else dict(best.params),
        "best_valid_ndcg": None if best is None else float(best.value),
    }


def trials_frame(optuna_study: Any, model: str) -> pd.DataFrame:
    """model, number, state, value, seconds, best_so_far, params (JSON) of every trial of a study."""
    rows = []
    for t in optuna_study.get_trials(deepcopy=False):
        done = t.datetime_complete is not None and t.datetime_start is not None
        rows.append({"model": model, "number": int(t.number), "state": t.state.name,
                     "value": None if t.value is None else float(t.value),
                     "seconds": (t.datetime_complete - t.datetime_start).total_seconds() if done else None,
                     "params": json.dumps(t.params, sort_keys=True)})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["model", "number", "state", "value", "seconds", "params"])
    complete = frame["value"].where(frame["state"] == "COMPLETE")
    frame.insert(4, "best_so_far", complete.astype(float).cummax())
    return frame


def importances(optuna_study: Any, model: str, seed: int = 0) -> pd.DataFrame:
    """model, param, importance (fANOVA, Hutter et al., ICML 2014) of a study; empty when fewer than two complete
    trials, or no parameter varied (nothing to attribute)."""
    import optuna
    from optuna.trial import TrialState

    complete = optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varied = {
        p
        for p in (complete[0].params if complete else {})
        if len({repr(t.params.get(p)) for t in complete}) > 1
    }
    empty = pd.DataFrame(columns=["model", "param", "importance"])
    if len(complete) < 2 or not varied:
        return empty
    try:
        values = optuna.importance.get_param_importances(
            optuna_study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed),
            params=sorted(varied),
        )
    except (RuntimeError, ValueError) as exc:  # degenerate histories (identical values)
        logger.info("study %s: no parameter importance (%s)", model, exc)
        return empty
    return pd.DataFrame(
        {"model": model, "param": list(values), "importance": [float(v) for v in values.values()]}
    )


@dataclass
class _Search:
    """What every study of one :func:`tune_models` run shares, and what each adds to the payload."""

    study: Study
    data: PreparedData
    config: TuningConfig
    storage: str
    k: int
    defaults: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    frames: list[pd.DataFrame] = field(default_factory=list)
    importance: list[pd.DataFrame] = field(default_factory=list)

    def record(self, name: str, found: Any, kind: str, checkpoint: str | None) -> dict[str, Any]:
        """Add study ``name``'s record, trials and importances; return the record."""
        self.records[name] = {
            **_study_record(found, kind, self.config.spaces[name]),
            "checkpoint": checkpoint,
        }
        self.frames.append(trials_frame(found, name))
        self.importance.append(importances(found, name, self.config.seed))
        return self.records[name]


def _tune_trained(
    search: _Search, training: dict[str, Any], name: str, spec: dict[str, Any], root: Path
) -> dict[str, Any]:
    """Search trained model ``name`` (median pruning on the per-epoch validation NDCG@k); its final model."""
    import optuna

    data, config, k = search.data, search.config, search.k
    space, folder = config.spaces[name], root / f"{data.name}_{name}"
    default = model_configs(data.name, training, {name: spec})[name]
    first = default_point(name, space, default.to_dict())

    def objective(trial: Any) -> float:
        params = {p: param.suggest(trial) for p, param in space.items()}
        cfg = _trial_config(data, training, name, spec, params, config, search.study.progress)
        info = _train_trial(data, cfg, folder / f"trial{trial.number:04d}", trial, k)
        trial.set_user_attr("summary", json.loads(json.dumps(info, default=str)))
        return float(info["valid"][f"ndcg@{k}"])

    pruner = optuna.pruners.MedianPruner(n_startup_trials=config.pruner_startup_trials,
                                         n_warmup_steps=config.pruner_warmup_epochs)  # fmt: skip
    found = run_study(name, search.storage, config, objective, pruner=pruner,
                      after_trial=lambda s: _keep_best(s, folder), first=first)  # fmt: skip
    final = _final_model(search, training, name, spec, found, folder)
    search.record(name, found, "trained", final["checkpoint"])
    return final


def _tune_baselines(
    search: _Search, base: TrainConfig, baselines: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Search every baseline, each fit on the training events and scored on the one validation task; the
    tuned parameters of each."""
    from sasrec.data.tasks import build_eval_task
    from sasrec.evaluation.protocol import evaluate
    from sasrec.models.baselines import baseline_defaults, make_baseline
    from sasrec.study.comparisons import side_feature_params
    from sasrec.training.loop import policy_mask, require_relevant

    data, split, k = search.data, base.split, search.k
    task = build_eval_task(data, split, "valid", maxlen=base.maxlen, **base.relevance_arguments())
    task = require_relevant(task, "validation", base, data.name)
    mask = policy_mask(data, split, "train", "valid")
    tuned = {}
    for name, params in baselines.items():
        space = search.config.spaces[name]

        def objective(trial: Any, name: str = name, params: dict = params, space: dict = space) -> float:
            values = {**(params or {}), **{p: param.suggest(trial) for p, param in space.items()}}
            values = side_feature_params(data, name, values, split)  # content, hybrid: features -> vectors
            model = make_baseline(name, seed=base.seed, split=split, **values).fit(data, mask)
            return float(evaluate(model, task, k=k, progress=search.study.progress).summary[f"ndcg@{k}"])

        first = default_point(name, space, {**baseline_defaults(name), **(params or {})})
        found = run_study(name, search.storage, search.config, objective, first=first)
        tuned[name] = {**(params or {}), **search.record(name, found, "baseline", None)["best_params"]}
    return tuned


def tune_models(
    study: Study,
    data: PreparedData,
    training: dict[str, Any],
    models: dict[str, dict[str, Any]],
    baselines: dict[str, dict[str, Any]],
    tuning: dict[str, Any] | TuningConfig,
    *,
    wait: bool = True,
    default_training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run (or resume) one study per trained model and baseline; write and return ``metrics/tuning.json``.

    Args:
        study: the notebook's context (models and reports folders, progress).
        data: the prepared dataset.
        training: the shared training mapping of ``params/*/03_train.yaml`` (split, fitting policy, seed...).
        models: one mapping per trained model (the defaults the search starts from).
        baselines: one mapping per baseline (its default parameters).
        tuning: the ``tuning:`` mapping (:class:`TuningConfig`).
        wait: wait for another process searching the same storage (False: refuse at once).
        default_training: the default models' training summary (``metrics/training.json``): a final model
            whose configuration equals its default's is that checkpoint (training is deterministic under the
            seed), not trained again.

    Returns:
        The payload: per model the best parameters, best validation NDCG@k, trials complete / pruned /
        failed, wall seconds, the best trial's checkpoint; ``training`` (a training summary of the tuned models
        for :func:`~sasrec.study.comparisons.trained_scorers`), ``baselines`` (the tuned baselines' parameters),
        ``trials`` (every trial) and ``importance``.
    """
    from sasrec.locks import locked
    from sasrec.study.steps import shared_fit_on

    config = tuning if isinstance(tuning, TuningConfig) else TuningConfig.from_mapping(tuning, models=models,
                                                                                       baselines=baselines)  # fmt: skip
    defaults = model_configs(data.name, training, models)
    fit_on = shared_fit_on(defaults.values()) if defaults else str(training.get("fit_on", "train"))
    base = TrainConfig.for_model(
        "sasrec", **{k: v for k, v in training.items() if k in TrainConfig.__dataclass_fields__}
    )
    split, k = base.split, base.k
    path = storage_path(study, data.name)
    search = _Search(
        study, data, config, f"sqlite:///{path}", k, dict((default_training or {}).get("models") or {})
    )
    with locked(path, what=f"tuning study {path.name}", wait=wait,
                hint="wait for the other search to finish, or run again with --wait"):  # fmt: skip
        trained = {name: _tune_trained(search, training, name, spec, path.parent)
                   for name, spec in models.items()}  # fmt: skip
        tuned_baselines = _tune_baselines(search, base, baselines) if baselines else {}
    records, frames, importance = search.records, search.frames, search.importance
    payload = {
        "dataset": data.name,
        "split": split,
        "fit_on": fit_on,
        "k": k,
        "metric": f"valid_ndcg@{k}",
        "storage": str(path),
        "tuning": config.settings(),
        "models": records,
        "training": {"dataset": data.name, "split": split, "fit_on": fit_on, "k": k, "models": trained},
        "baselines": tuned_baselines,
        "trials": pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(),
        "importance": pd.concat([f for f in importance if len(f)], ignore_index=True)
        if any(len(f) for f in importance)
        else pd.DataFrame(columns=["model", "param", "importance"]),
    }
    study.save_json(payload, "tuning")
    return payload


def _same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two TrainConfig dicts train the same model (the folder name and progress bars aside)."""
    ignore = {"train_dir", "progress"}
    return {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}


def _final_model(
    search: _Search, training: dict[str, Any], name: str, spec: dict[str, Any], found: Any, folder: Path
) -> dict[str, Any]:
    """The tuned model's training-summary entry: the best trial's configuration trained with the comparison's
    own schedule (the ``training`` mapping's epochs, patience and fitting policy, exactly as the default
    configuration is trained in notebook 03), so tuned and default differ only in the searched parameters.

    When that configuration equals the default's (the default trial won) and the default's checkpoint
    exists, that checkpoint is the final model (deterministic under the seed); when the retrained
    configuration scores below the default on validation, validation keeps the default.
    """
    best = _best_trial(found)
    if best is None:
        raise ConfigError(
            f"tuning: every trial of {name} was pruned or failed; raise tuning.trials or the epoch cap"
        )
    try:
        cfg = model_configs(search.data.name, {**training, "progress": search.study.progress},
                            {name: {**(spec or {}), **dict(best.params)}})[name]  # fmt: skip
    except ConfigError as exc:
        raise ConfigError(
            f"tuning.spaces.{name}: best parameters {dict(best.params)} are invalid ({exc})"
        ) from None
    extra = {"trial": int(best.number), "default_trial": bool(best.user_attrs.get("default"))}
    reused = search.defaults.get(name) or {}
    has_default = bool(reused) and Path(str(reused.get("checkpoint", ""))).is_file()
    if has_default and _same_config(reused.get("config") or {}, cfg.to_dict()):
        return {**reused, **extra, "reused_default": True}
    final = _train_trial(search.data, cfg, folder / "final", None, search.k)
    metric = f"ndcg@{search.k}"
    default_valid = (reused.get("valid") or {}).get(metric)
    retrained = float(final["valid"].get(metric, -math.inf))
    if has_default and default_valid is not None and retrained < float(default_valid):
        # Trained with the full schedule, the best trial falls below the default on validation: validation
        # keeps the default (the test split is still unread).
        logger.info("tuning: %s's best trial retrained scores %.4f < the default's %.4f on validation; default kept",
                    name, retrained, float(default_valid))  # fmt: skip
        return {**reused, **extra, "reused_default": True, "retrained_valid": retrained}
    return {**final, **extra, "reused_default": False}


# --------------------------------------------------------------------------------------- comparison
@dataclass
class TunedComparison:
    """Tuned vs default models on the same test task.

    Attributes:
        table: one row per model: default and tuned test NDCG@k with intervals, tuned - default (paired
            interval, p-value).
        ranking: model, rank_default, rank_tuned (test NDCG@k, 1 = best).
        kendall: Kendall's tau between the default and tuned rankings (tau, p_value, models).
        results: model, config (default / tuned), metric, mean, low, high.
    """

    table: pd.DataFrame
    ranking: pd.DataFrame
    kendall: dict[str, Any]
    results: pd.DataFrame

    def to_json(self) -> dict[str, Any]:
        """The JSON payload (tables as records)."""
        return {
            "table": self.table,
            "ranking": self.ranking,
            "kendall": self.kendall,
            "results": self.results,
        }


DEFAULT_SUFFIX = " (default)"


def _config_scorers(
    data: PreparedData,
    names: list[str],
    training_summary: dict[str, Any],
    baseline_params: dict[str, dict[str, Any]],
    split: str,
    fit_on: str,
    seed: int,
    suffix: str,
) -> dict[str, Any]:
    """The test scorers of one configuration (tuned or default) of ``names``, keyed ``<name><suffix>``."""
    from sasrec.study.comparisons import fit_baselines, trained_scorers

    shared = {
        **training_summary,
        "models": {m: i for m, i in training_summary["models"].items() if m in names},
    }
    fitted = fit_baselines(data, {b: baseline_params[b] for b in names if b in baseline_params}, split=split,
                           fit_on=fit_on, seed=seed, stages=("test",))  # fmt: skip
    return {name + suffix: by_stage["test"]
            for name, by_stage in {**fitted, **trained_scorers(shared, data, stages=("test",))}.items()}  # fmt: skip


def _tuned_rows(names: list[str], means: pd.DataFrame, paired: pd.DataFrame) -> list[dict[str, Any]]:
    """Per model: default and tuned test means with their intervals, and the paired tuned-minus-default row."""
    rows = []
    for name in names:
        tuned, default = means.loc[name], means.loc[name + DEFAULT_SUFFIX]
        pair = paired[paired["model"] == name].iloc[0]
        rows.append({"model": name, "default": float(default["mean"]), "default_low": float(default["low"]),
                     "default_high": float(default["high"]), "tuned": float(tuned["mean"]),
                     "tuned_low": float(tuned["low"]), "tuned_high": float(tuned["high"]),
                     "difference": float(pair["difference"]), "low": float(pair["low"]),
                     "high": float(pair["high"]), "p_value": float(pair["p_value"]), "users": int(pair["users"])})  # fmt: skip
    return rows


def _against_best(out: pd.DataFrame, per_user: pd.DataFrame, config: Any, metric: str) -> pd.DataFrame:
    """Add each tuned model minus the best tuned model (``best``; paired interval ``best_low``, ``best_high``,
    p-value ``best_p``): the headline ranking's claims of "better"."""
    from sasrec.study.comparisons import paired_against

    best = str(out["model"].iloc[0])
    paired = paired_against(
        per_user, [(n, best, "test") for n in out["model"] if n != best], config, [metric]
    )
    by_model = paired.set_index("model") if len(paired) else pd.DataFrame()
    columns = {"best": "difference", "best_low": "low", "best_high": "high", "best_p": "p_value"}
    extra = {
        column: [float(by_model.loc[n, source]) if n in by_model.index else math.nan for n in out["model"]]
        for column, source in columns.items()
    }
    return out.assign(reference=best, **extra)


def tuned_comparison(
    study: Study,
    data: PreparedData,
    tuning_summary: dict[str, Any],
    default_training: dict[str, Any],
    evaluation: dict[str, Any],
    baselines: dict[str, dict[str, Any]],
) -> TunedComparison:
    """Evaluate tuned and default models once on the same test task (the trained models' split and policy).

    Args:
        study: the notebook's context.
        data: the prepared dataset.
        tuning_summary: ``metrics/tuning.json`` (its ``training`` and ``baselines``).
        default_training: ``metrics/training.json`` (the default configurations, notebook 03).
        evaluation: the ``evaluation:`` mapping (K, bootstrap settings, relevance rule).
        baselines: the default parameters of every baseline (``params/*/04_evaluate.yaml``).
    """
    from scipy.stats import kendalltau

    from sasrec.data.tasks import build_eval_task
    from sasrec.study.comparisons import evaluate_models, evaluation_config, paired_against, shared_relevance
    from sasrec.study.steps import trained_setting

    config = evaluation_config(evaluation)
    tuned_training = tuning_summary["training"]
    split, fit_on = trained_setting(default_training, "split"), trained_setting(default_training, "fit_on")
    if (tuning_summary["split"], tuning_summary["fit_on"]) != (split, fit_on):
        raise ConfigError(
            f"tuning.json was searched under split={tuning_summary['split']}, fit_on={tuning_summary['fit_on']}; the "
            f"default models under split={split}, fit_on={fit_on}: rerun notebook 08_tuning with the same training mapping"
        )
    maxlen = max(
        int(info["config"]["maxlen"])
        for t in (default_training, tuned_training)
        for info in t["models"].values()
    )
    task = build_eval_task(data, split, "test", maxlen=maxlen, **shared_relevance(config))
    names = [*tuned_training["models"], *[b for b in tuning_summary["baselines"] if b in baselines]]
    scorers = {
        **_config_scorers(
            data, names, tuned_training, tuning_summary["baselines"], split, fit_on, config.seed, ""
        ),
        **_config_scorers(
            data, names, default_training, baselines, split, fit_on, config.seed, DEFAULT_SUFFIX
        ),
    }
    table, per_user = evaluate_models(scorers, {"test": task}, config, protocols=["full"])
    metric = f"ndcg@{config.k}"
    paired = paired_against(per_user, [(n, n + DEFAULT_SUFFIX, "test") for n in names], config, [metric])
    rows = _tuned_rows(names, table[table["metric"] == metric].set_index("model"), paired)
    out = pd.DataFrame(rows).sort_values("tuned", ascending=False, kind="stable").reset_index(drop=True)
    out = _against_best(out, per_user, config, metric)
    ranking = out[["model"]].assign(
        rank_default=out["default"].rank(ascending=False, method="min").astype(int),
        rank_tuned=out["tuned"].rank(ascending=False, method="min").astype(int),
    )
    tau, p_value = kendalltau(out["default"], out["tuned"]) if len(out) > 1 else (math.nan, math.nan)
    kendall = {
        "metric": metric,
        "kendall_tau": float(tau),
        "p_value": float(p_value),
        "models": int(len(out)),
    }
    results = table.assign(
        config=np.where(table["model"].str.endswith(DEFAULT_SUFFIX), "default", "tuned"),
        model=table["model"].str.removesuffix(DEFAULT_SUFFIX),
    )[["model", "config", "metric", "mean", "low", "high"]]
    return TunedComparison(out, ranking, kendall, results)


# ------------------------------------------------------------------------------------------- report
def tuning_table(payload: dict[str, Any]) -> pd.DataFrame:
    """One row per model: kind, best parameters, the final configuration (``default`` when the default trial
    won, or validation kept the default after the full-schedule retrain; else ``searched``), the default
    trial's and the best validation NDCG@k, trials complete / pruned / failed, wall seconds (``no
    parameters`` where a model has nothing to tune)."""
    rows = []
    for name, info in payload["models"].items():
        params = "no parameters" if info["no_parameters"] else _params_text(info["best_params"])
        final = payload.get("training", {}).get("models", {}).get(name, {})
        chosen = "default" if info.get("best_is_default") or final.get("reused_default") else "searched"
        rows.append({"model": name, "kind": info["kind"], "best parameters": params, "final": chosen,
                     f"default {payload['metric']}": info.get("default_valid_ndcg"),
                     f"best {payload['metric']}": info["best_valid_ndcg"], "complete": info["trials"]["complete"],
                     "pruned": info["trials"]["pruned"], "failed": info["trials"]["failed"],
                     "seconds": info["seconds"]})  # fmt: skip
    return pd.DataFrame(rows).set_index("model")


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )


def best_models(payload: dict[str, Any], n: int = 3) -> list[str]:
    """The ``n`` models with the best validation NDCG@k that had parameters to tune (for the figures)."""
    tuned = {m: i["best_valid_ndcg"] for m, i in payload["models"].items()
             if not i["no_parameters"] and i["best_valid_ndcg"] is not None}  # fmt: skip
    return sorted(tuned, key=lambda m: -tuned[m])[:n]


def tuning_context(payload: dict[str, Any], comparison: dict[str, Any] | None = None) -> dict[str, Any]:
    """The context of ``templates/tuning.md.j2``: settings, per-model rows, the tuned vs default rows and
    Kendall's tau (``comparison``: :meth:`TunedComparison.to_json`, as stored in ``metrics/tuning.json``
    under ``comparison`` or elsewhere)."""
    settings = payload["tuning"]
    rows = tuning_table(payload).reset_index().to_dict(orient="records")
    comparison = comparison if comparison is not None else payload.get("comparison")
    return {
        "dataset": payload["dataset"],
        "metric": payload["metric"],
        "trials": settings["trials"],
        "epoch_cap": settings["epoch_cap"],
        "seed": settings["seed"],
        "patience": settings["patience"],
        "startup_trials": settings["startup_trials"],
        "pruner_startup_trials": settings["pruner_startup_trials"],
        "pruner_warmup_epochs": settings["pruner_warmup_epochs"],
        "storage": Path(payload["storage"]).name,
        "rows": rows,
        "total_seconds": round(sum(info["seconds"] for info in payload["models"].values()), 1),
        "comparison": None if comparison is None else list(comparison.get("table") or []),
        "kendall": None if comparison is None else comparison.get("kendall"),
        "figures": {"history": "tuning_history.png", "importance": "tuning_importance.png"},
    }


__all__ = [
    "Param",
    "TunedComparison",
    "TuningConfig",
    "best_models",
    "fail_stale_trials",
    "importances",
    "open_study",
    "parse_param",
    "run_study",
    "run_trial",
    "storage_path",
    "trials_frame",
    "tune_models",
    "tuned_comparison",
    "tuning_context",
    "tuning_table",
]
