"""The regenerated results summary (``reports/README.md``) and the report's data step.

``python -m sasrec report data --profile P --stamp FILE`` makes sure the profile's data exist (simulating
them when no real KuaiRec is present) and touches FILE only when the data changed, so ``make`` reruns
notebooks exactly when their inputs changed. ``python -m sasrec report summary --reports-dir DIR`` writes
DIR/README.md with every number taken from DIR/metrics/*.json.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec import paths
from sasrec.config import load_yaml_mapping
from sasrec.errors import MissingDataError
from sasrec.study.steps import metric_table

HEADLINE = ("ndcg@10", "graded_ndcg@10", "precision@10", "recall@10", "hr@10")


# ------------------------------------------------------------------------------------------ helpers
def markdown_table(frame: pd.DataFrame, *, floatfmt: str = ".4g", index: bool = False) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (no extra dependency)."""
    if index:
        frame = frame.reset_index()

    def fmt(value: Any) -> str:
        if isinstance(value, float | np.floating):
            if np.isnan(value):
                return ""
            return str(int(value)) if float(value).is_integer() else format(float(value), floatfmt)
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _load(metrics: Path, name: str) -> dict[str, Any] | None:
    path = metrics / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _table(payload: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(payload["table"])


def _value(
    table: pd.DataFrame, model: str, task: str, metric: str, protocol: str = "full", what: str = "mean"
) -> float:
    sub = table[
        (table["model"] == model)
        & (table["task"] == task)
        & (table["protocol"] == protocol)
        & (table["metric"] == metric)
    ]
    return float(sub[what].iloc[0]) if len(sub) else float("nan")


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=paths.project_root(),
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# ------------------------------------------------------------------------------------------ findings
def _compare(table: pd.DataFrame, a: str, b: str, task: str, metric: str = "ndcg@10") -> str:
    """Sentence comparing models a and b with their intervals."""
    va, vb = _value(table, a, task, metric), _value(table, b, task, metric)
    la, ha = _value(table, a, task, metric, what="low"), _value(table, a, task, metric, what="high")
    lb, hb = _value(table, b, task, metric, what="low"), _value(table, b, task, metric, what="high")
    if np.isnan(va) or np.isnan(vb):
        return ""
    overlap = not (la > hb or lb > ha)
    ratio = f" ({va / vb:.2f}x)" if vb > 0 else ""
    verdict = (
        "the 95% intervals overlap, so the difference is not established"
        if overlap
        else "the 95% intervals do not overlap"
    )
    return f"{a} {metric} {va:.4f} vs {b} {vb:.4f}{ratio}; {verdict}."


def key_findings(evaluation: dict | None, cross: dict | None, experiments: dict | None) -> list[str]:
    """Findings written from the numbers (no sentence is fixed in advance)."""
    findings: list[str] = []
    if evaluation:
        table = _table(evaluation)
        test = table[
            (table["task"] == "test") & (table["protocol"] == "full") & (table["metric"] == "ndcg@10")
        ]
        ranked = test.sort_values("mean", ascending=False)["model"].tolist()
        non_oracle = [m for m in ranked if m != "oracle"]
        if non_oracle:
            findings.append(
                f"Within-matrix temporal test (full ranking, relevance watch_ratio > {evaluation.get('relevance_threshold', 2.0)}): "
                f"best model {non_oracle[0]}; order {', '.join(non_oracle)}."
            )
        sasrec = [m for m in non_oracle if m.startswith("sasrec")]
        if sasrec and "markov" in non_oracle:
            findings.append(
                "Best SASRec variant against the first-order transition baseline: "
                + _compare(table, sasrec[0], "markov", "test")
            )
        if sasrec and "pop" in non_oracle:
            findings.append("Against popularity: " + _compare(table, sasrec[0], "pop", "test"))
        if "random" in non_oracle:
            findings.append(
                f"Chance level (random): NDCG@10 {_value(table, 'random', 'test', 'ndcg@10'):.4f}."
            )
        if "oracle" in ranked:
            findings.append(
                f"Oracle (simulator's expected watch_ratio): NDCG@10 {_value(table, 'oracle', 'test', 'ndcg@10'):.4f}, the ceiling."
            )
        sampled = table[
            (table["task"] == "test") & (table["protocol"] == "sampled") & (table["metric"] == "ndcg@10")
        ]
        if len(sampled):
            merged = test.merge(sampled, on="model", suffixes=("_full", "_sampled"))
            merged = merged[merged["model"] != "oracle"]
            if len(merged) > 2:
                from scipy.stats import kendalltau

                tau = kendalltau(merged["mean_full"], merged["mean_sampled"])[0]
                candidates = {
                    protocol: _value(table, non_oracle[0], "test", "mean_candidates", protocol)
                    for protocol in ("full", "sampled")
                }
                if not np.isnan(candidates["sampled"]):
                    findings.append(
                        f"Under the sampled protocol each user was ranked among {candidates['sampled']:.1f} candidates "
                        f"on average (relevant targets plus the negatives that exist: items neither watched nor "
                        f"targets), against {candidates['full']:.1f} with full ranking. On a fully observed matrix few "
                        "true negatives remain, so sampled figures are close to their ceiling whatever the model."
                    )
                findings.append(
                    f"Sampled protocol (positives against 100 sampled negatives) gives NDCG@10 between "
                    f"{merged['mean_sampled'].min():.3f} and {merged['mean_sampled'].max():.3f}, against "
                    f"{merged['mean_full'].min():.3f}-{merged['mean_full'].max():.3f} with full ranking; Kendall's tau between "
                    f"the two model rankings {tau:.2f}. Sampled figures overstate quality and can reorder models "
                    "(Krichene & Rendle, KDD 2020)."
                )
    if cross:
        agreement = cross.get("agreement") or []
        if agreement:
            first = agreement[0]
            findings.append(
                f"Big-to-small: Kendall's tau between the model rankings on the big-matrix hold-out and on the fully observed "
                f"small matrix is {first['kendall_tau']:.2f} ({first['metric']}, {first['models']} models)"
                + (
                    "; the rankings disagree, as the KuaiRec paper warns for biased hold-outs."
                    if first["kendall_tau"] < 0.6
                    else "; they largely agree on this data."
                )
            )
        comparison = pd.DataFrame(cross.get("comparison") or [])
        if len(comparison):
            best = comparison[comparison["model"] != "oracle"].iloc[0]
            findings.append(
                f"Best model on the unbiased small-matrix test: {best['model']} (NDCG@10 {best['small_ndcg']:.4f})."
            )
    if experiments:
        best = experiments["best"]
        findings.append(
            f"Grid: {len(experiments['runs'])} (configuration, epochs) points; the selected configuration "
            f"({_config_text(best['config'])}) reached validation NDCG@10 {best['valid_ndcg@10']:.4f} and test NDCG@10 "
            f"{best['test'].get('ndcg@10', float('nan')):.4f}."
        )
    return findings


def _config_text(config: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


# ------------------------------------------------------------------------------------------ summary
def build_summary(reports_dir: str | Path, profile: str = "full") -> str:
    """Markdown of the results summary, every number read from ``<reports_dir>/metrics``."""
    root = paths.resolve(reports_dir)
    metrics = root / "metrics"
    eda, prepare, training = _load(metrics, "eda"), _load(metrics, "prepare"), _load(metrics, "training")
    evaluation, cross, experiments = (
        _load(metrics, "evaluation"),
        _load(metrics, "cross_dataset"),
        _load(metrics, "experiments"),
    )
    if not any([eda, evaluation, cross, experiments]):
        raise MissingDataError(f"no metrics found in {metrics}: run `make report` first")
    source = next(
        (p["data_source"] for p in (eda, prepare, evaluation, cross) if p and p.get("data_source")), "unknown"
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Results: SASRec and baselines on KuaiRec",
        "",
        f"> **Data: {source}.**"
        + (
            " Numbers below describe the simulator, not the real KuaiRec 2.0; with the real archive in `data/raw` (`make data`) the same command regenerates them on real data."
            if "simulator" in source
            else ""
        ),
        f"> Profile `{profile}`, regenerated by `make report` on {now} from commit `{_git_commit()}`. Every number is read from `metrics/*.json` of this run.",
        "",
        "Protocol unless stated: temporal split (global time cut: last 10% of events test, 10% before validation), full "
        "ranking over all videos with each user's history masked, relevance = watch_ratio > 2.0 (the KuaiRec paper's "
        "positive), K = 10, 95% bootstrap intervals over users in brackets. Model selection and early stopping use "
        "validation only.",
        "",
    ]
    if experiments:
        best = experiments["best"]
        test = best["test"]
        config = best["config"]
        lines += [
            "## Results",
            "",
            f"Best configuration of the grid ({len(experiments['runs'])} (configuration, epochs) points over variants "
            f"{', '.join(experiments['variants'])}), selected on validation NDCG@10 on `{experiments['dataset']}`:",
            "",
            markdown_table(pd.DataFrame([config])),
            "",
            markdown_table(
                pd.DataFrame(
                    [
                        {
                            "validation NDCG@10": best["valid_ndcg@10"],
                            "test NDCG@10": test.get("ndcg@10"),
                            "test Precision@10": test.get("precision@10"),
                            "test Recall@10": test.get("recall@10"),
                            "test HR@10": test.get("hr@10"),
                            "test users": test.get("users"),
                        }
                    ]
                )
            ),
            "",
            "The grid searches the original project's values (maxlen 50/100, dropout 0.2/0.5, ...); the variants in "
            "the tables below are trained once at the reference defaults (maxlen 200, dropout 0.2, early stopping on "
            "validation), so the two need not agree.",
            "",
        ]
    findings = key_findings(evaluation, cross, experiments)
    if findings:
        lines += ["## Key findings", "", *[f"- {f}" for f in findings], ""]
    if evaluation:
        table = _table(evaluation)
        lines += [
            f"## Every model on `{evaluation['dataset']}`, {evaluation['split']} split",
            "",
            "### Test, full ranking",
            "",
            markdown_table(metric_table(table, "test")),
            "",
            "### Validation, full ranking",
            "",
            markdown_table(metric_table(table, "valid")),
            "",
            "### Test, the original project's sampled protocol (positives against 100 sampled negatives)",
            "",
            markdown_table(metric_table(table, "test", "sampled")),
            "",
            "![test metrics](figures/eval_test_full.png)",
            "![sampled vs full](figures/eval_sampled_vs_full.png)",
            "![by activity](figures/eval_by_activity.png)",
            "",
        ]
    if cross:
        table = _table(cross)
        lines += [
            f"## KuaiRec's test: train on `{cross['train_dataset']}`, evaluate on the fully observed `{cross['test_dataset']}`",
            "",
            "### Small matrix (unbiased: every pair observed)",
            "",
            markdown_table(metric_table(table, "small_matrix")),
            "",
            "### Big-matrix hold-out (temporal test window of the sparse matrix)",
            "",
            markdown_table(metric_table(table, "big_holdout")),
            "",
            "### Agreement of the two model rankings",
            "",
            markdown_table(pd.DataFrame(cross["agreement"])),
            "",
            "![cross dataset](figures/cross_dataset.png)",
            "",
        ]
    if training:
        rows = []
        for variant, info in training["variants"].items():
            rows.append(
                {
                    "variant": variant,
                    "best epoch": info["best_epoch"],
                    "validation NDCG@10": (info.get("valid") or {}).get("ndcg@10"),
                    "seconds": info["seconds"],
                }
            )
        lines += [
            f"## SASRec training on `{training['dataset']}`",
            "",
            markdown_table(pd.DataFrame(rows)),
            "",
            "![training curves](figures/train_curves.png)",
            "",
        ]
    if experiments:
        runs = pd.DataFrame(experiments["runs"])
        columns = [
            c
            for c in [
                "variant",
                "lr",
                "maxlen",
                "num_blocks",
                "dropout_rate",
                "hidden_units",
                "num_heads",
                "num_epochs",
                "valid_ndcg@10",
                "valid_recall@10",
                "seconds",
            ]
            if c in runs.columns
        ]
        lines += [
            "## Experiments grid (top 15 of all runs, sorted by validation NDCG@10)",
            "",
            markdown_table(runs[columns].head(15)),
            "",
            "![grid effects](figures/experiments_effects.png)",
            "",
        ]
    if prepare:
        splits = pd.DataFrame(prepare["splits"])
        lines += ["## Data preparation", "", markdown_table(splits), ""]
        leakage = pd.DataFrame(prepare.get("leakage") or [])
        if len(leakage):
            lines += [
                "Leakage check (recomputed for every dataset and split):",
                "",
                markdown_table(leakage),
                "",
            ]
    if eda:
        comparison = pd.DataFrame(eda["comparison"])
        lines += [
            "## The data against the real KuaiRec 2.0 figures",
            "",
            markdown_table(comparison),
            "",
            "![watch ratio](figures/eda_watch_ratio.png)",
            "![interactions](figures/eda_interactions.png)",
            "",
        ]
    lines += [
        "## Reproduce",
        "",
        "```",
        "make setup && make report          # this file, figures and metrics (PROFILE=smoke for a 3-minute run)",
        "make data && make report           # the same on the real KuaiRec 2.0 archive",
        "```",
        "",
    ]
    return "\n".join(lines)


def write_summary(reports_dir: str | Path, profile: str = "full") -> Path:
    """Write ``<reports_dir>/README.md`` atomically."""
    target = paths.resolve(reports_dir) / "README.md"
    return paths.atomic_write_text(target, build_summary(reports_dir, profile))


# ------------------------------------------------------------------------------------------ data step
def ensure_profile_data(profile: str, stamp: str | Path | None = None) -> str:
    """Make sure the data of a report profile exist; update ``stamp`` only when they changed.

    Reads ``params/<profile>/01_eda.yaml`` (data_dir, simulate_scale, seed): an empty data_dir means the real
    archive in data/raw when present, else the simulator in data/simulated.
    """
    from sasrec.data import kuairec
    from sasrec.study.steps import describe_data_source, resolve_data_dir

    params = load_yaml_mapping(paths.project_root() / "params" / profile / "01_eda.yaml")
    folder = resolve_data_dir(
        params.get("data_dir", ""), simulate_scale=params.get("simulate_scale"), seed=params.get("seed", 0)
    )
    signature = []
    for name in (*kuairec.INTERACTION_FILES, "item_categories.csv", "user_features.csv", "simulation.json"):
        found = kuairec.find_file(folder, name)
        if found is not None:
            stat = found.stat()
            signature.append(f"{found} {stat.st_size} {stat.st_mtime_ns}")
    description = describe_data_source(folder)
    if stamp is not None:
        stamp_path = paths.resolve(stamp)
        text = "\n".join([description, *signature]) + "\n"
        if not stamp_path.is_file() or stamp_path.read_text(encoding="utf-8") != text:
            paths.atomic_write_text(stamp_path, text)
    return description
