"""Tests of sasrec.data.preparation: sequences, id maps, labels, splits, leakage checks, artifacts and CLI."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sasrec.data import preparation as prep
from sasrec.data.contracts import EVENT_COLUMNS, LABEL_COLUMNS, SPLITS
from sasrec.data.preparation import artifacts as prep_artifacts
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError, DataValidationError, LockBusyError, MissingDataError, SasrecError

NAN = np.nan

# Hand-made KuaiRec-shaped rows. Rows 0 and 2 tie on time 100 (row order decides); row 3 is untimed;
# rows 0 and 6 are repeat views of video 0; watch ratios sit on the like (0.7) and relevance (2.0) edges.
FIXTURE_ROWS = [
    # user, video, timestamp, watch_ratio
    (20, 0, 100.0, 0.7),
    (10, 5, 50.0, 0.71),
    (20, 3, 100.0, 2.0),
    (10, 3, NAN, 3.0),
    (20, 5, 90.0, 2.01),
    (10, 0, 40.0, 0.1),
    (20, 0, 110.0, 1.0),
    (30, 9, 60.0, 0.5),
]


def fixture_frame() -> pd.DataFrame:
    frame = pd.DataFrame(FIXTURE_ROWS, columns=["user_id", "video_id", "timestamp", "watch_ratio"])
    return frame.astype({"user_id": "int32", "video_id": "int32"})


def random_frame(seed: int, n_rows: int = 300, n_users: int = 9, n_items: int = 25) -> pd.DataFrame:
    """Random KuaiRec-shaped rows with many time ties and a few untimed rows."""
    rng = np.random.default_rng(seed)
    timestamps = rng.integers(0, 40, n_rows).astype(np.float64)
    timestamps[rng.random(n_rows) < 0.05] = NAN
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, n_users, n_rows).astype(np.int32) * 3,
            "video_id": rng.integers(0, n_items, n_rows).astype(np.int32),
            "timestamp": timestamps,
            "watch_ratio": rng.gamma(1.0, 1.0, n_rows),
        }
    )


def write_kuairec_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` (user_id, video_id, timestamp, watch_ratio) with the 8 official columns."""
    ts = frame["timestamp"].to_numpy(dtype=np.float64)
    local = pd.to_datetime(pd.Series(ts), unit="s", utc=True).dt.tz_convert("Asia/Shanghai")
    out = pd.DataFrame(
        {
            "user_id": frame["user_id"].to_numpy(),
            "video_id": frame["video_id"].to_numpy(),
            "play_duration": np.round(frame["watch_ratio"].to_numpy() * 10_000).astype(np.int64),
            "video_duration": np.full(len(frame), 10_000, dtype=np.int64),
            "time": local.dt.strftime("%Y-%m-%d %H:%M:%S.000").where(~np.isnan(ts), ""),
            "date": (local.dt.year * 10_000 + local.dt.month * 100 + local.dt.day).where(~np.isnan(ts)),
            "timestamp": ts,
            "watch_ratio": frame["watch_ratio"].to_numpy(),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False, na_rep="")
    return path


@pytest.fixture
def kuairec_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "kuairec"
    write_kuairec_csv(fixture_frame(), data_dir / "small_matrix.csv")
    return data_dir


# ---------------------------------------------------------------------------------- prepare_frame
def test_sequences_order_ids_and_flags_with_remapping() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture", n_valid=1, n_test=1)
    ev = data.events
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert {c: str(t) for c, t in ev.dtypes.items()} == EVENT_COLUMNS
    np.testing.assert_array_equal(data.user_ids, [-1, 10, 20, 30])
    np.testing.assert_array_equal(data.item_ids, [-1, 0, 3, 5, 9])
    # user 10: rows 5, 1; user 20: rows 4, 0, 2 (tie at 100 kept in file order), 6; user 30: row 7
    np.testing.assert_array_equal(ev["user"], [1, 1, 2, 2, 2, 2, 3])
    np.testing.assert_array_equal(ev["item"], [1, 3, 3, 1, 2, 1, 4])
    np.testing.assert_array_equal(ev["timestamp"], [40, 50, 90, 100, 100, 110, 60])
    np.testing.assert_allclose(ev["watch_ratio"], [0.1, 0.71, 2.01, 0.7, 2.0, 1.0, 0.5], rtol=1e-6)
    # exactly 0.7 is not liked; exactly 2.0 is not relevant
    np.testing.assert_array_equal(ev["liked"], [False, True, True, False, True, True, False])
    np.testing.assert_array_equal(ev["relevant"], [False, False, True, False, False, False, False])
    assert data.num_users == 3 and data.num_items == 4
    counts = data.meta["counts"]
    assert (counts["rows_in"], counts["events"], counts["labels"]) == (8, 7, 1)
    assert data.meta["like_threshold"] == 0.7 and data.meta["relevance_threshold"] == 2.0


def test_untimed_rows_go_to_labels_only() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture")
    labels = data.labels
    assert list(labels.columns) == list(LABEL_COLUMNS)
    assert {c: str(t) for c, t in labels.dtypes.items()} == LABEL_COLUMNS
    assert labels[["user", "item"]].to_numpy().tolist() == [[1, 2]]  # user 10, video 3
    assert labels["liked"].tolist() == [True] and labels["relevant"].tolist() == [True]
    # (user 1, item 2) never appears in the sequences
    assert not ((data.events["user"] == 1) & (data.events["item"] == 2)).any()


def test_ties_follow_file_row_order() -> None:
    frame = fixture_frame()
    swapped = frame.iloc[[2, 1, 0, 3, 4, 5, 6, 7]].reset_index(drop=True)  # row 2 now before row 0
    data = prep.prepare_frame(swapped, "swapped")
    user2 = data.events[data.events["user"] == 2]
    np.testing.assert_array_equal(user2["item"], [3, 2, 1, 1])  # video 3 now precedes video 0 at t=100


def test_no_remapping_shifts_ids_by_one() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture_no_remapping", remap=False)
    np.testing.assert_array_equal(data.user_ids, np.arange(-1, 31))  # ids 0..30, absent ones keep a slot
    np.testing.assert_array_equal(data.item_ids, np.arange(-1, 10))
    np.testing.assert_array_equal(data.events["user"], [11, 11, 21, 21, 21, 21, 31])
    np.testing.assert_array_equal(data.events["item"], [1, 6, 6, 1, 4, 1, 10])  # video 0 -> 1, not padding
    assert data.item_ids[1] == 0 and data.item_ids[0] == -1
    assert data.labels[["user", "item"]].to_numpy().tolist() == [[11, 4]]
    assert data.meta["remap"] is False
    assert data.meta["counts"]["users_present"] == 3 and data.meta["counts"]["items_present"] == 4


def test_thresholds_are_parameters() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture", like_threshold=0.69, relevance_threshold=1.99)
    np.testing.assert_array_equal(data.events["liked"], [False, True, True, True, True, True, False])
    np.testing.assert_array_equal(data.events["relevant"], [False, False, True, False, True, False, False])
    assert data.meta["params"]["like_threshold"] == 0.69


def test_leave_one_out_assignment_and_short_users() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture")
    # user 10 (2 events) and user 30 (1 event) are shorter than 3: all train
    np.testing.assert_array_equal(data.events["split_leave_one_out"], [0, 0, 0, 0, 1, 2, 0])
    c = data.meta["counts"]["splits"]["leave_one_out"]
    assert (c["train"], c["valid"], c["test"], c["users_all_train"]) == (5, 1, 1, 2)
    assert c["stages"]["valid"] == {"history_events": 5, "target_events": 1, "users": 1}
    assert c["stages"]["test"] == {"history_events": 6, "target_events": 1, "users": 1}


def test_leave_last_n_assignment_and_short_users() -> None:
    long_user = [(1, v, float(t), 1.0) for t, v in enumerate([5, 6, 7, 8, 9, 10, 11, 12])]  # 8 events
    short_user = [(2, v, float(t), 1.0) for t, v in enumerate([5, 6, 7, 8, 9, 10])]  # 6 events
    frame = pd.DataFrame(long_user + short_user, columns=["user_id", "video_id", "timestamp", "watch_ratio"])
    data = prep.prepare_frame(frame, "lastn", n_valid=2, n_test=3)  # needs 2 + 3 + 2 = 7 events
    expected = [0, 0, 0, 1, 1, 2, 2, 2] + [0] * 6
    np.testing.assert_array_equal(data.events["split_leave_last_n"], expected)
    c = data.meta["counts"]["splits"]["leave_last_n"]
    assert (c["valid"], c["test"], c["users_all_train"], c["min_events"]) == (2, 3, 1, 7)
    assert (c["users_valid"], c["users_test"]) == (1, 1)


def test_temporal_cuts_send_ties_on_a_cut_to_the_later_part() -> None:
    # event times sorted: 40 50 60 90 100 100 110; quantile 0.5 = 90 (valid cut), 0.8 = 100 (test cut)
    data = prep.prepare_frame(fixture_frame(), "fixture", temporal_valid_frac=0.3, temporal_test_frac=0.2)
    np.testing.assert_array_equal(data.events["split_temporal"], [0, 0, 1, 2, 2, 2, 0])
    assert data.meta["temporal_cuts"] == {"valid_cut": 90.0, "test_cut": 100.0}


def test_temporal_fraction_zero_gives_empty_part() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture", temporal_valid_frac=0.0, temporal_test_frac=0.2)
    np.testing.assert_array_equal(data.events["split_temporal"], [0, 0, 0, 2, 2, 2, 0])


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_valid": -1}, "n_valid"),
        ({"n_test": 1.5}, "n_test"),
        ({"temporal_test_frac": 1.0}, "temporal_test_frac"),
        ({"temporal_valid_frac": 0.5, "temporal_test_frac": 0.5}, "below 1"),
        ({"like_threshold": "high"}, "like_threshold"),
    ],
)
def test_bad_parameters_raise_config_error(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prep.prepare_frame(fixture_frame(), "fixture", **params)


def test_bad_frames_raise_data_validation_error() -> None:
    with pytest.raises(DataValidationError, match="missing column.*watch_ratio"):
        prep.prepare_frame(fixture_frame().drop(columns="watch_ratio"), "f")
    negative = fixture_frame()
    negative.loc[2, "video_id"] = -4
    with pytest.raises(DataValidationError, match=r"video_id.*1 row\(s\) are negative \(first -4\)"):
        prep.prepare_frame(negative, "f")
    fractional = fixture_frame().astype({"user_id": "float64"})
    fractional.loc[0, "user_id"] = 2.5
    with pytest.raises(DataValidationError, match="user_id must hold integer ids"):
        prep.prepare_frame(fractional, "f")
    with pytest.raises(DataValidationError, match="no rows"):
        prep.prepare_frame(fixture_frame().iloc[:0], "f")


# ------------------------------------------------------------------------------------------ leakage
def test_data_without_any_sequence_is_refused() -> None:
    single = pd.DataFrame(
        [(1, 1, 10.0, 1.0), (2, 1, 11.0, 1.0), (2, 2, NAN, 1.0)],
        columns=["user_id", "video_id", "timestamp", "watch_ratio"],
    )
    with pytest.raises(DataValidationError) as caught:
        prep.prepare_frame(single, "single")
    assert str(caught.value) == (
        "single: no user has at least 2 timed events (2 timed event(s) of 3 rows, 2 user(s) with exactly one); "
        "sequences need 2 or more per user"
    )


def test_empty_per_user_splits_are_refused_when_asked_for() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture")  # users have 2, 4 and 1 timed events
    prep.check_split_usable(data, "temporal")
    prep.check_split_usable(data, "leave_one_out")  # user 20 has 4 >= 3 events
    with pytest.raises(ConfigError) as caught:
        prep.check_split_usable(data, "leave_last_n")
    assert str(caught.value) == (
        "fixture: split leave_last_n gives no user a validation or test event: it needs n_valid + n_test + 2 = "
        "152 timed events per user (n_valid=50, n_test=100) and the longest of the 3 users has 4; lower "
        "n_valid / n_test (--n-valid / --n-test) or use the temporal split"
    )
    prep.check_split_usable(
        prep.prepare_frame(fixture_frame(), "fixture", n_valid=1, n_test=1), "leave_last_n"
    )
    short = fixture_frame().iloc[[0, 1, 2, 5, 7]]  # at most 2 timed events per user
    with pytest.raises(
        ConfigError, match="leave_one_out .* needs 3 timed events per user .* has 2; use the temporal"
    ):
        prep.check_split_usable(prep.prepare_frame(short, "short"), "leave_one_out")
    no_test = prep.prepare_frame(fixture_frame(), "fixture", temporal_valid_frac=0.2, temporal_test_frac=0.0)
    with pytest.raises(ConfigError, match=r"split temporal has no test event \(temporal_test_frac=0.0\)"):
        prep.check_split_usable(no_test, "temporal")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_leakage_property_on_random_frames(seed: int) -> None:
    data = prep.prepare_frame(random_frame(seed), f"random{seed}", n_valid=5, n_test=8)
    ev = data.events.reset_index(drop=True)
    position = ev.groupby("user").cumcount().to_numpy()
    for split in ("leave_last_n", "leave_one_out"):
        assignment = ev[f"split_{split}"].to_numpy()
        for user in np.unique(ev["user"]):
            mine = ev["user"].to_numpy() == user
            pos, part = position[mine], assignment[mine]
            train, valid, test = pos[part == 0], pos[part == 1], pos[part == 2]
            if len(valid):
                assert train.max() < valid.min()
            if len(test):
                assert max(train.max(), valid.max(initial=-1)) < test.min()
    t, part = ev["timestamp"].to_numpy(), ev["split_temporal"].to_numpy()
    assert t[part == 0].max() <= t[part == 1].min() and t[part == 1].max() <= t[part == 2].min()
    # events are time-ordered within each user and every timed row is an event exactly once
    assert (ev.groupby("user")["timestamp"].diff().fillna(0) >= 0).all()
    assert len(ev) + len(data.labels) == len(random_frame(seed))
    assert all(data.meta["leakage"][s]["ok"] for s in SPLITS)


def test_leakage_checker_catches_planted_leaks() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture")
    assert prep.check_no_leakage(data, "leave_one_out")["events"] == {"train": 5, "valid": 1, "test": 1}

    planted = prep.prepare_frame(fixture_frame(), "fixture")
    planted.events.loc[2, "split_leave_one_out"] = 2  # user 20's first event marked test, later ones train
    with pytest.raises(SasrecError, match="leave_one_out: leak.*user 2"):
        prep.check_no_leakage(planted, "leave_one_out")

    planted.events.loc[5, "split_temporal"] = 0  # the latest event (t=110) put into training
    with pytest.raises(SasrecError, match="temporal: leak"):
        prep.check_no_leakage(planted, "temporal")

    planted.events.loc[0, "split_leave_last_n"] = 7
    with pytest.raises(SasrecError, match="unknown"):
        prep.check_no_leakage(planted, "leave_last_n")

    unsorted = prep.prepare_frame(fixture_frame(), "fixture")
    unsorted.events = unsorted.events.iloc[[1, 0, 2, 3, 4, 5, 6]].reset_index(drop=True)
    with pytest.raises(SasrecError, match="out of time order"):
        prep.check_no_leakage(unsorted, "leave_one_out")


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("stage", ["valid", "test"])
def test_build_eval_task_on_prepared_output(split: str, stage: str) -> None:
    data = prep.prepare_frame(random_frame(7), "random7", n_valid=3, n_test=4)
    task = build_eval_task(data, split, stage, maxlen=6)
    history_mask, target_mask = data.stage_masks(split, stage)
    expected_users = np.unique(data.events.loc[target_mask, "user"])
    np.testing.assert_array_equal(task.users, expected_users)
    assert len(task) > 0 and task.sequences.shape == (len(task), 6)
    assert task.targets.multiply(task.history).nnz == 0  # targets never in history (mask_history)
    assert task.targets.nnz > 0
    # each sequence ends with the user's latest history item
    history = data.events[history_mask]
    last_item = history.groupby("user")["item"].last()
    has_history = np.isin(task.users, last_item.index)
    np.testing.assert_array_equal(
        task.sequences[has_history, -1], last_item.reindex(task.users[has_history]).to_numpy()
    )


def test_eval_task_on_fixture_masks_repeat_view_target() -> None:
    data = prep.prepare_frame(fixture_frame(), "fixture")
    valid = build_eval_task(data, "leave_one_out", "valid", maxlen=3)
    np.testing.assert_array_equal(valid.users, [2])
    np.testing.assert_array_equal(valid.sequences, [[0, 3, 1]])
    assert valid.targets.indices.tolist() == [2]
    test = build_eval_task(data, "leave_one_out", "test", maxlen=3)
    np.testing.assert_array_equal(test.sequences, [[3, 1, 2]])
    assert test.targets.nnz == 0  # video 0 (item 1) was already seen: masked from targets


# --------------------------------------------------------------------------------------- text format
def test_read_sasrec_text_two_and_three_columns(tmp_path: Path) -> None:
    two = tmp_path / "two.txt"
    two.write_text("1 10\n1 11\n\n2  10 \n")
    frame = prep.read_sasrec_text(two)
    assert frame["user_id"].tolist() == [1, 1, 2] and frame["video_id"].tolist() == [10, 11, 10]
    assert frame["liked"].tolist() == [True, True, True]
    assert frame["order"].tolist() == [1, 2, 4]  # line numbers (blank line 3 skipped)
    three = tmp_path / "three.txt"
    three.write_text("1 10 1\n1 11 0\n2 10 1\n")
    assert prep.read_sasrec_text(three)["liked"].tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("1 10\n1 x\n", r"line 2: '1 x'"),
        ("1 10\n1 11 1\n", r"line 2: '1 11 1'.*3 columns"),
        ("1 10 1\n1 10 2\n", r"line 2: '1 10 2'.*liked.*0 or 1"),
        ("1 10 1 0\n", r"line 1: '1 10 1 0'"),
        ("1 -3\n", r"line 1"),
        ("\n\n", "no interactions"),
    ],
)
def test_read_sasrec_text_rejects_bad_lines(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(DataValidationError, match=message) as info:
        prep.read_sasrec_text(path)
    assert str(path) in str(info.value)


def test_read_sasrec_text_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match="absent.txt"):
        prep.read_sasrec_text(tmp_path / "absent.txt")


