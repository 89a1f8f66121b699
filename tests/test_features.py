"""Side features (``sasrec.data.features``): alignment with internal ids on the real KuaiRec side files,
unknown ids, refused files, unavailable groups, no leakage from item_daily rows on or after the cut, the
digest and the sealed save/load round trip."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sasrec.data import kuairec
from sasrec.data.contracts import TEST, TRAIN, VALID, PreparedData, empty_labels
from sasrec.data.features import (
    GROUP_SOURCES,
    GROUPS,
    FeatureTable,
    build_feature_table,
    cut_date_of,
    feature_cut,
    load_feature_table,
    save_feature_table,
)
from sasrec.data.features.caption import caption_vectors
from sasrec.data.kuairec.schema import OFFICIAL_FILES
from sasrec.data.preparation import core as prep
from sasrec.errors import ConfigError, DataValidationError, IntegrityError, MissingDataError
from tests.conftest import kuairec_sample_dir

pytestmark = pytest.mark.unit

CAPTIONS, TAGS, USERS, DAILY = (
    "kuairec_caption_category.csv",
    "item_categories.csv",
    "user_features.csv",
    "item_daily_features.csv",
)
#: 2020-07-10 12:00 Asia/Shanghai (04:00 UTC): daily rows dated 20200710 or later must not count.
CUT = 1_594_353_600


@pytest.fixture(autouse=True)
def _isolated_root(root: Path) -> None:
    """Default cache paths under tmp_path, never the repository's data/."""


def sample_dir() -> Path:
    """The real KuaiRec side files beside the checkout (located from this file: SASREC_ROOT is redirected)."""
    return kuairec_sample_dir(CAPTIONS, "side files")


def tiny_data(video_ids: list[int], user_ids: list[int], name: str = "tiny") -> PreparedData:
    """Remapped PreparedData holding ``video_ids`` (sorted, 1..I) and ``user_ids``: one event per video."""
    items = np.arange(1, len(video_ids) + 1, dtype=np.int32)
    users = (np.arange(len(video_ids)) % len(user_ids) + 1).astype(np.int32)
    order = np.lexsort((items, users))
    n = len(items)
    split = np.full(n, TRAIN, dtype=np.int8)
    split[-2:] = [VALID, TEST]  # the two latest events
    events = pd.DataFrame(
        {
            "user": users[order],
            "item": items[order],
            "timestamp": CUT - 86_400.0 * (n - np.arange(n)),
            "watch_ratio": np.ones(n, dtype=np.float32),
            "liked": np.ones(n, dtype=bool),
            "relevant": np.zeros(n, dtype=bool),
            "split_temporal": split,
            "split_leave_last_n": split,
            "split_leave_one_out": split,
        }
    )
    return PreparedData(
        name=name,
        events=events,
        labels=empty_labels(),
        user_ids=np.asarray([-1, *sorted(user_ids)], dtype=np.int64),
        item_ids=np.asarray([-1, *sorted(video_ids)], dtype=np.int64),
        meta={"remap": True},
    )


@pytest.fixture(scope="module")
def head_data() -> PreparedData:
    """The first 1,000 real big-matrix rows (user 0), prepared with remapped ids."""
    frame, _ = kuairec.load_interactions(sample_dir() / "big_matrix_head1000.csv", cache=False)
    return prep.prepare_frame(frame, "big_head")


@pytest.fixture(scope="module")
def head_table(head_data: PreparedData) -> FeatureTable:
    return build_feature_table(head_data, sample_dir(), cut_timestamp=feature_cut(head_data))


def pandas_captions() -> pd.DataFrame:
    """The captions file read directly by pandas (only ``\\n`` ends a row: the file has bare CRs in text)."""
    return pd.read_csv(sample_dir() / CAPTIONS, lineterminator="\n", dtype={"caption": "string"})


def pandas_tags() -> pd.DataFrame:
    frame = pd.read_csv(sample_dir() / TAGS)
    frame["tags"] = frame["feat"].map(json.loads)  # a test may loop: this is the independent reference
    return frame


def vocabulary_labels(table: FeatureTable, group: str, column: str) -> np.ndarray:
    """(rows,) the original value of each row's id in ``column`` ("?" for 0 = unknown)."""
    entry = table.group(group)
    vocab = np.asarray(["?", *entry.vocabularies[column]], dtype=object)
    return vocab[entry.values[:, entry.columns.index(column)]]


