"""Side-feature fusion in the sequential models (``features``, ``id_embedding``): a planted tag decides the
next video, videos never seen in training are found from their features, every model uses the same fusion,
the default stays the old model bit for bit, checkpoints carry and check the features, and unavailable
groups are skipped under ``all`` or refused by name."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from sasrec.data.contracts import TEST, TRAIN, VALID, PreparedData, empty_labels
from sasrec.data.features import FeatureGroup, FeatureTable, build_feature_table
from sasrec.data.features.cache import KEY_FILE, cached_feature_table
from sasrec.data.features.table import canonical_csr
from sasrec.data.tasks import build_eval_task
from sasrec.errors import CheckpointMismatchError, ConfigError, DataValidationError
from sasrec.evaluation.protocol import evaluate
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.inference.recommender import Recommender
from sasrec.models.base import SequentialRecommender, build_model
from sasrec.training.checkpoints import load_checkpoint, read_checkpoint
from sasrec.training.config import TrainConfig
from sasrec.training.features import feature_bundle, parse_features, select_groups
from sasrec.training.loop import train

ALL_MODELS = ("sasrec", "gsasrec", "bert4rec", "gru4rec")
CAUSAL_MODELS = ("sasrec", "gsasrec", "gru4rec")
N_TAGS, PER_TAG, N_USERS, LENGTH = 20, 5, 200, 12
N_ITEMS = N_TAGS * PER_TAG


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this module runs on one thread (tests/conftest.py)."""


# ------------------------------------------------------------------------------------------ planted data
def _events(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "split"])
    split = frame["split"].astype("int8")
    return pd.DataFrame(
        {
            "user": frame["user"].astype("int32"),
            "item": frame["item"].astype("int32"),
            "timestamp": frame["timestamp"].astype("float64"),
            "watch_ratio": np.ones(len(frame), dtype=np.float32),
            "liked": np.ones(len(frame), dtype=bool),
            "relevant": np.ones(len(frame), dtype=bool),
            "split_temporal": split,
            "split_leave_last_n": split,
            "split_leave_one_out": split,
        }
    )


def _planted(seed: int = 0) -> tuple[PreparedData, FeatureTable, np.ndarray, np.ndarray]:
    """Each video has exactly one of 20 tags (5 videos per tag); a seeded 20% (one per tag) never occurs in
    training. Each user alternates between two tags; training and validation videos are the others, and
    every test target is a never-seen video of the tag that comes next. Returns (data, table with the
    ``tags`` and ``user`` groups, tag of each item index, the never-seen items)."""
    rng = np.random.default_rng(seed)
    tag_of = np.r_[-1, np.repeat(np.arange(N_TAGS), PER_TAG)]  # (I + 1,) tag of each item index
    cold = np.arange(N_TAGS) * PER_TAG + rng.integers(PER_TAG, size=N_TAGS) + 1  # (20,) one per tag
    warm = [np.setdiff1d(np.flatnonzero(tag_of == tag), cold) for tag in range(N_TAGS)]
    rows, pairs = [], np.zeros((N_USERS + 1, 2), dtype=np.int64)
    for user in range(1, N_USERS + 1):  # a few hundred rows of a fixture, not a hot path
        pairs[user] = rng.choice(N_TAGS, 2, replace=False)
        for step in range(LENGTH):
            tag = pairs[user, step % 2]
            split = TRAIN if step < LENGTH - 2 else VALID if step == LENGTH - 2 else TEST
            item = cold[tag] if split == TEST else rng.choice(warm[tag])
            rows.append((user, int(item), float(step), split))
    data = PreparedData(
        name="planted",
        events=_events(rows),
        labels=empty_labels(),
        user_ids=np.arange(-1, N_USERS, dtype=np.int64),
        item_ids=np.r_[-1, np.arange(1000, 1000 + N_ITEMS)].astype(np.int64),
        meta={"remap": True, "relevance_threshold": 0.5},
    )
    tags = canonical_csr(
        sp.coo_matrix((np.ones(N_ITEMS, np.float32), (np.arange(1, N_ITEMS + 1), tag_of[1:])),
                      shape=(N_ITEMS + 1, N_TAGS)),
        (N_ITEMS + 1, N_TAGS),
    )  # fmt: skip
    user_codes = np.zeros((N_USERS + 1, 2), dtype=np.int32)  # a user's two tags as categorical ids
    user_codes[1:] = pairs[1:] + 1
    table = FeatureTable(
        dataset=data.name,
        data_fingerprint=data.fingerprint,
        num_items=N_ITEMS,
        num_users=N_USERS,
        groups={
            "tags": FeatureGroup(
                name="tags",
                entity="item",
                kind="multi_hot",
                source="item_categories.csv",
                columns=tuple(f"tag_{t}" for t in range(N_TAGS)),
                values=tags,
            ),
            "user": FeatureGroup(
                name="user",
                entity="user",
                kind="categorical",
                source="user_features.csv",
                columns=("first", "second"),
                values=user_codes,
                vocabularies={c: tuple(map(str, range(N_TAGS))) for c in ("first", "second")},
            ),
        },  # fmt: skip
    )
    return data, table, tag_of, cold