def test_text_data_orders_by_line_and_uses_liked_as_relevant(tmp_path: Path) -> None:
    path = tmp_path / "games.txt"
    path.write_text("7 3 1\n5 9 0\n7 2 0\n7 3 1\n5 3 1\n")
    data = prep.prepare_frame(prep.read_sasrec_text(path), "games")
    np.testing.assert_array_equal(data.user_ids, [-1, 5, 7])
    np.testing.assert_array_equal(data.item_ids, [-1, 2, 3, 9])
    np.testing.assert_array_equal(data.events["user"], [1, 1, 2, 2, 2])
    np.testing.assert_array_equal(data.events["item"], [3, 2, 2, 1, 2])
    np.testing.assert_array_equal(data.events["timestamp"], [2, 5, 1, 3, 4])
    assert data.events["watch_ratio"].isna().all()
    np.testing.assert_array_equal(data.events["liked"], [False, True, True, False, True])
    np.testing.assert_array_equal(data.events["relevant"], data.events["liked"])
    np.testing.assert_array_equal(data.events["split_leave_one_out"], [0, 0, 0, 1, 2])
    assert "line" in data.meta["order"] and data.meta["has_watch_ratio"] is False


# ---------------------------------------------------------------------------- artifacts and caching
def test_prepare_writes_artifacts_and_load_prepared_reuses_them(root: Path, kuairec_dir: Path) -> None:
    out = root / "out" / "small"
    data = prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=1, n_test=1)
    for name in (*prep.ARTIFACT_FILES, "small_matrix.txt", "small_matrix_no_remapping.txt"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == "small_matrix" and meta["data_source"] == "kuairec"
    assert meta["source_path"] == str(kuairec_dir / "small_matrix.csv")
    assert meta["params"] == {**prep.DEFAULT_PARAMS, "n_valid": 1, "n_test": 1, "remap": True}
    assert meta["cleaning"]["rows_in"] == 8 and meta["counts"]["labels"] == 1
    assert set(meta["leakage"]) == set(SPLITS) and meta["prepare_seconds"] >= 0
    users = pd.read_parquet(out / "users.parquet")
    assert users["user_id"].tolist() == [-1, 10, 20, 30] and users["index"].tolist() == [0, 1, 2, 3]
    items = pd.read_parquet(out / "items.parquet")
    assert items["video_id"].tolist() == [-1, 0, 3, 5, 9]

    again = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=1, n_test=1)
    assert again.meta.get("reused") is True
    pd.testing.assert_frame_equal(again.events, data.events)
    pd.testing.assert_frame_equal(again.labels, data.labels)
    np.testing.assert_array_equal(again.item_ids, data.item_ids)
    assert again.fingerprint == data.fingerprint

    other_params = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=2, n_test=1)
    assert other_params.meta.get("reused") is None
    assert json.loads((out / "meta.json").read_text())["params"]["n_valid"] == 2


