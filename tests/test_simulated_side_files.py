"""Tests of the simulator's caption and daily-statistics files and of the ground truth of their signal.

The simulator runs once at a small scale (module fixture); every file is read back with the project's
official readers, and the signal is measured from the files themselves (out of sample where it matters).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from sasrec.data import kuairec
from sasrec.data.simulator import MIN_SCALE, load_side_ground_truth, simulate
from sasrec.errors import MissingDataError

SCALE = 0.1
EXISTING_FILES = (
    "big_matrix.csv",
    "small_matrix.csv",
    "item_categories.csv",
    "user_features.csv",
    "ground_truth.parquet",
)
SIDE_FILES = ("kuairec_caption_category.csv", "item_daily_features.csv", "side_ground_truth.json")
CAPTION_COLUMNS = [
    "video_id",
    "manual_cover_text",
    "caption",
    "topic_tag",
    "first_level_category_id",
    "first_level_category_name",
    "second_level_category_id",
    "second_level_category_name",
    "third_level_category_id",
    "third_level_category_name",
]


@pytest.fixture(scope="module")
def side(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One simulation with its side files read back through the official readers."""
    out = tmp_path_factory.mktemp("side")
    summary = simulate(scale=SCALE, seed=0, out_dir=out, progress=False)
    tags = kuairec.read_item_categories(out / "item_categories.csv")
    return {
        "dir": out,
        "summary": summary,
        "captions": kuairec.read_captions(out / "kuairec_caption_category.csv"),
        "daily": kuairec.read_item_daily_features(out / "item_daily_features.csv"),
        "big": pd.read_csv(out / "big_matrix.csv"),
        "tags": tags,
        "main": tags["feat"].str[0].to_numpy(dtype=np.int64),
        "truth": load_side_ground_truth(out),
        "meta": json.loads((out / "simulation.json").read_text()),
    }


def _majority_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> float:
    """Accuracy on the test half of predicting y by the most frequent y of x in the train half."""
    table = pd.crosstab(train_x, train_y)
    best = table.idxmax(axis=1)
    fallback = pd.Series(train_y).mode()[0]
    predicted = pd.Series(test_x).map(best).fillna(fallback).to_numpy()
    return float(np.mean(predicted == test_y))


# ---------------------------------------------------------------------------------- files and readers
def test_side_files_parse_with_the_official_readers(side: dict[str, Any]) -> None:
    n_videos = side["summary"]["counts"]["videos"]
    captions, daily = side["captions"], side["daily"]
    assert captions.columns.tolist() == CAPTION_COLUMNS
    assert (captions["video_id"].to_numpy() == np.arange(n_videos)).all()  # one row per video, in order
    assert daily.columns.tolist() == kuairec.OFFICIAL_FILES["item_daily_features.csv"].column_names
    assert set(daily["video_id"]) == set(range(n_videos))
    for name in SIDE_FILES:
        assert (side["dir"] / name).is_file()
    assert side["meta"]["side_files"]["files"] == list(SIDE_FILES)
    assert side["meta"]["side_files"]["counts"] == {"caption_rows": n_videos, "item_daily_rows": len(daily)}


def test_validate_passes_with_row_count_warnings_only(side: dict[str, Any]) -> None:
    summary = kuairec.validate_directory(side["dir"], cache=False)
    assert summary.invalid == []
    assert summary.absent == ["social_network.csv"]
    assert all("the official file has" in warning for warning in summary.warnings)


def test_captions_hold_commas_quotes_newlines_and_carriage_returns(side: dict[str, Any]) -> None:
    captions = side["captions"]
    text = captions["caption"].dropna()
    for mark in (",", '"', "\n", "\r"):
        assert text.str.contains(mark, regex=False).any(), repr(mark)
    raw = (side["dir"] / "kuairec_caption_category.csv").read_bytes()
    assert raw.count(b"\n") > len(captions) + 1  # newlines inside quoted captions, still one row per video
    assert captions["caption"].isna().mean() == pytest.approx(0.126, abs=0.05)  # empty captions
    assert (captions["manual_cover_text"] == "UNKNOWN").mean() == pytest.approx(0.62, abs=0.06)
    assert captions["manual_cover_text"].notna().all() and captions["topic_tag"].notna().all()


