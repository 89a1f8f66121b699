"""recommend(): columns, original ids, history masking, popularity fallback; self-checking recommendation files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sasrec import integrity
from sasrec.errors import ConfigError, IntegrityError, MissingDataError
from sasrec.inference import recommend as recommend_module
from sasrec.inference.recommend import read_recommendations, recommend, write_recommendations
from sasrec.models.baselines import make_baseline
from tests.conftest import make_prepared


@pytest.fixture
def data_with_cold_user():
    """Users 1-3 as below plus user 4 whose only event is a test event (no train + valid history).

    Train + valid events: user 1: 1, 2, 4; user 2: 2, 3; user 3: 2. Item counts: 1:1, 2:3, 3:1, 4:1, 5:0.
    """
    rows = [
        (1, 1, 1.0, 1.0, 0),
        (1, 2, 2.0, 1.0, 0),
        (1, 4, 3.0, 1.0, 1),
        (1, 5, 4.0, 1.0, 2),
        (2, 2, 1.0, 1.0, 0),
        (2, 3, 2.0, 1.0, 0),
        (3, 2, 1.0, 1.0, 0),
        (4, 5, 1.0, 3.0, 2),
    ]
    return make_prepared(rows, num_users=4, num_items=5)


def test_recommend_columns_ids_masking_and_fallback(data_with_cold_user) -> None:
    data = data_with_cold_user
    # pop fitted on train + valid: scores 1:1, 2:3, 3:1, 4:1, 5:0
    mask = data.events["split_temporal"].to_numpy() <= 1
    model = make_baseline("pop").fit(data, mask)
    recs = recommend(model, data, top_n=2)
    assert list(recs.columns) == ["user_id", "rank", "video_id", "score", "fallback"]
    assert recs.dtypes.astype(str).tolist() == ["int64", "int32", "int64", "float32", "bool"]
    # original ids: user index u -> user_id u - 1; item index i -> video_id 10 * (i - 1)
    got = {uid: frame["video_id"].tolist() for uid, frame in recs.groupby("user_id")}
    assert got[0] == [20, 40]  # user 1 saw 1, 2, 4 -> items 3 (1) then 5 (0)
    assert got[1] == [0, 30]  # user 2 saw 2, 3 -> items 1, 4 tie at 1: lower index first
    assert got[2] == [0, 20]  # user 3 saw 2 -> 1, 3 (tie at 1)
    assert got[3] == [10, 0]  # user 4: no history -> popularity list 2 (3), 1 (1)
    assert recs.loc[recs["user_id"] == 3, "fallback"].all()
    assert not recs.loc[recs["user_id"] != 3, "fallback"].any()
    assert recs.loc[recs["user_id"] == 3, "score"].tolist() == [3.0, 1.0]
    assert recs.groupby("user_id")["rank"].apply(list).tolist() == [[1, 2]] * 4


def test_recommend_without_masking_and_custom_popularity(data_with_cold_user) -> None:
    data = data_with_cold_user
    model = make_baseline("pop").fit(data, data.events["split_temporal"].to_numpy() <= 1)
    recs = recommend(model, data, top_n=1, mask_history=False, popularity=np.array([0, 0, 0, 0, 0, 9.0]))
    assert recs["video_id"].tolist() == [10, 10, 10, 40]  # everyone gets item 2; the cold user item 5
    with pytest.raises(ConfigError, match="top_n"):
        recommend(model, data, top_n=0)


@pytest.fixture
def written(tmp_path: Path, data_with_cold_user) -> tuple[pd.DataFrame, Path]:
    """Top-3 popularity lists of the tiny data written under ``tmp_path/sub/pop_tiny`` with a fake checkpoint."""
    data = data_with_cold_user
    model = make_baseline("pop").fit(data, data.events["split_temporal"].to_numpy() <= 1)
    recs = recommend(model, data, top_n=3)
    checkpoint = tmp_path / "model.pth"
    checkpoint.write_bytes(b"weights")
    made_by = {"checkpoint": checkpoint, "dataset": data.name, "split": "temporal", "top_n": 3}
    write_recommendations(recs, tmp_path / "sub" / "pop_tiny", made_by=made_by)
    return recs, tmp_path / "sub" / "pop_tiny"


def test_write_recommendations_with_a_sealed_manifest(
    written: tuple[pd.DataFrame, Path], tmp_path: Path
) -> None:
    recs, stem = written
    parquet_path, csv_path = stem.with_name("pop_tiny.parquet"), stem.with_name("pop_tiny.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path), recs)
    assert pd.read_csv(csv_path)["video_id"].tolist() == recs["video_id"].tolist()
    visible = sorted(p.name for p in stem.parent.iterdir() if not p.name.startswith("."))
    assert visible == ["pop_tiny.csv", "pop_tiny.manifest.json", "pop_tiny.parquet"]
    manifest = integrity.read_sealed_json(stem.with_name("pop_tiny.manifest.json"))
    assert manifest["files"] == {name: integrity.file_record(stem.parent / name) for name in
                                 ("pop_tiny.parquet", "pop_tiny.csv")}  # fmt: skip
    assert (manifest["rows"], manifest["users"]) == (len(recs), 4)
    made_by = integrity.made_by(manifest)
    assert made_by["checkpoint"] == str(tmp_path / "model.pth")
    assert made_by["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert (made_by["dataset"], made_by["split"], made_by["top_n"]) == ("tiny", "temporal", 3)
    assert made_by["version"] and made_by["rewritten_by"].startswith("python ")
    pd.testing.assert_frame_equal(read_recommendations(stem), recs)
    with pytest.raises(ConfigError, match="lack column 'score'"):
        write_recommendations(recs.drop(columns="score"), tmp_path / "x")


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


DAMAGES = {
    "truncated CSV": (
        lambda stem: stem.with_name("pop_tiny.csv").write_bytes(
            stem.with_name("pop_tiny.csv").read_bytes()[:-9]
        ),
        "pop_tiny.csv has {csv_bytes:,} bytes instead of",
    ),
    "bit-flipped parquet": (
        lambda stem: _flip(stem.with_name("pop_tiny.parquet"), 40),
        "pop_tiny.parquet does not match its sha256 (damaged)",
    ),
    "missing manifest": (
        lambda stem: stem.with_name("pop_tiny.manifest.json").unlink(),
        "pop_tiny.manifest.json is missing (the write was interrupted, or an older version wrote them)",
    ),
    "edited manifest": (
        lambda stem: stem.with_name("pop_tiny.manifest.json").write_text(
            stem.with_name("pop_tiny.manifest.json").read_text().replace('"rows": 11', '"rows": 12')
        ),
        "pop_tiny.manifest.json does not match its checksum (edited or damaged)",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_recommendation_files_are_refused_in_one_line(
    written: tuple[pd.DataFrame, Path], damage: str
) -> None:
    recs, stem = written
    spoil, problem = DAMAGES[damage]
    spoil(stem)
    with pytest.raises(IntegrityError) as caught:
        read_recommendations(stem)
    message = str(caught.value)
    csv_bytes = stem.with_name("pop_tiny.csv").stat().st_size
    assert message.startswith(f"recommendation files {stem}.*: ") and "\n" not in message
    assert problem.format(csv_bytes=csv_bytes) in message, message
    assert "write them again" in message
    write_recommendations(recs, stem)  # writing again repairs them
    pd.testing.assert_frame_equal(read_recommendations(stem), recs)


def test_interrupted_write_leaves_no_manifest_describing_incomplete_files(
    written: tuple[pd.DataFrame, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    recs, stem = written
    manifest = stem.with_name("pop_tiny.manifest.json")
    assert json.loads(manifest.read_text())["rows"] == len(recs) == 11

    def csv_write_fails(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process stops between the parquet and the CSV

    monkeypatch.setattr(pd.DataFrame, "to_csv", csv_write_fails)
    with pytest.raises(KeyboardInterrupt):
        write_recommendations(recs.head(5), stem)
    monkeypatch.undo()
    assert not manifest.exists()  # the old manifest went first: it cannot describe the new parquet
    assert len(pd.read_parquet(stem.with_name("pop_tiny.parquet"))) == 5  # new parquet, old CSV
    assert len(pd.read_csv(stem.with_name("pop_tiny.csv"))) == 11
    with pytest.raises(IntegrityError, match="manifest.json is missing"):
        read_recommendations(stem)
    with pytest.raises(MissingDataError, match="do not exist"):
        read_recommendations(stem.with_name("other"))
    assert recommend_module.recommendation_paths(stem)[2] == manifest