def test_load_prepared_reprepares_when_source_changes(root: Path, kuairec_dir: Path) -> None:
    out = root / "out" / "small"
    first = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out)
    assert first.meta["counts"]["events"] == 7
    changed = pd.concat(
        [fixture_frame(), pd.DataFrame([(40, 3, 70.0, 1.5)], columns=fixture_frame().columns)]
    )
    write_kuairec_csv(changed, kuairec_dir / "small_matrix.csv")
    second = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out)
    assert second.meta.get("reused") is None
    assert second.meta["counts"]["events"] == 8
    np.testing.assert_array_equal(second.user_ids, [-1, 10, 20, 30, 40])
    assert prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out).meta["reused"] is True


def test_default_out_dir_is_under_processed(root: Path, kuairec_dir: Path) -> None:
    data = prep.prepare("small_matrix_no_remapping", data_dir=kuairec_dir, write_text=False)
    out = root / "data" / "processed" / "small_matrix_no_remapping"
    assert (out / "meta.json").is_file() and not list(out.glob("*.txt"))
    assert data.meta["remap"] is False and data.name == "small_matrix_no_remapping"
    np.testing.assert_array_equal(data.events["item"], [1, 6, 6, 1, 4, 1, 10])


def test_text_files_content(root: Path, kuairec_dir: Path) -> None:
    expected_remapped = "1 1 0\n1 3 1\n2 3 1\n2 1 0\n2 2 1\n2 1 1\n3 4 0\n"
    expected_original = "10 0 0\n10 5 1\n20 5 1\n20 0 0\n20 3 1\n20 0 1\n30 9 0\n"
    for dataset in ("small_matrix", "small_matrix_no_remapping"):
        out = root / "out" / dataset
        prep.prepare(dataset, data_dir=kuairec_dir, out_dir=out)
        assert (out / "small_matrix.txt").read_text() == expected_remapped
        assert (out / "small_matrix_no_remapping.txt").read_text() == expected_original