def _config(model: str = "sasrec", **values: object) -> TrainConfig:
    settings: dict[str, object] = {
        "dataset": "planted", "device": "cpu", "hidden_units": 32, "num_heads": 2, "num_blocks": 1,
        "maxlen": LENGTH, "num_epochs": 20, "lr": 0.01, "batch_size": 64, "patience": 0, "eval_every": 100,
        "dropout_rate": 0.1, "relevance": "all", "progress": False,
    }  # fmt: skip
    settings.update(values)
    return TrainConfig.for_model(model, **settings)


def _test_hr(model: SequentialRecommender, data: PreparedData, popularity: np.ndarray) -> float:
    task = build_eval_task(data, "temporal", "test", maxlen=LENGTH, relevance="all")
    scorer = SequentialScorer(model, popularity=popularity)
    return float(evaluate(scorer, task, k=10, progress=False).summary["hr@10"])


def test_a_planted_tag_finds_videos_never_seen_in_training() -> None:
    """One tag decides the next video; every test target is a video that never occurs in training."""
    data, table, _, cold = _planted()
    trained = data.events.loc[data.events["split_temporal"] == TRAIN, "item"].to_numpy()
    assert not np.isin(cold, trained).any()
    task = build_eval_task(data, "temporal", "test", maxlen=LENGTH, relevance="all")
    assert np.isin(task.targets.indices, cold).all() and len(task) == N_USERS
    hr = {}
    for features, id_embedding in (("tags", True), ("tags", False), ("none", True)):
        result = train(
            data, _config(features=features, id_embedding=id_embedding), save=False, features=table
        )
        hr[features, id_embedding] = _test_hr(result.model, data, result.popularity)
    chance = 10 / (N_ITEMS - (LENGTH - 1))  # at most LENGTH - 1 history items are masked from the ranking
    assert hr["tags", True] >= 0.95  # id embeddings + tags
    assert hr["tags", False] >= 0.95  # content only
    assert hr["none", True] <= chance  # the id-only twin cannot know an unseen video (it is only a negative)


# --------------------------------------------------------------------------------- one fusion, four models
def _bundle_table() -> FeatureTable:
    """Every group kind: multi-hot tags, categorical categories, dense caption, categorical user."""
    data, table, tag_of, _ = _planted()
    rng = np.random.default_rng(1)
    categories = np.c_[tag_of % 3 + 1, rng.integers(0, 4, N_ITEMS + 1)].astype(np.int32)
    categories[0] = 0
    caption = rng.normal(size=(N_ITEMS + 1, 6)).astype(np.float32)
    caption[0] = 0.0
    groups = dict(table.groups)
    groups["categories"] = FeatureGroup(
        name="categories", entity="item", kind="categorical", source="kuairec_caption_category.csv",
        columns=("level1", "level2"), values=categories, vocabularies={"level1": ("a", "b", "c"),
                                                                       "level2": ("x", "y", "z")},
    )  # fmt: skip
    groups["caption"] = FeatureGroup(name="caption", entity="item", kind="dense", source="kuairec_caption_category.csv",
                                     columns=tuple(f"caption_{k}" for k in range(6)), values=caption)  # fmt: skip
    return FeatureTable(dataset=data.name, data_fingerprint=data.fingerprint, num_items=N_ITEMS,
                        num_users=N_USERS, groups=groups)  # fmt: skip