# ------------------------------------------------------------------------------------ real side files
def test_real_files_put_each_video_at_its_internal_id(
    head_data: PreparedData, head_table: FeatureTable
) -> None:
    tags, captions = pandas_tags().set_index("video_id"), pandas_captions().set_index("video_id")
    chosen = head_data.item_ids[[1, 2, 3, 100, 500, head_data.num_items]]  # concrete videos of user 0
    for video in chosen.tolist():
        row = int(np.flatnonzero(head_data.item_ids == video)[0])
        stored = set(np.flatnonzero(head_table["tags"][row].toarray()[0]).tolist())
        assert stored == set(tags.loc[video, "tags"]), video
        for level in ("first", "second", "third"):
            column = f"{level}_level_category_id"
            expected = captions.loc[video, column]
            got = vocabulary_labels(head_table, "categories", column)[row]
            assert got == ("?" if expected == -124 else str(expected)), (video, column)
        has_caption = pd.notna(captions.loc[video, "caption"]) and str(captions.loc[video, "caption"]).strip()
        norm = float(np.linalg.norm(head_table["caption"][row]))
        assert norm == pytest.approx(1.0, abs=1e-5) if has_caption else norm == 0.0
    user_row = vocabulary_labels(head_table, "user", "user_active_degree")[1]
    assert user_row == pd.read_csv(sample_dir() / USERS).set_index("user_id").loc[0, "user_active_degree"]
    assert head_table.group("tags").values.shape == (head_data.num_items + 1, 31)
    assert head_table["tags"][0].nnz == 0 and (head_table["categories"][0] == 0).all()
    assert set(head_table.unavailable) == {"item_static", "item_stats"}


def test_no_remapping_data_keys_row_id_plus_one(head_data: PreparedData) -> None:
    frame, _ = kuairec.load_interactions(sample_dir() / "big_matrix_head1000.csv", cache=False)
    data = prep.prepare_frame(frame, "big_head_no_remapping", remap=False)
    table = build_feature_table(data, sample_dir(), cut_timestamp=None, groups=["tags", "categories"])
    tags = pandas_tags().set_index("video_id")
    for video in head_data.item_ids[[1, 50, 400]].tolist():
        assert set(np.flatnonzero(table["tags"][video + 1].toarray()[0])) == set(tags.loc[video, "tags"])
    never_watched = np.flatnonzero(~data.existing_items()[1:])[0]  # a video id the user never saw
    assert table["tags"][never_watched + 1].nnz > 0  # still described: the file covers every video
    assert table.group("tags").covered == head_data.num_items


def test_every_row_of_the_real_files_is_read_and_aligned() -> None:
    """All 10,728 caption/tag rows and 7,176 users, compared whole against pandas' own parse."""
    captions, tags = pandas_captions(), pandas_tags()
    assert len(captions) == 10_728 and len(tags) == 10_728
    users = pd.read_csv(sample_dir() / USERS)
    assert len(users) == 7_176
    data = tiny_data(tags["video_id"].tolist(), users["user_id"].tolist(), name="all_videos")
    table = build_feature_table(data, sample_dir(), cut_timestamp=None)
    rows = np.searchsorted(data.item_ids[1:], tags["video_id"].to_numpy()) + 1
    owner = np.repeat(rows, tags["tags"].map(len).to_numpy())
    expected = sp.csr_matrix(
        (np.ones(len(owner), dtype=np.float32), (owner, np.concatenate(tags["tags"].to_numpy()))),
        shape=(data.num_items + 1, 31),
    )
    assert (table["tags"] != expected).nnz == 0
    caption_rows = np.searchsorted(data.item_ids[1:], captions["video_id"].to_numpy()) + 1
    for column in ("first_level_category_id", "second_level_category_id", "third_level_category_id"):
        want = captions[column].astype(str).where(captions[column] != -124, "?").to_numpy(dtype=object)
        np.testing.assert_array_equal(vocabulary_labels(table, "categories", column)[caption_rows], want)
    sizes = table.group("categories").vocab_sizes
    assert sizes == {
        "first_level_category_id": 39,
        "second_level_category_id": 138,
        "third_level_category_id": 220,
    }
    text = captions["caption"].fillna("").str.strip()
    nonzero = (table["caption"][caption_rows] != 0).any(axis=1)
    np.testing.assert_array_equal(nonzero, (text.str.len() > 0).to_numpy())
    assert nonzero.sum() == 10_728 - 1_355 - 1  # 1,355 missing captions and one blank one
    user_rows = np.searchsorted(data.user_ids[1:], users["user_id"].to_numpy()) + 1
    for column in ("fans_user_num_range", "onehot_feat3", "onehot_feat4"):
        want = users[column].astype("Int64").astype(str) if column.startswith("onehot") else users[column]
        want = want.where(users[column].notna(), "?").to_numpy(dtype=object)
        np.testing.assert_array_equal(vocabulary_labels(table, "user", column)[user_rows], want)
    assert table.group("user").vocab_sizes["onehot_feat3"] == 1_077
    assert table.group("user").covered == 7_176 and table.group("tags").covered == 10_728
    topics = table["topics"][caption_rows]
    has_topics = (captions["topic_tag"] != "[]").to_numpy()
    np.testing.assert_array_equal(np.diff(topics.indptr) > 0, has_topics)