def test_text_file_round_trips_as_a_dataset(root: Path, kuairec_dir: Path) -> None:
    out = root / "out" / "small"
    original = prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out)
    text = prep.prepare(str(out / "small_matrix.txt"), write_text=False)
    assert text.name == "small_matrix" and text.meta["data_source"] == "text"
    # default folder of a text dataset cannot clobber the KuaiRec dataset of the same name
    assert (root / "data" / "processed" / "text" / "small_matrix" / "meta.json").is_file()
    assert not (root / "data" / "processed" / "small_matrix").exists()
    np.testing.assert_array_equal(text.events["user"], original.events["user"])
    np.testing.assert_array_equal(text.events["item"], original.events["item"])
    np.testing.assert_array_equal(text.events["liked"], original.events["liked"])
    np.testing.assert_array_equal(text.events["split_leave_one_out"], original.events["split_leave_one_out"])


def test_atomic_write_leaves_no_complete_looking_folder(
    root: Path, kuairec_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = root / "out" / "small"

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(prep_artifacts, "_write_text_files", broken)
    with pytest.raises(OSError, match="disk full"):
        prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out)
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir()] == [".small.lock"]  # no temporary folder left behind

    monkeypatch.undo()
    monkeypatch.setenv("SASREC_ROOT", str(root))
    prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=1, n_test=1)
    before = (out / "meta.json").read_text()
    monkeypatch.setattr(prep_artifacts, "_write_text_files", broken)
    with pytest.raises(OSError):
        prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=3, n_test=1)
    assert (out / "meta.json").read_text() == before  # the previous complete run is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == [".small.lock", "small"]


