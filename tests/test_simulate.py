"""Tests of the KuaiRec-shaped simulator (sasrec.simulate).

The simulator runs once at DEFAULT_SCALE (module fixture); expected figures are the real KuaiRec 2.0
values of ../shared/KUAIREC.md, written here by hand (not imported from the module under test).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from sasrec import paths
from sasrec.cli.simulate import add_parser
from sasrec.data import kuairec
from sasrec.data.simulator.api import (
    _transition_vs_popularity_ndcg,
    is_simulated,
    load_ground_truth,
    simulate,
)
from sasrec.data.simulator.calibration import DEFAULT_SCALE
from sasrec.errors import ConfigError, MissingDataError

SCALE = DEFAULT_SCALE
INTERACTION_HEADER = "user_id,video_id,play_duration,video_duration,time,date,timestamp,watch_ratio"
# Real watch_ratio statistics (KUAIREC.md, audit): share > 2, share >= 1, share < 0.5, median of rows <= 5.
REAL_WATCH_RATIO = {
    "big_matrix.csv": {"gt2": 0.0747, "ge1": 0.338, "lt05": 0.359, "median": 0.716, "gt5": 0.009},
    "small_matrix.csv": {"gt2": 0.0464, "ge1": 0.324, "lt05": 0.273, "median": 0.766, "gt5": 0.005},
}
SHANGHAI_MS = 8 * 3600 * 1000


def _read_matrix(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One simulation at DEFAULT_SCALE, seed 0, with its files read back."""
    out = tmp_path_factory.mktemp("simulated")
    summary = simulate(scale=SCALE, seed=0, out_dir=out, progress=False)
    return {
        "dir": out,
        "summary": summary,
        "big": _read_matrix(out / "big_matrix.csv"),
        "small": _read_matrix(out / "small_matrix.csv"),
    }


def _local_yyyymmdd(timestamp: np.ndarray) -> np.ndarray:
    local = pd.to_datetime(timestamp, unit="s", utc=True).tz_convert("Asia/Shanghai")
    return (local.year * 10_000 + local.month * 100 + local.day).to_numpy()


# ------------------------------------------------------------------------------------ files and format
def test_writes_every_file_with_official_headers(sim: dict[str, Any]) -> None:
    out = sim["dir"]
    for name in ("big_matrix.csv", "small_matrix.csv"):
        assert (out / name).read_text().split("\n", 1)[0] == INTERACTION_HEADER
    assert (out / "item_categories.csv").read_text().split("\n", 1)[0] == "video_id,feat"
    for name in ("kuairec_caption_category.csv", "item_daily_features.csv"):  # side files: official headers
        header = (out / name).read_text(encoding="utf-8").split("\n", 1)[0]
        assert header == ",".join(kuairec.OFFICIAL_FILES[name].column_names), name
    assert (out / "side_ground_truth.json").is_file()
    for name in ("user_features.csv", "ground_truth.parquet", "simulation.json"):
        assert (out / name).is_file()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["simulated"] is True and meta["scale"] == SCALE and meta["seed"] == 0
    assert meta["counts"]["big_rows"] == len(sim["big"])
    assert meta["counts"]["small_rows"] == len(sim["small"])
    assert "generator_version" in meta and "parameters" in meta
    assert is_simulated(out)


def test_dtypes_read_back_with_pandas(sim: dict[str, Any]) -> None:
    big, small = sim["big"], sim["small"]
    for frame in (big, small):
        for column in ("user_id", "video_id", "play_duration", "video_duration"):
            assert frame[column].dtype == np.int64, column
        assert frame["timestamp"].dtype == np.float64
        assert frame["watch_ratio"].dtype == np.float64
    assert big["date"].dtype == np.int64  # no missing dates in big_matrix
    assert small["date"].dtype == np.float64  # NaN occurs in small_matrix
    assert big["time"].notna().all()