def test_caption_vectors_are_seeded_normalised_and_zero_when_missing() -> None:
    captions = pd.Series(
        ["晚饭后，运动一下！", None, "  ", "晚饭后，运动一下！", "程哥你狗粮慢点撒", "K12 教育"]
    )
    first, again = caption_vectors(captions, 4, seed=0), caption_vectors(captions, 4, seed=0)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (6, 4) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first[[0, 3, 4, 5]], axis=1), 1.0, atol=1e-6)
    assert (first[[1, 2]] == 0).all()
    assert first[0].tobytes() == first[3].tobytes()  # the same caption, the same bytes (no -0.0 either)
    assert caption_vectors(captions, 8, seed=0).shape == (6, 8)  # more dimensions than captions: zero-padded


# ----------------------------------------------------------------------------- unknowns and bad files
def copy_real(names: list[str], target: Path) -> Path:
    """Copy some real side files into a scratch folder (under tmp_path, never into the repository)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(sample_dir() / name, target / name)
    return target


def test_videos_and_users_missing_from_the_files_get_unknown_ids() -> None:
    data = tiny_data(
        [1, 1378, 10_727, 99_999], [0, 7_175, 50_000]
    )  # video 99,999, user 50,000: not in the files
    table = build_feature_table(data, sample_dir(), cut_timestamp=None)
    absent = int(np.flatnonzero(data.item_ids == 99_999)[0])
    assert table["tags"][absent].nnz == 0 and table["topics"][absent].nnz == 0
    assert (table["categories"][absent] == 0).all() and (table["caption"][absent] == 0).all()
    assert (table["user"][3] == 0).all() and (table["user"][1:3] > 0).all()
    captions = pandas_captions().set_index("video_id")
    row = int(np.flatnonzero(data.item_ids == 1378)[0])
    assert vocabulary_labels(table, "categories", "first_level_category_id")[row] == str(
        captions.loc[1378, "first_level_category_id"]
    )
    assert table.group("tags").covered == 3 and table.group("user").covered == 2


def test_missing_optional_files_leave_their_groups_unavailable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    copy_real([TAGS], tmp_path / "only_tags" / "data")  # found under DIR/data too
    data = tiny_data([0, 1, 2], [0])
    with caplog.at_level(logging.WARNING, logger="sasrec"):
        table = build_feature_table(data, tmp_path / "only_tags", cut_timestamp=CUT)
    assert table.groups_available == ("tags",)
    assert set(table.unavailable) == set(GROUPS) - {"tags"}
    assert table.schema()["unavailable"]["caption"] == f"{CAPTIONS} not found"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(DAILY in w and "item_static, item_stats" in w for w in warnings)
    with pytest.raises(MissingDataError, match="caption of tiny is unavailable"):
        table.group("caption")
    with pytest.raises(ConfigError, match="no feature group 'colour'"):
        table.group("colour")
    empty = build_feature_table(data, tmp_path / "nothing", cut_timestamp=None)
    assert empty.groups_available == () and len(empty.unavailable) == len(GROUPS)


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text", "pattern"),
    [
        (TAGS, "video_id,tags\n0,[1]\n", r"item_categories\.csv: missing column\(s\) \['feat'\]"),
        (
            TAGS,
            "video_id,feat\n5000,[1]\n5001,[2]\n",
            r"item_categories\.csv: column 'video_id' has none of the ids",
        ),
        (
            TAGS,
            "video_id,feat\n0,[1]\n0,[2]\n",
            r"item_categories\.csv: column 'video_id' has 1 duplicated id",
        ),
        (
            TAGS,
            "video_id,feat\n0,[31]\n",
            r"item_categories\.csv: column 'feat' has 1 tag\(s\) outside 0\.\.30",
        ),
        (
            TAGS,
            "video_id,feat\n0,27 9\n",
            r"item_categories\.csv: column 'feat' has 1 of 1 rows with a malformed list",
        ),
    ],
)
def test_corrupt_item_categories_are_refused_naming_file_and_column(
    tmp_path: Path, name: str, text: str, pattern: str
) -> None:
    write_text(tmp_path / name, text)
    with pytest.raises(DataValidationError, match=pattern):
        build_feature_table(tiny_data([0, 1, 2], [0]), tmp_path, cut_timestamp=None)


def test_corrupt_captions_and_users_are_refused_naming_file_and_column(tmp_path: Path) -> None:
    captions = pandas_captions()
    data = tiny_data([0, 1, 2], [0, 1])
    shifted = captions.assign(video_id=captions["video_id"] + 100_000)
    shifted.to_csv(tmp_path / CAPTIONS, index=False, lineterminator="\n")
    with pytest.raises(
        DataValidationError, match=r"kuairec_caption_category\.csv: column 'video_id' has none"
    ):
        build_feature_table(data, tmp_path, cut_timestamp=None)
    captions.loc[2, "topic_tag"] = "topic without brackets"
    captions.to_csv(tmp_path / CAPTIONS, index=False, lineterminator="\n")
    with pytest.raises(
        DataValidationError, match=r"kuairec_caption_category\.csv: column 'topic_tag' has 1 value"
    ):
        build_feature_table(data, tmp_path, cut_timestamp=None)
    (tmp_path / CAPTIONS).unlink()
    codes = {f"onehot_feat{i}": "Int64" for i in range(18)}  # NA codes: integers must stay integers
    users = pd.read_csv(sample_dir() / USERS, dtype=codes).drop(columns=["onehot_feat3"])
    users.to_csv(tmp_path / USERS, index=False)
    with pytest.raises(
        DataValidationError, match=r"user_features\.csv: missing column\(s\) \['onehot_feat3'\]"
    ):
        build_feature_table(data, tmp_path, cut_timestamp=None)
    lines = (sample_dir() / USERS).read_text(encoding="utf-8").splitlines(keepends=True)
    write_text(tmp_path / USERS, "".join([*lines, lines[1]]))  # user 0 twice
    with pytest.raises(
        DataValidationError, match=r"user_features\.csv: column 'user_id' has 1 duplicated id"
    ):
        build_feature_table(data, tmp_path, cut_timestamp=None)


def test_bad_parameters_are_config_errors(tmp_path: Path) -> None:
    data = tiny_data([0, 1], [0])
    with pytest.raises(ConfigError, match="unknown feature group"):
        build_feature_table(data, tmp_path, cut_timestamp=None, groups=["tags", "colour"])
    with pytest.raises(ConfigError, match="caption_dim"):
        build_feature_table(data, tmp_path, cut_timestamp=None, caption_dim=0)
    with pytest.raises(ConfigError, match="cut_timestamp"):
        build_feature_table(data, tmp_path, cut_timestamp="2020-07-10")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------- item_daily
def daily_frame(videos: list[int], first: int = 20200701, days: int = 20, seed: int = 0) -> pd.DataFrame:
    """A KuaiRec-schema item_daily_features frame: one row per video and day, every official column."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range(pd.to_datetime(str(first)), periods=days).strftime("%Y%m%d").astype(int).to_numpy()
    video = np.repeat(np.asarray(videos), days)
    n = len(video)
    frame = {}
    for name in OFFICIAL_FILES[DAILY].column_names:
        frame[name] = rng.integers(0, 500, n).astype(np.float64)
    frame.update(
        {
            "video_id": video,
            "date": np.tile(dates, len(videos)),
            "author_id": video * 7 + 1,
            "video_type": np.where(video % 2 == 0, "NORMAL", "AD"),
            "upload_dt": "2020-06-20",
            "upload_type": "ShortImport",
            "visible_status": "public",
            "video_duration": 1000.0 * (video % 40 + 3),
            "video_tag_name": "tag",
            "show_cnt": rng.integers(1_000, 5_000, n).astype(np.float64),
            "play_cnt": rng.integers(100, 1_000, n).astype(np.float64),
            "play_progress": rng.random(n),
        }
    )
    return pd.DataFrame(frame)[OFFICIAL_FILES[DAILY].column_names]


