"""The prepared-data contract: CSR sequences, padding, evaluation tasks, the big-to-small task."""

from __future__ import annotations

import numpy as np
import pytest

from sasrec.data.contracts import csr_from_groups, left_padded_tails
from sasrec.data.tasks import build_cross_task, build_eval_task, resolve_relevance
from sasrec.errors import ConfigError
from tests.conftest import make_prepared


def test_left_padded_tails_pads_left_and_keeps_the_most_recent_items() -> None:
    indptr, values = csr_from_groups(np.array([1, 1, 1, 2]), np.array([7, 8, 9, 4]), 3)
    out = left_padded_tails(indptr, values, np.array([1, 2, 0]), maxlen=2)
    assert out.tolist() == [[8, 9], [0, 4], [0, 0]]
    out4 = left_padded_tails(indptr, values, np.array([1]), maxlen=4)
    assert out4.tolist() == [[0, 7, 8, 9]]


def test_sequences_follow_event_order(tiny_data) -> None:
    history_mask, target_mask = tiny_data.stage_masks("temporal", "test")
    indptr, items = tiny_data.sequences(history_mask)
    assert items[indptr[1] : indptr[2]].tolist() == [1, 2, 3, 4]
    assert items[indptr[2] : indptr[3]].tolist() == [2, 3]
    assert target_mask.sum() == 3


def test_valid_task_sees_only_training_events(tiny_data) -> None:
    task = build_eval_task(tiny_data, "temporal", "valid", maxlen=3)
    assert task.users.tolist() == [1]  # only user 1 has a validation event
    assert task.sequences.tolist() == [[1, 2, 3]]
    assert task.history.toarray()[0].tolist() == [0, 1, 1, 1, 0, 0]
    assert task.targets.indices.tolist() == [4]
    assert task.relevant.data.tolist() == [1.0]  # 3.0 > 2.0


def test_test_task_masks_seen_targets_and_grades_relevance(tiny_data) -> None:
    task = build_eval_task(tiny_data, "temporal", "test", maxlen=5)
    assert task.users.tolist() == [1, 2]
    # user 1: item 2 re-watched in test is in history -> dropped from targets; item 5 stays (2.1 > 2.0)
    assert task.targets[0].indices.tolist() == [5]
    assert task.targets[0].data.tolist() == pytest.approx([2.1])
    assert task.relevant[0].data.tolist() == [1.0]
    # user 2: item 1 with watch_ratio 1.5 is a target but not relevant
    assert task.targets[1].indices.tolist() == [1]
    assert task.relevant[1].data.tolist() == [0.0]
    assert task.sequences[0].tolist() == [0, 1, 2, 3, 4]
    unmasked = build_eval_task(tiny_data, "temporal", "test", mask_history=False)
    assert unmasked.targets[0].indices.tolist() == [2, 5]
    assert unmasked.targets[0].data.tolist() == pytest.approx([4.0, 2.1])


def test_relevance_threshold_parameter(tiny_data) -> None:
    task = build_eval_task(tiny_data, "temporal", "test", relevance_threshold=1.0)
    assert task.relevant[1].data.tolist() == [1.0]  # 1.5 > 1.0


def test_unknown_split_is_a_config_error(tiny_data) -> None:
    with pytest.raises(ConfigError, match="split must be one of"):
        build_eval_task(tiny_data, "random", "test")


def test_fingerprint_changes_with_id_maps(tiny_data) -> None:
    other = make_prepared([(1, 1, 1.0, 1.0, 0)], num_users=3, num_items=6)
    assert tiny_data.fingerprint != other.fingerprint
    assert tiny_data.fingerprint == make_prepared([(2, 2, 1.0, 1.0, 0)], num_users=3, num_items=5).fingerprint