def test_topic_tag_lists_the_caption_hashtags(side: dict[str, Any]) -> None:
    captions = side["captions"]
    listed = captions["topic_tag"].str.slice(1, -1).str.split(",")
    hashtags = captions["caption"].fillna("").str.findall(r"#([^\s#]+)")
    expected = hashtags.map(lambda found: sorted(set(found)))  # code-point order, as in the real file
    assert (listed.map(lambda items: [t for t in items if t]) == expected).all()
    assert (captions["topic_tag"] == "[]").mean() > 0.3 and (captions["topic_tag"] != "[]").mean() > 0.3


def test_categories_nest_and_mark_unknown_values(side: dict[str, Any]) -> None:
    captions = side["captions"]
    levels = ["first", "second", "third"]
    for level in levels:
        ids = captions[f"{level}_level_category_id"]
        names = captions[f"{level}_level_category_name"]
        assert ((ids == -124) == (names == "UNKNOWN")).all(), level
        assert ids.isin([-124]).any() or level == "first"
    for child, parent in (("second", "first"), ("third", "second")):
        known = captions[captions[f"{child}_level_category_id"] != -124]
        assert (known[f"{parent}_level_category_id"] != -124).all()
        assert (
            known.groupby(f"{child}_level_category_id")[f"{parent}_level_category_id"].nunique() == 1
        ).all()
    first = captions["first_level_category_id"]
    assert set(first[first != -124]) <= set(range(1, 40)) - {30}
    assert (captions["second_level_category_id"] == -124).mean() == pytest.approx(0.33, abs=0.06)


# --------------------------------------------------------------------------------------------- signal
def test_caption_characters_come_from_the_video_tags(side: dict[str, Any]) -> None:
    pools = side["truth"]["captions"]["tag_characters"]  # tag -> its characters
    owner = {char: int(tag) for tag, chars in pools.items() for char in chars}
    chars = side["captions"]["caption"].fillna("").map(list).explode().dropna()  # index: the video's row
    tag_of_char = chars.map(owner).dropna().astype(np.int64)  # characters of a tag's pool
    feat = side["tags"]["feat"].explode().astype(np.int64)
    own = np.zeros((len(side["tags"]), 31), dtype=bool)  # (V, 31) the video's tags
    own[feat.index.to_numpy(), feat.to_numpy()] = True
    is_own = own[tag_of_char.index.to_numpy(), tag_of_char.to_numpy()]
    tags_per_video = own.sum(axis=1).mean()
    per_own_tag = is_own.mean() / tags_per_video
    per_other_tag = (1 - is_own.mean()) / (31 - tags_per_video)
    assert is_own.mean() > 0.8  # a caption's tag characters are mostly those of its own tags
    assert per_own_tag > 50 * per_other_tag  # per tag: far above any other tag
    # Out of sample, without the pools: each main tag's character profile from even videos predicts odd ones.
    main = side["main"]
    even = chars.index.to_numpy() % 2 == 0
    profile = pd.crosstab(main[chars.index[even]], chars.to_numpy()[even])  # (tags, characters)
    profile = profile.div(profile.sum(axis=1), axis=0)
    odd = chars[~even]
    counts = pd.crosstab(odd.index, odd.to_numpy()).reindex(columns=profile.columns, fill_value=0)
    predicted = (counts @ profile.T).idxmax(axis=1)  # (odd videos with a caption,)
    accuracy = float(np.mean(predicted.to_numpy() == main[predicted.index]))
    chance = float(np.bincount(main).max() / len(main))
    assert accuracy > 0.6 and accuracy > 3 * chance