def test_text_format_matches_real_rows(sim: dict[str, Any]) -> None:
    """Each field of a simulated row has the same textual shape as in the real big_matrix.csv."""
    patterns = {
        "user_id": r"\d+",
        "video_id": r"\d+",
        "play_duration": r"\d+",
        "video_duration": r"\d+",
        "time": r"2020-\d\d-\d\d \d\d:\d\d:\d\d\.\d{1,3}",
        "date": r"2020\d{4}",
        "timestamp": r"1\d{9}\.\d{1,3}",
        "watch_ratio": r"\d+\.\d+(e-\d+)?",
    }
    row_re = re.compile("^" + ",".join(f"({p})" for p in patterns.values()) + "$")
    sample = paths.shared_sample_dir() / "big_matrix_head1000.csv"
    if sample.is_file():  # the patterns describe the real file too
        real_lines = sample.read_text().splitlines()[1:]
        assert all(row_re.match(line) for line in real_lines)
    big_lines = (sim["dir"] / "big_matrix.csv").read_text().splitlines()[1:2001]
    assert all(row_re.match(line) for line in big_lines), [ln for ln in big_lines if not row_re.match(ln)][:3]
    small_timed = patterns | {"date": r"2020\d{4}\.0"}
    small_untimed = patterns | {"time": "", "date": "", "timestamp": ""}
    small_re = [
        re.compile("^" + ",".join(f"({p})" for p in pats.values()) + "$")
        for pats in (small_timed, small_untimed)
    ]
    small_lines = (sim["dir"] / "small_matrix.csv").read_text().splitlines()[1:5001]
    assert all(small_re[0].match(line) or small_re[1].match(line) for line in small_lines)
    assert any(small_re[1].match(line) for line in small_lines)  # untimed rows: three empty fields


def test_files_pass_the_kuairec_validated_readers(sim: dict[str, Any]) -> None:
    out = sim["dir"]
    big = kuairec.read_interactions(out / "big_matrix.csv", cache=False)
    assert len(big) == len(sim["big"])
    small = kuairec.read_interactions(out / "small_matrix.csv", cache=False)
    assert small["timestamp"].isna().sum() == sim["small"]["timestamp"].isna().sum()
    categories = kuairec.read_item_categories(out / "item_categories.csv")
    tags = categories["feat"]
    assert tags.map(len).between(1, 4).all()
    assert tags.map(lambda t: len(set(t)) == len(t) and min(t) >= 0 and max(t) <= 30).all()
    assert set(np.concatenate(tags.to_numpy())) == set(range(31)) or len(categories) < 1000
    users = kuairec.read_user_features(out / "user_features.csv")
    assert len(users) == sim["summary"]["counts"]["users"]
    real = paths.shared_sample_dir() / "user_features.csv"
    if real.is_file():
        assert users.columns.tolist() == real.read_text().split("\n", 1)[0].split(",")
    assert len(users.columns) == 31


# ---------------------------------------------------------------------------------------- units, ids
def test_units_and_watch_ratio_identity(sim: dict[str, Any]) -> None:
    for frame in (sim["big"], sim["small"]):
        ratio = frame["play_duration"].to_numpy() / frame["video_duration"].to_numpy()
        np.testing.assert_allclose(frame["watch_ratio"].to_numpy(), ratio, rtol=1e-14)
        timed = frame.dropna(subset=["timestamp"]).sample(n=20_000, random_state=0)  # parsing text is slow
        unix_ms = np.rint(timed["timestamp"].to_numpy() * 1000).astype(np.int64)
        local = pd.to_datetime(timed["time"], format="%Y-%m-%d %H:%M:%S.%f")  # Asia/Shanghai wall time
        np.testing.assert_array_equal(
            local.to_numpy().astype("datetime64[ms]").astype(np.int64), unix_ms + SHANGHAI_MS
        )
        # The fraction of time is printed like the timestamp's (trailing zeros dropped, as in real rows).
        fractions = timed["time"].str.split(".").str[1]
        timestamp_text = timed["timestamp"].map(repr).str.split(".").str[1]
        assert (fractions == timestamp_text).all()
    videos = pd.concat([sim["big"], sim["small"]])[["video_id", "video_duration"]].drop_duplicates()
    assert videos["video_id"].is_unique  # one duration per video
    seconds = videos["video_duration"].to_numpy() / 1000
    assert abs(seconds.mean() / 14.2 - 1) < 0.25
    assert abs(np.median(seconds) / 9.6 - 1) < 0.25
    assert seconds.max() <= 315


