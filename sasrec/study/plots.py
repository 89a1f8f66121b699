"""Every figure of the study: EDA, preparation, training, evaluation, cross-dataset and experiment grids.

Each ``plot_*`` function takes tidy data plus an optional ``out`` path and returns a
:class:`matplotlib.figure.Figure`. Figures are built without pyplot, so nothing is registered in pyplot's
global state: nothing needs closing, Jupyter shows a returned figure exactly once, and the code runs under
any backend (Agg included). With ``out`` the figure is also saved as a PNG (dpi 120) atomically. The
style is set once by :func:`set_style` (called automatically by the first figure).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sasrec import paths
from sasrec.errors import ConfigError, DataValidationError
from sasrec.study import eda

PNG_DPI = 120
SAMPLED_COLOR = "#d55e00"
FULL_COLOR = "#0072b2"
GRID_PARAMETERS = ("lr", "maxlen", "num_blocks", "dropout_rate", "num_epochs", "variant")
PART_ORDER = ("train", "valid", "validation", "test")

_style_applied = False


# ----------------------------------------------------------------------------------------- plumbing
def set_style() -> None:
    """Apply the study's plot style (seaborn whitegrid, colour-blind palette) to matplotlib's rcParams."""
    global _style_applied
    sns.set_theme(
        context="notebook",
        style="whitegrid",
        palette="colorblind",
        rc={
            "figure.dpi": 100,
            "savefig.dpi": PNG_DPI,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "xtick.labelsize": 9,
            "ytick.labelsize": 9,
        },
    )
    _style_applied = True


def figure_path(name: str) -> Path:
    """``reports/figures/<name>.png`` under the project root (the folder is created when saving)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"figure name must be a plain file stem like 'watch_ratio'; got {name!r}")
    return paths.reports_dir() / "figures" / f"{name}.png"


def save_figure(fig: Figure, out: str | Path) -> Path:
    """Save ``fig`` as a PNG (dpi 120) to ``out`` atomically; return the resolved path."""
    target = paths.resolve(out)
    with paths.atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=PNG_DPI)
    return target


def _new_figure(
    nrows: int = 1, ncols: int = 1, *, panel_size: tuple[float, float] = (5.0, 3.6), **kwargs: Any
):
    """A constrained-layout Figure (not registered with pyplot) and its 2-D array of Axes."""
    if not _style_applied:
        set_style()
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def _finish(fig: Figure, out: str | Path | None) -> Figure:
    if out is not None:
        save_figure(fig, out)
    return fig


def _check_frames(frames: Mapping[str, pd.DataFrame], columns: Sequence[str], what: str) -> None:
    if not isinstance(frames, Mapping) or not frames:
        raise ConfigError(f"{what}: frames must be a non-empty mapping of matrix name -> DataFrame")
    for name, df in frames.items():
        eda.require_columns(df, columns, f"{what} ({name!r})")


def palette(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """A stable colour per name (in the given order): colour-blind palette, tab20 beyond 10 names."""
    names = list(dict.fromkeys(names))
    colors = sns.color_palette("colorblind" if len(names) <= 10 else "tab20", max(len(names), 1))
    return {name: colors[i % len(colors)] for i, name in enumerate(names)}


def _log_bins(values: np.ndarray, n_bins: int = 40) -> np.ndarray:
    top = max(float(np.max(values)), 2.0) if len(values) else 2.0
    return np.logspace(0, math.log10(top * 1.05), n_bins)


def _hide_unused(axes: np.ndarray, used: int) -> None:
    for ax in axes.flat[used:]:
        ax.set_visible(False)


def _natural_order(labels: Sequence[Any]) -> list[Any]:
    """Order labels by value when numeric, else by the first number they contain ("1-12" < "13-40")."""
    unique = list(dict.fromkeys(labels))
    numeric = pd.to_numeric(pd.Series(unique, dtype=object), errors="coerce")
    if numeric.notna().all():
        return [unique[i] for i in np.argsort(numeric.to_numpy(), kind="stable")]

    def key(label: Any) -> tuple[float, str]:
        match = re.search(r"-?\d+(\.\d+)?(e-?\d+)?", str(label))
        return (float(match.group()) if match else math.inf, str(label))

    return sorted(unique, key=key)


# ---------------------------------------------------------------------------------------------- EDA
def plot_interaction_distributions(
    frames: Mapping[str, pd.DataFrame], out: str | Path | None = None
) -> Figure:
    """Histograms (log-log) of interactions per user and per video, one outline per matrix."""
    _check_frames(frames, ["user_id", "video_id"], "plot_interaction_distributions")
    fig, axes = _new_figure(1, 2)
    colors = palette(list(frames))
    per_user = {name: eda.interactions_per_user(df).to_numpy() for name, df in frames.items()}
    per_video = {name: eda.interactions_per_video(df).to_numpy() for name, df in frames.items()}
    for ax, counts, entity in ((axes[0, 0], per_user, "user"), (axes[0, 1], per_video, "video")):
        bins = _log_bins(np.concatenate(list(counts.values())))
        for name, values in counts.items():
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                linewidth=1.6,
                color=colors[name],
                label=f"{name} ({len(values):,} {entity}s, median {np.median(values):,.0f})",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"interactions per {entity} (log scale)")
        ax.set_ylabel(f"{entity}s")
        ax.set_title(f"Interactions per {entity}")
        ax.legend(loc="best")
    return _finish(fig, out)