def _feature_model(
    name: str, id_embedding: bool = True, groups: tuple[str, ...] | None = None
) -> SequentialRecommender:
    table = _bundle_table()
    bundle = feature_bundle(table, groups or ("tags", "categories", "caption", "user"))
    torch.manual_seed(0)
    model = build_model(name, N_ITEMS, hidden_units=16, num_blocks=1, num_heads=2, maxlen=8, dropout_rate=0.2,
                        feature_spec=bundle.spec(), id_embedding=id_embedding)  # fmt: skip
    model.load_features(bundle)
    return model.eval()


SEQS = torch.tensor([[0, 0, 0, 3, 17, 42, 8, 11], [5, 9, 77, 1, 2, 33, 64, 90]])
USERS = torch.tensor([4, 9])


@pytest.mark.parametrize("id_embedding", [True, False])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_trains_with_features_and_scores_from_them(name: str, id_embedding: bool) -> None:
    data, _, _, _ = _planted()
    config = _config(name, features="tags,categories,caption,user", id_embedding=id_embedding, num_epochs=1,
                     hidden_units=16, maxlen=8, num_negatives=20)  # fmt: skip
    table = _bundle_table()
    result = train(data, config, save=False, features=table)
    model = result.model
    fusion = model.feature_fusion
    assert fusion is not None and model.user_features
    assert set(fusion.item_groups) == {"tags", "categories", "caption"} and set(fusion.user_groups) == {
        "user"
    }
    assert ("item_emb" in dict(model.named_children())) is id_embedding
    assert model.output_embeddings().shape == (N_ITEMS + 1, 16)
    assert torch.equal(model.item_table()[0], torch.zeros(16))  # padding stays zero
    # every fusion parameter was trained: built as build_run builds it, each has moved from its start
    torch.manual_seed(config.seed)
    spec = feature_bundle(table, select_groups(table, config.features)).spec()
    fresh = build_model(name, N_ITEMS, **result.config.to_dict(), feature_spec=spec).feature_fusion
    assert fresh is not None
    for (key, start), end in zip(fresh.named_parameters(), fusion.parameters(), strict=True):
        assert not torch.equal(start, end), key
    with torch.no_grad():
        before = model.score_all(SEQS, users=USERS)
        tags = fusion.item_groups["tags"]
        tags.values[tags.offsets[50]] = 19  # item 50 (tag 9) gets tag 19
        after = model.score_all(SEQS, users=USERS)
        # item 50 is in no input: only its own column moves
        assert ((before != after).any(0)).nonzero().flatten().tolist() == [50]
        fusion.user_groups["user"].ids[USERS[0]] = torch.tensor([3, 3])  # user 4's features change
        moved_user = model.score_all(SEQS, users=USERS)
        assert not torch.equal(moved_user[0], after[0]) and torch.equal(moved_user[1], after[1])


@pytest.mark.parametrize("name", CAUSAL_MODELS)
def test_causality_holds_with_features(name: str) -> None:
    model = _feature_model(name)
    seqs = SEQS.clone()
    changed = seqs.clone()
    changed[:, -1] = torch.tensor([60, 61])
    with torch.no_grad():
        a, b = model(seqs, users=USERS), model(changed, users=USERS)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("name", ALL_MODELS)
def test_left_padding_never_changes_scores_with_features(name: str) -> None:
    model = _feature_model(name)
    short = torch.tensor([[3, 17, 42]])
    padded = torch.tensor([[0, 0, 0, 3, 17, 42]])
    with torch.no_grad():
        torch.testing.assert_close(
            model.score_all(short, users=USERS[:1]), model.score_all(padded, users=USERS[:1])
        )


def test_bert4rec_mask_row_works_with_content_only_items() -> None:
    model = _feature_model("bert4rec", id_embedding=False)
    assert model.item_table().shape == (N_ITEMS + 2, 16)  # padding, items, [MASK]
    special = model.special_emb.weight
    assert torch.equal(model.item_table()[N_ITEMS + 1], special[0])
    with torch.no_grad():
        scores = model.score_all(SEQS, users=USERS)
        special += 1.0  # [MASK] moves the input, never a candidate column
        assert model.output_embeddings().shape == (N_ITEMS + 1, 16)
        assert not torch.allclose(model.score_all(SEQS, users=USERS), scores)


