"""Tests of sasrec.eda on tiny hand-made interaction frames with hand-computed expected values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sasrec.errors import ConfigError, DataValidationError, MissingDataError
from sasrec.study import eda

# 2020-07-04 16:00:00 UTC is 2020-07-05 00:00:00 in Asia/Shanghai (UTC+8).
SHANGHAI_MIDNIGHT = 1593878400.0


def make_frame(rows: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """Interactions with the loader's dtypes from (user_id, video_id, timestamp, watch_ratio) rows."""
    users, videos, stamps, ratios = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user_id": np.array(users, dtype=np.int32),
            "video_id": np.array(videos, dtype=np.int32),
            "timestamp": np.array(stamps, dtype=np.float64),
            "watch_ratio": np.array(ratios, dtype=np.float64),
        }
    )


@pytest.fixture
def big() -> pd.DataFrame:
    """3 users x 3 videos, 6 rows: one repeat (user 0, video 5), one untimed row, a gap day."""
    t = SHANGHAI_MIDNIGHT
    return make_frame(
        [
            (0, 5, t - 1, 2.5),  # 2020-07-04 23:59:59 local
            (0, 5, t + 10, 0.7),  # 2020-07-05, repeat of (0, 5)
            (0, 7, t + 100, 1.0),  # 2020-07-05
            (1, 5, t - 3600, 0.4),  # 2020-07-04
            (1, 9, np.nan, 6.0),  # untimed
            (2, 7, t + 2 * 86400, 0.9),  # 2020-07-07 (07-06 has no rows)
        ]
    )


@pytest.fixture
def small() -> pd.DataFrame:
    """Users 0, 1, 3 (3 not in big); videos 9, 7, 5 (all in big); no pair shared with big."""
    t = SHANGHAI_MIDNIGHT
    return make_frame([(0, 9, t, 1.0), (1, 7, t + 1, 3.0), (3, 5, t + 2, 0.2)])


def test_watch_ratio_shares_counts_each_threshold(big: pd.DataFrame) -> None:
    shares = eda.watch_ratio_shares(big)
    assert shares["rows"] == 6
    assert shares["gt2"] == pytest.approx(2 / 6)  # 2.5, 6.0
    assert shares["ge1"] == pytest.approx(3 / 6)  # 2.5, 1.0, 6.0
    assert shares["lt05"] == pytest.approx(1 / 6)  # 0.4
    assert shares["gt05"] == pytest.approx(5 / 6)
    assert shares["gt07"] == pytest.approx(4 / 6)  # 0.7 itself is not liked
    assert shares["gt09"] == pytest.approx(3 / 6)  # 0.9 itself is not above
    assert shares["gt5"] == pytest.approx(1 / 6)
    assert shares["median_le5"] == pytest.approx(0.9)  # median of 0.4, 0.7, 0.9, 1.0, 2.5
    assert shares["max"] == 6.0


def test_watch_ratio_shares_ignores_missing_ratio() -> None:
    frame = make_frame([(0, 1, 1.0, np.nan), (0, 2, 2.0, 3.0)])
    shares = eda.watch_ratio_shares(frame)
    assert shares["rows"] == 1
    assert shares["gt2"] == 1.0


def test_matrix_summary_density_repeats_untimed_and_span(big: pd.DataFrame) -> None:
    summary = eda.matrix_summary({"big": big}).set_index("matrix").loc["big"]
    assert summary["users"] == 3
    assert summary["videos"] == 3
    assert summary["interactions"] == 6
    assert summary["density"] == pytest.approx(6 / 9)
    assert summary["unique_pairs"] == 5
    assert summary["pair_density"] == pytest.approx(5 / 9)
    assert summary["repeat_share"] == pytest.approx(1 / 6)
    assert summary["untimed_share"] == pytest.approx(1 / 6)
    assert summary["first_day"] == "2020-07-04"
    assert summary["last_day"] == "2020-07-07"
    assert summary["span_days"] == 4


def test_daily_activity_uses_shanghai_dates_and_fills_gaps(big: pd.DataFrame) -> None:
    daily = eda.daily_activity(big)
    assert list(daily["date"].dt.strftime("%Y-%m-%d")) == [
        "2020-07-04",
        "2020-07-05",
        "2020-07-06",
        "2020-07-07",
    ]
    assert list(daily["interactions"]) == [2, 2, 0, 1]
    assert list(daily["users"]) == [2, 1, 0, 1]  # 07-04: users 0 and 1; 07-05: user 0 twice