def plot_watch_ratio(
    frames: Mapping[str, pd.DataFrame], out: str | Path | None = None, clip: float = 5.0
) -> Figure:
    """Histogram of watch_ratio per matrix, clipped at ``clip`` (the last bin holds every row above it).

    Marks the study seed's "liked" threshold (0.7) and the KuaiRec paper's positive threshold (> 2,
    Gao et al. 2022) with the share of rows above each.
    """
    _check_frames(frames, ["watch_ratio"], "plot_watch_ratio")
    if clip <= 2.0:
        raise ConfigError(f"clip must be above 2 (the positive threshold); got {clip}")
    fig, axes = _new_figure(1, len(frames), sharey=True)
    edges = np.linspace(0.0, clip, 51)
    colors = palette(list(frames))
    for ax, (name, df) in zip(axes.flat, frames.items(), strict=True):
        ratio = df["watch_ratio"].to_numpy(dtype=np.float64)
        ratio = ratio[np.isfinite(ratio)]
        n_bins = len(edges) - 1
        bins = np.minimum((np.minimum(ratio, clip) * (n_bins / clip)).astype(np.int64), n_bins - 1)
        counts = np.bincount(bins, minlength=n_bins)  # (n_bins,); rows >= clip land in the last bin
        shares = counts / max(len(ratio), 1)
        ax.stairs(shares, edges, fill=True, alpha=0.75, color=colors[name])
        n_rows = max(len(ratio), 1)
        liked, positive = (ratio > 0.7).sum() / n_rows, (ratio > 2.0).sum() / n_rows
        ax.axvline(
            0.7,
            color="#444444",
            linestyle="--",
            linewidth=1.2,
            label=f"> 0.7 (seed's liked): {liked:.1%}",
        )
        ax.axvline(
            2.0,
            color="#c0392b",
            linestyle="-",
            linewidth=1.4,
            label=f"> 2 (paper's positive): {positive:.1%}",
        )
        ax.set_title(
            f"{name}: {len(ratio):,} rows, median {np.median(ratio) if len(ratio) else float('nan'):.3f}"
        )
        above = float((ratio > clip).mean()) if len(ratio) else float("nan")
        ax.set_xlabel(f"watch_ratio (rows > {clip:g}, {above:.1%}, shown in the last bin)")
        ax.set_xlim(0, clip)
        ax.legend(loc="upper right")
    axes[0, 0].set_ylabel("share of rows")
    return _finish(fig, out)


def plot_daily_activity(
    daily: pd.DataFrame | Mapping[str, pd.DataFrame], out: str | Path | None = None
) -> Figure:
    """Interactions (and active users when present) per Asia/Shanghai day, one line per matrix.

    ``daily`` is :func:`sasrec.eda.daily_activity`'s output, a mapping of matrix name to such outputs, or
    one frame with a ``matrix`` column.
    """
    if isinstance(daily, Mapping):
        parts = [_with_matrix(frame, name) for name, frame in daily.items()]
        if not parts:
            raise ConfigError("plot_daily_activity: daily is an empty mapping")
        table = pd.concat(parts, ignore_index=True)
    else:
        table = daily if "matrix" in getattr(daily, "columns", []) else _with_matrix(daily, "data")
    eda.require_columns(table, ["date", "interactions", "matrix"], "plot_daily_activity")
    has_users = "users" in table.columns
    fig, axes = _new_figure(2 if has_users else 1, 1, panel_size=(9.0, 3.0), sharex=True)
    colors = palette(list(dict.fromkeys(table["matrix"])))
    panels = [("interactions", "interactions per day")] + (
        [("users", "active users per day")] if has_users else []
    )
    for ax, (column, label) in zip(axes[:, 0], panels, strict=True):
        for name, part in table.groupby("matrix", sort=False):
            ax.plot(
                pd.to_datetime(part["date"]), part[column], marker=".", color=colors[name], label=str(name)
            )
        ax.set_ylabel(label)
        ax.legend(loc="upper left")
    bottom = axes[-1, 0]
    dates = pd.to_datetime(table["date"])
    short = (dates.max() - dates.min()) <= pd.Timedelta(days=14)
    locator = mdates.DayLocator() if short else mdates.AutoDateLocator(minticks=4, maxticks=12)
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    bottom.set_xlabel("day (Asia/Shanghai)")
    axes[0, 0].set_title("Daily activity")
    return _finish(fig, out)