def test_fitted_items_alone_use_their_id_embeddings() -> None:
    """An item without fitted events is represented by its features only (its id row is never used)."""
    model = _feature_model("sasrec", groups=("tags",))
    fitted = torch.ones(N_ITEMS + 1, dtype=torch.bool)
    fitted[7] = False
    model.set_fitted_items(fitted)
    with torch.no_grad():
        content = model.feature_fusion.item_vectors()
        torch.testing.assert_close(model.item_table()[7], content[7], rtol=0, atol=0)
        torch.testing.assert_close(
            model.item_table()[8], content[8] + model.item_emb.weight[8], rtol=0, atol=0
        )


def test_content_only_without_item_groups_or_features_is_refused() -> None:
    with pytest.raises(ConfigError, match="id_embedding=false needs side features"):
        build_model("sasrec", N_ITEMS, id_embedding=False)
    spec = feature_bundle(_bundle_table(), ("user",)).spec()
    with pytest.raises(ConfigError, match="needs an item feature group"):
        build_model("gru4rec", N_ITEMS, feature_spec=spec, id_embedding=False)
    with pytest.raises(ConfigError, match="id_embedding=false needs side features"):
        TrainConfig(device="cpu", id_embedding=False)
    with pytest.raises(ConfigError, match="features must be none, all or a comma list"):
        TrainConfig(device="cpu", features="tags,colour")
    assert parse_features("all") == ("tags", "categories", "caption", "item_daily", "user")
    assert parse_features(" Tags, user ") == ("tags", "user") and parse_features("none") == ()


# ------------------------------------------------------------------------------------ features none = old
#: SHA-256 of every parameter after four seeded training steps (BCE and softmax terms) of each model,
#: recorded with the code before side features existed (torch 2.13.0 CPU, one thread).
OLD_PARAMETER_DIGESTS = {
    "sasrec": "e9b14e381ff386ce",
    "gsasrec": "e9b14e381ff386ce",
    "bert4rec": "141928db29cb911f",
    "gru4rec": "f259f54027f6767f",
}


def _parameter_digest(name: str) -> tuple[str, SequentialRecommender]:
    """The digest recorded in :data:`OLD_PARAMETER_DIGESTS` (same model, steps and random draws)."""
    n_items, batch, length = 40, 6, 12
    torch.manual_seed(0)
    model = build_model(
        name, n_items, hidden_units=16, num_blocks=2, num_heads=2, maxlen=length, dropout_rate=0.2
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.98), foreach=True)
    generator = torch.Generator().manual_seed(1)
    for _ in range(4):
        window = torch.randint(1, n_items + 1, (batch, length), generator=generator)
        window[:2, :4] = 0
        inputs = torch.cat([torch.zeros(batch, 1, dtype=torch.long), window[:, :-1]], 1)
        targets = torch.where(inputs != 0, window, 0)
        inputs, targets = model.training_batch(inputs, targets, window, generator)
        model.train()
        hidden = model(inputs)
        valid = targets != 0
        negatives = torch.randint(1, n_items + 1, targets.shape, generator=generator)
        logits = model.score_items(hidden, torch.stack([targets, negatives], -1))
        bce = (torch.nn.functional.softplus(-logits[..., 0]) + torch.nn.functional.softplus(logits[..., 1]))[
            valid
        ]
        ce = torch.nn.functional.cross_entropy(hidden[valid] @ model.output_embeddings().T, targets[valid])
        optimizer.zero_grad()
        (bce.mean() + ce).backward()
        optimizer.step()
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16], model


@pytest.mark.parametrize("name", ALL_MODELS)
def test_features_none_is_the_old_model_bit_for_bit(name: str) -> None:
    digest, model = _parameter_digest(name)
    assert model.feature_fusion is None and model.feature_kwargs() == {}
    assert model.item_table() is model.item_emb.weight
    assert not any(key.startswith(("fusion.", "id_rows", "special_emb")) for key in model.state_dict())
    assert not {"feature_spec", "id_embedding"} & set(model.model_kwargs())
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip(f"digests recorded with torch 2.13.0, not {torch.__version__}")
    assert digest == OLD_PARAMETER_DIGESTS[name]