def test_daily_activity_of_untimed_frame_is_empty() -> None:
    daily = eda.daily_activity(make_frame([(0, 1, np.nan, 1.0)]))
    assert daily.empty
    assert list(daily.columns) == ["date", "interactions", "users"]


def test_per_user_and_per_video_counts(big: pd.DataFrame) -> None:
    users = eda.per_user_counts(big)
    # interactions per user: 3, 2, 1; distinct videos: 2, 2, 1
    assert users.loc["count", "interactions"] == 3
    assert users.loc["mean", "interactions"] == pytest.approx(2.0)
    assert users.loc["min", "interactions"] == 1
    assert users.loc["max", "interactions"] == 3
    assert users.loc["mean", "distinct videos"] == pytest.approx(5 / 3)
    videos = eda.per_video_counts(big)
    # video 5: 3 rows by users 0, 1; video 7: 2 rows by users 0, 2; video 9: 1 row
    assert videos.loc["max", "interactions"] == 3
    assert videos.loc["mean", "interactions"] == pytest.approx(2.0)
    assert videos.loc["mean", "distinct users"] == pytest.approx(5 / 3)
    assert list(eda.interactions_per_user(big)) == [3, 2, 1]
    assert list(eda.interactions_per_video(big).index) == [5, 7, 9]


def test_big_vs_small_overlaps(big: pd.DataFrame, small: pd.DataFrame) -> None:
    table = eda.big_vs_small({"big": big, "small": small}).set_index("check")
    assert table.loc["small users found in big", ["count", "of"]].tolist() == [2, 3]
    assert table.loc["small users found in big", "ok"] is False
    assert table.loc["small videos found in big", ["count", "of"]].tolist() == [3, 3]
    assert table.loc["small videos found in big", "ok"] is True
    assert table.loc["small (user, video) pairs also in big", "count"] == 0
    assert table.loc["small (user, video) pairs also in big", "ok"] is True
    assert table.loc["big users also in small", "share"] == pytest.approx(2 / 3)
    # small's only day (2020-07-05) lies within big's 07-04..07-07
    assert table.loc["small days within big's time span", ["count", "of"]].tolist() == [1, 1]


def test_big_vs_small_detects_a_shared_pair(big: pd.DataFrame, small: pd.DataFrame) -> None:
    clashing = pd.concat([small, make_frame([(2, 7, SHANGHAI_MIDNIGHT, 1.0)])], ignore_index=True)
    table = eda.big_vs_small({"big": big, "small": clashing}).set_index("check")
    row = table.loc["small (user, video) pairs also in big"]
    assert (row["count"], row["of"], row["ok"]) == (1, 4, False)


def test_big_vs_small_needs_both_names(big: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="'big' and 'small'"):
        eda.big_vs_small({"big": big})


def test_tag_frequencies_counts_videos_and_interactions(big: pd.DataFrame) -> None:
    categories = pd.DataFrame(
        {"video_id": np.array([5, 7, 9, 11], dtype=np.int32), "feat": [[1, 2], [2], [0, 2, 2], [1]]}
    )
    tags = eda.tag_frequencies(categories, big).set_index("tag")
    assert list(tags.index) == [0, 1, 2]
    assert list(tags["videos"]) == [1, 2, 3]  # the duplicated tag 2 of video 9 counts once
    assert list(tags["video_share"]) == pytest.approx([1 / 4, 2 / 4, 3 / 4])
    # rows per video: 5 -> 3, 7 -> 2, 9 -> 1, 11 -> 0
    assert list(tags["interactions"]) == [1, 3, 6]
    assert list(tags["interaction_share"]) == pytest.approx([1 / 6, 3 / 6, 6 / 6])
    assert "interactions" not in eda.tag_frequencies(categories).columns


def test_tag_frequencies_rejects_unparsed_lists() -> None:
    categories = pd.DataFrame({"video_id": [0], "feat": ["[27, 9]"]})
    with pytest.raises(DataValidationError, match="feat"):
        eda.tag_frequencies(categories)


