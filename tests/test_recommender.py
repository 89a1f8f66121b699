"""The public inference API: ``Recommender.from_checkpoint(path).recommend(video_ids, k)`` in original ids."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from sasrec import Recommender
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError, IntegrityError
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.inference.recommend import recommend
from sasrec.training.config import TrainConfig
from sasrec.training.loop import train
from tests.conftest import make_prepared


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """A tiny SASRec checkpoint on 10 users walking 20 items (original video ids are 10 x the index - 10)."""
    rows = []
    for user in range(1, 11):
        for position in range(8):
            split = 0 if position < 6 else (1 if position == 6 else 2)
            rows.append((user, (user + 2 * position) % 20 + 1, float(position), 2.5, split))
    data = make_prepared(rows, num_users=10, num_items=20, name="rec")
    config = TrainConfig(dataset="rec", hidden_units=8, num_blocks=1, maxlen=5, device="cpu", num_epochs=2,
                         progress=False, dropout_rate=0.0)  # fmt: skip
    result = train(data, config, out_dir=tmp_path_factory.mktemp("rec"))
    return data, result.checkpoint_path


def test_recommend_returns_original_ids_best_first_without_the_history(trained: tuple) -> None:
    data, checkpoint = trained
    rec = Recommender.from_checkpoint(checkpoint)
    history = [int(v) for v in data.item_ids[[3, 5, 7]]]  # original video ids, oldest first
    video_ids, scores = rec.recommend(history, k=4)
    assert len(video_ids) == 4 and set(video_ids) <= set(data.item_ids[1:].tolist())
    assert not set(video_ids) & set(history)  # seen videos are excluded
    assert np.all(np.diff(scores) <= 0)  # best first
    everything, _ = rec.recommend(history, k=20, exclude_seen=False)
    assert set(history) <= set(everything.tolist())
    assert len(rec.recommend(history, k=100).video_ids) == 20 - len(history)  # at most the unseen videos


def test_recommend_scores_as_the_evaluation_scorer_does(trained: tuple) -> None:
    data, checkpoint = trained
    rec = Recommender.from_checkpoint(checkpoint)
    task = build_eval_task(data, "temporal", "test", maxlen=5)
    row = 0
    sequence = task.sequences[row][task.sequences[row] != 0]
    from_api = rec.score([[int(v) for v in data.item_ids[sequence]]])
    from_scorer = SequentialScorer(rec.model, popularity=rec.popularity).score(task, np.array([row]))
    torch.testing.assert_close(from_api[:, 1:], from_scorer[:, 1:])


def test_unknown_videos_are_ignored_and_an_unknown_history_gets_the_popularity_ranking(
    trained: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    data, checkpoint = trained
    rec = Recommender.from_checkpoint(checkpoint)
    known = int(data.item_ids[4])
    with caplog.at_level(logging.WARNING, logger="sasrec"):
        mixed = rec.recommend([999_999, known], k=3)
    assert "1 of 2 video ids are unknown" in caplog.text
    assert mixed.video_ids.tolist() == rec.recommend([known], k=3).video_ids.tolist()
    fallback = rec.recommend([999_999], k=3)
    top = np.argsort(-rec.popularity[1:], kind="stable")[:3] + 1  # most popular fitted videos, ties by index
    assert fallback.video_ids.tolist() == data.item_ids[top].tolist()
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        rec.recommend([known], k=0)


def test_recommend_dataset_matches_the_batch_recommendations_and_refuses_another_split(
    trained: tuple,
) -> None:
    data, checkpoint = trained
    rec = Recommender.from_checkpoint(checkpoint)
    frame = rec.recommend_dataset(data, top_n=3)
    scorer = SequentialScorer(rec.model, popularity=rec.popularity)
    expected = recommend(scorer, data, top_n=3, split="temporal", maxlen=5, popularity=rec.popularity)
    assert frame.equals(expected)
    with pytest.raises(ConfigError, match="split"):
        rec.recommend_dataset(data, top_n=3, split="leave_one_out")


def test_a_damaged_checkpoint_is_refused_in_one_line(trained: tuple, tmp_path: Path) -> None:
    _, checkpoint = trained
    damaged = tmp_path / checkpoint.name
    damaged.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    with pytest.raises(IntegrityError) as caught:
        Recommender.from_checkpoint(damaged)
    assert "\n" not in str(caught.value) and damaged.name in str(caught.value)


def test_example_recommendations_use_the_best_model_and_mark_the_test_events(trained: tuple) -> None:
    from sasrec.study.recommendations import example_recommendations

    data, checkpoint = trained
    summary = {"k": 10, "models": {"worse": {"valid": {"ndcg@10": 0.1}, "best_checkpoint": "missing.pth"},
                          "better": {"valid": {"ndcg@10": 0.3}, "best_checkpoint": str(checkpoint)}}}  # fmt: skip
    table = example_recommendations(summary, data, relevance_threshold=2.0, users=2, k=3)
    assert set(table["model"]) == {"better"} and table["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    first_two = sorted(data.user_ids[1:].tolist())[:2]
    assert table["user_id"].drop_duplicates().tolist() == first_two
    rec = Recommender.from_checkpoint(checkpoint)
    events = data.events
    for user_id, rows in table.groupby("user_id"):
        mine = events[events["user"] == int(np.flatnonzero(data.user_ids == user_id)[0])]
        history = data.item_ids[mine.loc[mine["split_temporal"] <= 1, "item"].to_numpy()]
        expected, _ = rec.recommend(history, k=3)
        assert rows["video_id"].tolist() == expected.tolist()  # the public API on the test-stage input
        test_video = int(data.item_ids[mine.loc[mine["split_temporal"] == 2, "item"].iloc[0]])
        assert rows["relevant_in_test"].tolist() == [v == test_video for v in rows["video_id"]]
    assert not example_recommendations(summary, data, relevance_threshold=3.0, users=2, k=3).shape[0]
    with pytest.raises(ConfigError, match="model='nope' is not in the training summary"):
        example_recommendations(summary, data, relevance_threshold=2.0, model="nope")


def test_only_items_that_exist_in_the_dataset_are_recommended(trained: tuple) -> None:
    """A checkpoint records the items that occur (data prepared without remapping index ids that never do)."""
    data, checkpoint = trained
    rec = Recommender.from_checkpoint(checkpoint)
    assert rec.existing is not None and rec.existing[1:].all() and not rec.existing[0]
    rec.existing = rec.existing.copy()
    absent = [2, 5, 11]  # item indices pretended never to occur
    rec.existing[absent] = False
    video_ids, _ = rec.recommend([int(data.item_ids[1])], k=20)
    assert len(video_ids) == 20 - 1 - len(absent)
    assert not set(video_ids.tolist()) & set(data.item_ids[absent].tolist())
