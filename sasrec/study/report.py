"""The regenerated results summary (``reports/README.md``), rendered from a Jinja2 template, and the report's
data step.

``python -m sasrec report data --profile P --stamp FILE`` makes sure the profile's data exist (simulating
them when no real KuaiRec is present) and touches FILE only when the data changed, so ``make`` reruns
notebooks exactly when their inputs changed. ``python -m sasrec report summary --reports-dir DIR`` writes
DIR/README.md from ``templates/summary.md.j2`` with every number, and every protocol setting (K, split,
relevance rule, fitting policy, data source), read from DIR/metrics/*.json: nothing is written in literally.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from scipy.stats import kendalltau

from sasrec import paths
from sasrec.config import load_yaml_mapping
from sasrec.errors import MissingDataError
from sasrec.evaluation.metrics import headline_metrics
from sasrec.study.comparisons import metric_table, paired_summary

METRIC_FILES = (
    "eda",
    "prepare",
    "training",
    "evaluation",
    "training_big",
    "cross_dataset",
    "experiments",
    "features",
    "tuning",
    "two_stage",
)
TEMPLATE = "summary.md.j2"


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


def load_metrics(reports_dir: str | Path) -> dict[str, dict[str, Any] | None]:
    """Every metrics JSON of a report folder, verified (None where a notebook has not run).

    Raises:
        IntegrityError: a file is cut short, edited by hand or unsealed; one line naming it and the
            notebook that rewrites it (a damaged file is refused, never rendered).
    """
    from sasrec.evaluation.results import read_metrics_json
    from sasrec.study.context import metrics_writer

    metrics = paths.resolve(reports_dir) / "metrics"
    loaded = {}
    for name in METRIC_FILES:
        path = metrics / f"{name}.json"
        hint = f"run {metrics_writer(name)} to rewrite it"
        loaded[name] = read_metrics_json(path, hint=hint) if path.is_file() else None
    return loaded


def _frame(payload: dict[str, Any] | None, key: str) -> pd.DataFrame:
    return pd.DataFrame((payload or {}).get(key) or [])


def _value(
    table: pd.DataFrame, model: str, task: str, metric: str, protocol: str = "full", what: str = "mean"
) -> float:
    if table.empty:
        return float("nan")
    sub = table[
        (table["model"] == model)
        & (table["task"] == task)
        & (table["protocol"] == protocol)
        & (table["metric"] == metric)
    ]
    return float(sub[what].iloc[0]) if len(sub) else float("nan")


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=paths.project_root(), capture_output=True,
                             text=True, check=False)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def relevance_text(setup: dict[str, Any]) -> str:
    """How relevance was decided, in words (``watch_ratio > 2.0``, ``liked (watch_ratio > 0.7)``, ``every target``)."""
    rule = setup.get("relevance", "threshold")
    if rule == "threshold":
        threshold = setup.get("relevance_threshold")
        return f"watch_ratio > {threshold if threshold is not None else 'the dataset threshold'}"
    return {"liked": "liked (watch_ratio > 0.7)", "all": "every target"}.get(rule, rule)


def _interval(mean: float, low: float, high: float) -> str:
    return f"{mean:.4f} [{low:.4f}, {high:.4f}]"


def paired_markdown(paired: pd.DataFrame, task: str, metric: str) -> str:
    """One row per model, one column per reference: ``difference [low, high] (p)`` of ``metric`` on ``task``
    (the notebooks' :func:`~sasrec.study.comparisons.paired_summary` with the report's cell format)."""
    wide = paired_summary(paired, task, metric, cell=_report_cell)
    return markdown_table(wide.reset_index()) if len(wide) else ""


def _report_cell(row: Any) -> str:
    return f"{row.difference:+.4f} [{row.low:+.4f}, {row.high:+.4f}] (p={row.p_value:.2g})"


# ------------------------------------------------------------------------------------------ findings
def _paired_sentences(paired: pd.DataFrame, task: str, metric: str) -> list[str]:
    """For each reference: which models differ from it (95% interval of the paired difference excludes 0)."""
    if paired.empty:
        return []
    sub = paired[(paired["task"] == task) & (paired["metric"] == metric)]
    out = []
    for reference, group in sub.groupby("reference", sort=False):
        group = group[group["model"] != reference].sort_values("difference", ascending=False)
        better = [f"{r.model} {r.difference:+.4f} [{r.low:+.4f}, {r.high:+.4f}], p={r.p_value:.3g}"
                  for r in group.itertuples() if r.low > 0]  # fmt: skip
        worse = [r.model for r in group.itertuples() if r.high < 0]
        unclear = [r.model for r in group.itertuples() if r.low <= 0 <= r.high]
        parts = [
            f"Paired {metric} differences against {reference} ({task}, {int(group['users'].max())} users):"
        ]
        parts.append(("better: " + "; ".join(better)) if better else f"no model is better than {reference}")
        if worse:
            parts.append(f"worse: {', '.join(worse)}")
        if unclear:
            parts.append(f"not distinguishable: {', '.join(unclear)}")
        out.append(" ".join(parts[:1]) + " " + "; ".join(parts[1:]) + ".")
    return out


def within_findings(evaluation: dict[str, Any]) -> list[str]:
    """Findings of the within-matrix comparison, written from its numbers."""
    table, paired, overview = (
        _frame(evaluation, "table"),
        _frame(evaluation, "paired"),
        _frame(evaluation, "overview"),
    )
    k = evaluation["k"]
    metric = f"ndcg@{k}"
    test = table[(table["task"] == "test") & (table["protocol"] == "full") & (table["metric"] == metric)]
    ranked = [m for m in test.sort_values("mean", ascending=False)["model"] if m != "oracle"]
    findings = []
    if ranked:
        best = ranked[0]
        findings.append(
            f"Within-matrix test, default configurations ({evaluation['split']} split, full ranking, relevance "
            f"{relevance_text(evaluation)}, fit on {evaluation['fit_on'].replace('_', ' + ')} events): best model {best} ({metric} "
            f"{_interval(*(_value(table, best, 'test', metric, what=w) for w in ('mean', 'low', 'high')))}); order "
            f"{', '.join(ranked)}."
        )
    findings += _paired_sentences(paired, "test", metric)
    if "random" in ranked:
        findings.append(
            f"Chance level (random scorer): {metric} {_value(table, 'random', 'test', metric):.4f}."
        )
    if not np.isnan(_value(table, "oracle", "test", metric)):
        findings.append(
            f"Oracle (the simulator's expected watch_ratio): {metric} {_value(table, 'oracle', 'test', metric):.4f}, the ceiling."
        )
    full = (
        overview[(overview["task"] == "test") & (overview["protocol"] == "full")]
        if len(overview)
        else overview
    )
    if len(full):
        row = full.iloc[0]
        share = row["share_of_candidates_that_are_targets"]
        meaning = (
            ": most candidates are videos the user watches later, so full ranking here measures telling relevant "
            "from non-relevant future videos of the same user more than finding unseen ones"
            if share > 0.5
            else ""
        )
        findings.append(
            f"Under full ranking each test user is ranked among {row['mean_candidates']:.1f} candidates on average, of "
            f"which {100 * share:.0f}% are the user's own test events ({row['mean_targets']:.1f} per user){meaning}."
        )
    findings += _sampled_findings(table, overview, metric, int(evaluation.get("num_negatives", 100)))
    return findings


def _sampled_findings(
    table: pd.DataFrame, overview: pd.DataFrame, metric: str, num_negatives: int
) -> list[str]:
    """The original sampled protocol against full ranking on the same positives (each model's original rule)."""
    sampled = table[table["task"].str.startswith("test@") & (table["metric"] == metric)]
    if sampled.empty:
        return []
    pivot = sampled.pivot_table(index=["model", "task"], columns="protocol", values="mean").dropna()
    pivot = pivot.drop(
        index=[i for i in pivot.index if i[0] in ("oracle",) or (i[0] == "random" and i[1] == "test@liked")]
    )
    findings = []
    rows = overview[overview["task"].str.startswith("test@") & (overview["protocol"] == "sampled")]
    short_of_negatives = table[
        (table["metric"] == "users_with_fewer_negatives") & (table["protocol"] == "sampled")
    ]
    all_short = True
    for row in rows.to_dict("records"):
        positives = "every test item" if row["task"].endswith("all") else "liked test items"
        short = short_of_negatives.loc[short_of_negatives["task"] == row["task"], "mean"]
        n_short = int(short.max()) if len(short) else 0
        all_short &= n_short >= row["users"]
        findings.append(
            f"Original sampled protocol on {row['task']} (positives: {positives}): {row['mean_candidates']:.1f} "
            f"candidates per user (positives + up to {num_negatives} negatives; {n_short} of {row['users']} users "
            f"had fewer eligible negatives and rank all of them), chance {metric} {row[f'chance {metric}']:.4f}."
        )
    if len(pivot) > 2:
        tau = kendalltau(pivot["full"], pivot["sampled"])[0]
        coincide = (
            f": every user had fewer than {num_negatives} eligible negatives, so both protocols rank the same "
            "candidates and coincide on this data (they differ only where users have more eligible videos, as on "
            "sparse data)"
            if all_short and np.allclose(pivot["full"], pivot["sampled"])
            else " (Krichene & Rendle, KDD 2020, on why sampled metrics can disagree with full ranking)"
        )
        findings.append(
            f"With the original rule, sampled {metric} spans {pivot['sampled'].min():.3f}-{pivot['sampled'].max():.3f} "
            f"against {pivot['full'].min():.3f}-{pivot['full'].max():.3f} when the same positives are ranked against "
            f"every video; Kendall's tau between the two model rankings is {tau:.2f}{coincide}."
        )
    return findings


def cross_findings(cross: dict[str, Any]) -> list[str]:
    """Findings of the big-to-small comparison."""
    findings = []
    k = cross["k"]
    metric = f"ndcg@{k}"
    agreement = cross.get("agreement") or []
    if agreement:
        first = agreement[0]
        verdict = ("the rankings disagree, as the KuaiRec paper warns for biased hold-outs" if first["kendall_tau"] < 0.6
                   else "they largely agree on this data")  # fmt: skip
        findings.append(
            f"Big-to-small: Kendall's tau between the model rankings on the big-matrix hold-out and on the fully "
            f"observed small matrix is {first['kendall_tau']:.2f} ({first['metric']}, {first['models']} models); {verdict}."
        )
    comparison = _frame(cross, "comparison")
    if len(comparison):
        best = comparison[comparison["model"] != "oracle"].iloc[0]
        findings.append(
            f"Best model on the unbiased small-matrix test: {best['model']} ({metric} {best['small_ndcg']:.4f})."
        )
    findings += _paired_sentences(_frame(cross, "paired"), "small_matrix", metric)
    return findings


def grid_findings(experiments: dict[str, Any]) -> list[str]:
    """The grid's selected configuration and its test result."""
    best, k = experiments["best"], experiments.get("k", 10)
    config = ", ".join(f"{key}={value}" for key, value in best["config"].items())
    return [
        f"Grid: {len(experiments['runs'])} (configuration, epochs) points; the selected configuration ({config}) reached "
        f"validation NDCG@{k} {best[f'valid_ndcg@{k}']:.4f} and test NDCG@{k} {best['test'].get(f'ndcg@{k}', float('nan')):.4f}."
    ]


# ------------------------------------------------------------------------------------------ sections
def _header(metrics: dict[str, Any], profile: str) -> dict[str, Any]:
    source = next((p["data_source"] for p in metrics.values() if p and p.get("data_source")), "unknown")
    return {"data_source": source, "simulated": "simulator" in source, "profile": profile, "commit": _git_commit(),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}  # fmt: skip


def _user_counts(table: pd.DataFrame, task: str, k: int) -> dict[str, int]:
    """Over how many users the binary metrics and graded NDCG average (from any non-oracle model's counts)."""
    out = {}
    for key, metric in (("binary", f"users_ndcg@{k}"), ("graded", f"users_graded_ndcg@{k}")):
        value = table[(table["task"] == task) & (table["protocol"] == "full") & (table["metric"] == metric)][
            "mean"
        ]
        out[key] = int(value.max()) if len(value) else 0
    return out


def _within(evaluation: dict[str, Any] | None) -> dict[str, Any] | None:
    if not evaluation:
        return None
    table, k = _frame(evaluation, "table"), evaluation["k"]
    metrics = headline_metrics(k)
    paired = _frame(evaluation, "paired")
    sampled = {task: markdown_table(metric_table(table, task, "sampled", metrics))
               for task in ("test@all", "test@liked") if (table["task"] == task).any()}  # fmt: skip
    return {
        **{
            key: evaluation.get(key)
            for key in ("dataset", "split", "fit_on", "k", "maxlen", "n_boot", "num_negatives")
        },
        "relevance": relevance_text(evaluation),
        "users": _user_counts(table, "test", k),
        "test": markdown_table(metric_table(table, "test", "full", metrics)),
        "valid": markdown_table(metric_table(table, "valid", "full", metrics)),
        "paired": {
            metric: paired_markdown(paired, "test", metric) for metric in (f"ndcg@{k}", f"graded_ndcg@{k}")
        },
        "overview": markdown_table(_frame(evaluation, "overview")),
        "sampled": sampled,
        "fit_events": markdown_table(_frame(evaluation, "fit_events")),
    }


def _cross(cross: dict[str, Any] | None) -> dict[str, Any] | None:
    if not cross:
        return None
    table, k = _frame(cross, "table"), cross["k"]
    metrics = headline_metrics(k)
    paired = _frame(cross, "paired")
    return {
        **{key: cross.get(key) for key in ("train_dataset", "test_dataset", "split", "fit_on", "k")},
        "relevance": relevance_text(cross),
        "small": markdown_table(metric_table(table, "small_matrix", "full", metrics)),
        "big": markdown_table(metric_table(table, "big_holdout", "full", metrics)),
        "paired": {
            task: paired_markdown(paired, task, f"ndcg@{k}") for task in ("small_matrix", "big_holdout")
        },
        "agreement": markdown_table(pd.DataFrame(cross.get("agreement") or [])),
    }


def _training(training: dict[str, Any] | None) -> dict[str, Any] | None:
    if not training:
        return None
    k = training.get("k", 10)
    rows = [{"model": name, "best epoch": info["best_epoch"], "epochs run": info.get("epochs_run"),
             f"validation NDCG@{k}": (info.get("valid") or {}).get(f"ndcg@{k}"), "seconds": info["seconds"],
             **({"peak RSS GB": info["peak_rss_gb"]} if "peak_rss_gb" in info else {})}
            for name, info in training["models"].items()]  # fmt: skip
    first = next(iter(training["models"].values()))["config"]
    return {"dataset": training["dataset"], "table": markdown_table(pd.DataFrame(rows)), "fit_on": training.get("fit_on"),
            "patience": first.get("patience"), "min_epochs": first.get("min_epochs"), "num_epochs": first.get("num_epochs"),
            "eval_every": first.get("eval_every")}  # fmt: skip


def _grid(experiments: dict[str, Any] | None) -> dict[str, Any] | None:
    if not experiments:
        return None
    k = experiments.get("k", 10)
    best = experiments["best"]
    runs = pd.DataFrame(experiments["runs"])
    keys = ["variant", *experiments.get("grid", {}).keys()]
    columns = [
        c
        for c in [*dict.fromkeys(keys), f"valid_ndcg@{k}", f"valid_recall@{k}", "seconds"]
        if c in runs.columns
    ]
    result = {"validation NDCG": best[f"valid_ndcg@{k}"], **{f"test {m}": best["test"].get(f"{m}@{k}")
              for m in ("ndcg", "precision", "recall", "hr")}, "test users": best["test"].get("users")}  # fmt: skip
    return {"k": k, "dataset": experiments["dataset"], "points": len(runs), "variants": ", ".join(experiments["variants"]),
            "config": markdown_table(pd.DataFrame([best["config"]])), "result": markdown_table(pd.DataFrame([result])),
            "top": markdown_table(runs[columns].head(15))}  # fmt: skip


def tuning_findings(payload: dict[str, Any]) -> list[str]:
    """The headline ranking of the tuned models (every model searched with the same budget), the paired
    claims against the best tuned model, and the agreement with the default configurations' ranking."""
    comparison = payload.get("comparison") or {}
    rows = sorted(comparison.get("table") or [], key=lambda r: -r["tuned"])
    if not rows:
        return []
    trials = payload["tuning"]["trials"]
    better = [r["model"] for r in rows if r["low"] > 0]
    worse = [r["model"] for r in rows if r["high"] < 0]
    order = ", ".join(f"{r['model']} {r['tuned']:.4f}" for r in rows)
    best = rows[0]["model"]
    below = [r["model"] for r in rows[1:] if (r.get("best_high") is not None and r["best_high"] < 0)]
    tied = [r["model"] for r in rows[1:] if r["model"] not in below]
    kendall = comparison.get("kendall") or {}
    tau = kendall.get("kendall_tau")
    users = rows[0].get("users")
    paired = any(r.get("best_high") is not None for r in rows[1:])  # absent from payloads before the headline
    return [
        f"Headline ranking, every model tuned with the same budget ({trials} Optuna trials per model, the default "
        f"configuration the first, selected on validation only), test ndcg@10: {order}.",
        *([f"Paired ndcg@10 differences against the best tuned model {best} (test, {users} users): "
           + (f"worse: {', '.join(below)}" if below else "no model is worse")
           + (f"; not distinguishable: {', '.join(tied)}." if tied else ".")] if paired else []),
        (f"Tuning beats the default configuration (paired interval above 0) for {', '.join(better)}" if better
         else "Tuning beats no default configuration beyond its paired interval")
        + (f"; it is below the default for {', '.join(worse)}" if worse else "")
        + (f". Kendall's tau between the default and tuned rankings: {tau:.2f}." if tau is not None else "."),
    ]  # fmt: skip


def _tuning(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """The tuning section's context (``metrics/tuning.json``, notebook 08)."""
    if not payload:
        return None
    from sasrec.study import tuning

    return tuning.tuning_context(payload, payload.get("comparison"))


def summary_context(metrics: dict[str, Any], profile: str = "full") -> dict[str, Any]:
    """Everything the template shows, computed from the metrics JSON."""
    findings = []
    if metrics.get("tuning"):  # the headline: tuned models
        findings += tuning_findings(metrics["tuning"])
    if metrics.get("evaluation"):
        findings += within_findings(metrics["evaluation"])
    if metrics.get("cross_dataset"):
        findings += cross_findings(metrics["cross_dataset"])
    if metrics.get("experiments"):
        findings += grid_findings(metrics["experiments"])
    from sasrec.study import preferences, two_stage

    if metrics.get("features"):
        findings += preferences.findings(metrics["features"])
    prepare, eda = metrics.get("prepare"), metrics.get("eda")
    return {
        **_header(metrics, profile),
        "findings": findings,
        "within": _within(metrics.get("evaluation")),
        "cross": _cross(metrics.get("cross_dataset")),
        "training": _training(metrics.get("training")),
        "training_big": _training(metrics.get("training_big")),
        "grid": _grid(metrics.get("experiments")),
        "features": preferences.report_context(metrics.get("features")),
        "tuning": _tuning(metrics.get("tuning")),
        "ts": two_stage.report_context(metrics["two_stage"]) if metrics.get("two_stage") else None,
        "splits": markdown_table(_frame(prepare, "splits")) if prepare else None,
        "leakage": markdown_table(_frame(prepare, "leakage")) if prepare and prepare.get("leakage") else None,
        "real_comparison": markdown_table(_frame(eda, "comparison")) if eda else None,
    }


def resources_table(reports_dir: str | Path, profile: str) -> str | None:
    """Markdown table of each notebook's measured wall time and peak memory beside the up-front estimate.

    Read from ``<reports_dir>/resources/*.json`` (written by ``report measure`` around each papermill run);
    None when the run recorded none.
    """
    from sasrec.study.resources import profile_requirements, read_measured

    measured = read_measured(paths.resolve(reports_dir) / "resources")
    if not measured:
        return None
    try:
        estimates = {r.notebook: r.memory_gb for r in profile_requirements(profile)["notebooks"]}
    except (OSError, ValueError):
        estimates = {}
    rows = [{"notebook": m["name"], "minutes": round(m["seconds"] / 60, 1), "peak RSS GB": m["peak_rss_gb"],
             "estimated peak GB": estimates.get(m["name"]), "cores": m.get("cpus"), "finished": m.get("finished")}
            for m in measured]  # fmt: skip
    total = sum(m["seconds"] for m in measured)
    rows.append({"notebook": "all", "minutes": round(total / 60, 1),
                 "peak RSS GB": max(m["peak_rss_gb"] for m in measured)})  # fmt: skip
    return markdown_table(pd.DataFrame(rows))


def build_summary(reports_dir: str | Path, profile: str = "full") -> str:
    """Markdown of the results summary: the template filled from ``<reports_dir>/metrics``."""
    metrics = load_metrics(reports_dir)
    if not any(metrics[name] for name in ("eda", "evaluation", "cross_dataset", "experiments")):
        raise MissingDataError(
            f"no metrics found in {paths.resolve(reports_dir) / 'metrics'}: run `make report` first"
        )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    context = summary_context(metrics, profile)
    return env.get_template(TEMPLATE).render(**context, resources=resources_table(reports_dir, profile))


def write_summary(reports_dir: str | Path, profile: str = "full") -> Path:
    """Write ``<reports_dir>/README.md`` atomically."""
    target = paths.resolve(reports_dir) / "README.md"
    return paths.atomic_write_text(target, build_summary(reports_dir, profile))


# ------------------------------------------------------------------------------------------ data step
def ensure_profile_data(profile: str, stamp: str | Path | None = None) -> str:
    """Make sure the data of a report profile exist; update ``stamp`` only when they changed.

    Reads ``params/<profile>/01_eda.yaml`` (``paths.data_dir`` and ``simulator``): an empty data_dir means the
    real archive in data/raw when present, else the simulator in data/simulated.
    """
    from sasrec.data import kuairec
    from sasrec.study.context import Study

    params = load_yaml_mapping(paths.project_root() / "params" / profile / "01_eda.yaml")
    study = Study.from_params(params.get("paths"), params.get("simulator"), params.get("preparation"))
    folder = study.data_path
    signature = []
    for name in (*kuairec.INTERACTION_FILES, "item_categories.csv", "user_features.csv", "simulation.json"):
        found = kuairec.find_file(folder, name)
        if found is not None:
            stat = found.stat()
            signature.append(f"{found} {stat.st_size} {stat.st_mtime_ns}")
    if stamp is not None:
        stamp_path = paths.resolve(stamp)
        text = "\n".join([study.data_source, *signature]) + "\n"
        if not stamp_path.is_file() or stamp_path.read_text(encoding="utf-8") != text:
            paths.atomic_write_text(stamp_path, text)
    return study.data_source