def daily_table(folder: Path, frame: pd.DataFrame, data: PreparedData, cut: int | None = CUT) -> FeatureTable:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / DAILY, index=False)
    return build_feature_table(data, folder, cut_timestamp=cut, groups=["item_static", "item_stats"])


def test_cut_date_is_the_shanghai_day_of_the_cut() -> None:
    assert cut_date_of(CUT) == 20200710
    assert cut_date_of(1_594_310_399) == 20200709 and cut_date_of(1_594_310_400) == 20200710  # 16:00 UTC
    data = tiny_data([0, 1, 2, 3], [0])
    held_out = data.events["split_temporal"].to_numpy() != TRAIN
    assert feature_cut(data) == int(data.events["timestamp"][held_out].min())
    assert cut_date_of(None) is None


def test_item_daily_rows_on_or_after_the_cut_change_no_feature(tmp_path: Path) -> None:
    data = tiny_data([0, 1, 2, 3], [0])
    frame = daily_frame([0, 1, 2, 3, 8])  # video 8 is not in the dataset
    base = daily_table(tmp_path / "base", frame, data)
    later = frame["date"] >= 20200710  # the cut's own day included
    assert later.any() and (~later).any()
    changed = frame.copy()
    counters = ["show_cnt", "play_cnt", "like_cnt", "complete_play_cnt", "comment_cnt", "share_cnt"]
    changed.loc[later, counters] *= 7
    changed.loc[later, ["author_id", "video_type", "upload_dt", "video_duration"]] = [
        999,
        "AD",
        "2019-01-01",
        250_000.0,
    ]
    changed.loc[later & (changed["video_id"] == 1), "date"] += 100  # moved further into the future
    extra = daily_frame(
        [2, 40], first=20200801, days=5, seed=1
    )  # new rows after the cut, even for a new video
    changed = pd.concat([changed, extra], ignore_index=True).sample(frac=1.0, random_state=0)
    after = daily_table(tmp_path / "after", changed, data)
    assert after.digest() == base.digest()
    for name in ("item_static", "item_stats"):
        np.testing.assert_array_equal(after[name], base[name])

    before = frame.copy()
    target = (before["video_id"] == 2) & (before["date"] == 20200705)
    before.loc[target, "play_cnt"] += 1_000
    moved = daily_table(tmp_path / "before", before, data)
    rows_changed = np.flatnonzero((moved["item_stats"] != base["item_stats"]).any(axis=1))
    assert rows_changed.tolist() == [int(np.flatnonzero(data.item_ids == 2)[0])]
    assert moved.digest() != base.digest()
    everything = daily_table(tmp_path / "no_cut", changed, data, cut=None)
    assert not np.array_equal(everything["item_stats"], base["item_stats"])  # without a cut, later days count