def test_sizes_follow_the_scale(sim: dict[str, Any]) -> None:
    big, small = sim["big"], sim["small"]
    n_users, n_videos = round(7176 * SCALE), round(10728 * SCALE)
    np.testing.assert_array_equal(np.unique(big["user_id"]), np.arange(n_users))
    np.testing.assert_array_equal(np.unique(big["video_id"]), np.arange(n_videos))
    assert small["user_id"].nunique() == round(1411 * SCALE)
    assert small["video_id"].nunique() == round(3327 * SCALE)
    per_user = big.groupby("user_id").size()
    assert abs(per_user.mean() / (1746 * SCALE) - 1) < 0.25
    assert abs(per_user.median() / (1846 * SCALE) - 1) < 0.25
    assert abs(per_user.max() / (16015 * SCALE) - 1) < 0.25
    assert per_user.min() <= 100 * SCALE * 1.25
    assert abs(len(big) / (n_users * n_videos) - 0.163) < 0.163 * 0.25  # density about 16%


def test_small_matrix_is_a_dense_disjoint_subset(sim: dict[str, Any]) -> None:
    big, small = sim["big"], sim["small"]
    small_users, small_videos = np.unique(small["user_id"]), np.unique(small["video_id"])
    observed = len(small) / (len(small_users) * len(small_videos))
    assert 0.99 <= observed < 1.0  # blocked authors leave a few pairs missing
    assert not small.duplicated(["user_id", "video_id"]).any()
    n_videos = int(big["video_id"].max()) + 1
    big_pairs = big["user_id"].to_numpy() * n_videos + big["video_id"].to_numpy()
    small_pairs = small["user_id"].to_numpy() * n_videos + small["video_id"].to_numpy()
    assert not np.isin(small_pairs, big_pairs).any()
    assert np.isin(small_users, big["user_id"]).all() and np.isin(small_videos, big["video_id"]).all()
    for ids in (small_users, small_videos):  # spread-out subsets, not a contiguous block
        assert ids.max() - ids.min() + 1 > 1.5 * len(ids)
    assert 0 in set(big["video_id"])


# -------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("name", ["big_matrix.csv", "small_matrix.csv"])
def test_watch_ratio_calibration_within_25_percent(sim: dict[str, Any], name: str) -> None:
    wr = (sim["big"] if name == "big_matrix.csv" else sim["small"])["watch_ratio"].to_numpy()
    measured = {
        "gt2": np.mean(wr > 2),
        "ge1": np.mean(wr >= 1),
        "lt05": np.mean(wr < 0.5),
        "median": np.median(wr[wr <= 5]),
        "gt5": np.mean(wr > 5),
    }
    for key, real in REAL_WATCH_RATIO[name].items():
        assert abs(measured[key] / real - 1) < 0.25, (key, measured[key], real)
    assert 50 < wr.max() < 2000  # heavy tail: a maximum in the hundreds
    assert wr.min() >= 0


def test_untimed_small_rows(sim: dict[str, Any]) -> None:
    small = sim["small"]
    missing = small[["time", "date", "timestamp"]].isna()
    assert (missing.all(axis=1) == missing.any(axis=1)).all()  # all three missing together
    assert abs(missing["timestamp"].mean() / 0.0389 - 1) < 0.25
    assert small["watch_ratio"].notna().all()
    assert sim["big"]["timestamp"].notna().all()


def test_duplicates_repeats_and_date_mismatches_in_big(sim: dict[str, Any]) -> None:
    big = sim["big"]
    duplicate_share = big.duplicated().mean()
    assert 0.03 < duplicate_share < 0.12
    distinct = big.drop_duplicates()
    repeat = distinct.duplicated(["user_id", "video_id"], keep=False)
    assert repeat.any()
    ordered = distinct.sort_values(["user_id", "video_id", "timestamp"])
    same_pair = (ordered["user_id"].diff() == 0) & (ordered["video_id"].diff() == 0)
    gap = ordered["timestamp"].diff()
    assert (same_pair & (gap < 120)).sum() > 0  # repeat views seconds apart
    disagree = big["date"].to_numpy() != _local_yyyymmdd(big["timestamp"].to_numpy())
    assert 0 < disagree.mean() < 0.01
    small = sim["small"].dropna(subset=["timestamp"])
    assert (small["date"].to_numpy() == _local_yyyymmdd(small["timestamp"].to_numpy())).all()


def test_time_spans_and_order(sim: dict[str, Any]) -> None:
    for frame, first, last in ((sim["big"], 20200623, 20200910), (sim["small"], 20200704, 20200905)):
        timed = frame.dropna(subset=["timestamp"])
        days = _local_yyyymmdd(timed["timestamp"].to_numpy())
        assert days.min() >= first and days.max() <= last
        assert days.min() <= first + 2 and days.max() >= last - 2  # the span is covered
        assert (timed["date"] >= first).all() and (timed["date"] <= last).all()
        same_user = timed["user_id"].diff() == 0
        assert (timed["timestamp"].diff()[same_user] >= 0).all()  # time order within each user


