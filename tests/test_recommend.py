"""recommend(): columns, original ids, history masking, popularity fallback, atomic files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sasrec.errors import ConfigError
from sasrec.inference.recommend import recommend, write_recommendations
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


def test_write_recommendations(tmp_path, data_with_cold_user) -> None:
    data = data_with_cold_user
    model = make_baseline("pop").fit(data, data.events["split_temporal"].to_numpy() <= 1)
    recs = recommend(model, data, top_n=3)
    parquet_path, csv_path = write_recommendations(recs, tmp_path / "sub" / "pop_tiny")
    assert (parquet_path.name, csv_path.name) == ("pop_tiny.parquet", "pop_tiny.csv")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet_path), recs)
    assert pd.read_csv(csv_path)["video_id"].tolist() == recs["video_id"].tolist()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pop_tiny.csv", "pop_tiny.parquet"]
    with pytest.raises(ConfigError, match="lack column 'score'"):
        write_recommendations(recs.drop(columns="score"), tmp_path / "x")