def test_item_daily_values_match_a_hand_computation(tmp_path: Path) -> None:
    data = tiny_data([0, 1, 2, 3], [0])
    frame = daily_frame([0, 1, 2, 3])
    table = daily_table(tmp_path, frame, data)
    days = frame[(frame["video_id"] == 3) & (frame["date"] < 20200710)]
    row = int(np.flatnonzero(data.item_ids == 3)[0])
    stats = dict(zip(table.group("item_stats").columns, table["item_stats"][row].tolist(), strict=True))
    assert stats["has_history"] == 1.0 and stats["log1p_days"] == pytest.approx(np.log1p(9))
    assert stats["like_per_play"] == pytest.approx(days["like_cnt"].sum() / days["play_cnt"].sum(), rel=1e-6)
    assert stats["log1p_mean_play_cnt"] == pytest.approx(np.log1p(days["play_cnt"].mean()), rel=1e-6)
    static = table.group("item_static")
    labels = {c: vocabulary_labels(table, "item_static", c)[row] for c in static.columns}
    assert labels["author_id"] == "22" and labels["video_type"] == "AD"
    assert labels["duration_bucket"] == "(5,10]" and labels["upload_age_bucket"] == "(14,30]"  # 6 s; 20 days
    assert (table["item_stats"][0] == 0).all() and (table["item_static"][0] == 0).all()
    late = daily_table(tmp_path / "late", frame[frame["video_id"] != 3].pipe(
        lambda f: pd.concat([f, daily_frame([3], first=20200712, days=3)])), data)  # fmt: skip
    assert (late["item_stats"][row] == 0).all() and (
        late["item_static"][row] == 0
    ).all()  # uploaded after the cut