def test_side_information_summary() -> None:
    features = pd.DataFrame({"degree": [1.0, 2.0, 2.0, np.nan], "kind": ["x", "x", "y", "x"]})
    table = eda.side_information_summary(features).set_index("column")
    assert table.loc["degree", "distinct"] == 2
    assert table.loc["degree", "missing_share"] == pytest.approx(0.25)
    assert table.loc["degree", "most_common"] == 2.0
    assert table.loc["degree", "most_common_share"] == pytest.approx(0.5)
    assert (table.loc["degree", "min"], table.loc["degree", "max"]) == (1.0, 2.0)
    assert table.loc["kind", "most_common"] == "x"
    assert table.loc["kind", "most_common_share"] == pytest.approx(0.75)
    assert np.isnan(table.loc["kind", "min"])


def test_compare_with_real_lines_up_published_figures(big: pd.DataFrame) -> None:
    table = eda.compare_with_real({"small": big, "other": big})
    assert list(table.columns) == ["statistic", "matrix", "this data", "real KuaiRec", "relative difference"]
    users = table[(table["matrix"] == "small") & (table["statistic"] == "users")].iloc[0]
    assert users["this data"] == 3
    assert users["real KuaiRec"] == 1411
    assert users["relative difference"] == pytest.approx((3 - 1411) / 1411)
    positives = table[(table["matrix"] == "small") & (table["statistic"] == "share watch_ratio > 2")].iloc[0]
    assert positives["real KuaiRec"] == pytest.approx(217_175 / 4_676_570)
    assert positives["this data"] == pytest.approx(2 / 6)
    median = table[
        (table["matrix"] == "small") & (table["statistic"] == "interactions per user: median")
    ].iloc[0]
    assert median["real KuaiRec"] is None  # not published
    assert np.isnan(median["relative difference"])
    assert table.loc[table["matrix"] == "other", "real KuaiRec"].isna().all()


def test_real_stats_are_consistent() -> None:
    for stats in eda.REAL_STATS.values():
        assert stats["density"] == pytest.approx(stats["interactions"] / (stats["users"] * stats["videos"]))
        assert stats["user_mean"] == pytest.approx(stats["interactions"] / stats["users"])
        assert set(stats) == set(eda.STAT_LABELS)
    assert eda.REAL_STATS["big"]["density"] == pytest.approx(0.163, abs=5e-4)


def test_activity_buckets_quantiles_and_labels() -> None:
    history = pd.Series([1, 2, 3, 4, 5, 6, 7, 8], index=list("abcdefgh"))
    buckets = eda.activity_buckets(history)
    # quartiles 2.75, 4.5, 6.25 -> integer edges 2, 4, 6
    assert list(buckets.cat.categories) == ["1-2", "3-4", "5-6", "7-8"]
    assert buckets.tolist() == ["1-2", "1-2", "3-4", "3-4", "5-6", "5-6", "7-8", "7-8"]
    assert buckets.cat.ordered
    assert list(buckets.index) == list("abcdefgh")


def test_activity_buckets_explicit_edges_and_ties() -> None:
    buckets = eda.activity_buckets(pd.Series([3, 10, 11, np.nan]), edges=[0, 10, np.inf])
    assert buckets.iloc[:3].tolist() == ["1-10", "1-10", ">= 11"]
    assert pd.isna(buckets.iloc[3])
    same = eda.activity_buckets(pd.Series([5, 5, 5]))
    assert same.tolist() == ["5", "5", "5"]
    with pytest.raises(ConfigError, match="increasing"):
        eda.activity_buckets(pd.Series([1, 2]), edges=[5, 1])


def test_missing_columns_are_reported(big: pd.DataFrame) -> None:
    with pytest.raises(DataValidationError, match="watch_ratio"):
        eda.matrix_summary({"big": big.drop(columns="watch_ratio")})


def write_matrix(path: Path, frame: pd.DataFrame) -> None:
    """A KuaiRec-schema CSV (8 columns) from a (user_id, video_id, timestamp, watch_ratio) frame."""
    stamps = pd.to_datetime(frame["timestamp"], unit="s", utc=True).dt.tz_convert("Asia/Shanghai")
    full = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "video_id": frame["video_id"],
            "play_duration": (frame["watch_ratio"] * 10_000).round().astype(np.int64),
            "video_duration": np.int64(10_000),
            "time": stamps.dt.strftime("%Y-%m-%d %H:%M:%S.000"),
            "date": stamps.dt.strftime("%Y%m%d").astype(float),
            "timestamp": frame["timestamp"],
            "watch_ratio": frame["watch_ratio"],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    full.to_csv(path, index=False)