def _with_matrix(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    eda.require_columns(frame, ["date", "interactions"], f"plot_daily_activity ({name!r})")
    return frame.assign(matrix=name)


def plot_tag_frequencies(tags: pd.DataFrame, out: str | Path | None = None) -> Figure:
    """Share of videos (and of interactions, when present) per category tag, sorted by video share."""
    eda.require_columns(tags, ["tag", "videos"], "plot_tag_frequencies")
    table = tags.copy()
    if "video_share" not in table.columns:
        table["video_share"] = table["videos"] / table["videos"].sum()
    table = table.sort_values("video_share", ascending=False, kind="stable")
    has_interactions = "interaction_share" in table.columns
    fig, axes = _new_figure(1, 1, panel_size=(max(6.0, 0.32 * len(table) + 2), 3.8))
    ax = axes[0, 0]
    positions = np.arange(len(table))
    width = 0.42 if has_interactions else 0.8
    colors = sns.color_palette("colorblind", 2)
    ax.bar(
        positions - (width / 2 if has_interactions else 0),
        table["video_share"],
        width,
        color=colors[0],
        label="share of videos",
    )
    if has_interactions:
        ax.bar(
            positions + width / 2,
            table["interaction_share"],
            width,
            color=colors[1],
            label="share of interactions",
        )
    ax.set_xticks(positions, [str(t) for t in table["tag"]])
    ax.set_xlabel("category tag (sorted by share of videos; a video carries 1-4 tags)")
    ax.set_ylabel("share")
    ax.set_title("Category tags")
    ax.legend(loc="upper right")
    return _finish(fig, out)


def plot_density(
    frames: Mapping[str, pd.DataFrame],
    out: str | Path | None = None,
    n_users: int = 200,
    n_videos: int = 300,
    seed: int = 0,
) -> Figure:
    """Occupancy image of a random sample of users x videos per matrix (black = at least one interaction).

    Rows and columns are ordered by their occupancy so the structure is visible; titles give the sample's
    and the whole matrix's pair density.
    """
    _check_frames(frames, ["user_id", "video_id"], "plot_density")
    if n_users < 1 or n_videos < 1:
        raise ConfigError(f"n_users and n_videos must be >= 1; got {n_users}, {n_videos}")
    rng = np.random.default_rng(seed)
    fig, axes = _new_figure(1, len(frames), panel_size=(4.6, 4.2))
    for ax, (name, df) in zip(axes.flat, frames.items(), strict=True):
        users = df["user_id"].to_numpy().astype(np.int64)
        videos = df["video_id"].to_numpy().astype(np.int64)
        all_users, all_videos = eda.unique_keys(users), eda.unique_keys(videos)
        sample_users = np.sort(rng.choice(all_users, size=min(n_users, len(all_users)), replace=False))
        sample_videos = np.sort(rng.choice(all_videos, size=min(n_videos, len(all_videos)), replace=False))
        row = _positions(sample_users, users)  # (rows,) index in the sample, -1 outside it
        in_users = np.flatnonzero(row >= 0)
        col = _positions(sample_videos, videos[in_users])  # (rows of sampled users,)
        keep = col >= 0
        occupancy = np.zeros((len(sample_users), len(sample_videos)), dtype=bool)  # (users, videos)
        occupancy[row[in_users[keep]], col[keep]] = True
        row_order = np.argsort(-occupancy.sum(axis=1), kind="stable")
        col_order = np.argsort(-occupancy.sum(axis=0), kind="stable")
        ax.imshow(
            occupancy[row_order][:, col_order],
            cmap="Greys",
            aspect="auto",
            interpolation="nearest",
            vmin=0,
            vmax=1,
        )
        full_density = eda.count_unique_pairs(df) / (len(all_users) * len(all_videos))
        ax.set_title(
            f"{name}: sample {occupancy.mean():.1%} filled\n(whole matrix {full_density:.1%} of pairs)"
        )
        ax.set_xlabel(f"{len(sample_videos)} sampled videos (by occupancy)")
        ax.set_ylabel(f"{len(sample_users)} sampled users (by occupancy)")
        ax.grid(False)
    return _finish(fig, out)


def _positions(sorted_sample: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each non-negative value in the sorted sample, -1 where it is not in the sample.

    A lookup table over the id range (one gather) when ids are small, else a binary search.
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    top = int(max(values.max(), sorted_sample.max())) + 1
    if top <= eda.BITMAP_MAX_KEYS // 8:
        lookup = np.full(top, -1, dtype=np.int64)
        lookup[sorted_sample] = np.arange(len(sorted_sample))
        return lookup[values]
    where = np.minimum(np.searchsorted(sorted_sample, values), len(sorted_sample) - 1)
    return np.where(sorted_sample[where] == values, where, -1)


# -------------------------------------------------------------------------------------- preparation
def plot_split_sizes(counts: pd.DataFrame, out: str | Path | None = None) -> Figure:
    """Stacked horizontal bars of events per split method and part (train / valid / test), shares annotated."""
    eda.require_columns(counts, ["split", "part", "events"], "plot_split_sizes")
    table = counts.groupby(["split", "part"], sort=False)["events"].sum().unstack("part", fill_value=0)
    parts = [p for p in PART_ORDER if p in table.columns] + [p for p in table.columns if p not in PART_ORDER]
    table = table[parts]
    totals = table.sum(axis=1).to_numpy(dtype=np.float64)
    fig, axes = _new_figure(1, 1, panel_size=(8.0, 0.7 * len(table) + 1.6))
    ax = axes[0, 0]
    colors = palette(parts)
    left = np.zeros(len(table))
    positions = np.arange(len(table))
    for part in parts:
        values = table[part].to_numpy(dtype=np.float64)
        ax.barh(positions, values, left=left, color=colors[part], label=str(part))
        shares = np.divide(values, totals, out=np.zeros_like(values), where=totals > 0)
        for y, (x0, width, share) in enumerate(
            zip(left, values, shares, strict=True)
        ):  # splits x parts: tiny
            if share >= 0.06:
                ax.text(
                    x0 + width / 2, y, f"{share:.0%}", ha="center", va="center", fontsize=8, color="white"
                )
        left += values
    ax.set_yticks(positions, [str(s) for s in table.index])
    ax.invert_yaxis()
    ax.set_xlabel("events")
    ax.set_title("Events per split and part")
    fig.legend(loc="outside lower center", ncols=len(parts))
    return _finish(fig, out)


def plot_sequence_lengths(
    lengths: pd.Series | np.ndarray | Sequence[int] | Mapping[str, Any],
    out: str | Path | None = None,
    maxlen: int | None = None,
) -> Figure:
    """Histogram (log x) of per-user sequence lengths; ``maxlen`` marks SASRec's truncation length.

    ``lengths`` is one array-like or a mapping of dataset name to array-like.
    """
    series = dict(lengths) if isinstance(lengths, Mapping) else {"sequences": lengths}
    arrays = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in series.items()}
    if not arrays or all(len(a) == 0 for a in arrays.values()):
        raise DataValidationError("plot_sequence_lengths: no sequence lengths given")
    fig, axes = _new_figure(1, 1, panel_size=(7.0, 3.8))
    ax = axes[0, 0]
    colors = palette(list(arrays))
    bins = _log_bins(np.concatenate(list(arrays.values())))
    for name, values in arrays.items():
        label = f"{name} ({len(values):,} users, median {np.median(values):,.0f})"
        if maxlen is not None:
            label += f", {np.mean(values > maxlen):.0%} > maxlen"
        ax.hist(values, bins=bins, histtype="step", linewidth=1.6, color=colors[name], label=label)
    if maxlen is not None:
        ax.axvline(maxlen, color="#c0392b", linestyle="--", label=f"maxlen = {maxlen} (older events dropped)")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length (events per user, log scale)")
    ax.set_ylabel("users")
    ax.set_title("Sequence lengths")
    ax.legend(loc="best")
    return _finish(fig, out)


# ------------------------------------------------------------------------------------------ training
def plot_training_curves(
    log: pd.DataFrame, out: str | Path | None = None, metric: str = "valid_ndcg@10"
) -> Figure:
    """Two panels: training loss per epoch (log scale: the models' losses differ in kind) and validation
    ``metric`` (epochs without validation skipped), one line per model."""
    eda.require_columns(log, ["model", "epoch", "loss", metric], "plot_training_curves")
    fig, axes = _new_figure(1, 2)
    colors = palette(list(dict.fromkeys(log["model"])))
    for model, part in log.sort_values("epoch", kind="stable").groupby("model", sort=False):
        axes[0, 0].plot(part["epoch"], part["loss"], color=colors[model], label=str(model))
        evaluated = part.dropna(subset=[metric])
        marker = "o" if len(evaluated) <= 30 else None
        axes[0, 1].plot(
            evaluated["epoch"], evaluated[metric], marker=marker, color=colors[model], label=str(model)
        )
    axes[0, 0].set_title("Training loss (each model's own loss)")
    axes[0, 0].set_ylabel("loss")
    axes[0, 0].set_yscale("log")
    axes[0, 1].set_title(f"Validation {metric.removeprefix('valid_')}")
    axes[0, 1].set_ylabel(metric)
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 1].legend(loc="best", fontsize="small")
    return _finish(fig, out)