def test_first_level_category_predicts_the_main_tag(side: dict[str, Any]) -> None:
    first = side["captions"]["first_level_category_id"].to_numpy()
    main = side["main"]
    even = np.arange(len(main)) % 2 == 0
    accuracy = _majority_accuracy(first[even], main[even], first[~even], main[~even])
    chance = float(np.bincount(main[even]).max() / even.sum())
    assert accuracy > 0.7 and accuracy > 3 * chance
    recorded = side["truth"]["captions"]["main_tag_from_first_level_accuracy"]
    assert recorded == pytest.approx(_majority_accuracy(first, main, first, main), abs=1e-3)


def test_daily_play_counts_are_the_scaled_big_matrix_views(side: dict[str, Any]) -> None:
    daily, big = side["daily"], side["big"]
    scale = side["meta"]["side_files"]["parameters"]["daily_play_scale"]
    key = ["video_id", "date"]
    assert not daily.duplicated(key).any()  # one row per video and day
    views = big.groupby(key).size().rename("views")
    users = big.groupby(key)["user_id"].nunique().rename("users")
    joined = daily.set_index(key).join(views, how="outer").join(users, how="left")
    assert joined["play_cnt"].notna().all()  # every (video, date) of the big matrix has a daily row
    np.testing.assert_array_equal(joined["play_cnt"], scale * joined["views"].fillna(0))
    np.testing.assert_array_equal(joined["play_user_num"], scale * joined["users"].fillna(0))
    per_video = daily.groupby("video_id")["play_cnt"].sum()
    np.testing.assert_array_equal(per_video.to_numpy(), scale * big.groupby("video_id").size().to_numpy())
    assert (daily["show_cnt"] >= daily["play_cnt"]).all() and (daily["like_cnt"] <= daily["play_cnt"]).all()
    for users_column in [name for name in daily.columns if name.endswith("_user_num")]:  # 20 pairs
        count_column = users_column.removesuffix("_user_num") + "_cnt"
        assert (daily[users_column] <= daily[count_column]).all(), users_column
    watched = daily["play_cnt"] > 0
    assert daily.loc[watched, "play_progress"].between(0, 1).all()
    assert daily.loc[~watched, "play_progress"].isna().all()


def test_daily_rows_span_each_video_from_its_upload(side: dict[str, Any]) -> None:
    daily, big = side["daily"], side["big"]
    dates = pd.to_datetime(daily["date"].astype(str), format="%Y%m%d")
    assert dates.min() >= pd.Timestamp("2020-06-23") and dates.max() == pd.Timestamp("2020-09-10")
    by_video = daily.assign(day=dates).groupby("video_id")
    days = (by_video["day"].max() - by_video["day"].min()).dt.days + 1
    assert (days == by_video.size()).all()  # consecutive days up to the span's end
    static = [
        "author_id",
        "video_type",
        "upload_dt",
        "upload_type",
        "video_duration",
        "music_id",
        "video_tag_id",
    ]
    assert (by_video[static].nunique(dropna=False) == 1).all().all()
    upload = pd.to_datetime(by_video["upload_dt"].first(), format="%Y-%m-%d")
    first_view = pd.to_datetime(big.groupby("video_id")["date"].min().astype(str), format="%Y%m%d")
    assert (upload <= first_view).all() and (by_video["day"].min() == upload.clip(lower=dates.min())).all()
    durations = big.groupby("video_id")["video_duration"].first()
    np.testing.assert_array_equal(by_video["video_duration"].first().to_numpy(), durations.to_numpy())


def test_daily_likes_track_the_watch_ratio_and_depend_on_the_date(side: dict[str, Any]) -> None:
    daily, big = side["daily"], side["big"]
    totals = daily.groupby("video_id")[["like_cnt", "play_cnt"]].sum()
    like_rate = totals["like_cnt"] / totals["play_cnt"]
    mean_ratio = big.groupby("video_id")["watch_ratio"].mean()
    assert spearmanr(like_rate, mean_ratio.loc[like_rate.index])[0] > 0.4
    cut = int(big["date"].median())
    before = daily[daily["date"] < cut].groupby("video_id")[["like_cnt", "play_cnt"]].sum()
    assert 0.2 < before["play_cnt"].sum() / totals["play_cnt"].sum() < 0.8
    differs = (before["play_cnt"] != totals.loc[before.index, "play_cnt"]).mean()
    assert differs > 0.5  # an aggregate of the rows before a cut is not the aggregate of all rows