def test_meta_records_checksums_and_what_made_the_artifacts(root: Path, kuairec_dir: Path) -> None:
    import sasrec
    from sasrec import integrity

    out = root / "out" / "small"
    old_umask = os.umask(0o022)
    try:
        prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=1, n_test=1)
    finally:
        os.umask(old_umask)
    assert (out.stat().st_mode & 0o777) == 0o755  # a plain mkdir's mode, not mkdtemp's 0700
    meta = integrity.read_sealed_json(out / "meta.json")
    files = sorted(p.name for p in out.iterdir() if p.name != "meta.json")
    assert sorted(meta["artifacts"]) == files
    for name, record in meta["artifacts"].items():
        assert record == integrity.file_record(out / name)
    origin = integrity.made_by(meta)
    assert origin["source_fingerprint"] == meta["source_fingerprint"]
    assert origin["params"] == meta["params"] and origin["prepare_version"] == prep.PREPARE_VERSION
    assert origin["package_version"] == sasrec.__version__
    assert origin["source_path"] == str(kuairec_dir / "small_matrix.csv")


DAMAGES = {
    "truncated events": ("events.parquet", lambda p: p.write_bytes(p.read_bytes()[:-40]), "bytes instead of"),
    "bit-flipped events": (
        "events.parquet",
        lambda p: p.write_bytes(
            p.read_bytes()[:200] + bytes([p.read_bytes()[200] ^ 0x10]) + p.read_bytes()[201:]
        ),
        "does not match its sha256",
    ),
    "missing labels": ("labels.parquet", lambda p: p.unlink(), "labels.parquet is missing"),
    "bit-flipped text": (
        "small_matrix.txt",
        lambda p: p.write_text(p.read_text().replace("2 3 1", "2 3 0", 1)),
        "small_matrix.txt does not match its sha256",
    ),
    "edited meta": (
        "meta.json",
        lambda p: p.write_text(p.read_text().replace('"liked_events": 4', '"liked_events": 5')),
        "meta.json does not match its checksum",
    ),
    "deleted meta": ("meta.json", lambda p: p.unlink(), "meta.json is missing"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_artifact_is_rebuilt_with_one_line(
    root: Path, kuairec_dir: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    out = root / "out" / "small"
    clean = prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out)
    name, spoil, problem = DAMAGES[damage]
    spoil(out / name)
    with caplog.at_level(logging.INFO, logger="sasrec"):
        again = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("sasrec")]
    assert len(lines) == 1 and caplog.records[-1].levelno == logging.WARNING
    assert lines[0].startswith(f"prepared dataset small_matrix in {out} is damaged (")
    assert problem in lines[0] and lines[0].endswith(f"rebuilding it from {kuairec_dir / 'small_matrix.csv'}")
    assert again.meta.get("reused") is None
    pd.testing.assert_frame_equal(again.events, clean.events)
    pd.testing.assert_frame_equal(again.labels, clean.labels)
    reused = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out)
    assert reused.meta["reused"] is True
    pd.testing.assert_frame_equal(reused.events, clean.events)