def test_cross_task_matches_original_ids_and_restricts_candidates(tiny_data) -> None:
    # the "small" dataset uses other internal indices: its item k is original id 10*(k+1) -> big item k+2
    small = make_prepared(
        [(1, 1, 1.0, 3.0, 0), (1, 2, 2.0, 0.5, 0), (2, 1, 1.0, 0.1, 0)],
        num_users=2,
        num_items=2,
        name="small",
    )
    small.item_ids = np.array([-1, 20, 30])
    small.user_ids = np.array([-1, 0, 1])  # original user 0 -> big user 1, 1 -> big user 2
    task = build_cross_task(tiny_data, small, maxlen=4)
    assert task.users.tolist() == [1, 2]
    assert task.candidates.nonzero()[0].tolist() == [3, 4]
    # big user 1 watched items 1..5 in the big data, so both of its targets are masked history
    assert task.targets[0].indices.tolist() == []
    # big user 2's history is items 2, 3, 1: item 3 masked, so nothing left either
    assert task.targets[1].indices.tolist() == []
    unmasked = build_cross_task(tiny_data, small, maxlen=4, mask_history=False)
    assert unmasked.targets[0].indices.tolist() == [3, 4]
    assert unmasked.relevant[0].data.tolist() == [1.0, 0.0]
    assert unmasked.sequences[0].tolist() == [3, 4, 5, 2]


def test_cross_task_rejects_test_users_missing_from_training(tiny_data) -> None:
    small = make_prepared([(1, 1, 1.0, 3.0, 0)], num_users=1, num_items=1, name="small")
    small.user_ids = np.array([-1, 99])
    with pytest.raises(ConfigError, match="no history"):
        build_cross_task(tiny_data, small)


class _FixedScorer:
    """Scores every row with the same vector (higher is better)."""

    def __init__(self, scores: list[float]) -> None:
        import torch

        self.scores = torch.tensor(scores, dtype=torch.float32)

    def score(self, task, rows):  # noqa: ANN001, ANN201
        return self.scores.expand(len(rows), -1).clone()


def _with_untimed_label(tiny_data, user: int, item: int, watch_ratio: float = 1.0):
    import pandas as pd

    tiny_data.labels = pd.DataFrame(
        {"user": pd.array([user], dtype="int32"), "item": pd.array([item], dtype="int32"),
         "watch_ratio": pd.array([watch_ratio], dtype="float32"), "liked": [True], "relevant": [False]}
    )  # fmt: skip
    return tiny_data


def test_untimed_label_items_are_excluded_from_ranking_not_from_input(tiny_data) -> None:
    from sasrec.evaluation.protocol import evaluate

    # user 2 watched item 4 at an unknown time (a KuaiRec forced exposure): neither input nor target
    data = _with_untimed_label(tiny_data, user=2, item=4)
    task = build_eval_task(data, "temporal", "test")
    assert task.exclude is not None
    assert task.exclude[1].indices.tolist() == [4] and task.exclude[0].nnz == 0
    assert 4 not in task.history[1].indices and 4 not in task.sequences[1]
    # a scorer preferring item 4, then 1: for user 2 (target 1, not relevant) the top item must be 1;
    # user 1's only rankable items are 5 (relevant target) and... 1-4 are history, so 5 ranks first.
    result = evaluate(_FixedScorer([0.0, 2.0, 0.0, 0.0, 9.0, 1.0]), task, k=1)
    per_user = result.per_user.set_index("user")
    assert per_user.loc[1, "ndcg@1"] == pytest.approx(1.0)
    # user 2's target (item 1, watch_ratio 1.5) is ranked first only because item 4 is excluded
    assert per_user.loc[2, "graded_ndcg@1"] == pytest.approx(1.0)
    # user 1 can only be ranked among item 5; user 2 among items 1 and 5 (not the excluded 4)
    assert per_user["n_candidates"].tolist() == [1, 2]
    assert result.summary["mean_candidates"] == pytest.approx(1.0)  # over users with a relevant target