def test_features_none_trains_exactly_as_without_the_option(tmp_path: Path) -> None:
    """The default and an explicit ``features=none`` give the same weights and checkpoint tensors."""
    data, table, _, _ = _planted()
    a = train(data, _config(num_epochs=2), out_dir=tmp_path / "a")
    b = train(data, _config(num_epochs=2, features="none"), out_dir=tmp_path / "b", features=table)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key])
    payload = read_checkpoint(a.checkpoint_path)
    assert "features" not in payload and "feature_spec" not in payload["model_kwargs"]


# --------------------------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def feature_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreparedData, FeatureTable]:
    data, table, _, _ = _planted()
    folder = tmp_path_factory.mktemp("feature_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(data, _config(features="tags,user", eval_every=20), out_dir=folder, features=table)
    finally:
        torch.set_num_threads(threads)
    assert result.checkpoint_path is not None
    return result.checkpoint_path, data, table


def test_a_checkpoint_records_and_checks_its_feature_table(
    feature_checkpoint: tuple[Path, PreparedData, FeatureTable],
) -> None:
    path, data, table = feature_checkpoint
    payload = read_checkpoint(path)
    recorded = payload["features"]
    assert recorded["groups"] == ["tags", "user"] and recorded["features"] == "tags,user"
    assert recorded["id_embedding"] is True and set(recorded["schema"]["groups"]) == {"tags", "user"}
    assert any(key.startswith("fusion.item_groups.tags.") for key in payload["model_state"])
    model, _, _ = load_checkpoint(path, data, features=table)  # the right table: accepted
    bare, _, _ = load_checkpoint(path)  # no table: the checkpoint carries the tensors
    with torch.no_grad():
        assert torch.equal(model.score_all(SEQS, users=USERS), bare.score_all(SEQS, users=USERS))
    tags = table.groups["tags"]
    other_tags = tags.values.copy()
    other_tags.indices[0] = (other_tags.indices[0] + 1) % N_TAGS  # one video's tag differs
    other = FeatureTable(dataset=table.dataset, data_fingerprint=table.data_fingerprint, num_items=N_ITEMS,
                         num_users=N_USERS, groups={**table.groups, "tags": FeatureGroup(
                             name="tags", entity="item", kind="multi_hot", source=tags.source,
                             columns=tags.columns, values=other_tags)})  # fmt: skip
    with pytest.raises(CheckpointMismatchError) as refused:
        load_checkpoint(path, data, features=other)
    message = str(refused.value)
    assert "\n" not in message and recorded["digest"][:16] in message
    assert feature_bundle(other, ("tags", "user")).digest[:16] in message
    with pytest.raises(CheckpointMismatchError):
        Recommender.from_checkpoint(path, features=other)


def test_the_recommender_ranks_and_reads_videos_never_seen_in_training(
    feature_checkpoint: tuple[Path, PreparedData, FeatureTable],
) -> None:
    path, data, _ = feature_checkpoint
    _, _, tag_of, cold = _planted()
    recommender = Recommender.from_checkpoint(path)  # no side files needed
    video = data.item_ids  # original id of each item index

    def tags_of(video_ids: np.ndarray) -> set[int]:
        return set(tag_of[np.searchsorted(video[1:], video_ids) + 1].tolist())

    user = 1
    first = data.events.loc[data.events["user"] == user, "item"].to_numpy()
    a, b = tag_of[first[0]], tag_of[first[1]]  # the user's two tags
    warm_a = [i for i in np.flatnonzero(tag_of == a) if i not in cold]
    warm_b = [i for i in np.flatnonzero(tag_of == b) if i not in cold]
    history = [video[warm_a[0]], video[warm_b[0]], video[warm_a[1]], video[warm_b[1]], video[warm_a[2]]]
    top = recommender.recommend(history, k=3, user_id=int(data.user_ids[user]))
    assert video[cold[b]] in top.video_ids  # the never-trained video of the next tag is recommended
    assert tags_of(top.video_ids) == {b}  # the three videos of tag b not in the history
    # a history of videos never seen in training: read from their features
    unseen = [video[cold[a]], video[cold[b]], video[cold[a]]]
    assert tags_of(recommender.recommend(unseen, k=3, user_id=int(data.user_ids[user])).video_ids) == {b}
    # user features: the user changes the scores; an unknown user (None) gets the zero user vector
    known = recommender.score([history], user_ids=[int(data.user_ids[user])])
    nobody = recommender.score([history])
    assert not torch.equal(known, nobody) and len(recommender.recommend(history, k=3).video_ids) == 3


# ------------------------------------------------------------------------------------------ availability
def _side_files(folder: Path, data: PreparedData, tag_of: np.ndarray) -> Path:
    """Write only item_categories.csv (the other side files are missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"video_id": data.item_ids[1:], "feat": [f"[{t}]" for t in tag_of[1:]]}).to_csv(
        folder / "item_categories.csv", index=False
    )
    return folder


def test_unavailable_groups_are_skipped_under_all_and_refused_by_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, _, tag_of, _ = _planted()
    side = _side_files(tmp_path / "side", data, tag_of)
    table = build_feature_table(data, side, cut_timestamp=None)
    assert table.groups_available == ("tags",) and "user" in table.unavailable
    with caplog.at_level(logging.WARNING, logger="sasrec.training.features"):
        assert select_groups(table, "all") == ("tags",)
    assert "skipping unavailable group(s)" in caplog.text and "user_features.csv not found" in caplog.text
    with pytest.raises(ConfigError) as refused:
        train(data, _config(features="tags,user", num_epochs=1), save=False, features=table)
    message = str(refused.value)
    assert "\n" not in message and "'user'" in message and "user_features.csv not found" in message
    result = train(data, _config(features="all", num_epochs=1), save=False, features=table)
    assert set(result.model.feature_fusion.item_groups) == {"tags"} and not result.model.user_features


def test_the_feature_table_is_cached_next_to_the_prepared_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _, tag_of, _ = _planted()
    side = _side_files(tmp_path / "raw", data, tag_of)
    data.meta.update({"out_dir": str(tmp_path / "processed" / "planted"), "source_path": str(side / "x.csv")})
    built: list[int] = []
    import sasrec.data.features.cache as cache

    real = cache.build_feature_table
    monkeypatch.setattr(cache, "build_feature_table", lambda *a, **k: built.append(1) or real(*a, **k))
    first = cached_feature_table(data, "temporal")
    folder = tmp_path / "processed" / "planted" / "features" / "temporal"
    assert (folder / KEY_FILE).is_file() and (folder / "features.npz").is_file() and len(built) == 1
    again = cached_feature_table(data, "temporal")
    assert len(built) == 1 and again.digest() == first.digest()  # reused
    pd.DataFrame({"video_id": data.item_ids[1:], "feat": ["[0]"] * N_ITEMS}).to_csv(
        side / "item_categories.csv", index=False
    )  # a side file changed: rebuilt
    changed = cached_feature_table(data, "temporal")
    assert len(built) == 2 and changed.digest() != first.digest()
    pd.DataFrame({"user_id": [0]}).to_csv(side / "user_features.csv", index=False)  # a file appears: the key
    with pytest.raises(DataValidationError):  # the key changed: rebuilt, and the bad file refused
        cached_feature_table(data, "temporal")
    assert len(built) == 3
    (side / "user_features.csv").unlink()
    assert cached_feature_table(data, "temporal").digest() == changed.digest() and len(built) == 3


def test_the_fused_table_is_computed_once_per_step_and_never_stale() -> None:
    model = _feature_model("sasrec").train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    first = model.item_table()
    assert model.item_table() is first and model.output_embeddings() is first  # one table per step
    for _ in range(2):  # two backward passes without a step: each builds its own graph
        model.score_all(SEQS, users=USERS).sum().backward()
    optimizer.step()
    after = model.item_table()
    assert after is not first and not torch.equal(after.detach(), first.detach())  # the step changed it
    with torch.no_grad():
        scores = model.score_all(SEQS, users=USERS)
        assert model.item_table() is model.item_table()  # evaluation batches share one table
        model.feature_fusion.item_groups["caption"].values.mul_(2.0)  # a buffer changes in place
        assert not torch.equal(model.score_all(SEQS, users=USERS), scores)


def test_resuming_with_another_feature_table_is_refused(
    feature_checkpoint: tuple[Path, PreparedData, FeatureTable],
) -> None:
    path, data, table = feature_checkpoint
    last = next(path.parent.glob("*.last.pth"))
    config = _config(features="tags,user", eval_every=20)
    resumed = train(data, config, out_dir=path.parent, resume_from=last, features=table, save=False)
    assert resumed.best_epoch == read_checkpoint(last)["best_epoch"]  # finished already: nothing to redo
    user = table.groups["user"]
    codes = np.array(user.values, copy=True)
    codes[1] = codes[1] % N_TAGS + 1  # user 1's codes differ
    other = FeatureTable(dataset=table.dataset, data_fingerprint=table.data_fingerprint, num_items=N_ITEMS,
                         num_users=N_USERS, groups={**table.groups, "user": FeatureGroup(
                             name="user", entity="user", kind="categorical", source=user.source,
                             columns=user.columns, values=codes, vocabularies=user.vocabularies)})  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match="cannot resume"):
        train(data, config, out_dir=path.parent, resume_from=last, features=other, save=False)


# --------------------------------------------------------------------------------------------- command line
def test_train_command_with_features_and_recommendations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from sasrec.cli import main
    from sasrec.data.simulator.api import simulate

    raw = tmp_path / "kuairec"
    simulate(scale=0.02, seed=0, out_dir=raw, progress=False)
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("SASREC_PROGRESS", "0")
    tiny = ["--maxlen=20", "--hidden_units=16", "--device=cpu", "--num_epochs=1", "--dataset=small_matrix"]
    assert (
        main(["train", f"--data-dir={raw}", *tiny, "--features=tags,categories,user", "--train_dir=f"]) == 0
    )
    assert "features tags,categories,user" in capsys.readouterr().out
    cache = tmp_path / "root" / "data" / "processed" / "small_matrix" / "features" / "temporal"
    assert (cache / KEY_FILE).is_file()
    checkpoint = next(p for p in (tmp_path / "root" / "models" / "small_matrix_f").glob("SASRec.*.pth")
                      if not p.name.endswith(".last.pth"))  # fmt: skip
    assert read_checkpoint(checkpoint)["features"]["groups"] == ["tags", "categories", "topics", "user"]
    assert main(["train", f"--data-dir={raw}", "--dataset=small_matrix", "--device=cpu",
                 f"--state_dict_path={checkpoint}", "--generate_recommendations=true", "--top_n=5"]) == 0  # fmt: skip
    frame = pd.read_parquet(checkpoint.parent / "recommendations.small_matrix.temporal.top5.parquet")
    assert len(frame) and frame.groupby("user_id")["rank"].max().max() == 5
    (raw / "kuairec_caption_category.csv").unlink()  # the caption group becomes unavailable
    assert main(["train", f"--data-dir={raw}", *tiny, "--features=caption", "--train_dir=g"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert (
        len(errors) == 1
        and "'caption'" in errors[0]
        and "kuairec_caption_category.csv not found" in errors[0]
    )
    assert (
        main(["train", f"--data-dir={raw}", *tiny, "--features=all", "--id_embedding=false", "--train_dir=h"])
        == 0
    )


def test_a_table_read_back_from_disk_builds_the_same_model(tmp_path: Path) -> None:
    """A saved table lists its groups alphabetically: the model's groups keep one order (DDP ranks agree)."""
    from sasrec.data.features import load_feature_table, save_feature_table

    table = _bundle_table()
    loaded = load_feature_table(save_feature_table(table, tmp_path / "table"))
    assert list(loaded.groups) != list(table.groups)
    groups = select_groups(table, "all")
    assert groups == select_groups(loaded, "all") == ("tags", "categories", "caption", "user")
    original, reread = feature_bundle(table, groups), feature_bundle(loaded, groups)
    assert original.spec() == reread.spec() and original.digest == reread.digest
