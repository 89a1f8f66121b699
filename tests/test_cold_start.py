"""The cold-start protocols (``cold_start: none | items | users``, :mod:`sasrec.data.cold_start`).

``items`` withholds a seeded 10% of the videos from every model's fitting events and input histories and
tests on the withheld videos' test events; ``users`` keeps only the last k training events of a seeded 10%
of the users (plus the users that naturally have at most k) and tests on those cold users. ``none`` changes
nothing: its fitting events, tasks and metrics are those of the code before the protocols existed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sasrec.data.cold_start import COLD_START_PROTOCOLS, ColdStart, made_cold_users, withheld_videos
from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.bootstrap import paired_difference
from sasrec.evaluation.protocol import evaluate
from sasrec.evaluation.results import metrics_payload
from sasrec.models.baselines import BASELINES, OracleScorer, make_baseline
from sasrec.training.checkpoints import events_digest
from sasrec.training.loop import policy_mask
from sasrec.training.sequences import training_sequences
from tests.conftest import make_prepared

N_USERS, N_ITEMS, K = 40, 60, 5
ITEMS = ColdStart("items")
USERS = ColdStart("users", user_events=K)
POLICIES = [("train", "valid"), ("train", "test"), ("train_valid", "valid"), ("train_valid", "test")]


def _data(name: str = "cold") -> PreparedData:
    """40 users, 60 videos; users 1-4 have 3 training events (naturally cold), the others 8 to 19; each user
    ends with 2 validation and 3 test events. Seeded watch ratios (about half relevant)."""
    rng = np.random.default_rng(7)
    n_train = np.where(np.arange(1, N_USERS + 1) <= 4, 3, 8 + rng.integers(0, 12, N_USERS))
    lengths = n_train + 5
    users = np.repeat(np.arange(1, N_USERS + 1), lengths)
    position = np.arange(len(users)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    split = np.where(
        position < np.repeat(n_train, lengths), 0, np.where(position < np.repeat(n_train + 2, lengths), 1, 2)
    )
    items = np.concatenate([np.arange(1, N_ITEMS + 1), rng.integers(1, N_ITEMS + 1, len(users) - N_ITEMS)])
    watch = rng.uniform(0.0, 4.0, len(users)).round(2)
    rows = list(
        zip(
            users.tolist(),
            items.tolist(),
            position.astype(float).tolist(),
            watch.tolist(),
            split.tolist(),
            strict=True,
        )
    )
    return make_prepared(rows, num_users=N_USERS, num_items=N_ITEMS, name=name)


def _items_of(data: PreparedData, mask: np.ndarray) -> np.ndarray:
    return data.events["item"].to_numpy()[mask]


def _columns(matrix: sp.csr_matrix) -> np.ndarray:
    return sp.csr_matrix(matrix).indices


# ------------------------------------------------------------------------------------------ selection
def test_the_withheld_videos_are_a_reproducible_seeded_tenth() -> None:
    data = _data()
    withheld = withheld_videos(data, 0.1, seed=0)
    assert withheld.shape == (N_ITEMS + 1,) and not withheld[0]
    assert int(withheld.sum()) == round(0.1 * N_ITEMS) == 6
    assert np.array_equal(withheld, withheld_videos(_data(), 0.1, seed=0))  # same seed: same videos
    assert not np.array_equal(withheld, withheld_videos(data, 0.1, seed=1))
    assert int(withheld_videos(data, 0.25, seed=0).sum()) == 15
    assert np.array_equal(ITEMS.select(data, "temporal").items, withheld)
    # chosen by original video id: the same videos however the dataset is indexed
    perm = np.r_[0, 1 + np.random.default_rng(3).permutation(N_ITEMS)]  # new index j holds old item perm[j]
    inverse = np.argsort(perm)
    events = data.events.assign(item=inverse[data.events["item"].to_numpy()].astype("int32"))
    reindexed = PreparedData("cold", events, data.labels, data.user_ids, data.item_ids[perm], data.meta)
    again = withheld_videos(reindexed, 0.1, seed=0)
    assert sorted(reindexed.item_ids[again]) == sorted(data.item_ids[withheld])
    made = made_cold_users(data, 0.1, seed=0)
    assert int(made.sum()) == 4 and np.array_equal(made, made_cold_users(_data(), 0.1, seed=0))


@pytest.mark.parametrize(("fit_on", "stage"), POLICIES)
def test_no_withheld_video_is_fitted_or_seen_as_input(fit_on: str, stage: str) -> None:
    data = _data()
    withheld = withheld_videos(data, 0.1, seed=0)
    mask = policy_mask(data, "temporal", fit_on, stage, cold_start=ITEMS)
    plain = policy_mask(data, "temporal", fit_on, stage)
    assert not withheld[_items_of(data, mask)].any()
    assert np.array_equal(mask, plain & ~withheld[data.events["item"].to_numpy()])  # nothing else removed
    sequences = training_sequences(data, "temporal", 10, mask=mask)
    for array in (sequences.inputs, sequences.targets, sequences.window):
        assert not withheld[array].any()
    for task_stage in ("valid", "test"):
        task = build_eval_task(data, "temporal", task_stage, maxlen=10, cold_start=ITEMS)
        assert not withheld[task.sequences].any() and not withheld[_columns(task.history)].any()
        assert task.item_popularity[withheld].sum() == 0


def test_items_targets_are_withheld_videos_among_all_candidates() -> None:
    data = _data()
    withheld = withheld_videos(data, 0.1, seed=0)
    task = build_eval_task(data, "temporal", "test", maxlen=10, cold_start=ITEMS)
    assert task.name == "cold/temporal/test/cold_items"
    assert withheld[_columns(task.targets)].all() and task.targets.nnz > 0
    assert task.candidates is None  # every video is rankable, withheld ones included
    events = data.events
    test_of_withheld = (events["split_temporal"].to_numpy() == 2) & withheld[events["item"].to_numpy()]
    assert np.array_equal(task.users, np.unique(events["user"].to_numpy()[test_of_withheld]))
    # the targets are the plain task's test targets restricted to withheld videos (none was in the history)
    plain = build_eval_task(data, "temporal", "test", maxlen=10, mask_history=False)
    restricted = plain.targets[np.searchsorted(plain.users, task.users)].multiply(withheld[None, :]).tocsr()
    assert (restricted != task.targets).nnz == 0
    info = task.meta["cold_start"]
    assert (info["protocol"], info["seed"], info["withheld_videos"], info["videos"]) == (
        "items",
        0,
        6,
        N_ITEMS,
    )
    valid = build_eval_task(data, "temporal", "valid", maxlen=10, cold_start=ITEMS)
    assert not withheld[_columns(valid.targets)].any()  # a removed event is never a target


def test_every_model_is_fit_on_the_same_events_under_items() -> None:
    data = _data()
    for fit_on in ("train", "train_valid"):
        expected = events_digest(data, policy_mask(data, "temporal", fit_on, "test", cold_start=ITEMS))
        plain = events_digest(data, policy_mask(data, "temporal", fit_on, "test"))
        assert expected["sha256"] != plain["sha256"] and expected["events"] < plain["events"]
        from sasrec.study.comparisons import fit_baselines

        fitted = fit_baselines(data, {name: {} for name in BASELINES}, split="temporal", fit_on=fit_on,
                               cold_start=ITEMS)  # fmt: skip
        assert {fitted[name]["test"].fit_events["sha256"] for name in BASELINES} == {expected["sha256"]}


# ---------------------------------------------------------------------------------------------- users
@pytest.mark.parametrize(("fit_on", "stage"), POLICIES)
def test_cold_users_keep_exactly_their_last_k_training_events(fit_on: str, stage: str) -> None:
    data = _data()
    events = data.events
    selection = USERS.select(data, "temporal")
    cold = selection.users
    made = made_cold_users(data, 0.1, seed=0)
    train_counts = np.bincount(events.loc[events["split_temporal"] == 0, "user"], minlength=N_USERS + 1)
    assert np.array_equal(cold, made | ((train_counts <= K) & (np.arange(N_USERS + 1) > 0)))
    assert cold[1:5].all() and selection.info["naturally_cold"] == 4
    mask = policy_mask(data, "temporal", fit_on, stage, cold_start=USERS)
    plain = policy_mask(data, "temporal", fit_on, stage)
    train = events[events["split_temporal"] == 0]
    last_k = train.groupby("user").tail(K).index.to_numpy()  # each user's last k training events
    of_cold = cold[events["user"].to_numpy()]
    expected = plain.copy()
    expected[of_cold] = False
    expected[last_k[of_cold[last_k]]] = True
    assert np.array_equal(mask, expected)
    kept = np.bincount(events["user"].to_numpy()[mask], minlength=N_USERS + 1)
    assert np.array_equal(kept[cold], np.minimum(train_counts[cold], K))  # exactly k (or all, when fewer)
    assert np.array_equal(mask[~of_cold], plain[~of_cold])  # warm users keep every fitting event


def test_users_tasks_test_only_cold_users_from_their_last_k_events() -> None:
    data = _data()
    cold = USERS.select(data, "temporal").users
    task = build_eval_task(data, "temporal", "test", maxlen=10, cold_start=USERS)
    assert task.name == "cold/temporal/test/cold_users" and cold[task.users].all()
    assert len(task) == int(cold.sum())  # every cold user has test events here
    assert (np.diff(task.history.indptr) <= K).all() and ((task.sequences > 0).sum(axis=1) <= K).all()
    events = data.events
    kept = events[events["split_temporal"] == 0].groupby("user").tail(K).groupby("user")["item"].apply(list)
    for row, user in enumerate(task.users):  # the input is the user's last k training videos, in order
        sequence = task.sequences[row]
        assert sequence[sequence > 0].tolist() == kept[user]
    everyone = build_eval_task(data, "temporal", "test", maxlen=10)
    assert set(task.users) < set(everyone.users) and set(task.users).isdisjoint(np.flatnonzero(~cold))
    info = task.meta["cold_start"]
    assert (info["protocol"], info["user_events"], info["cold_users"]) == ("users", K, int(cold.sum()))
    assert info["made_cold"] + info["naturally_cold"] == info["cold_users"]


# ----------------------------------------------------------------------------------------------- none
#: Digests of the fitting events of ``_data()`` under each policy, computed with the code before the
#: cold-start protocols (plain ``stage_masks``): the none protocol must reproduce them bit for bit.
NONE_DIGESTS = {
    ("train", "valid"): "b2d83a85f8101cecce12b191b4508bc88138282a7f38f777658e4461bf06ce69",
    ("train", "test"): "b2d83a85f8101cecce12b191b4508bc88138282a7f38f777658e4461bf06ce69",
    ("train_valid", "valid"): "b2d83a85f8101cecce12b191b4508bc88138282a7f38f777658e4461bf06ce69",
    ("train_valid", "test"): "ea4381396fbd91d236a945ddd45f0dee20305298b14ce1a3d0e12ec028de2f1d",
}


@pytest.mark.parametrize(("fit_on", "stage"), POLICIES)
def test_the_none_protocol_changes_nothing(fit_on: str, stage: str) -> None:
    data = _data()
    plain = policy_mask(data, "temporal", fit_on, stage)
    for spec in (None, ColdStart(), ColdStart("none", frac=0.5, user_events=2, seed=3)):
        mask = policy_mask(data, "temporal", fit_on, stage, cold_start=spec)
        assert np.array_equal(mask, plain)
        assert events_digest(data, mask)["sha256"] == NONE_DIGESTS[(fit_on, stage)]
    for task_stage in ("valid", "test"):
        before = build_eval_task(data, "temporal", task_stage, maxlen=10)
        after = build_eval_task(data, "temporal", task_stage, maxlen=10, cold_start=ColdStart())
        assert (before.name, before.meta) == (after.name, after.meta)
        for name in ("users", "sequences", "item_popularity", "candidates"):
            assert (
                np.array_equal(getattr(before, name), getattr(after, name)) or getattr(before, name) is None
            )
        for name in ("history", "targets", "relevant"):
            assert (getattr(before, name) != getattr(after, name)).nnz == 0


# ------------------------------------------------------------------------------------------ evaluation
def test_popularity_cannot_rank_withheld_videos_and_an_oracle_can() -> None:
    data = _data()
    withheld = withheld_videos(data, 0.1, seed=0)
    task = build_eval_task(data, "temporal", "test", maxlen=10, cold_start=ITEMS)
    mask = policy_mask(data, "temporal", "train", "test", cold_start=ITEMS)
    pop = make_baseline("pop").fit(data, mask)
    scores = pop.score(task, np.arange(len(task))).numpy()
    assert (scores[:, withheld] == 0).all()  # no fitted view: the fallback score
    assert (scores[:, 1:][:, ~withheld[1:]] > 0).sum(axis=1).min() >= 10  # ten warm videos always rank above
    random = evaluate(make_baseline("random").fit(data, mask), task, k=10)
    popular = evaluate(pop, task, k=10)
    oracle = evaluate(OracleScorer(task.relevant), task, k=10)
    n_relevant = int((np.diff(sp.csr_matrix(task.relevant > 0).indptr) > 0).sum())
    assert popular.summary["users"] == oracle.summary["users"] == n_relevant > 0
    chance = 10 / (N_ITEMS - 10)  # about the chance of one relevant target in the top 10
    assert popular.summary["hr@10"] <= max(random.summary["hr@10"], chance) + 0.05
    assert oracle.summary["hr@10"] == 1.0 and oracle.summary["ndcg@10"] == pytest.approx(1.0)
    difference = paired_difference(oracle.per_user, popular.per_user, "ndcg@10", n_boot=200)
    assert difference["users"] == n_relevant and difference["difference"] > 0.5
    sampled = evaluate(pop, task, k=10, protocol="sampled", num_negatives=20)
    assert sampled.summary["users"] == n_relevant
    payload = metrics_payload("pop", data.name, "temporal", "full", 10, None, popular)
    assert payload["cold_start"] == task.meta["cold_start"]
    assert (
        metrics_payload("pop", data.name, "temporal", "full", 10, None, random)["cold_start"]["protocol"]
        == "items"
    )


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"protocol": "item"}, "cold_start must be one of none, items, users; got 'item'"),
        ({"protocol": None}, "cold_start must be one of none, items, users"),
        ({"frac": 0.0}, "cold_start_frac must be a number in (0, 1); got 0.0"),
        ({"frac": 1.5}, "cold_start_frac must be a number in (0, 1)"),
        ({"frac": "a tenth"}, "cold_start_frac must be a number in (0, 1)"),
        ({"user_events": -1}, "cold_user_events must be an integer >= 0; got -1"),
        ({"user_events": 2.5}, "cold_user_events must be an integer >= 0"),
        ({"seed": -3}, "cold_start_seed must be an integer >= 0"),
    ],
)
def test_bad_values_are_one_line_config_errors(values: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        ColdStart(**values)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert COLD_START_PROTOCOLS == ("none", "items", "users")


# ------------------------------------------------------------------------------------ training and CLI
@pytest.mark.parametrize("refit", [False, True])
def test_the_training_loop_never_sees_a_withheld_video(refit: bool, tmp_path: Path, one_thread: None) -> None:
    from sasrec.training.config import TrainConfig
    from sasrec.training.loop import build_run, fit_mask

    data = _data()
    withheld = withheld_videos(data, 0.1, seed=0)
    config = TrainConfig(cold_start="items", hidden_units=8, num_blocks=1, maxlen=10, device="cpu",
                         progress=False, fit_on="train_valid" if refit else "train")  # fmt: skip
    mask = fit_mask(data, config, refit=refit)
    assert np.array_equal(
        mask, policy_mask(data, "temporal", config.fit_on, "test" if refit else "valid", cold_start=ITEMS)
    )
    run = build_run(data, config, mask=mask, validate=True, folder=tmp_path)
    for name in ("inputs", "targets", "window"):  # the sequences the loop trains on
        assert not withheld[run.tensors[name].numpy()].any()
    assert (
        not withheld[run.valid_task.sequences].any() and not withheld[_columns(run.valid_task.history)].any()
    )
    assert (run.popularity[withheld] == 0).all()  # the scorer's fallback: no fitted view
    from sasrec.study.comparisons import fit_baselines

    ease = fit_baselines(data, {"ease": {}}, split="temporal", fit_on=config.fit_on, cold_start=ITEMS)["ease"]
    stage = "test" if refit else "valid"
    assert run.fit_events["sha256"] == ease[stage].fit_events["sha256"] == events_digest(data, mask)["sha256"]


def test_train_config_refuses_bad_cold_start_values_in_one_line() -> None:
    from sasrec.training.config import TrainConfig

    assert TrainConfig().cold_start_spec() is None
    assert TrainConfig(cold_start="users", cold_user_events=3).cold_start_spec() == ColdStart(
        "users", user_events=3
    )
    refused = {
        "cold_start": ("cold", "cold_start must be one of none, items, users"),
        "cold_start_frac": (1.0, "cold_start_frac must be a number in (0, 1)"),
        "cold_user_events": (-2, "cold_user_events must be an integer >= 0"),
    }
    for name, (value, needle) in refused.items():
        with pytest.raises(ConfigError) as info:
            TrainConfig(**{name: value})
        assert needle in str(info.value) and "\n" not in str(info.value)


TINY = ["--maxlen=20", "--hidden_units=16", "--device=cpu", "--num_epochs=1", "--progress=false"]


def test_train_and_baseline_commands_report_the_cold_start_protocol(world: dict[str, Path]) -> None:
    from sasrec.cli import main
    from sasrec.data.preparation.pipeline import load_prepared

    data_dir = f"--data-dir={world['raw']}"
    data = load_prepared("small_matrix", data_dir=world["raw"], progress=False)
    plain = events_digest(data, policy_mask(data, "temporal", "train", "test"))
    out = world["root"]
    common = [data_dir, "--dataset=small_matrix", "--relevance=liked"]  # liked: enough relevant targets
    baseline = ["baseline", *common, "--no-progress"]
    items = ["--cold_start=items"]
    train = ["train", *common, "--train_dir=cold", *items, *TINY, f"--metrics_json={out / 'train.json'}"]
    assert main(train) == 0
    trained = json.loads((out / "train.json").read_text())
    info = trained["cold_start"]
    assert (info["protocol"], info["seed"]) == ("items", 0)
    assert info["withheld_videos"] == round(0.1 * info["videos"]) == int(withheld_videos(data).sum())
    assert trained["test"]["users"] > 0 and "ndcg@10" in trained["test"] and "hr@10" in trained["test"]
    assert trained["config"]["cold_start"] == "items"
    assert trained["fit_events"]["sha256"] != plain["sha256"]
    for model in ("pop", "markov"):
        assert main([*baseline, f"--model={model}", *items, f"--metrics_json={out / f'{model}.json'}"]) == 0
        fitted = json.loads((out / f"{model}.json").read_text())
        assert fitted["fit_events"]["sha256"] == trained["fit_events"]["sha256"]  # the same events
        assert fitted["cold_start"] == info and fitted["test"]["users"] == trained["test"]["users"]
    cold_users = ["--cold_start=users", "--cold_user_events=3"]
    assert main([*baseline, "--model=pop", *cold_users, f"--metrics_json={out / 'users.json'}"]) == 0
    users = json.loads((out / "users.json").read_text())
    assert users["cold_start"]["protocol"] == "users" and users["cold_start"]["user_events"] == 3
    assert 0 < users["test"]["users_total"] <= users["cold_start"]["cold_users"]
    assert main([*baseline, "--model=pop", f"--metrics_json={out / 'none.json'}"]) == 0
    none = json.loads((out / "none.json").read_text())
    assert none["cold_start"] == {"protocol": "none"} and none["fit_events"]["sha256"] == plain["sha256"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["train", "--dataset=small_matrix", "--cold_start_frac=2", "--device=cpu"],
            "cold_start_frac must be",
        ),
        (
            ["baseline", "--dataset=small_matrix", "--model=pop", "--cold_user_events=-1"],
            "cold_user_events must",
        ),
        (
            [
                "baseline",
                "--dataset=small_matrix",
                "--model=pop",
                "--cold_start=items",
                "--training_dataset=big_matrix",
            ],
            "big-to-small",
        ),
        (["baseline", "--dataset=small_matrix", "--model=pop", "--cold_start=item"], "--cold_start"),
    ],
)
def test_bad_cold_start_flags_are_refused_in_one_line(
    world: dict[str, Path], capsys: pytest.CaptureFixture, argv: list[str], needle: str
) -> None:
    from sasrec.cli import main

    try:
        code = main([argv[0], f"--data-dir={world['raw']}", *argv[1:]])
    except SystemExit as exit_:  # argparse refuses an unknown choice
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


# --------------------------------------------------------------------------- cold validation tasks
def test_cold_validation_task_targets_the_removed_validation_events() -> None:
    """The mirror of the test task for choosing a cold-start setting on validation: targets are the validation
    events the protocol removes, and the input stays without them."""
    data = _data()
    events = data.events
    valid_stage = events["split_temporal"].to_numpy() == 1
    withheld = withheld_videos(data, 0.1, seed=0)
    task = build_eval_task(data, "temporal", "valid", maxlen=10, cold_start=ITEMS, cold_targets=True)
    assert task.name == "cold/temporal/valid/cold_items_targets" and task.targets.nnz > 0
    assert withheld[_columns(task.targets)].all()
    assert not withheld[task.sequences].any() and not withheld[_columns(task.history)].any()
    of_withheld = valid_stage & withheld[events["item"].to_numpy()]
    assert np.array_equal(task.users, np.unique(events["user"].to_numpy()[of_withheld]))
    assert task.targets.nnz == len(events[of_withheld].drop_duplicates(["user", "item"]))
    cold = USERS.select(data, "temporal").users
    users_task = build_eval_task(data, "temporal", "valid", maxlen=10, cold_start=USERS, cold_targets=True)
    of_cold = valid_stage & cold[events["user"].to_numpy()]
    assert np.array_equal(users_task.users, np.unique(events["user"].to_numpy()[of_cold]))
    assert (np.diff(users_task.history.indptr) <= K).all()
    with pytest.raises(ConfigError, match="cold_targets needs an active cold_start protocol and stage valid"):
        build_eval_task(data, "temporal", "test", maxlen=10, cold_start=ITEMS, cold_targets=True)
    with pytest.raises(ConfigError, match="cold_targets needs"):
        build_eval_task(data, "temporal", "valid", maxlen=10, cold_targets=True)
