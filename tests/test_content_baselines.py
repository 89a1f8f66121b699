"""The side-feature baselines (``content``, ``hybrid``): hand-computed cosines, never-seen videos, a planted
tag preference, seeding, shape errors, the registry and the wiring from a real feature table."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import evaluate
from sasrec.models.baselines import BASELINES, baseline_params, make_baseline
from sasrec.models.content import ContentBaseline, HybridBaseline, ItemSideFeatures, encode_block
from tests.conftest import history_task, make_prepared

pytestmark = pytest.mark.unit

R2, R3, R6 = math.sqrt(2), math.sqrt(3), math.sqrt(6)


# 4 videos. tags (3): 1 {0}, 2 {0, 1}, 3 {1}, 4 {2}; one category level: 1 -> 1, 2 -> 1, 3 -> 2, 4 unknown.
# With unit weights: v1 = [1, 0, 0 | 1, 0], v2 = [1/r2, 1/r2, 0 | 1, 0], v3 = [0, 1, 0 | 0, 1],
# v4 = [0, 0, 1 | 0, 0].
TAGS = sp.csr_matrix(np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
CATEGORIES = np.array([[0], [1], [1], [2], [0]], dtype=np.int32)


@pytest.fixture
def four_videos() -> PreparedData:
    """User 1 liked video 1 (wr 1.0) and watched 3 (wr 0.3); user 2 watched 2 and 4 and liked neither."""
    rows = [(1, 1, 1.0, 1.0, 0), (1, 3, 2.0, 0.3, 0), (2, 2, 1.0, 0.2, 0), (2, 4, 2.0, 0.5, 0)]
    return make_prepared(rows, num_users=2, num_items=4)


def test_item_vectors_are_weighted_concatenations_of_unit_blocks() -> None:
    side = ItemSideFeatures.from_arrays(tags=TAGS, categories=CATEGORIES)
    assert side.items.shape == (5, 5) and dict(side.item_blocks) == {"tags": (0, 3), "categories": (3, 5)}
    expected = [[0, 0, 0, 0, 0], [1, 0, 0, 1, 0], [1 / R2, 1 / R2, 0, 1, 0], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]]
    assert side.items.toarray() == pytest.approx(np.array(expected), abs=1e-7)
    weighted = ItemSideFeatures.from_arrays(tags=TAGS, categories=CATEGORIES, weights={"tags": 4.0})
    assert weighted.items.toarray()[2] == pytest.approx([2 / R2, 2 / R2, 0, 1, 0], abs=1e-7)  # sqrt(4) x unit
    # one-hot per column, id 0 (unknown) encodes as nothing; vocabulary sizes from the table
    one_hot = encode_block("c", np.array([[0, 2], [1, 0]]), "categorical", vocab_sizes=[3, 4]).toarray()
    assert one_hot.tolist() == [[0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]
    with pytest.raises(ConfigError, match="ids must lie in 0..vocabulary size - 1"):
        encode_block("c", np.array([[3]]), "categorical", vocab_sizes=[3])
    # a feature table's arrays are read-only: they are copied, never modified
    frozen, codes = sp.csr_matrix(TAGS, copy=True), CATEGORIES.copy()
    for part in (frozen.data, frozen.indices, frozen.indptr, codes):
        part.setflags(write=False)
    again = ItemSideFeatures.from_arrays(tags=frozen, categories=codes)
    assert again.items.toarray() == pytest.approx(side.items.toarray())
    with pytest.raises(ConfigError, match="unknown block"):
        ItemSideFeatures.from_arrays(tags=TAGS, weights={"colour": 1.0})
    with pytest.raises(ConfigError, match="one row per index"):
        ItemSideFeatures.from_arrays(tags=TAGS, categories=CATEGORIES[:4])


def test_content_scores_match_hand_computed_cosines(four_videos: PreparedData) -> None:
    side = ItemSideFeatures.from_arrays(tags=TAGS, categories=CATEGORIES)
    model = make_baseline("content", features=side).fit(four_videos)
    assert isinstance(model, ContentBaseline) and model.target == "liked"
    task = history_task([[1, 3], [2, 4]], n_cols=5)
    scores = model.score(task, np.array([0, 1]))
    assert scores.dtype == torch.float32 and scores.shape == (2, 5) and torch.isinf(scores[:, 0]).all()
    # user 1 liked only video 1: p = v1, |v1| = r2; cos(v1, v2) = (1/r2 + 1) / (r2 * r2)
    assert scores[0, 1:].tolist() == pytest.approx([1.0, (1 + 1 / R2) / 2, 0.0, 0.0], abs=1e-6)
    # user 2 liked nothing: every view, p = (v2 + v4) / 2 = [1/(2 r2), 1/(2 r2), 1/2 | 1/2, 0], |p| = r3 / 2
    user2 = [(1 / R2 + 1) / R6, 2 / R6, 1 / math.sqrt(12), 1 / R3]
    assert scores[1, 1:].tolist() == pytest.approx(user2, abs=1e-6)
    # target views: user 1's profile is (v1 + v3) / 2 = [1/2, 1/2, 0 | 1/2, 1/2], |p| = 1
    views = make_baseline("content", features=side, target="views").fit(four_videos)
    got = views.score(task, np.array([0]))[0, 1:].tolist()
    assert got == pytest.approx([1 / R2, 0.5 + 1 / (2 * R2), 1 / R2, 0.0], abs=1e-6)
    # weights: tags x4 -> v1 = [2, 0, 0 | 1, 0], v2 = [r2, r2, 0 | 1, 0], both of norm r5
    heavy = ItemSideFeatures.from_arrays(tags=TAGS, categories=CATEGORIES, weights={"tags": 4.0})
    got = make_baseline("content", features=heavy).fit(four_videos).score(task, np.array([0]))
    assert got[0, 2].item() == pytest.approx((2 * R2 + 1) / 5, abs=1e-6)
    # an empty history or a user outside the fitted data: zero profile, every score 0
    cold = model.score(history_task([[]], n_cols=5, users=[99]), np.array([0]))
    assert cold[0, 1:].tolist() == [0.0] * 4


def test_a_never_seen_video_sharing_the_liked_tag_ranks_first() -> None:
    # 6 videos, tags: 1, 2, 5 -> tag 0; 3, 6 -> tag 1; 4 -> tag 2. Videos 5 and 6 have no event at all.
    rows = [
        (1, 1, 1.0, 1.5, 0),
        (1, 2, 2.0, 0.9, 0),
        (1, 3, 3.0, 0.2, 0),
        (2, 3, 1.0, 1.0, 0),
        (2, 4, 2.0, 1.0, 0),
    ]
    data = make_prepared(rows, num_users=2, num_items=6)
    tags = sp.csr_matrix((np.ones(6, np.float32), ([1, 2, 3, 4, 5, 6], [0, 0, 1, 2, 0, 1])), shape=(7, 3))
    model = make_baseline("content", features=ItemSideFeatures.from_arrays(tags=tags)).fit(data)
    scores = model.score(history_task([[1, 2, 3]], n_cols=7), np.array([0]))
    scores[0, [1, 2, 3]] = float("-inf")  # history masked, as the evaluation does
    assert int(scores[0].argmax()) == 5
    assert scores[0, 5].item() == pytest.approx(1.0) and scores[0, 6].item() == pytest.approx(0.0)
    # popularity cannot see it: video 5 has no fitted event
    assert make_baseline("pop").fit(data).score(history_task([[1]], n_cols=7), np.array([0]))[0, 5] == 0


N_TAGS, SEEN_PER_TAG, NEW_PER_TAG, N_USERS = 5, 10, 10, 60


def planted_data() -> tuple[PreparedData, ItemSideFeatures, np.ndarray]:
    """Users prefer one tag each: they like 6 seen videos of their tag and dislike 2 of others in training,
    then watch one never-seen video of their tag in test.

    Videos 1..50 are seen, 51..100 never seen in training; video i has tag (i - 1) % 5 (tags interleave, so
    the index order favours no tag) and a small random caption. Returns data, features, never-seen mask.
    """
    rng = np.random.default_rng(7)
    n_seen = N_TAGS * SEEN_PER_TAG
    n_items = n_seen + N_TAGS * NEW_PER_TAG
    tag_of = (np.arange(n_items + 1) - 1) % N_TAGS  # row 0 is padding
    rows, t = [], 0.0
    for u in range(1, N_USERS + 1):
        own = u % N_TAGS
        seen_own = [i for i in range(1, n_seen + 1) if tag_of[i] == own]
        seen_other = [i for i in range(1, n_seen + 1) if tag_of[i] != own]
        new_own = [i for i in range(n_seen + 1, n_items + 1) if tag_of[i] == own]
        events = [(int(i), 1.0) for i in rng.choice(seen_own, 6, replace=False)]
        events += [(int(i), 0.3) for i in rng.choice(seen_other, 2, replace=False)]
        for k in rng.permutation(len(events)):
            rows.append((u, events[k][0], t, events[k][1], 0))
            t += 1
        rows.append((u, int(rng.choice(new_own)), t, 1.0, 2))
        t += 1
    data = make_prepared(rows, num_users=N_USERS, num_items=n_items)
    tags = sp.csr_matrix(
        (np.ones(n_items, np.float32), (np.arange(1, n_items + 1), tag_of[1:])), shape=(n_items + 1, N_TAGS)
    )
    caption = rng.normal(size=(n_items + 1, 8)).astype(np.float32)
    caption[0] = 0.0
    side = ItemSideFeatures.from_arrays(
        tags=tags, caption=caption, weights={"caption": 0.1}, data_fingerprint=data.fingerprint
    )
    never_seen = np.zeros(n_items + 1, dtype=bool)
    never_seen[n_seen + 1 :] = True
    return data, side, never_seen


def test_content_and_hybrid_beat_popularity_on_never_seen_videos(one_thread: None) -> None:
    data, side, never_seen = planted_data()
    task = build_eval_task(data, "temporal", "test", relevance="all")
    task = dataclasses.replace(task, candidates=never_seen)  # rank the never-seen videos only
    assert len(task) == N_USERS
    hr = {}
    for name, params in {
        "pop": {},
        "content": {"features": side},
        "hybrid": {"features": side, "factors": 8, "epochs": 40, "lr": 0.05, "batch_size": 64},
    }.items():
        model = make_baseline(name, seed=0, **params).fit(data)
        hr[name] = evaluate(model, task, k=10).summary["hr@10"]
    # 50 never-seen videos, 10 per tag: the user's 10 fill the top 10 under content; popularity ties at 0
    assert hr["content"] == 1.0
    assert hr["hybrid"] >= 0.9
    assert hr["pop"] <= 0.4
    assert min(hr["content"], hr["hybrid"]) > hr["pop"] + 0.5


def test_hybrid_is_deterministic_under_a_seed(one_thread: None) -> None:
    data, side, _ = planted_data()
    task = history_task([[1], [2], [3]], n_cols=data.num_items + 1)
    params = {"features": side, "factors": 4, "epochs": 3, "batch_size": 32}
    first = make_baseline("hybrid", seed=3, **params).fit(data).score(task, np.arange(3))
    again = make_baseline("hybrid", seed=3, **params).fit(data).score(task, np.arange(3))
    other = make_baseline("hybrid", seed=4, **params).fit(data).score(task, np.arange(3))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.isfinite(first[:, 1:]).all() and torch.isinf(first[:, 0]).all()


def test_hybrid_represents_unseen_ids_by_their_features_alone(one_thread: None) -> None:
    data, side, never_seen = planted_data()
    model = make_baseline("hybrid", seed=0, features=side, factors=4, epochs=2, batch_size=64).fit(data)
    assert isinstance(model, HybridBaseline)
    new = np.flatnonzero(never_seen)  # 50 videos, 13 feature columns (5 tags + 8 caption dimensions)
    # q_i = x_i @ E^F exactly (no id term): the never-seen factors are a linear function of the features
    x = torch.from_numpy(side.items[new].toarray()).double()  # (50, 13)
    y = model.item_factors[torch.from_numpy(new)].double()  # (50, 4)
    residual = y - x @ torch.linalg.lstsq(x, y).solution
    assert residual.abs().max().item() < 1e-6
    seen = torch.from_numpy(np.arange(1, 51))
    x_seen = torch.from_numpy(side.items[1:51].toarray()).double()
    y_seen = model.item_factors[seen].double()
    assert (y_seen - x_seen @ torch.linalg.lstsq(x, y).solution).abs().max().item() > 1e-4  # seen: id term
    # a user outside the fitted data gets the item biases only
    out = model.score(history_task([[1]], n_cols=data.num_items + 1, users=[10_000]), np.array([0]))
    assert torch.allclose(out[0, 1:], model.item_biases[1:])


def test_side_features_of_the_wrong_shape_are_a_clear_config_error(four_videos: PreparedData) -> None:
    short = ItemSideFeatures.from_arrays(tags=TAGS[:4], categories=CATEGORIES[:4])  # 4 rows, 5 expected
    for name in ("content", "hybrid"):
        with pytest.raises(ConfigError, match=r"shape \(4, 5\); expected \(5, 5\)"):
            make_baseline(name, features=short).fit(four_videos)
    users = np.zeros((7, 2), dtype=np.int32)  # 7 user rows, 3 expected
    with_users = ItemSideFeatures.from_arrays(tags=TAGS, user=users + np.array([1, 2]))
    with pytest.raises(ConfigError, match=r"user side features have shape \(7, 3\); expected \(3, 3\)"):
        make_baseline("hybrid", features=with_users).fit(four_videos)
    other = ItemSideFeatures.from_arrays(tags=TAGS, data_fingerprint="0123456789abcdef")
    with pytest.raises(ConfigError, match="built for id maps 0123456789abcdef"):
        make_baseline("content", features=other).fit(four_videos)
    with pytest.raises(ConfigError, match="needs features=ItemSideFeatures"):
        make_baseline("content")
    with pytest.raises(ConfigError, match="hybrid factors must be a positive integer"):
        make_baseline("hybrid", features=short, factors=0)


def test_both_are_registered_with_their_parameters() -> None:
    side = ItemSideFeatures.from_arrays(tags=TAGS)
    assert isinstance(make_baseline("content", features=side), ContentBaseline)
    assert isinstance(make_baseline("hybrid", features=side), HybridBaseline)
    assert baseline_params("content") == ("split", "features", "target")
    assert baseline_params("hybrid") == (
        "split", "features", "factors", "epochs", "lr", "l2", "batch_size", "user_ids", "item_ids", "target",
    )  # fmt: skip
    assert "content" not in BASELINES and "hybrid" not in BASELINES  # they need features=
    with pytest.raises(ConfigError, match="target must be one of"):
        make_baseline("content", features=side, target="clicks")


def test_targets_choose_the_profile_and_the_training_pairs(four_videos: PreparedData) -> None:
    side = ItemSideFeatures.from_arrays(tags=TAGS, categories=CATEGORIES)
    task = history_task([[1, 3]], n_cols=5)
    graded = make_baseline("content", features=side, target="graded").fit(four_videos)
    # graded weights of user 1: clip(wr) / mean over fitted events = 1.0 / 0.5 and 0.3 / 0.5 -> 2.0 and 0.6
    p = (2.0 * np.array([1, 0, 0, 1, 0]) + 0.6 * np.array([0, 1, 0, 0, 1])) / 2.6
    v2 = np.array([1 / R2, 1 / R2, 0, 1, 0])
    expected = p @ v2 / (np.linalg.norm(p) * np.linalg.norm(v2))
    assert graded.score(task, np.array([0]))[0, 2].item() == pytest.approx(expected, abs=1e-6)
    liked = make_baseline("hybrid", features=side, target="liked", epochs=1).fit(four_videos)
    assert liked.user_factors[2].abs().sum().item() == 0.0  # user 2 liked nothing: no id embedding


def test_wiring_from_a_real_feature_table() -> None:
    """The study layer's call: ItemSideFeatures.from_arrays on a FeatureTable of the same prepared data."""
    sample = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kuairec_sample"
    if not (sample / "kuairec_caption_category.csv").is_file():
        pytest.skip("../shared/data/kuairec_sample absent: real KuaiRec side files unavailable")
    from sasrec.data import kuairec
    from sasrec.data.features import build_feature_table, feature_cut
    from sasrec.data.preparation import core as prep

    frame, _ = kuairec.load_interactions(sample / "big_matrix_head1000.csv", cache=False)
    data = prep.prepare_frame(frame, "big_head")
    table = build_feature_table(data, sample, cut_timestamp=feature_cut(data))
    groups = set(table.groups_available)
    arrays = {name: table.group(name).values for name in ("tags", "categories", "caption") if name in groups}
    side = ItemSideFeatures.from_arrays(
        **arrays,
        user=table.group("user").values if "user" in groups else None,
        vocab_sizes={"categories": list(table.group("categories").vocab_sizes.values())}
        if "categories" in groups
        else None,
        data_fingerprint=table.data_fingerprint,
    )
    assert side.items.shape[0] == data.num_items + 1
    task = build_eval_task(data, "temporal", "test", relevance="all")
    for name, params in {"content": {}, "hybrid": {"epochs": 1, "factors": 4}}.items():
        model = make_baseline(name, features=side, **params).fit(data)
        scores = model.score(task, np.arange(min(len(task), 4)))
        assert scores.shape == (min(len(task), 4), data.num_items + 1)
        assert torch.isfinite(scores[:, 1:]).all()