def test_recommendations_never_repeat_untimed_views(tiny_data) -> None:
    from sasrec.inference.recommend import recommend

    data = _with_untimed_label(tiny_data, user=2, item=4)
    recs = recommend(_FixedScorer([0.0, 2.0, 0.0, 0.0, 9.0, 1.0]), data, top_n=1)
    top = recs.set_index("user_id")["video_id"]
    # user index 2 is original id 1; item 4 is video 30 (excluded), item 1 is video 0
    assert top.loc[1] == 0
    # user index 3 (original 2) watched only item 4 in the timed history: its top item is 1 (video 0)
    assert top.loc[2] == 0


# ------------------------------------------------------------------------------------ relevance rules
def test_relevance_rules(tiny_data) -> None:
    # test targets: user 1 item 5 (watch_ratio 2.1, liked); user 2 item 1 (1.5, liked)
    threshold = build_eval_task(tiny_data, "temporal", "test")
    assert (threshold.relevance, threshold.relevance_threshold) == ("threshold", 2.0)
    assert threshold.relevant.data.tolist() == [1.0, 0.0]
    strict = build_eval_task(tiny_data, "temporal", "test", relevance_threshold=2.5)
    assert strict.relevant.data.tolist() == [0.0, 0.0]
    liked = build_eval_task(tiny_data, "temporal", "test", relevance="liked")
    assert liked.relevant.data.tolist() == [1.0, 1.0]
    assert liked.relevance == "liked" and liked.relevance_threshold == 0.7
    tiny_data.events.loc[8, "liked"] = False  # user 2's test view of item 1: liked decides, not watch_ratio
    assert build_eval_task(tiny_data, "temporal", "test", relevance="liked").relevant.data.tolist() == [
        1.0,
        0.0,
    ]
    everything = build_eval_task(tiny_data, "temporal", "test", relevance="all")
    assert everything.relevant.data.tolist() == [1.0, 1.0] and np.isnan(everything.relevance_threshold)
    with pytest.raises(ConfigError, match="relevance must be one of threshold, liked, all"):
        build_eval_task(tiny_data, "temporal", "test", relevance="positive")
    with pytest.raises(ConfigError, match="relevance_threshold=1.0 only applies to relevance='threshold'"):
        build_eval_task(tiny_data, "temporal", "test", relevance="liked", relevance_threshold=1.0)


def test_resolve_relevance() -> None:
    assert resolve_relevance("original", explicit_negatives=True) == "liked"
    assert resolve_relevance("original", explicit_negatives=False) == "all"
    assert resolve_relevance("threshold", explicit_negatives=True) == "threshold"
    with pytest.raises(ConfigError, match="relevance must be one of"):
        resolve_relevance("orignal", explicit_negatives=False)


def test_cross_task_relevance_rules(tiny_data) -> None:
    small = make_prepared(
        [(2, 4, 1.0, 3.0, 0), (2, 5, 2.0, 1.0, 0), (3, 1, 1.0, 0.5, 0)],
        num_users=3,
        num_items=5,
        name="small",
    )
    rel = {
        rule: build_cross_task(tiny_data, small, relevance=rule).relevant
        for rule in ("threshold", "liked", "all")
    }
    # user 2 (row 0): item 4 (3.0), item 5 (1.0); user 3 (row 1): item 1 (0.5)
    assert rel["threshold"].data.tolist() == [1.0, 0.0, 0.0]
    assert rel["liked"].data.tolist() == [1.0, 1.0, 0.0]
    assert rel["all"].data.tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------ original ids, existing items, popularity
def test_tasks_carry_original_ids_and_training_popularity(tiny_data) -> None:
    task = build_eval_task(tiny_data, "temporal", "test")
    assert task.user_ids.tolist() == [0, 1]  # make_prepared: user index u is original id u - 1
    assert task.item_ids.tolist() == [-1, 0, 10, 20, 30, 40]  # padding is -1 whatever the data holds
    # input events of the test stage of every user (user 3 is not evaluated but counts):
    # user 1: 1, 2, 3, 4 (valid); user 2: 2, 3; user 3: 4
    assert task.item_popularity.tolist() == [0, 1, 2, 2, 2, 0]
    assert build_eval_task(tiny_data, "temporal", "valid").item_popularity.tolist() == [0, 1, 2, 2, 1, 0]
    sub = task.subset(np.array([1]))
    assert sub.user_ids.tolist() == [1] and sub.item_popularity is task.item_popularity
    assert task.candidates is None  # every item exists