def test_damage_without_source_is_refused_naming_the_rebuild(
    root: Path, kuairec_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sasrec.data import simulator

    simulated = root / "data" / "simulated"
    simulator.simulate(scale=simulator.MIN_SCALE, seed=0, out_dir=simulated, progress=False)
    clean = prep.load_prepared("small_matrix", n_valid=1, n_test=1)
    out = root / "data" / "processed" / "small_matrix"
    shutil.rmtree(simulated)
    caplog.clear()  # only what the next call logs
    with caplog.at_level(logging.WARNING, logger="sasrec"):  # intact: used as it is, with a warning
        kept = prep.load_prepared("small_matrix", n_valid=1, n_test=1)
    pd.testing.assert_frame_equal(kept.events, clean.events)
    assert [r.getMessage() for r in caplog.records] == [
        f"source {simulated / 'small_matrix.csv'} of small_matrix is gone; using {out} as it is"
    ]
    with pytest.raises(MissingDataError, match="prepared from other parameters"):
        prep.load_prepared("small_matrix", n_valid=2, n_test=1)
    events = out / "events.parquet"
    events.write_bytes(events.read_bytes()[:50])
    with pytest.raises(MissingDataError) as caught:
        prep.load_prepared("small_matrix", n_valid=1, n_test=1)
    message = str(caught.value)
    assert "\n" not in message and "events.parquet has 50 bytes" in message
    assert message.endswith("rebuild it: make simulate, then python -m sasrec prepare small_matrix")


def test_prepared_data_written_by_an_older_version_is_prepared_again(
    root: Path, kuairec_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = root / "out" / "small"
    prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out)
    meta = json.loads((out / "meta.json").read_text())
    del meta["integrity"], meta["artifacts"]
    (out / "meta.json").write_text(json.dumps(meta))
    caplog.clear()  # only what the next call logs
    with caplog.at_level(logging.INFO, logger="sasrec"):
        again = prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out)
    assert again.meta.get("reused") is None
    assert [r.getMessage() for r in caplog.records] == [
        f"preparing small_matrix into {out}: it was prepared by an older version"
    ]