# ------------------------------------------------------------------------------------ sequential signal
def test_transition_helper_on_hand_made_positives() -> None:
    """Hand-computed: transition NDCG@10 = (1 + 1 + 2 / log2(3)) / 4, popularity = 1 / log2(3)."""
    rows = [  # (user, video, timestamp, watch_ratio)
        (1, 0, 1.0, 3.0),
        (1, 1, 2.0, 3.0),
        (1, 4, 2.5, 0.5),  # not a positive
        (1, 2, 3.0, 3.0),
        (2, 0, 1.0, 3.0),
        (2, 1, 2.0, 3.0),
        (2, 2, 3.0, 3.0),
        (2, 4, np.nan, 9.0),  # untimed: ignored
        (3, 1, 1.0, 3.0),
        (3, 2, 2.0, 3.0),
        (3, 3, 3.0, 3.0),
        (4, 3, 1.0, 3.0),
        (4, 0, 2.0, 3.0),
        (4, 2, 3.0, 3.0),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "video_id", "timestamp", "watch_ratio"])
    result = _transition_vs_popularity_ndcg(frame.sample(frac=1.0, random_state=0))
    inv_log3 = 1 / np.log2(3)
    assert result["users"] == 4
    assert result["transition"] == pytest.approx((2 + 2 * inv_log3) / 4)
    assert result["popularity"] == pytest.approx(inv_log3)


def test_order_carries_transition_signal(sim: dict[str, Any]) -> None:
    """KUAIREC.md: on real data transition 0.193 vs popularity 0.079; the simulator must have such order."""
    result = _transition_vs_popularity_ndcg(sim["small"])
    assert result["transition"] >= 1.5 * result["popularity"]
    assert result["transition"] > 0.1
    shuffled = sim["small"].assign(timestamp=np.random.default_rng(0).permutation(sim["small"]["timestamp"]))
    assert _transition_vs_popularity_ndcg(shuffled)["transition"] < 0.5 * result["transition"]


def _primary_tags(out: Path) -> np.ndarray:
    feat = pd.read_csv(out / "item_categories.csv")["feat"]
    return feat.str.strip("[]").str.split(",").str[0].astype(int).to_numpy()


def _tag_shares(users: np.ndarray, tags: np.ndarray, n_users: int) -> np.ndarray:
    counts = np.zeros((n_users, 31))
    np.add.at(counts, (users, tags), 1.0)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


def test_taste_drifts_within_big_histories(sim: dict[str, Any]) -> None:
    """A user's tag mix differs more between the halves of the history than between interleaved rows."""
    big = sim["big"]
    tags = _primary_tags(sim["dir"])[big["video_id"].to_numpy()]
    users = big["user_id"].to_numpy()
    position = big.groupby("user_id").cumcount().to_numpy()
    length = big.groupby("user_id")["user_id"].transform("size").to_numpy()
    n_users = users.max() + 1

    def distance(mask: np.ndarray) -> float:
        first = _tag_shares(users[mask], tags[mask], n_users)
        second = _tag_shares(users[~mask], tags[~mask], n_users)
        return float(0.5 * np.abs(first - second).sum(axis=1).mean())

    assert distance(position < length / 2) > 3 * distance(position % 2 == 0)


def test_small_users_big_histories_reflect_their_tastes(sim: dict[str, Any]) -> None:
    """Tags a small user watches in big_matrix go with the tags of their positives in small_matrix."""
    big, small = sim["big"], sim["small"]
    primary = _primary_tags(sim["dir"])
    n_users = big["user_id"].max() + 1
    watched = _tag_shares(big["user_id"].to_numpy(), primary[big["video_id"].to_numpy()], n_users)
    positive = small["watch_ratio"].to_numpy() > 2
    small_users = np.unique(small["user_id"])
    liked = _tag_shares(
        small["user_id"].to_numpy()[positive], primary[small["video_id"].to_numpy()[positive]], n_users
    )

    def mean_row_correlation(a: np.ndarray, b: np.ndarray) -> float:
        a = a - a.mean(axis=0)  # remove the tags' overall frequency
        b = b - b.mean(axis=0)
        a = a - a.mean(axis=1, keepdims=True)
        b = b - b.mean(axis=1, keepdims=True)
        return float(((a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))).mean())

    matched = mean_row_correlation(watched[small_users], liked[small_users])
    shuffled = mean_row_correlation(
        watched[np.random.default_rng(0).permutation(small_users)], liked[small_users]
    )
    assert matched > 0.1 and matched > shuffled + 0.08


