"""The original project's hyperparameter grid (the paper's ablations), run as an Optuna study over the grid.

One Optuna study, ``grid``, in its own SQLite file per dataset, ``<models_dir>/tuning/<dataset>_grid.sqlite3``
(beside the tuning studies of :mod:`sasrec.study.tuning` but in a separate file, so the grid and the search
never refuse each other's lock). It samples with Optuna's ``GridSampler`` (seeded with the training seed)
over {variant, lr, maxlen, num_blocks, dropout_rate}: one trial per grid point, no pruning. Each trial trains
to the largest epoch count of ``grid["num_epochs"]`` and is validated at every epoch; the validation metrics at
each listed count and the run's seconds are stored in the trial's user attributes, so one trial yields one
results row per epoch count and the results table is rebuilt from the stored trials alone. A trial's value is
its best validation NDCG@k over the listed counts.

Resuming: the study is reopened from its file; trials left ``RUNNING`` by a killed process are marked
``FAIL`` and their points run again; ``COMPLETE`` trials are never rerun. A stored study run with other grid
settings (grid, variants, training mapping or seed) is refused in one line naming the file.

Selection uses validation NDCG@k only; the selected configuration is retrained (deterministic under the seed,
and under the ``train_valid`` policy refit on training + validation events) and is the only model that sees
the test split.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.study.context import Study
from sasrec.study.steps import model_configs
from sasrec.training.config import TrainConfig

#: The Optuna study name of the grid (one per storage file).
GRID_STUDY = "grid"
#: Training keys that say where and how visibly a run trains, not what it trains: not in the stored settings.
_OPERATIONAL = frozenset({"device", "progress"})


def experiment_grid(grid: dict[str, Sequence[Any]], variants: Sequence[str]) -> pd.DataFrame:
    """Cartesian product of variants and hyperparameter values, one row per run (``num_epochs`` excluded)."""
    keys = [key for key in grid if key != "num_epochs"]
    index = pd.MultiIndex.from_product(
        [list(variants), *[list(grid[key]) for key in keys]], names=["variant", *keys]
    )
    return index.to_frame(index=False)


def grid_storage_path(study: Study, dataset: str) -> Path:
    """``<models_dir>/tuning/<dataset>_grid.sqlite3``: the grid study of one dataset."""
    return study.models_dir / "tuning" / f"{dataset}_grid.sqlite3"


def grid_space(grid: dict[str, Sequence[Any]], variants: Sequence[str]) -> dict[str, list[Any]]:
    """The GridSampler's search space: variant names and every grid list but ``num_epochs``.

    Raises:
        ConfigError: a list is empty or repeats a value (one line naming ``grid.<key>``).
    """
    space = {
        "variant": list(variants),
        **{key: [_plain(v) for v in grid[key]] for key in grid if key != "num_epochs"},
    }
    for key, values in space.items():
        name = "variants" if key == "variant" else f"grid.{key}"
        if not values:
            raise ConfigError(f"{name}: the list of values is empty")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{name}: the list repeats a value: {values!r}")
    return space


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _grid_config(data: PreparedData, training: dict[str, Any], variant: dict[str, Any], hyper: dict[str, Any],
                 **fields: Any) -> TrainConfig:  # fmt: skip
    """The TrainConfig of one grid point (training mapping, then the variant, then the grid values)."""
    name = fields.pop("train_dir")
    config = model_configs(data.name, {**training, **hyper}, {name: variant})[name]
    return TrainConfig.from_dict({**config.to_dict(), **fields})


def _epoch_points(grid: dict[str, Sequence[Any]]) -> list[int]:
    if "num_epochs" not in grid or not grid["num_epochs"]:
        raise ConfigError("grid.num_epochs must list the epoch counts to validate (e.g. [2, 5, 10, 20, 40])")
    return sorted({int(e) for e in grid["num_epochs"]})


# ------------------------------------------------------------------------------------------ the study
def _grid_sampler(space: dict[str, list[Any]], seed: int) -> Any:
    """Optuna's GridSampler (seeded order of the points) whose new trial takes the first point in that order
    held by no ``COMPLETE`` or ``RUNNING`` trial: a point whose trial failed (e.g. killed) is run again, which
    the stock sampler, counting failed trials as visited, would not do. Uninterrupted, trial ``n`` runs point
    ``n`` as the stock sampler does; ``after_trial`` does not call ``study.stop()`` (ask-and-tell loop)."""
    import optuna
    from optuna.trial import TrialState

    class ResumableGridSampler(optuna.samplers.GridSampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
                return
            held = {
                t.system_attrs.get("grid_id")
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                if t.number != trial.number
            }
            free = [i for i in range(len(self._all_grids)) if i not in held]
            if not free:  # every point is held: the stock choice (never reached by run_experiments)
                super().before_trial(study, trial)
                return
            study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
            study._storage.set_trial_system_attr(trial._trial_id, "grid_id", free[0])

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return ResumableGridSampler(space, seed=seed)


def _complete(optuna_study: Any) -> list[Any]:
    """The ``COMPLETE`` trials, one per grid point (the lowest number where a point repeats)."""
    from optuna.trial import TrialState

    seen: dict[Any, Any] = {}
    for t in sorted(
        optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number
    ):
        seen.setdefault(json.dumps(t.params, sort_keys=True), t)
    return list(seen.values())


def _run_grid(
    path: Path,
    space: dict[str, list[Any]],
    settings: dict[str, Any],
    seed: int,
    objective: Callable[[Any], float],
) -> Any:
    """Open (or resume) the grid study in ``path``; run a trial for every point without a complete one."""
    from sasrec.study.tuning import open_study, run_trial

    found = open_study(GRID_STUDY, f"sqlite:///{path}", settings,
                       what="grid settings (grid, variants, training or seed)",
                       sampler=_grid_sampler(space, seed))  # fmt: skip
    points = math.prod(len(values) for values in space.values())
    for _ in range(points - len(_complete(found))):
        run_trial(found, found.ask(), objective)
    return found


def grid_results(
    optuna_study: Any, grid: dict[str, Sequence[Any]], variants: Sequence[str], k: int = 10
) -> pd.DataFrame:
    """One row per (complete trial, listed epoch count) rebuilt from the stored trials, sorted best first.

    Columns: run (the trial number), variant, the grid's hyperparameters, num_epochs, the ``valid_*`` metrics,
    seconds (the trial's seconds scaled to the epoch count). Rows are in grid order before the stable sort on
    validation NDCG@k, so ties keep the Cartesian order.
    """
    epoch_points = _epoch_points(grid)
    keys = ["variant", *[key for key in grid if key != "num_epochs"]]
    order = {
        json.dumps({key: _plain(row[key]) for key in keys}, sort_keys=True): position
        for position, row in enumerate(experiment_grid(grid, list(variants)).to_dict(orient="records"))
    }
    trials = sorted(
        _complete(optuna_study), key=lambda t: order.get(json.dumps(t.params, sort_keys=True), len(order))
    )
    records = []
    for t in trials:
        seconds = float(t.user_attrs.get("seconds", math.nan))
        for row in t.user_attrs.get("epochs", []):
            epochs = int(row["num_epochs"])
            records.append({"run": int(t.number), **{key: t.params[key] for key in keys}, "num_epochs": epochs,
                            **{c: float(v) for c, v in row.items() if c.startswith("valid_")},
                            "seconds": round(seconds * epochs / max(epoch_points), 1)})  # fmt: skip
    metric = f"valid_ndcg@{k}"
    if not records:
        return pd.DataFrame(columns=["run", *keys, "num_epochs", metric, "seconds"])
    return pd.DataFrame(records).sort_values(metric, ascending=False, kind="stable").reset_index(drop=True)


def _trial_counts(optuna_study: Any) -> dict[str, int]:
    """complete / failed / running trials (and any other state present), lower-case names."""
    from optuna.trial import TrialState

    states = [t.state for t in optuna_study.get_trials(deepcopy=False)]
    counts = {"complete": 0, "failed": 0, "running": 0}
    names = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed", TrialState.RUNNING: "running"}
    for state in states:
        name = names.get(state, state.name.lower())
        counts[name] = counts.get(name, 0) + 1
    return counts


def run_experiments(
    study: Study,
    data: PreparedData,
    training: dict[str, Any],
    variants: dict[str, dict[str, Any]],
    grid: dict[str, Sequence[Any]],
    *,
    wait: bool = True,
) -> pd.DataFrame:
    """Run (or resume) the grid; return one row per (run, epoch count) sorted best first; write
    ``metrics/experiments.json``.

    Args:
        study: the notebook's context (models and reports folders, progress).
        data: the prepared dataset.
        training: the shared training mapping (split, seed, batch size, fitting policy...).
        variants: one mapping per variant (e.g. ``{"bce": {"model": "sasrec", "loss": "bce"}}``).
        grid: lists of values per hyperparameter; ``num_epochs`` lists the epoch counts validated.
        wait: wait for another process running the same grid storage (False: refuse at once).

    Raises:
        ConfigError: ``grid.num_epochs`` or another list is empty, a list repeats a value, or the stored study
            was run with other grid settings (one line naming the storage file).
    """
    from sasrec.locks import locked

    epoch_points = _epoch_points(grid)
    space = grid_space(grid, list(variants))
    hyper_keys = [key for key in space if key != "variant"]
    k = int(training.get("k", 10))
    seed = int(training.get("seed", 0) or 0)
    metric = f"valid_ndcg@{k}"
    root = study.models_dir / f"{data.name}_grid"
    settings = {"space": space, "num_epochs": epoch_points, "seed": seed, "variants": variants,
                "training": {key: v for key, v in training.items() if key not in _OPERATIONAL}}  # fmt: skip

    def objective(trial: Any) -> float:
        from sasrec.training.loop import train

        point = {name: trial.suggest_categorical(name, values) for name, values in space.items()}
        hyper = {key: point[key] for key in hyper_keys}
        config = _grid_config(data, training, variants[point["variant"]], hyper, train_dir=f"grid{trial.number:03d}",
                              num_epochs=max(epoch_points), eval_every=1, patience=0, fit_on="train",
                              progress=study.progress)  # fmt: skip
        folder = root / f"run{trial.number:03d}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        result = train(data, config, out_dir=folder)
        seconds = time.perf_counter() - started
        log = result.log.set_index("epoch")
        rows = [{"num_epochs": epochs, **{c: float(log.loc[epochs, c]) for c in log.columns if c.startswith("valid_")}}
                for epochs in epoch_points if epochs in log.index]  # fmt: skip
        trial.set_user_attr("epochs", rows)
        trial.set_user_attr("seconds", float(seconds))
        values = [row[metric] for row in rows if math.isfinite(row.get(metric, math.nan))]
        if not values:
            raise ConfigError(
                f"grid point {point}: no finite {metric} at the listed epoch counts {epoch_points}"
            )
        return max(values)

    path = grid_storage_path(study, data.name)
    with locked(path, what=f"grid study {path.name}", wait=wait,
                hint="wait for the other grid run to finish, or run again with wait=True"):  # fmt: skip
        found = _run_grid(path, space, settings, seed, objective)
        results = grid_results(found, grid, list(variants), k)
        if results.empty:
            raise ConfigError(f"{path}: the grid study has no complete trial")
        best = results.iloc[0].to_dict()
        payload = _test_best(study, data, training, variants, hyper_keys, best, metric)
        counts = _trial_counts(found)
    study.save_json(
        {
            "dataset": data.name,
            "split": payload["config"].split,
            "fit_on": payload["config"].fit_on,
            "k": payload["config"].k,
            "storage": str(path),
            "study": GRID_STUDY,
            "sampler": "GridSampler",
            "points": math.prod(len(values) for values in space.values()),
            "trials": counts,
            "grid": {key: list(v) for key, v in grid.items()},
            "variants": variants,
            "training": training,
            "runs": results,
            "best": payload["best"],
        },
        "experiments",
    )
    return results


def _test_best(
    study: Study, data: PreparedData, training: dict[str, Any], variants: dict[str, dict[str, Any]],
    hyper_keys: list[str], best: dict[str, Any], metric: str,
) -> dict[str, Any]:  # fmt: skip
    """Retrain the selected configuration for the selected epochs and test it (the only test evaluation)."""
    from sasrec.evaluation.protocol import evaluate
    from sasrec.evaluation.scorers import SequentialScorer
    from sasrec.training.loop import train

    best_config = {key: _plain(best[key]) for key in ["variant", *hyper_keys, "num_epochs"]}
    # Deterministic under the seed: retraining the selected configuration for the selected number of epochs
    # reproduces the validated model (and under train_valid refits it); only that model sees the test split.
    config = _grid_config(data, training, variants[best_config["variant"]], {k_: best_config[k_] for k_ in hyper_keys},
                          train_dir="grid_best", num_epochs=int(best_config["num_epochs"]),
                          eval_every=int(best_config["num_epochs"]), patience=0, progress=study.progress)  # fmt: skip
    final = train(data, config, out_dir=study.models_dir / f"{data.name}_grid" / "best")
    scorer = SequentialScorer(final.model, popularity=final.popularity)
    test_task = build_eval_task(
        data, config.split, "test", maxlen=config.maxlen, **config.relevance_arguments()
    )
    test = evaluate(scorer, test_task, k=config.k).summary
    return {
        "config": config,
        "best": {
            "config": best_config,
            metric: best[metric],
            "trial": int(best["run"]),
            "retrained_valid": final.best_valid,
            "test": test,
            "checkpoint": str(final.checkpoint_path),
        },
    }


__all__ = [
    "GRID_STUDY",
    "experiment_grid",
    "grid_results",
    "grid_space",
    "grid_storage_path",
    "run_experiments",
]