def test_no_remapping_ranks_only_ids_that_exist() -> None:
    import pandas as pd

    from sasrec.data.preparation import prepare_frame
    from sasrec.evaluation.protocol import evaluate, sampled_lists

    # video ids 0, 2, 5: without remapping, indices 2, 4 and 5 (ids 1, 3, 4) never occur
    frame = pd.DataFrame(
        {"user_id": [0, 0, 0, 1, 1, 1], "video_id": [0, 2, 5, 2, 0, 5], "timestamp": [1.0, 2.0, 3.0, 1.0, 2.0, 9.0],
         "watch_ratio": [3.0, 3.0, 3.0, 3.0, 3.0, 3.0]}
    )  # fmt: skip
    data = prepare_frame(frame, "gap", remap=False)
    assert data.existing_items().tolist() == [False, True, False, True, False, False, True]
    task = build_eval_task(data, "leave_one_out", "test")  # each user's last view: video 5 (index 6)
    assert task.candidates.tolist() == data.existing_items().tolist()
    result = evaluate(_FixedScorer([0.0, 1.0, 9.0, 2.0, 9.0, 9.0, 3.0]), task, k=3)
    # videos 0 and 2 are history; the ids that never occur (score 9) are not ranked: video 5 comes first
    assert result.per_user["n_candidates"].tolist() == [1, 1]
    assert result.summary["ndcg@3"] == pytest.approx(1.0)
    assert result.summary["coverage@3"] == pytest.approx(1 / 3)  # 1 of the 3 videos that exist
    lists = sampled_lists(task, num_negatives=5)
    assert lists["item"].tolist() == [6, 6]  # no eligible negative: ids that never occur are not sampled
    assert lists["n_eligible"].tolist() == [0, 0]


def test_big_to_small_popularity_comes_from_the_training_data(tiny_data) -> None:
    from sasrec.evaluation.protocol import evaluate

    small = make_prepared(
        [(2, 4, 1.0, 3.0, 0), (2, 5, 2.0, 1.0, 0), (3, 1, 1.0, 3.0, 0)], num_users=3, num_items=5
    )
    task = build_cross_task(tiny_data, small)
    # every event of the training data: items 1: 2, 2: 3, 3: 2, 4: 2, 5: 1
    assert task.item_popularity.tolist() == [0, 2, 3, 2, 2, 1]
    result = evaluate(_FixedScorer([0.0, 1.0, 1.0, 1.0, 1.0, 1.0]), task, k=10)
    # the small users' own big histories never hold a small-matrix pair: their column sums gave 0
    assert result.summary["mean_popularity@10"] > 0
    # user 2 ranks 4, 5 (mean 1.5); user 3 ranks 1, 5 (user 3 watched 4 in the big data): mean 1.5
    assert result.per_user["mean_popularity@10"].tolist() == pytest.approx([1.5, 1.5])


def test_cross_task_drops_videos_without_training_events(tiny_data) -> None:
    # the training data indexes video 50 (index 6) but has no event of it, as data prepared without remapping
    tiny_data.item_ids = np.array([-1, 0, 10, 20, 30, 40, 50])
    small = make_prepared([(2, 4, 1.0, 3.0, 0), (2, 5, 2.0, 3.0, 0)], num_users=3, num_items=5, name="small")
    small.item_ids = np.array([-1, 0, 10, 20, 30, 50])  # small item 5 is video 50
    task = build_cross_task(tiny_data, small)
    assert task.candidates.nonzero()[0].tolist() == [4]
    assert task.meta["test_rows_with_unknown_video"] == 1
