"""The original project's hyperparameter grid: each configuration trained once, selected on validation."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec import paths
from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.study.steps import load_sasrec, save_json, variant_config


# ------------------------------------------------------------------------------------- experiments
def experiment_grid(grid: dict[str, Sequence[Any]], variants: Sequence[str]) -> pd.DataFrame:
    """Cartesian product of hyperparameter values and variants, one row per run (``num_epochs`` excluded)."""
    keys = [key for key in grid if key != "num_epochs"]
    index = pd.MultiIndex.from_product(
        [list(variants), *[list(grid[key]) for key in keys]], names=["variant", *keys]
    )
    return index.to_frame(index=False)


def run_experiments(
    data: PreparedData,
    grid: dict[str, Sequence[Any]],
    variants: Sequence[str],
    *,
    models_dir: str | Path = "models",
    reports_dir: str | Path = "reports",
    k: int = 10,
    **fixed: Any,
) -> pd.DataFrame:
    """The original project's grid: each configuration trained once to max(num_epochs), validated at each
    listed epoch count; selection on validation NDCG@10 only; the selected run is then tested once.

    Returns one row per (configuration, epochs) with validation metrics and seconds, sorted best first, and
    writes ``experiments.json`` with the table and the best configuration's validation and test metrics.
    """
    from sasrec.evaluation.protocol import evaluate
    from sasrec.training.loop import train

    epoch_points = sorted(int(e) for e in grid.get("num_epochs", [fixed.pop("num_epochs", 5)]))
    runs = experiment_grid(grid, variants)
    hyper_keys = [c for c in runs.columns if c != "variant"]
    records = []
    for run_id, run in enumerate(runs.to_dict(orient="records")):
        hyper = {
            key: (run[key].item() if isinstance(run[key], np.generic) else run[key]) for key in hyper_keys
        }
        config = variant_config(
            run["variant"],
            dataset=data.name,
            **{**fixed, **hyper},
            num_epochs=max(epoch_points),
            eval_every=1,
            patience=10_000,
            train_dir=f"grid{run_id:03d}",
        )
        started = time.perf_counter()
        result = train(
            data, config, out_dir=paths.resolve(models_dir) / f"{data.name}_grid" / f"run{run_id:03d}"
        )
        seconds = time.perf_counter() - started
        log = result.log.set_index("epoch")
        for epochs in epoch_points:
            if epochs not in log.index:
                continue
            valid = {c: float(log.loc[epochs, c]) for c in log.columns if c.startswith("valid_")}
            records.append(
                {
                    "run": run_id,
                    **run,
                    "num_epochs": epochs,
                    **valid,
                    "seconds": round(seconds * epochs / max(epoch_points), 1),
                }
            )
    results = (
        pd.DataFrame(records)
        .sort_values("valid_ndcg@10", ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    best = results.iloc[0].to_dict()
    best_config = {
        key: (best[key].item() if isinstance(best[key], np.generic) else best[key])
        for key in ["variant", *hyper_keys, "num_epochs"]
    }
    # Training is deterministic under the seed: retraining the selected configuration for the selected
    # number of epochs reproduces the validated model exactly; only that model ever sees the test split.
    config = variant_config(
        best_config["variant"],
        dataset=data.name,
        **{**fixed, **{key: best_config[key] for key in hyper_keys}},
        num_epochs=int(best_config["num_epochs"]),
        eval_every=int(best_config["num_epochs"]),
        patience=10_000,
        train_dir="grid_best",
    )
    final = train(data, config, out_dir=paths.resolve(models_dir) / f"{data.name}_grid" / "best")
    scorer, _ = load_sasrec(final.checkpoint_path, data)
    test_task = build_eval_task(data, config.split, "test", maxlen=config.maxlen)
    test = evaluate(scorer, test_task, k=k).summary
    save_json(
        {
            "dataset": data.name,
            "split": config.split,
            "k": k,
            "grid": {key: list(v) for key, v in grid.items()},
            "variants": list(variants),
            "fixed": fixed,
            "runs": results,
            "best": {
                "config": best_config,
                "valid_ndcg@10": best["valid_ndcg@10"],
                "retrained_valid": final.best_valid,
                "test": test,
                "checkpoint": str(final.checkpoint_path),
            },
        },
        reports_dir,
        "experiments",
    )
    return results
