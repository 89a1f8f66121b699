"""The original project's hyperparameter grid: each configuration trained once, selected on validation.

Each (variant, hyperparameter values) run trains to the largest epoch count of ``grid["num_epochs"]`` and
is validated at every listed count, so one run yields one row per epoch count. Selection uses validation
NDCG@k only; the selected configuration is retrained (deterministic under the seed, and under the
``train_valid`` policy refit on training + validation events) and is the only model that sees the test split.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.study.context import Study
from sasrec.study.steps import model_configs
from sasrec.training.config import TrainConfig


def experiment_grid(grid: dict[str, Sequence[Any]], variants: Sequence[str]) -> pd.DataFrame:
    """Cartesian product of variants and hyperparameter values, one row per run (``num_epochs`` excluded)."""
    keys = [key for key in grid if key != "num_epochs"]
    index = pd.MultiIndex.from_product(
        [list(variants), *[list(grid[key]) for key in keys]], names=["variant", *keys]
    )
    return index.to_frame(index=False)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _grid_config(data: PreparedData, training: dict[str, Any], variant: dict[str, Any], hyper: dict[str, Any],
                 **fields: Any) -> TrainConfig:  # fmt: skip
    """The TrainConfig of one grid point (training mapping, then the variant, then the grid values)."""
    name = fields.pop("train_dir")
    config = model_configs(data.name, {**training, **hyper}, {name: variant})[name]
    return TrainConfig.from_dict({**config.to_dict(), **fields})


def run_experiments(
    study: Study,
    data: PreparedData,
    training: dict[str, Any],
    variants: dict[str, dict[str, Any]],
    grid: dict[str, Sequence[Any]],
) -> pd.DataFrame:
    """Run the grid; return one row per (run, epoch count) sorted best first; write ``metrics/experiments.json``.

    Args:
        study: the notebook's context (models and reports folders, progress).
        data: the prepared dataset.
        training: the shared training mapping (split, seed, batch size, fitting policy...).
        variants: one mapping per variant (e.g. ``{"bce": {"model": "sasrec", "loss": "bce"}}``).
        grid: lists of values per hyperparameter; ``num_epochs`` lists the epoch counts validated.
    """
    from sasrec.evaluation.protocol import evaluate
    from sasrec.evaluation.scorers import SequentialScorer
    from sasrec.training.loop import train

    if "num_epochs" not in grid or not grid["num_epochs"]:
        raise ConfigError("grid.num_epochs must list the epoch counts to validate (e.g. [2, 5, 10, 20, 40])")
    epoch_points = sorted(int(e) for e in grid["num_epochs"])
    runs = experiment_grid(grid, list(variants))
    hyper_keys = [c for c in runs.columns if c != "variant"]
    k = int(training.get("k", 10))
    records = []
    for run_id, run in enumerate(runs.to_dict(orient="records")):
        hyper = {key: _plain(run[key]) for key in hyper_keys}
        config = _grid_config(data, training, variants[run["variant"]], hyper, train_dir=f"grid{run_id:03d}",
                              num_epochs=max(epoch_points), eval_every=1, patience=0, fit_on="train",
                              progress=study.progress)  # fmt: skip
        started = time.perf_counter()
        result = train(data, config, out_dir=study.models_dir / f"{data.name}_grid" / f"run{run_id:03d}")
        seconds = time.perf_counter() - started
        log = result.log.set_index("epoch")
        for epochs in epoch_points:
            if epochs in log.index:
                valid = {c: float(log.loc[epochs, c]) for c in log.columns if c.startswith("valid_")}
                records.append({"run": run_id, **run, "num_epochs": epochs, **valid,
                                "seconds": round(seconds * epochs / max(epoch_points), 1)})  # fmt: skip
    metric = f"valid_ndcg@{k}"
    results = pd.DataFrame(records).sort_values(metric, ascending=False, kind="stable").reset_index(drop=True)
    best = results.iloc[0].to_dict()
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
    study.save_json(
        {
            "dataset": data.name,
            "split": config.split,
            "fit_on": config.fit_on,
            "k": config.k,
            "grid": {key: list(v) for key, v in grid.items()},
            "variants": variants,
            "training": training,
            "runs": results,
            "best": {
                "config": best_config,
                f"valid_ndcg@{k}": best[metric],
                "retrained_valid": final.best_valid,
                "test": test,
                "checkpoint": str(final.checkpoint_path),
            },
        },
        "experiments",
    )
    return results