def test_stale_temporaries_are_removed_and_a_busy_folder_named(
    root: Path, kuairec_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sasrec import locks

    out = root / "out" / "small"
    leftover = out.parent / ".small.k3j4h5g6.tmp"
    (leftover / "events.parquet").parent.mkdir(parents=True)
    (leftover / "events.parquet").write_bytes(b"half written")
    with caplog.at_level(logging.INFO, logger="sasrec"):
        prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, n_valid=1, n_test=1)
    assert not leftover.exists()
    assert any(
        r.getMessage().startswith("removed 1 stale temporary file(s) left beside") for r in caplog.records
    )

    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another thread holds the folder's lock, as another process would
        with locks.locked(out, what="prepared dataset small_matrix"):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(30)
        with pytest.raises(LockBusyError) as caught:
            prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, wait=False)
        assert f"prepared dataset small_matrix {out} is being written by pid {os.getpid()}" in str(
            caught.value
        )
        assert "leave out --no-wait" in str(caught.value)
    finally:
        release.set()
        holder.join(30)


def test_progress_flag_reaches_the_preparation(
    root: Path, kuairec_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SASREC_PROGRESS", "1")
    prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=root / "a", progress=False)
    assert "prepare small_matrix" not in capsys.readouterr().err
    prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=root / "b", progress=True)
    assert "prepare small_matrix" in capsys.readouterr().err


def test_requested_empty_split_is_refused_before_writing(root: Path, kuairec_dir: Path) -> None:
    out = root / "out" / "small"
    with pytest.raises(ConfigError, match="split leave_last_n gives no user a validation or test event"):
        prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, split="leave_last_n")
    assert not out.exists()
    prep.prepare("small_matrix", data_dir=kuairec_dir, out_dir=out, split="leave_one_out")
    with pytest.raises(ConfigError, match=r"n_valid \+ n_test \+ 2 = 152"):
        prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out, split="leave_last_n")
    assert prep.load_prepared("small_matrix", data_dir=kuairec_dir, out_dir=out, split="temporal").meta[
        "reused"
    ]


def test_missing_data_names_file_and_remedy(root: Path, kuairec_dir: Path) -> None:
    with pytest.raises(MissingDataError, match=r"big_matrix\.csv not found.*make data.*make simulate"):
        prep.prepare("big_matrix", data_dir=kuairec_dir)
    with pytest.raises(MissingDataError, match="make data.*make simulate"):
        prep.default_data_dir()
    with pytest.raises(ConfigError, match="unknown dataset 'tiny_matrix'"):
        prep.prepare("tiny_matrix", data_dir=kuairec_dir)
    with pytest.raises(MissingDataError, match="nothere.txt"):
        prep.prepare(str(root / "nothere.txt"))
    with pytest.raises(ConfigError, match="contradicts"):
        prep.prepare("small_matrix", data_dir=kuairec_dir, remap=False)