def test_big_matrix_popularity_is_long_tailed(sim: dict[str, Any]) -> None:
    views = sim["big"]["video_id"].value_counts().to_numpy()  # sorted, most viewed first
    assert views[: len(views) // 10].sum() > 0.2 * views.sum()  # top 10% of videos: > 20% of views
    assert views[0] > 5 * np.median(views)


# ------------------------------------------------------------------------------------------ ground truth
def test_ground_truth_covers_every_small_pair(sim: dict[str, Any]) -> None:
    truth = load_ground_truth(sim["dir"])
    assert truth.columns.tolist() == ["user_id", "video_id", "expected_watch_ratio"]
    merged = sim["small"].merge(truth, on=["user_id", "video_id"], how="outer", indicator=True)
    assert (merged["_merge"] == "both").all() and len(truth) == len(sim["small"])
    expected = merged["expected_watch_ratio"].to_numpy()
    assert np.isfinite(expected).all() and (expected > 0).all()
    # The realised labels follow the expectation: the top decile has far more positives than the bottom.
    decile = pd.qcut(expected, 10, labels=False)
    positive = merged["watch_ratio"].to_numpy() > 2
    assert positive[decile == 9].mean() > 5 * positive[decile == 0].mean()
    assert np.corrcoef(np.log(expected), np.log(merged["watch_ratio"] + 1e-3))[0, 1] > 0.4


def test_missing_ground_truth_is_a_clear_error(tmp_path: Path) -> None:
    assert not is_simulated(tmp_path)
    with pytest.raises(MissingDataError, match="ground_truth.parquet"):
        load_ground_truth(tmp_path)


# --------------------------------------------------------------------------------- determinism, CLI
def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = simulate(scale=0.02, seed=3, out_dir=tmp_path / "a", progress=False)
    simulate(scale=0.02, seed=3, out_dir=tmp_path / "b", progress=False)
    simulate(scale=0.02, seed=4, out_dir=tmp_path / "c", progress=False)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "big_matrix.csv").read_bytes() != (
        tmp_path / "c" / "big_matrix.csv"
    ).read_bytes()
    assert first["counts"]["users"] == round(7176 * 0.02)


def test_cli_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(["simulate", "--scale", "0.01", "--seed", "1", "--out", str(out)])
    assert args.func(args) == 0
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["scale"] == 0.01 and meta["seed"] == 1
    assert (out / "big_matrix.csv").is_file() and (out / "small_matrix.csv").is_file()
    assert "big_matrix" in capsys.readouterr().out


@pytest.mark.parametrize("scale", [0.0, -1.0, 5.0, float("nan")])
def test_bad_scale_is_a_config_error(tmp_path: Path, scale: float) -> None:
    with pytest.raises(ConfigError, match="scale"):
        simulate(scale=scale, out_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_bad_seed_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="seed"):
        simulate(scale=0.01, seed=-1, out_dir=tmp_path, progress=False)


def test_refuses_to_overwrite_matrices_it_did_not_write(tmp_path: Path) -> None:
    real = tmp_path / "raw"
    real.mkdir()
    (real / "big_matrix.csv").write_text(INTERACTION_HEADER + "\n")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        simulate(scale=0.01, out_dir=real, progress=False)
    assert (real / "big_matrix.csv").read_text() == INTERACTION_HEADER + "\n"
    assert sorted(p.name for p in real.iterdir()) == ["big_matrix.csv"]


def test_rerun_replaces_a_previous_simulation(tmp_path: Path) -> None:
    simulate(scale=0.01, seed=1, out_dir=tmp_path, progress=False)
    simulate(scale=0.02, seed=1, out_dir=tmp_path, progress=False)
    meta = json.loads((tmp_path / "simulation.json").read_text())
    assert meta["scale"] == 0.02
    users = pd.read_csv(tmp_path / "big_matrix.csv", usecols=["user_id"])["user_id"]
    assert users.nunique() == round(7176 * 0.02)