def test_load_matrices_reads_and_reports_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, big: pd.DataFrame, small: pd.DataFrame
) -> None:
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path))  # any cache lands under tmp_path
    folder = tmp_path / "kuairec"
    timed_big = big.dropna(subset=["timestamp"]).reset_index(drop=True)
    write_matrix(folder / "big_matrix.csv", timed_big)
    write_matrix(folder / "small_matrix.csv", small)
    frames, reports = eda.load_matrices_with_reports(folder, cache=False)
    assert set(frames) == {"big", "small"} == set(reports)
    assert len(frames["small"]) == 3
    assert sorted(frames["small"]["user_id"].tolist()) == [0, 1, 3]
    assert eda.load_matrices(folder, names=("small",), cache=False)["small"]["video_id"].tolist() == [9, 7, 5]
    with pytest.raises(MissingDataError, match="big_matrix.csv"):
        eda.load_matrices(tmp_path / "empty", cache=False)


def test_data_source_names_real_or_simulated(tmp_path: Path, big: pd.DataFrame) -> None:
    simulate = pytest.importorskip("sasrec.data.simulator")
    real = tmp_path / "real"
    write_matrix(real / "big_matrix.csv", big.dropna(subset=["timestamp"]))
    write_matrix(real / "small_matrix.csv", big.dropna(subset=["timestamp"]))
    if simulate.is_simulated(real):
        pytest.skip("is_simulated() accepts a folder without simulation.json")
    assert eda.data_source(real) == "KuaiRec 2.0 (real)"
    with pytest.raises(MissingDataError):
        eda.data_source(tmp_path / "nothing")


def test_data_source_reads_simulation_metadata(tmp_path: Path) -> None:
    simulate = pytest.importorskip("sasrec.data.simulator")
    out = tmp_path / "sim"
    simulate.simulate(scale=0.01, seed=7, out_dir=out)
    meta = json.loads((out / "simulation.json").read_text(encoding="utf-8"))
    assert eda.data_source(out) == f"KuaiRec-shaped simulator (scale {meta['scale']}, seed {meta['seed']})"


def test_unique_keys_bitmap_and_sort_paths_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = np.array([7, 3, 7, 0, 3, 12], dtype=np.int64)
    assert eda.unique_keys(keys).tolist() == [0, 3, 7, 12]
    monkeypatch.setattr(eda, "BITMAP_MAX_KEYS", 5)  # force the sort fallback
    assert eda.unique_keys(keys).tolist() == [0, 3, 7, 12]
    assert eda.unique_keys(np.zeros(0, dtype=np.int64)).tolist() == []


def test_count_unique_pairs(big: pd.DataFrame) -> None:
    assert eda.count_unique_pairs(big) == 5


@pytest.fixture
def sample_dir() -> Path:
    from sasrec import paths

    folder = paths.shared_sample_dir()
    if not (folder / "big_matrix_head1000.csv").is_file():
        pytest.skip(f"real KuaiRec sample files absent from {folder}")
    return folder


def test_daily_activity_matches_the_real_date_column(sample_dir: Path) -> None:
    from sasrec.data.kuairec.cleaning import load_interactions

    frame, _ = load_interactions(sample_dir / "big_matrix_head1000.csv", cache=False)
    daily = eda.daily_activity(frame)
    by_date = frame["date"].dropna().astype(np.int64).value_counts()
    ours = daily.set_index(daily["date"].dt.strftime("%Y%m%d").astype(np.int64))["interactions"]
    ours = ours[ours > 0]
    assert ours.sort_index().to_dict() == by_date.sort_index().to_dict()


def test_tag_frequencies_on_the_real_categories(sample_dir: Path) -> None:
    from sasrec.data.kuairec.readers import read_item_categories

    categories = read_item_categories(sample_dir / "item_categories.csv")
    tags = eda.tag_frequencies(categories)
    assert len(categories) == 10_728
    assert tags["tag"].tolist() == list(range(31))
    assert tags["videos"].sum() == len(categories.explode("feat").drop_duplicates(["video_id", "feat"]))
    assert tags["video_share"].iloc[0] == pytest.approx(tags["videos"].iloc[0] / 10_728)