def test_authors_specialise_in_tags(side: dict[str, Any]) -> None:
    author = side["daily"].groupby("video_id")["author_id"].first().to_numpy()
    main = side["main"]
    table = pd.crosstab(author, main).to_numpy()  # (authors, tags)
    share_main = table.max(axis=1).sum() / table.sum()
    assert share_main > 0.85  # an author's videos mostly share one main tag
    assert side["truth"]["item_daily"]["main_tag_from_author_accuracy_leave_one_out"] > 0.5


def test_ground_truth_records_the_signal_of_every_side_file(side: dict[str, Any]) -> None:
    truth = side["truth"]
    captions, daily, users = truth["captions"], truth["item_daily"], truth["user_features"]
    assert captions["own_tag_token_share"] > 0.5 > captions["other_tag_token_share"]
    assert captions["main_tag_from_first_level_accuracy"] > 3 * captions["main_tag_chance"]
    assert captions["captions_with"]["comma"] >= 1 and captions["captions_with"]["newline"] >= 1
    assert daily["play_cnt_over_scaled_big_rows"] == 1.0 and daily["rows"] == len(side["daily"])
    assert daily["like_per_play_vs_mean_watch_ratio_videos"]["spearman"] > 0.4
    columns = kuairec.OFFICIAL_FILES["user_features.csv"].column_names[1:]
    assert sorted(users["against_main_tag"]) == sorted(columns)
    # user_features.csv is drawn independently of the taste: no information beyond the estimator's bias.
    excess = [entry["excess_mi_bits"] for entry in users["against_main_tag"].values()]
    assert max(np.abs(excess)) < 0.1
    assert set(truth["notes"]) == {"captions", "item_daily", "user_features"}


# ----------------------------------------------------------------------------------- bit-identity, API
def test_side_files_move_no_byte_of_the_other_files(tmp_path: Path) -> None:
    simulate(scale=0.02, seed=5, out_dir=tmp_path / "without", progress=False, side_files=False)
    simulate(scale=0.02, seed=5, out_dir=tmp_path / "with", progress=False)
    for name in EXISTING_FILES:
        assert (tmp_path / "without" / name).read_bytes() == (tmp_path / "with" / name).read_bytes(), name
    for name in SIDE_FILES:
        assert not (tmp_path / "without" / name).exists() and (tmp_path / "with" / name).is_file()
    without = json.loads((tmp_path / "without" / "simulation.json").read_text())
    with_side = json.loads((tmp_path / "with" / "simulation.json").read_text())
    assert "side_files" not in without
    assert {key: value for key, value in with_side.items() if key != "side_files"} == without
    # A rerun without side files removes the stale ones.
    simulate(scale=0.02, seed=5, out_dir=tmp_path / "with", progress=False, side_files=False)
    assert not any((tmp_path / "with" / name).exists() for name in SIDE_FILES)
    with pytest.raises(MissingDataError, match="side_ground_truth.json"):
        load_side_ground_truth(tmp_path / "with")


def test_smallest_scale_still_has_every_quirk(tmp_path: Path) -> None:
    simulate(scale=MIN_SCALE, seed=2, out_dir=tmp_path, progress=False)
    captions = kuairec.read_captions(tmp_path / "kuairec_caption_category.csv")
    text = captions["caption"].dropna()
    assert all(text.str.contains(mark, regex=False).any() for mark in (",", '"', "\n", "\r"))
    daily = kuairec.read_item_daily_features(tmp_path / "item_daily_features.csv")
    big = pd.read_csv(tmp_path / "big_matrix.csv")
    assert daily["play_cnt"].sum() == 10 * len(big)