# ---------------------------------------------------------------------------------------- evaluation
def plot_metric_comparison(
    table: pd.DataFrame, out: str | Path | None = None, metrics: Sequence[str] | None = None, ncols: int = 3
) -> Figure:
    """Horizontal bars of each model's mean with its bootstrap confidence interval, one panel per metric.

    ``table`` has columns model, metric, mean, low, high with one row per (model, metric) (filter task and
    protocol first). Bars are sorted by mean, best at the top; a model keeps its colour across panels.
    """
    eda.require_columns(table, ["model", "metric", "mean", "low", "high"], "plot_metric_comparison")
    duplicated = table.duplicated(["model", "metric"])
    if duplicated.any():
        example = table.loc[duplicated, ["model", "metric"]].iloc[0].to_dict()
        raise DataValidationError(
            f"plot_metric_comparison: {int(duplicated.sum())} duplicate (model, metric) rows, e.g. {example}; "
            "filter the table to one task and protocol first"
        )
    chosen = list(metrics) if metrics is not None else list(dict.fromkeys(table["metric"]))
    absent = [m for m in chosen if m not in set(table["metric"])]
    if absent:
        raise ConfigError(
            f"plot_metric_comparison: metric(s) {absent} not in the table's {sorted(set(table['metric']))}"
        )
    columns = max(1, min(ncols, len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    n_models = table["model"].nunique()
    fig, axes = _new_figure(rows, columns, panel_size=(4.6, 0.32 * n_models + 1.4))
    colors = palette(list(dict.fromkeys(table["model"])))
    for ax, metric in zip(axes.flat, chosen, strict=False):
        part = table[table["metric"] == metric].sort_values("mean", kind="stable")
        means = part["mean"].to_numpy(dtype=np.float64)
        errors = np.vstack(
            [means - part["low"].to_numpy(dtype=np.float64), part["high"].to_numpy(dtype=np.float64) - means]
        )
        positions = np.arange(len(part))
        ax.barh(
            positions,
            means,
            xerr=np.clip(errors, 0, None),
            color=[colors[m] for m in part["model"]],
            capsize=3,
            error_kw={"linewidth": 1},
        )
        ax.set_yticks(positions, [str(m) for m in part["model"]])
        for y, value, high in zip(positions, means, part["high"].to_numpy(dtype=np.float64), strict=True):
            ax.text(max(value, high), y, f" {value:.3f}", va="center", fontsize=8)
        ax.set_xlim(0, max(float(np.nanmax(part["high"].to_numpy(dtype=np.float64))), 1e-9) * 1.22)
        ax.set_title(metric)
        ax.set_xlabel("mean (95% bootstrap CI)")
    _hide_unused(axes, len(chosen))
    return _finish(fig, out)


def plot_paired_differences(
    paired: pd.DataFrame, task: str, out: str | Path | None = None, metric: str | None = None
) -> Figure:
    """Forest plot of the paired differences (model minus reference) of ``metric`` on ``task``: one panel per
    reference, a dot and its 95% bootstrap interval per model, a vertical line at 0 (no difference).

    ``paired`` is :func:`sasrec.study.comparisons.paired_comparisons`' output (``Comparison.paired``);
    the rows, their order (best model first) and ``metric`` (default: the headline ``ndcg@K``, K read from
    the data) are those of :func:`sasrec.study.comparisons.paired_summary`, the table beside it. A filled dot
    is a difference whose interval excludes 0, a hollow one an indistinguishable one.
    """
    from sasrec.study.comparisons import paired_order, paired_rows

    eda.require_columns(
        paired, ["model", "reference", "metric", "task", "users", "mean_model", "difference", "low", "high"],
        "plot_paired_differences",
    )  # fmt: skip
    rows = paired_rows(paired, task, metric).dropna(subset=["difference"])
    if rows.empty:
        raise DataValidationError(
            f"plot_paired_differences: no paired differences of {metric or 'the headline metric'} on task {task!r}"
        )
    metric = str(rows["metric"].iloc[0])
    models, references = paired_order(rows)
    position = {model: len(models) - 1 - i for i, model in enumerate(models)}  # best model at the top
    colors = palette(references)
    fig, axes = _new_figure(1, len(references), panel_size=(4.2, 0.32 * len(models) + 1.5), sharey=True)
    low = float(np.nanmin(rows["low"].to_numpy(dtype=np.float64)))
    high = float(np.nanmax(rows["high"].to_numpy(dtype=np.float64)))
    margin = 0.08 * max(high - low, 1e-9)
    for ax, reference in zip(axes.flat, references, strict=True):
        ax.axvline(0.0, color="#444444", linewidth=1.0, zorder=1)
        for row in rows[rows["reference"] == reference].itertuples():  # one marker per (model, reference)
            distinct = row.low > 0 or row.high < 0
            ax.errorbar(
                [row.difference],
                [position[row.model]],
                xerr=[[max(row.difference - row.low, 0.0)], [max(row.high - row.difference, 0.0)]],
                fmt="o",
                color=colors[reference],
                markerfacecolor=colors[reference] if distinct else "white",
                capsize=3,
                zorder=3,
            )
        ax.set_xlim(min(low, 0.0) - margin, max(high, 0.0) + margin)
        ax.set_title(f"vs {reference}")
        ax.set_xlabel(f"{metric} difference (95% CI)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes[0, 0].set_yticks(np.arange(len(models)), models[::-1])
    axes[0, 0].set_ylim(-0.6, len(models) - 0.4)
    axes[0, 0].set_ylabel("model")
    fig.suptitle(
        f"Paired {metric} differences on {task}, model minus reference ({int(rows['users'].max())} users)",
        fontsize=11,
    )
    return _finish(fig, out)


def plot_by_activity(
    per_user: pd.DataFrame, out: str | Path | None = None, metric: str = "ndcg@10"
) -> Figure:
    """Mean ``metric`` per user-activity bucket, one line per model.

    ``per_user`` holds columns model, activity_bucket, ``metric``: either one row per user (then the mean
    gets a 95% normal-approximation interval and the ticks show users per bucket) or one row per bucket
    already averaged. Buckets keep their categorical order (see :func:`sasrec.eda.activity_buckets`).
    """
    eda.require_columns(per_user, ["model", "activity_bucket", metric], "plot_by_activity")
    bucket_values = per_user["activity_bucket"]
    if isinstance(bucket_values.dtype, pd.CategoricalDtype):
        present = set(bucket_values.dropna())
        order = [c for c in bucket_values.cat.categories if c in present]
    else:
        order = _natural_order(bucket_values.dropna().tolist())
    grouped = (
        per_user.dropna(subset=[metric])
        .groupby(["model", "activity_bucket"], observed=True, sort=False)[metric]
        .agg(["mean", "std", "count"])
        .reset_index()
    )
    position = {bucket: i for i, bucket in enumerate(order)}
    grouped["x"] = grouped["activity_bucket"].map(position).astype(np.float64)
    per_bucket_rows = grouped["count"].max() > 1
    fig, axes = _new_figure(1, 1, panel_size=(7.5, 4.2))
    ax = axes[0, 0]
    colors = palette(list(dict.fromkeys(per_user["model"])))
    for model, part in grouped.sort_values("x").groupby("model", sort=False):
        half_width = 1.96 * part["std"].fillna(0.0) / np.sqrt(part["count"]) if per_bucket_rows else None
        ax.errorbar(
            part["x"],
            part["mean"],
            yerr=half_width,
            marker="o",
            capsize=3,
            color=colors[model],
            label=str(model),
        )
    labels = [str(b) for b in order]
    if per_bucket_rows:
        users = grouped.groupby("activity_bucket", observed=True)["count"].max()
        labels = [f"{b}\n({int(users.get(b, 0)):,} users)" for b in order]
    ax.set_xticks(np.arange(len(order)), labels)
    ax.set_xlabel("user activity (history length)")
    ax.set_ylabel(f"mean {metric}")
    ax.set_title(f"{metric} by user activity")
    ax.legend(loc="best", fontsize=8)
    return _finish(fig, out)


def plot_sampled_vs_full(
    table: pd.DataFrame, out: str | Path | None = None, metric: str = "ndcg@10"
) -> Figure:
    """Paired dots per model: ``metric`` under the sampled protocol (100 negatives) and under full ranking.

    Sampled metrics are inflated and can reorder models (Krichene & Rendle, KDD 2020); the ranks under
    each protocol are printed beside the model names and Kendall's tau between them in the title.
    """
    from scipy.stats import kendalltau

    eda.require_columns(table, ["model", "protocol", metric], "plot_sampled_vs_full")
    wide = table.pivot_table(index="model", columns="protocol", values=metric, aggfunc="mean")
    missing = [p for p in ("sampled", "full") if p not in wide.columns]
    if missing:
        raise DataValidationError(
            f"plot_sampled_vs_full: protocol(s) {missing} absent; expected 'sampled' and 'full', got {list(wide.columns)}"
        )
    wide = wide[["sampled", "full"]].dropna().sort_values("full", kind="stable")
    if wide.empty:
        raise DataValidationError("plot_sampled_vs_full: no model has both a 'sampled' and a 'full' value")
    rank_sampled = wide["sampled"].rank(ascending=False, method="min").astype(int)
    rank_full = wide["full"].rank(ascending=False, method="min").astype(int)
    fig, axes = _new_figure(1, 1, panel_size=(7.5, 0.4 * len(wide) + 1.6))
    ax = axes[0, 0]
    positions = np.arange(len(wide))
    ax.hlines(positions, wide["full"], wide["sampled"], color="#999999", linewidth=1.5)
    ax.scatter(wide["sampled"], positions, color=SAMPLED_COLOR, zorder=3, label="sampled (100 negatives)")
    ax.scatter(wide["full"], positions, color=FULL_COLOR, zorder=3, label="full ranking")
    labels = [
        f"{model}  (rank {s} → {f})" for model, s, f in zip(wide.index, rank_sampled, rank_full, strict=True)
    ]
    ax.set_yticks(positions, labels)
    ax.set_xlim(0, max(1.0, float(wide.to_numpy().max()) * 1.05))
    title = f"{metric}: sampled vs full ranking"
    if len(wide) >= 2:
        tau = kendalltau(wide["sampled"], wide["full"]).statistic
        title += f" (Kendall's τ of rankings {tau:.2f})"
    ax.set_title(title)
    ax.set_xlabel(metric)
    ax.set_ylabel("model (rank: sampled → full)")
    fig.legend(loc="outside lower center", ncols=2)
    return _finish(fig, out)


# ------------------------------------------------------------------------------------ cross-dataset
def plot_cross_dataset(
    table: pd.DataFrame,
    out: str | Path | None = None,
    kendall_tau: float | None = None,
    oracle: float | None = None,
) -> Figure:
    """Scatter of each model's NDCG on the big matrix's hold-out (x) and on the fully observed small matrix (y).

    The KuaiRec paper's point (Gao et al. 2022): rankings from the sparse, exposure-biased big matrix can
    disagree with the unbiased small-matrix ones. ``kendall_tau`` (rank agreement) is annotated; ``oracle``
    draws the small-matrix oracle level.
    """
    eda.require_columns(table, ["model", "big_holdout_ndcg", "small_ndcg"], "plot_cross_dataset")
    if oracle is None and (table["model"] == "oracle").any():  # the oracle has no big hold-out value
        oracle = float(table.loc[table["model"] == "oracle", "small_ndcg"].iloc[0])
    table = table[table["model"] != "oracle"].dropna(subset=["big_holdout_ndcg", "small_ndcg"])
    fig, axes = _new_figure(1, 1, panel_size=(6.5, 5.0))
    ax = axes[0, 0]
    colors = palette(list(dict.fromkeys(table["model"])))
    x = table["big_holdout_ndcg"].to_numpy(dtype=np.float64)
    y = table["small_ndcg"].to_numpy(dtype=np.float64)
    ax.scatter(x, y, c=[colors[m] for m in table["model"]], s=45, zorder=3)
    order = np.argsort(y)  # alternate label sides along the small-matrix ranking to limit overlaps
    for position, index in enumerate(order):
        side = 1 if position % 2 == 0 else -1
        ax.annotate(
            str(table["model"].iloc[index]),
            (x[index], y[index]),
            xytext=(6 * side, 3),
            textcoords="offset points",
            ha="left" if side > 0 else "right",
            fontsize=8,
        )
    lines = []
    if kendall_tau is not None:
        lines.append(f"Kendall's τ (rank agreement) = {kendall_tau:.2f}")
    if oracle is not None:
        lines.append(f"oracle on the small matrix: {oracle:.3f}")
    if lines:
        ax.text(
            0.03,
            0.97,
            "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
        )
    ax.set_xlim(0, max(float(np.nanmax(x)) * 1.25, 1e-6) if len(x) else 1.0)
    ax.set_ylim(0, max(float(np.nanmax(y)) * 1.3, 1e-6) if len(y) else 1.0)
    ax.set_xlabel("NDCG@10, big-matrix hold-out")
    ax.set_ylabel("NDCG@10, small matrix (fully observed)")
    ax.set_title("Big hold-out vs small matrix: NDCG@10 of each model")
    return _finish(fig, out)


# -------------------------------------------------------------------------------------- experiments
def plot_grid_effects(
    results: pd.DataFrame,
    metric: str = "valid_ndcg@10",
    out: str | Path | None = None,
    params: Sequence[str] | None = None,
    ncols: int = 3,
) -> Figure:
    """One panel per hyperparameter: ``metric`` of every run per value (box plot plus the runs as dots).

    ``results`` has one row per run with hyperparameter columns among lr, maxlen, num_blocks,
    dropout_rate, num_epochs, variant. By default every such column that varies is shown (all present
    ones when none varies); dots are coloured by variant when that column exists.
    """
    eda.require_columns(results, [metric], "plot_grid_effects")
    if params is None:
        present = [p for p in GRID_PARAMETERS if p in results.columns]
        varying = [p for p in present if results[p].nunique(dropna=False) > 1]
        chosen = varying or present
    else:
        chosen = list(params)
    absent = [p for p in chosen if p not in results.columns]
    if absent or not chosen:
        raise DataValidationError(
            f"plot_grid_effects: hyperparameter column(s) {absent or list(GRID_PARAMETERS)} absent; "
            f"results has {list(results.columns)}"
        )
    runs = results.dropna(subset=[metric])
    columns = max(1, min(ncols, len(chosen)))
    rows = math.ceil(len(chosen) / columns)
    fig, axes = _new_figure(rows, columns, panel_size=(4.2, 3.4), sharey=True)
    rng = np.random.default_rng(0)
    by_variant = "variant" in runs.columns
    colors = palette(list(dict.fromkeys(runs["variant"]))) if by_variant else {}
    for ax, param in zip(axes.flat, chosen, strict=False):
        labels = runs[param].astype(str)
        order = _natural_order(runs[param].tolist())
        order_labels = [str(v) for v in order]
        groups = [runs.loc[labels == label, metric].to_numpy(dtype=np.float64) for label in order_labels]
        ax.boxplot(
            groups, positions=np.arange(len(groups)), widths=0.55, showfliers=False, tick_labels=order_labels
        )
        x = labels.map({label: i for i, label in enumerate(order_labels)}).to_numpy(dtype=np.float64)
        x = x + rng.uniform(-0.15, 0.15, size=len(x))
        point_colors = (
            [colors[v] for v in runs["variant"]] if by_variant and param != "variant" else "#333333"
        )
        ax.scatter(x, runs[metric], s=14, alpha=0.8, c=point_colors, zorder=3)
        ax.set_xlabel(param)
        ax.set_title(f"{metric} by {param}")
        ax.tick_params(axis="x", rotation=30 if max(len(s) for s in order_labels) > 5 else 0)
    axes[0, 0].set_ylabel(metric)
    if by_variant and any(p != "variant" for p in chosen):
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", linestyle="", color=c, label=str(v)) for v, c in colors.items()]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), title="variant")
    _hide_unused(axes, len(chosen))
    return _finish(fig, out)


__all__ = [
    "GRID_PARAMETERS",
    "PNG_DPI",
    "figure_path",
    "palette",
    "plot_by_activity",
    "plot_cross_dataset",
    "plot_daily_activity",
    "plot_density",
    "plot_grid_effects",
    "plot_interaction_distributions",
    "plot_metric_comparison",
    "plot_paired_differences",
    "plot_sampled_vs_full",
    "plot_sequence_lengths",
    "plot_split_sizes",
    "plot_tag_frequencies",
    "plot_training_curves",
    "plot_watch_ratio",
    "save_figure",
    "set_style",
]


# -------------------------------------------------------------------------------------------- tuning
def _model_panels(
    frame: pd.DataFrame, models: Sequence[str] | None, caller: str
) -> tuple[list[str], Figure, np.ndarray]:
    """The models to show (``models``, default every model of ``frame`` in order) and one panel each, three
    to a row.

    Raises:
        ConfigError: no model to show (naming ``caller``).
    """
    names = list(models) if models is not None else list(dict.fromkeys(frame["model"]))
    if not names:
        raise ConfigError(f"{caller}: no model to show")
    ncols = min(3, len(names))
    fig, axes = _new_figure(math.ceil(len(names) / ncols), ncols, panel_size=(4.2, 3.2))
    return names, fig, axes


def plot_tuning_history(
    trials: pd.DataFrame, models: Sequence[str] | None = None, out: str | Path | None = None
) -> Figure:
    """Optuna's optimisation history, one panel per model: each complete trial's validation value, the best
    value so far, and a grey line at each pruned trial (it has no final value).

    Args:
        trials: rows of :func:`sasrec.study.tuning.trials_frame` (model, number, state, value, best_so_far).
        models: the models to show, in order (default: every model of ``trials``).
    """
    eda.require_columns(trials, ["model", "number", "state", "value", "best_so_far"], "plot_tuning_history")
    names, fig, axes = _model_panels(trials, models, "plot_tuning_history")
    for ax, name in zip(axes.flat, names, strict=False):
        part = trials[trials["model"] == name].sort_values("number", kind="stable")
        complete = part[part["state"] == "COMPLETE"]
        pruned = part[part["state"] == "PRUNED"]
        ax.scatter(complete["number"], complete["value"], s=18, color="#1f77b4", label="complete", zorder=3)
        for i, number in enumerate(pruned["number"]):  # pruned trials have no final value: a grey line
            ax.axvline(number, color="#cccccc", linewidth=0.8, zorder=1, label="pruned" if i == 0 else None)
        ax.step(part["number"], part["best_so_far"], where="post", color="#d62728", label="best so far")
        ax.set_title(f"{name} ({len(complete)} complete, {len(pruned)} pruned)")
        ax.set_xlabel("trial")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0, 0].set_ylabel("validation value")
    axes[0, 0].legend(loc="best", fontsize="small")
    _hide_unused(axes, len(names))
    return _finish(fig, out)


def plot_param_importance(
    importance: pd.DataFrame, models: Sequence[str] | None = None, out: str | Path | None = None
) -> Figure:
    """fANOVA importance of each searched parameter, one panel per model (a model with fewer than two complete
    trials or no varied parameter has no row and shows a note instead).

    Args:
        importance: rows of :func:`sasrec.study.tuning.importances` (model, param, importance).
        models: the models to show, in order (default: every model of ``importance``).
    """
    eda.require_columns(importance, ["model", "param", "importance"], "plot_param_importance")
    names, fig, axes = _model_panels(importance, models, "plot_param_importance")
    for ax, name in zip(axes.flat, names, strict=False):
        part = importance[importance["model"] == name].sort_values("importance", kind="stable")
        if part.empty:
            ax.text(0.5, 0.5, "no importance: fewer than 2 complete\ntrials or no varied value", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            ax.set_axis_off()
        else:
            ax.barh(part["param"].astype(str), part["importance"], color="#1f77b4")
            ax.set_xlim(0, 1)
            ax.set_xlabel("importance (fANOVA)")
        ax.set_title(name)
    _hide_unused(axes, len(names))
    return _finish(fig, out)


__all__ += ["plot_param_importance", "plot_tuning_history"]


def plot_feature_importance(
    importance: pd.DataFrame, *, top: int = 20, out: str | Path | None = None
) -> Figure:
    """The two-stage ranker's feature importance: total gain of the ``top`` features, largest at the top.

    Args:
        importance: rows of :meth:`sasrec.models.ranker.LightGBMRanker.importance` (feature, gain).
        top: how many features to show.
    """
    eda.require_columns(importance, ["feature", "gain"], "plot_feature_importance")
    if importance.empty:
        raise ConfigError("plot_feature_importance: no feature to show")
    part = importance.sort_values("gain", ascending=False, kind="stable").head(int(top)).iloc[::-1]
    fig, axes = _new_figure(panel_size=(6.0, max(2.5, 0.28 * len(part) + 1.0)))
    ax = axes[0, 0]
    ax.barh(part["feature"].astype(str), part["gain"], color="#1f77b4")
    ax.set_xlabel("total gain (LightGBM)")
    ax.set_title("two-stage ranker: feature importance")
    return _finish(fig, out)


__all__ += ["plot_feature_importance"]


def plot_twin_differences(paired: pd.DataFrame, out: str | Path | None = None) -> Figure:
    """Feature-aware model minus its id-only twin (paired NDCG difference and 95% interval over users): one
    panel per protocol (standard, item cold-start, user cold-start), one row per architecture; a filled dot
    is a difference whose interval excludes 0.

    ``paired``: :func:`sasrec.study.preferences.twin_paired` (model, task, difference, low, high).
    """
    eda.require_columns(paired, ["model", "task", "difference", "low", "high"], "plot_twin_differences")
    rows = paired.dropna(subset=["difference"])
    if rows.empty:
        raise DataValidationError("plot_twin_differences: no paired difference to show")
    tasks = list(dict.fromkeys(rows["task"]))
    models = list(dict.fromkeys(rows["model"]))
    fig, axes = _new_figure(1, len(tasks), panel_size=(3.6, 0.45 * len(models) + 1.4), sharey=True)
    for ax, task in zip(axes.flat, tasks, strict=False):
        part = rows[rows["task"] == task]
        y = np.array([len(models) - 1 - models.index(m) for m in part["model"]])
        low, high = part["low"].to_numpy(dtype=float), part["high"].to_numpy(dtype=float)
        diff = part["difference"].to_numpy(dtype=float)
        clear = (low > 0) | (high < 0)
        ax.hlines(y, low, high, color="#1f77b4")
        ax.scatter(diff[clear], y[clear], color="#1f77b4", zorder=3)
        ax.scatter(diff[~clear], y[~clear], facecolors="white", edgecolors="#1f77b4", zorder=3)
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_title(str(task))
        ax.set_xlabel(f"{rows['metric'].iloc[0] if 'metric' in rows else 'ndcg'}: features - ids")
        ax.set_yticks(range(len(models)), models[::-1])
    _hide_unused(axes, len(tasks))
    return _finish(fig, out)


__all__ += ["plot_twin_differences"]
