"""Tests of sasrec.plots: every figure function runs on tiny data, returns a Figure and saves a PNG atomically."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sasrec.errors import ConfigError, DataValidationError  # noqa: E402
from sasrec.study import eda, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1593878400.0  # 2020-07-05 00:00 Asia/Shanghai


def interactions(n_users: int, n_videos: int, rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, rows).astype(np.int32),
            "video_id": rng.integers(0, n_videos, rows).astype(np.int32),
            "timestamp": T0 + rng.uniform(0, 5 * 86400, rows),
            "watch_ratio": rng.lognormal(-0.3, 0.8, rows),
        }
    )


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {"big": interactions(30, 40, 400, 0), "small": interactions(10, 12, 110, 1)}


def assert_saved(fig: Figure, out: Path) -> None:
    """A Figure was returned and ``out`` holds a non-empty PNG with no temporary file left beside it."""
    assert isinstance(fig, Figure)
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


def metric_table() -> pd.DataFrame:
    rows = []
    for metric, scale in (("ndcg@10", 1.0), ("recall@10", 1.5)):
        for model, value in (("sasrec", 0.2), ("popularity", 0.08), ("transition", 0.19)):
            mean = value * scale
            rows.append(
                {"model": model, "metric": metric, "mean": mean, "low": mean - 0.01, "high": mean + 0.02}
            )
    return pd.DataFrame(rows)


CASES: dict[str, Callable[[dict[str, pd.DataFrame]], Figure]] = {}


def case(name: str):
    def register(builder: Callable[[dict[str, pd.DataFrame], Path], Figure]):
        CASES[name] = builder
        return builder

    return register


@case("interaction_distributions")
def _interaction_distributions(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    return plots.plot_interaction_distributions(frames, out=out)


@case("watch_ratio")
def _watch_ratio(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    return plots.plot_watch_ratio(frames, out=out)


@case("daily_activity")
def _daily_activity(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    return plots.plot_daily_activity({name: eda.daily_activity(df) for name, df in frames.items()}, out=out)


@case("tag_frequencies")
def _tag_frequencies(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    categories = pd.DataFrame(
        {"video_id": np.arange(40, dtype=np.int32), "feat": [[i % 5, 7] for i in range(40)]}
    )
    return plots.plot_tag_frequencies(eda.tag_frequencies(categories, frames["big"]), out=out)


@case("density")
def _density(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    return plots.plot_density(frames, out=out, n_users=8, n_videos=10)


@case("split_sizes")
def _split_sizes(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    counts = pd.DataFrame(
        {
            "split": ["temporal"] * 3 + ["leave_one_out"] * 3,
            "part": ["train", "valid", "test"] * 2,
            "events": [800, 100, 100, 940, 30, 30],
        }
    )
    return plots.plot_split_sizes(counts, out=out)


@case("sequence_lengths")
def _sequence_lengths(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    lengths = {"big": np.array([3, 10, 50, 300, 1200]), "small": np.array([200, 210, 220])}
    return plots.plot_sequence_lengths(lengths, out=out, maxlen=200)


@case("training_curves")
def _training_curves(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    log = pd.DataFrame(
        {
            "model": ["sasrec_bce"] * 4 + ["sasrec_ce"] * 4,
            "epoch": [1, 2, 3, 4] * 2,
            "loss": [1.0, 0.8, 0.7, 0.65, 8.0, 7.0, 6.5, 6.3],
            "valid_ndcg@10": [np.nan, 0.1, np.nan, 0.12, np.nan, 0.15, np.nan, 0.2],
        }
    )
    return plots.plot_training_curves(log, out=out)


@case("metric_comparison")
def _metric_comparison(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    return plots.plot_metric_comparison(metric_table(), out=out)


@case("by_activity_per_user")
def _by_activity_per_user(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    rng = np.random.default_rng(2)
    history = pd.Series(rng.integers(1, 100, 40))
    per_user = pd.DataFrame(
        {
            "model": ["sasrec"] * 40 + ["popularity"] * 40,
            "activity_bucket": pd.concat([eda.activity_buckets(history)] * 2, ignore_index=True),
            "ndcg@10": rng.uniform(0, 1, 80),
        }
    )
    return plots.plot_by_activity(per_user, out=out)


@case("by_activity_means")
def _by_activity_means(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    means = pd.DataFrame(
        {
            "model": ["sasrec"] * 3 + ["popularity"] * 3,
            "activity_bucket": ["13-40", "1-12", "41-90"] * 2,
            "ndcg@10": [0.2, 0.1, 0.3, 0.05, 0.06, 0.07],
        }
    )
    return plots.plot_by_activity(means, out=out)


def paired_table() -> pd.DataFrame:
    """Paired ndcg@5 differences of three models against markov and pop (each reference is also a model)."""
    columns = ["model", "reference", "metric", "users", "mean_model", "difference", "low", "high", "p_value"]
    rows = [
        ("sasrec", "markov", "ndcg@5", 40, 0.30, 0.0755, 0.04, 0.11, 0.002),
        ("pop", "markov", "ndcg@5", 40, 0.2045, -0.02, -0.045, 0.005, 0.12),
        ("sasrec", "pop", "ndcg@5", 40, 0.30, 0.0955, 0.0622, 0.1285, 0.0001),
        ("markov", "pop", "ndcg@5", 40, 0.2245, 0.02, -0.005, 0.045, 0.12),
        ("sasrec", "pop", "recall@5", 40, 0.5, 0.9, 0.8, 1.0, 0.5),
    ]
    return pd.DataFrame(rows, columns=columns).assign(task="test")


@case("paired_differences")
def _paired_differences(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    return plots.plot_paired_differences(paired_table(), "test", out=out)


@case("sampled_vs_full")
def _sampled_vs_full(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    table = pd.DataFrame(
        {
            "model": ["sasrec", "sasrec", "popularity", "popularity", "transition", "transition"],
            "protocol": ["sampled", "full"] * 3,
            "ndcg@10": [0.95, 0.2, 0.97, 0.08, 0.9, 0.19],
        }
    )
    return plots.plot_sampled_vs_full(table, out=out)


@case("cross_dataset")
def _cross_dataset(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    table = pd.DataFrame(
        {
            "model": ["sasrec", "popularity", "ease"],
            "big_holdout_ndcg": [0.1, 0.05, 0.07],
            "small_ndcg": [0.2, 0.3, 0.1],
        }
    )
    return plots.plot_cross_dataset(table, out=out, kendall_tau=-0.33, oracle=0.6)


@case("grid_effects")
def _grid_effects(frames: dict[str, pd.DataFrame], out: Path) -> Figure:
    grid = pd.DataFrame(
        {
            "lr": [1e-3, 1e-3, 1e-4, 1e-4],
            "maxlen": [50, 200, 50, 200],
            "num_blocks": [2, 2, 2, 2],
            "dropout_rate": [0.2, 0.5, 0.2, 0.5],
            "num_epochs": [10, 10, 20, 20],
            "variant": ["bce", "ce", "bce", "ce"],
            "valid_ndcg@10": [0.1, 0.2, 0.05, np.nan],
        }
    )
    return plots.plot_grid_effects(grid, out=out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_plot_returns_figure_and_saves_png(
    name: str, frames: dict[str, pd.DataFrame], tmp_path: Path
) -> None:
    out = tmp_path / "figures" / f"{name}.png"
    fig = CASES[name](frames, out)
    assert_saved(fig, out)
    assert fig.axes, "the figure has no axes"


def test_without_out_nothing_is_written(frames: dict[str, pd.DataFrame], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path))
    fig = plots.plot_watch_ratio(frames)
    assert isinstance(fig, Figure)
    assert list(tmp_path.iterdir()) == []


def test_figure_path_is_under_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path))
    assert plots.figure_path("watch_ratio") == tmp_path.resolve() / "reports" / "figures" / "watch_ratio.png"
    with pytest.raises(ConfigError):
        plots.figure_path("../escape")


def test_failed_save_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fig = Figure()
    fig.subplots().plot([0, 1], [0, 1])
    out = tmp_path / "broken.png"

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        plots.save_figure(fig, out)
    assert list(tmp_path.iterdir()) == []


def test_metric_comparison_sorts_bars_and_keeps_model_colours() -> None:
    fig = plots.plot_metric_comparison(metric_table())
    first, second = fig.axes[:2]
    assert [t.get_text() for t in first.get_yticklabels()] == ["popularity", "transition", "sasrec"]
    colour = {
        t.get_text(): bar.get_facecolor()
        for t, bar in zip(first.get_yticklabels(), first.patches, strict=True)
    }
    colour2 = {
        t.get_text(): bar.get_facecolor()
        for t, bar in zip(second.get_yticklabels(), second.patches, strict=True)
    }
    assert colour == colour2
    assert first.get_title() == "ndcg@10"


def test_metric_comparison_rejects_duplicates() -> None:
    doubled = pd.concat([metric_table(), metric_table()], ignore_index=True)
    with pytest.raises(DataValidationError, match="duplicate"):
        plots.plot_metric_comparison(doubled)


def test_sampled_vs_full_shows_rank_changes() -> None:
    table = pd.DataFrame(
        {
            "model": ["a", "a", "b", "b"],
            "protocol": ["sampled", "full", "sampled", "full"],
            "ndcg@10": [0.9, 0.1, 0.8, 0.3],
        }
    )
    ax = plots.plot_sampled_vs_full(table).axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["a  (rank 1 → 2)", "b  (rank 2 → 1)"]  # sorted by full ranking, best at the top
    assert "-1.00" in ax.get_title()
    with pytest.raises(DataValidationError, match="sampled"):
        plots.plot_sampled_vs_full(table[table["protocol"] == "full"])


def test_by_activity_orders_buckets_naturally() -> None:
    means = pd.DataFrame(
        {"model": ["m"] * 3, "activity_bucket": ["13-40", "1-12", "41-90"], "ndcg@10": [0.2, 0.1, 0.3]}
    )
    ax = plots.plot_by_activity(means).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1-12", "13-40", "41-90"]
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [0.1, 0.2, 0.3]


def test_grid_effects_has_one_panel_per_hyperparameter() -> None:
    grid = pd.DataFrame({"lr": [1e-3, 1e-4], "maxlen": [50, 200], "valid_ndcg@10": [0.1, 0.2]})
    fig = plots.plot_grid_effects(grid)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_xlabel() for ax in visible] == ["lr", "maxlen"]
    with pytest.raises(DataValidationError, match="dropout_rate"):
        plots.plot_grid_effects(grid, params=["dropout_rate"])


def test_missing_columns_raise_data_validation_error() -> None:
    with pytest.raises(DataValidationError, match="valid_ndcg@10"):
        plots.plot_training_curves(pd.DataFrame({"model": ["a"], "epoch": [1], "loss": [1.0]}))


def test_paired_differences_draw_one_marker_per_model_and_reference(tmp_path: Path) -> None:
    out = tmp_path / "paired.png"
    fig = plots.plot_paired_differences(paired_table(), "test", out=out)
    assert_saved(fig, out)
    assert [ax.get_title() for ax in fig.axes] == ["vs markov", "vs pop"]  # one panel per reference
    markers = {ax.get_title(): [c.lines[0].get_xdata()[0] for c in ax.containers] for ax in fig.axes}
    assert markers == {"vs markov": [0.0755, -0.02], "vs pop": [0.0955, 0.02]}  # ndcg@5 rows only
    for ax in fig.axes:
        assert any(list(line.get_xdata()) == [0.0, 0.0] for line in ax.get_lines())  # the line at 0
        assert ax.get_xlabel() == "ndcg@5 difference (95% CI)"
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks == ["pop", "markov", "sasrec"]  # bottom to top: the best model at the top
    with pytest.raises(DataValidationError, match="valid"):
        plots.plot_paired_differences(paired_table(), "valid")