def test_default_data_dir_prefers_official_files(root: Path) -> None:
    raw = root / "data" / "raw"
    for name in ("small_matrix.csv", "big_matrix.csv"):
        write_kuairec_csv(fixture_frame(), raw / name)
    assert prep.default_data_dir() == raw


# ------------------------------------------------------------------------------------------------ CLI
def cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sasrec")
    from sasrec.cli import prepare as prepare_cli

    prepare_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_prepare_prints_report_and_honours_flags(
    root: Path, kuairec_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = root / "cli_out"
    args = cli_parser().parse_args(
        ["prepare", "small_matrix", "--data-dir", str(kuairec_dir), "--out", str(out)]
        + ["--n-valid", "1", "--n-test", "1", "--like-threshold", "0.69", "--no-text", "--no-progress"]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "exact_duplicate_rows" in printed  # the cleaning report
    assert "leave_one_out  train 5  valid 1 (1 users)  test 1 (1 users)" in printed
    assert "leakage check temporal: ok" in printed
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["like_threshold"] == 0.69 and meta["params"]["n_valid"] == 1
    assert not list(out.glob("*.txt"))


def test_cli_paths_resolve_from_the_current_folder_and_split_is_checked(
    root: Path, kuairec_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(kuairec_dir.parent)
    args = cli_parser().parse_args(
        ["prepare", "small_matrix", "--data-dir", kuairec_dir.name, "--out", "here", "--no-progress"]
    )
    assert args.func(args) == 0
    assert (kuairec_dir.parent / "here" / "meta.json").is_file() and not (root / "here").exists()
    text = cli_parser().parse_args(["prepare", "here/small_matrix.txt", "--out", "text_out", "--no-text"])
    assert text.func(text) == 0
    assert (kuairec_dir.parent / "text_out" / "meta.json").is_file()
    capsys.readouterr()
    refused = cli_parser().parse_args(
        ["prepare", "small_matrix", "--data-dir", kuairec_dir.name, "--out", "x", "--split", "leave_last_n"]
    )
    with pytest.raises(ConfigError, match="--n-valid / --n-test"):
        refused.func(refused)
    assert not (kuairec_dir.parent / "x").exists()


def test_cli_missing_file_raises_missing_data_error(root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = cli_parser().parse_args(["prepare", "small_matrix", "--data-dir", str(empty)])
    with pytest.raises(MissingDataError, match="small_matrix.csv"):
        args.func(args)


# ------------------------------------------------------------------------------- simulated and real data
def test_simulated_data_is_the_fallback_and_prepares_cleanly(root: Path) -> None:
    from sasrec.data import simulator

    simulator.simulate(scale=simulator.MIN_SCALE, seed=0, out_dir=root / "data" / "simulated", progress=False)
    assert prep.default_data_dir() == root / "data" / "simulated"
    data = prep.load_prepared("small_matrix", n_valid=2, n_test=3)
    meta = json.loads((root / "data" / "processed" / "small_matrix" / "meta.json").read_text())
    assert meta["data_source"] == "simulated" and meta["cleaning"]["rows_in"] == meta["counts"]["rows_in"]
    assert meta["counts"]["events"] + meta["counts"]["labels"] == meta["cleaning"]["rows_out"]
    assert all(meta["leakage"][split]["ok"] for split in SPLITS)
    for split in SPLITS:
        task = build_eval_task(data, split, "test", maxlen=8)
        assert len(task) > 0 and task.targets.multiply(task.history).nnz == 0


def test_real_sample_rows_prepare_in_time_order() -> None:
    from sasrec import paths
    from sasrec.data import kuairec

    sample = paths.shared_sample_dir() / "big_matrix_head1000.csv"
    if not sample.is_file():
        pytest.skip(f"real KuaiRec sample {sample} is absent")
    frame, _report = kuairec.load_interactions(sample, cache=False)
    data = prep.prepare_frame(frame, "big_head")
    assert data.num_users == 1 and data.user_ids.tolist() == [-1, 0]
    timed = frame["timestamp"].notna()
    assert len(data.events) == int(timed.sum())
    assert (np.diff(data.events["timestamp"].to_numpy()) >= 0).all()
    expected_liked = (frame.loc[timed, "watch_ratio"].to_numpy() > 0.7).sum()
    assert int(data.events["liked"].sum()) == int(expected_liked)
    assert data.meta["counts"]["splits"]["leave_last_n"]["test"] == 100
    assert data.meta["counts"]["splits"]["leave_last_n"]["valid"] == 50