def test_item_daily_duplicate_days_are_refused(tmp_path: Path) -> None:
    frame = daily_frame([0, 1])
    with pytest.raises(
        DataValidationError, match=r"item_daily_features\.csv: columns 'video_id', 'date' repeat 1"
    ):
        daily_table(tmp_path, pd.concat([frame, frame.iloc[[3]]]), tiny_data([0, 1], [0]))


# ------------------------------------------------------------------------------ digest and storage
def test_digest_is_stable_and_follows_one_tag(tmp_path: Path) -> None:
    folder = copy_real([TAGS, USERS], tmp_path / "side")
    data = tiny_data([0, 1, 2, 5, 10], [0, 1])
    first = build_feature_table(data, folder, cut_timestamp=CUT)
    assert build_feature_table(data, folder, cut_timestamp=CUT).digest() == first.digest()
    assert len(first.digest()) == 64
    tags = pd.read_csv(folder / TAGS)
    assert tags.loc[1, "feat"] == "[27, 9]"
    tags.loc[1, "feat"] = "[27, 8]"
    tags.to_csv(folder / TAGS, index=False)
    assert build_feature_table(data, folder, cut_timestamp=CUT).digest() != first.digest()
    assert (
        build_feature_table(data, folder, cut_timestamp=CUT, seed=1).digest() != first.digest()
    )  # params count


def test_save_load_round_trip_and_damage_is_refused(tmp_path: Path, head_table: FeatureTable) -> None:
    folder = save_feature_table(head_table, tmp_path / "features")
    loaded = load_feature_table(folder)
    assert loaded.digest() == head_table.digest() and loaded.schema() == head_table.schema()
    for name in head_table.groups_available:
        a, b = head_table[name], loaded[name]
        assert (a != b).nnz == 0 if sp.issparse(a) else np.array_equal(a, b)
        assert loaded.group(name).vocabularies == head_table.group(name).vocabularies
    assert not loaded["categories"].flags.writeable
    save_feature_table(head_table, folder)  # replaced in place
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".features")]  # no temporaries left

    arrays = folder / "features.npz"
    raw = bytearray(arrays.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    arrays.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        load_feature_table(folder)
    arrays.write_bytes(bytes(raw[:-10]))
    with pytest.raises(IntegrityError, match="truncated"):
        load_feature_table(folder)
    save_feature_table(head_table, folder)
    meta = folder / "features.json"
    meta.write_text(
        meta.read_text(encoding="utf-8").replace('"caption_dim": 32', '"caption_dim": 16'), encoding="utf-8"
    )
    with pytest.raises(IntegrityError, match="does not match its checksum"):
        load_feature_table(folder)
    with pytest.raises(MissingDataError, match="has no features.json"):
        load_feature_table(tmp_path / "nowhere")


def test_simulated_side_files_build(tmp_path: Path) -> None:
    from sasrec.data.simulator import simulate

    simulate(scale=0.02, seed=0, out_dir=tmp_path / "sim", progress=False)
    frame, _ = kuairec.load_interactions(tmp_path / "sim" / "big_matrix.csv", cache=False)
    data = prep.prepare_frame(frame, "big_matrix")
    table = build_feature_table(data, tmp_path / "sim", cut_timestamp=feature_cut(data))
    written = {group for group, source in GROUP_SOURCES.items() if (tmp_path / "sim" / source).is_file()}
    assert {"tags", "user"} <= written and set(table.groups_available) == written
    assert table.group("tags").covered == data.num_items and table.group("user").covered == data.num_users
