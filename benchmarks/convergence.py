"""Convergence of each model and loss on the default simulated data: the evidence for the early-stopping defaults.

Every model is trained on ``small_matrix`` (full-profile simulator, scale 0.2) for ``--epochs`` epochs with
early stopping disabled and validated after every epoch (full ranking, NDCG@10, temporal split). For each
curve the script reports the best epoch, the first epoch within 2% of the best value, and what early
stopping with a patience of P epochs (and a minimum number of epochs) would have selected: its stopping
epoch and the validation NDCG@10 it keeps, against the best of the whole run.

Run: ``.venv/bin/python benchmarks/convergence.py [--epochs 150] [--models sasrec_bce ...]``; writes
``reports/convergence.json`` and ``reports/figures/convergence.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sasrec.paths import atomic_write_text, reports_dir  # noqa: E402

RUNS: dict[str, dict] = {
    "sasrec_bce": {"model": "sasrec", "loss": "bce"},
    "sasrec_explicit_negatives": {"model": "sasrec", "loss": "bce", "explicit_negatives": True},
    "sasrec_weighted_dislike": {"model": "sasrec", "loss": "bce", "weighted_dislike": True},
    "sasrec_ce": {"model": "sasrec", "loss": "ce"},
    "gsasrec": {"model": "gsasrec"},
    "bert4rec": {"model": "bert4rec"},
    "gru4rec": {"model": "gru4rec"},
}
PATIENCES = (3, 5, 10, 15, 20, 30)


def stopping_point(values: np.ndarray, patience: int, min_epochs: int) -> tuple[int, float]:
    """(stop epoch, kept validation value) of the training loop's own early stopper on a curve (epochs 1..n)."""
    from sasrec.training.loop import EarlyStopper

    stopper = EarlyStopper(patience, min_epochs)
    for epoch, value in enumerate(values, start=1):
        stopper.update(epoch, float(value))
        if stopper.should_stop(epoch):
            return epoch, stopper.best_value
    return len(values), stopper.best_value


def analyse(curve: pd.DataFrame) -> dict:
    """Summary of one validation curve (columns epoch, valid_ndcg@10)."""
    values = curve["valid_ndcg@10"].to_numpy(dtype=np.float64)
    best_epoch = int(np.argmax(values)) + 1
    best = float(values.max())
    within = int(np.flatnonzero(values >= 0.98 * best)[0]) + 1
    stops = {}
    for patience in PATIENCES:
        for min_epochs in (0, 20):
            epoch, kept = stopping_point(values, patience, min_epochs)
            stops[f"patience={patience},min_epochs={min_epochs}"] = {
                "stop_epoch": epoch,
                "kept_ndcg@10": round(kept, 4),
                "share_of_best": round(kept / best, 4) if best > 0 else None,
            }
    return {
        "best_epoch": best_epoch,
        "best_ndcg@10": round(best, 4),
        "first_within_2pct": within,
        "stops": stops,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--models", nargs="*", default=list(RUNS))
    args = parser.parse_args()

    from sasrec.study.context import Study
    from sasrec.training.config import TrainConfig
    from sasrec.training.loop import train

    study = Study()  # the full profile's defaults: simulator scale 0.2, seed 0, data/processed
    data_path = study.data_path
    data = study.load("small_matrix")
    curves, summary = [], {}
    for name in args.models:
        settings = dict(RUNS[name])
        model = settings.pop("model")
        config = TrainConfig.for_model(
            model, dataset=data.name, train_dir=f"convergence_{name}", split="temporal", num_epochs=args.epochs,
            eval_every=1, patience=0, device="cpu", progress=False, **settings,
        )  # fmt: skip
        started = time.perf_counter()
        result = train(data, config, save=False)
        seconds = time.perf_counter() - started
        curve = result.log[["epoch", "loss", "valid_ndcg@10"]].assign(run=name)
        curves.append(curve)
        summary[name] = {**analyse(curve), "seconds": round(seconds, 1), "config": config.to_dict()}
        print(json.dumps({name: {k: v for k, v in summary[name].items() if k not in ("config", "stops")}}))
    table = pd.concat(curves, ignore_index=True)
    out = reports_dir() / "convergence.json"
    if out.is_file():  # runs of other models from an earlier invocation are kept
        earlier = json.loads(out.read_text(encoding="utf-8"))
        kept = pd.DataFrame(earlier["curves"])
        table = pd.concat([kept[~kept["run"].isin(summary)], table], ignore_index=True)
        summary = {**{k: v for k, v in earlier["runs"].items() if k not in summary}, **summary}
    payload = {"data": str(data_path), "dataset": data.name, "epochs": args.epochs, "runs": summary,
               "curves": table.to_dict(orient="records")}  # fmt: skip
    atomic_write_text(out, json.dumps(payload, indent=1) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name, group in table.groupby("run", sort=False):
            ax.plot(group["epoch"], group["valid_ndcg@10"], label=name, linewidth=1.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation NDCG@10")
        ax.set_title("Validation curves without early stopping (simulated small_matrix, temporal split)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        (reports_dir() / "figures").mkdir(parents=True, exist_ok=True)
        fig.savefig(reports_dir() / "figures" / "convergence.png", dpi=120)
    except ImportError:
        pass
    print(json.dumps({"written": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
