"""Training targets (``target: views | liked | relevant | graded``) for every model.

Hand-computed losses over the target positions, planted data where liked and disliked views follow different
successor rules, baselines fit on target events only, and ``views`` bit-identical to the code before the
option existed.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import build_eval_task
from sasrec.errors import ConfigError
from sasrec.evaluation.protocol import evaluate
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.models.base import SequentialRecommender
from sasrec.models.baselines import make_baseline
from sasrec.models.targets import GRADED_CLIP, event_weights, target_matrix
from sasrec.training import loop
from sasrec.training.config import TrainConfig
from sasrec.training.losses import chunked_cross_entropy
from sasrec.training.sequences import training_sequences
from tests.conftest import make_prepared


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Tiny tensors: one thread (and the bit-identity digests below were computed with one thread)."""


# ------------------------------------------------------------------------------ (1) losses by hand
N_ITEMS = 6
INPUTS = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 1]])  # (B, T)
WINDOW = torch.tensor([[1, 2, 3, 4], [5, 6, 1, 2]])  # (B, T) the next items
TARGETS = torch.where(INPUTS != 0, WINDOW, 0)  # (B, T): position (0, 0) is padding
USERS = torch.tensor([1, 2])
LIKED = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])  # (B, T) 1 where window's event is liked
GRADED = torch.tensor([[0.5, 2.0, 1.5, 0.25], [1.0, 0.0, 3.0, 0.75]])  # (B, T)
K = 2


class _Fixed(SequentialRecommender):
    """Deterministic hidden states: ``embedding(seq) @ proj`` (no dropout, no attention)."""

    name = "fixed-test"

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.num_items, self.maxlen = N_ITEMS, 4
        self.emb = nn.Parameter(torch.randn(N_ITEMS + 1, 3, generator=generator, dtype=torch.float64))
        self.proj = nn.Parameter(torch.randn(3, 3, generator=generator, dtype=torch.float64))

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        return F.embedding(seqs, self.emb) @ self.proj  # (B, T, d)

    def output_embeddings(self) -> torch.Tensor:
        return self.emb


def _negative(user: int, target: int, k: int = 0) -> int:
    """The stub sampler's negative: a fixed function of (user, target, k), never padding."""
    return (user + target + k) % N_ITEMS + 1


class _Sampler:
    """Known negatives: BCE's ``_negative(user, target)``; sampled losses' ``(user + k) % I + 1``."""

    generator = None
    catalogue = None  # every item is in the full softmax (no item cold-start)
    catalogue_rows = None

    def bce_negatives(self, users: torch.Tensor, targets: torch.Tensor, *, explicit: bool):
        negatives = (users[:, None] + targets) % N_ITEMS + 1  # (B, T)
        return negatives.masked_fill(targets == 0, 0), torch.zeros_like(targets, dtype=torch.bool)

    def uniform(self, users: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return (users[:, None] + torch.arange(shape[0])[None, :]) % N_ITEMS + 1  # (N, K)


def _hand_terms(model: _Fixed, loss: str) -> dict[tuple[int, int], float]:
    """Per valid position (b, t): that position's loss, computed one position at a time."""
    hidden = model(INPUTS).detach()
    emb = model.emb.detach()
    terms = {}
    for b in range(INPUTS.shape[0]):
        for t in range(INPUTS.shape[1]):
            target = int(TARGETS[b, t])
            if target == 0:
                continue
            h = hidden[b, t]

            def logit(item: int, h: torch.Tensor = h) -> float:
                return float(h @ emb[item])

            if loss == "bce":
                negative = _negative(int(USERS[b]), target)
                terms[b, t] = math.log1p(math.exp(-logit(target))) + math.log1p(math.exp(logit(negative)))
            elif loss == "ce":
                lse = math.log(sum(math.exp(logit(i)) for i in range(1, N_ITEMS + 1)))
                terms[b, t] = lse - logit(target)
            else:  # sampled_softmax
                negatives = [(int(USERS[b]) + k) % N_ITEMS + 1 for k in range(K)]
                logits = [logit(target)] + [logit(n) for n in negatives]
                terms[b, t] = math.log(sum(math.exp(x) for x in logits)) - logit(target)
    return terms


def _batch(loss: str, target: str, weights: torch.Tensor | None) -> tuple[float, int]:
    config = TrainConfig(loss=loss, target=target, num_negatives=K, ce_chunk_size=3, device="cpu")
    mean, n = loop.batch_loss_terms(_Fixed(), _Fixed(), _Sampler(), USERS, INPUTS, TARGETS, WINDOW, config, 1.0,
                                    weights=weights)  # type: ignore[arg-type]  # fmt: skip
    return float(mean.detach()), n


@pytest.mark.parametrize("loss", ["bce", "ce", "sampled_softmax"])
def test_liked_loss_is_the_mean_over_the_liked_positions_only(loss: str) -> None:
    terms = _hand_terms(_Fixed(), loss)
    liked = [terms[p] for p in terms if LIKED[p] > 0]
    assert len(liked) == 4 < len(terms) == 7  # (0, 0) is padding, three valid positions are not liked
    mean, n = _batch(loss, "liked", LIKED)
    assert n == 4
    assert mean == pytest.approx(sum(liked) / 4, rel=1e-12)
    every, n_views = _batch(loss, "views", None)  # views: every valid position, as before
    assert n_views == 7 and every == pytest.approx(sum(terms.values()) / 7, rel=1e-12)


@pytest.mark.parametrize("loss", ["bce", "ce", "sampled_softmax"])
def test_graded_loss_weights_every_position(loss: str) -> None:
    terms = _hand_terms(_Fixed(), loss)
    mean, n = _batch(loss, "graded", GRADED)
    assert n == 7  # every valid position counts; the weights (mean 1 over the fitted events) scale each term
    assert mean == pytest.approx(sum(float(GRADED[p]) * value for p, value in terms.items()) / 7, rel=1e-12)


def test_weighted_chunked_cross_entropy_gradients_equal_the_dense_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(1, 9, (7,), generator=generator)
    rows = torch.rand(7, generator=generator, dtype=torch.float64) * 3
    chunked = chunked_cross_entropy(hidden, weight, targets, 3, rows)
    grads = torch.autograd.grad(chunked, (hidden, weight))
    logits = (hidden @ weight.T).index_fill(1, torch.tensor([0]), float("-inf"))  # (N, I+1)
    dense = (F.cross_entropy(logits, targets, reduction="none") * rows).sum() / 7
    expected = torch.autograd.grad(dense, (hidden, weight))
    torch.testing.assert_close(chunked, dense)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_bert4rec_learns_only_its_masked_items_that_are_target_events() -> None:
    """BERT4Rec's loss target at a position is the window's item there when masked: the same weights apply."""
    from sasrec.models.bert4rec import BERT4Rec

    torch.manual_seed(0)
    model = BERT4Rec(N_ITEMS, hidden_units=8, num_heads=2, maxlen=4, mask_prob=0.5, dropout_rate=0.0)
    sampler = _Sampler()
    sampler.generator = torch.Generator().manual_seed(1)  # type: ignore[assignment]
    config = TrainConfig(
        model="bert4rec", loss="ce", target="liked", hidden_units=8, num_heads=2, device="cpu"
    )
    mean, n = loop.batch_loss_terms(model, model, sampler, USERS, INPUTS, TARGETS, WINDOW, config, 1.0,
                                    weights=LIKED)  # type: ignore[arg-type]  # fmt: skip
    masked_input, masked = model.training_batch(INPUTS, TARGETS, WINDOW, torch.Generator().manual_seed(1))
    keep = (masked != 0) & (LIKED > 0)  # (B, T) masked positions whose item is liked
    assert int((masked != 0).sum()) == 4 and n == int(keep.sum()) == 2
    logits = (model(masked_input) @ model.output_embeddings().T)[keep]  # (2, I+1)
    logits[:, 0] = float("-inf")
    assert float(mean.detach()) == pytest.approx(
        float(F.cross_entropy(logits, masked[keep]).detach()), rel=1e-5
    )


def test_a_group_without_target_positions_adds_nothing() -> None:
    mean, n = _batch("sampled_softmax", "liked", torch.zeros_like(LIKED))
    assert (mean, n) == (0.0, 0)


# --------------------------------------------------------------------------- weights and sequences
def _small() -> PreparedData:
    """Two users; watch_ratio 0.2 (disliked), 1.0 (liked), 3.0 (liked and relevant), 9.0 (clipped to 5)."""
    rows = [(1, 1, 0.0, 0.2, 0), (1, 2, 1.0, 1.0, 0), (1, 3, 2.0, 3.0, 0), (1, 1, 3.0, 9.0, 0), (1, 4, 4.0, 1.0, 2),
            (2, 2, 0.0, 0.2, 0), (2, 3, 1.0, 0.2, 0), (2, 4, 2.0, 1.0, 1)]  # fmt: skip
    return make_prepared(rows, num_users=2, num_items=4, name="small")


def test_event_weights_follow_the_preparation_flags_and_the_graded_rule() -> None:
    data = _small()
    mask = data.events["split_temporal"].to_numpy() == 0
    assert event_weights(data, mask, "views") is None
    assert event_weights(data, mask, "liked").tolist() == [0, 1, 1, 1, 0, 0, 0, 0]
    assert event_weights(data, mask, "relevant").tolist() == [0, 0, 1, 1, 0, 0, 0, 0]
    clipped = np.array([0.2, 1.0, 3.0, min(9.0, GRADED_CLIP[1]), 0.0, 0.2, 0.2, 0.0])
    graded = event_weights(data, mask, "graded")
    np.testing.assert_allclose(graded, clipped / clipped[mask].mean(), rtol=1e-6)
    assert graded[mask].mean() == pytest.approx(1.0)
    assert np.all(graded[~mask] == 0)


def test_training_sequences_keep_every_view_and_carry_the_weights() -> None:
    data = _small()
    mask = data.events["split_temporal"].to_numpy() == 0
    views = training_sequences(data, "temporal", 3, mask=mask)
    liked = training_sequences(data, "temporal", 3, mask=mask, weights=event_weights(data, mask, "liked"))
    # user 2's training views (0.2, 0.2) hold no liked event: no training row; user 1's row is unchanged
    assert views.users.tolist() == [1, 2] and liked.users.tolist() == [1]
    assert liked.inputs.tolist() == views.inputs[:1].tolist() == [[1, 2, 3]]  # the input: every view
    assert liked.window.tolist() == [[2, 3, 1]]
    assert liked.weights.tolist() == [[1.0, 1.0, 1.0]]
    relevant = training_sequences(
        data, "temporal", 3, mask=mask, weights=event_weights(data, mask, "relevant")
    )
    assert relevant.weights.tolist() == [[0.0, 1.0, 1.0]]


# ------------------------------------------------------------------- (2) planted liked/disliked rules
CYCLE, USERS_PLANTED, WALK = 60, 96, 16
LIKED_STEP, DISLIKED_STEP = 1, 3


def _planted() -> PreparedData:
    """Walks on a cycle of 60 items: a liked view (watch_ratio 3) follows its predecessor by +1, a disliked
    one (0.3) by +3; two steps in three are disliked, the last (test) step is always liked.

    Trained on every view, the most likely next item is the disliked successor; trained on liked views only,
    the liked one. Leave-one-out: a walk of 16 steps advances at most 45 < 60 items, so no repeat is masked.
    """
    rng = np.random.default_rng(0)
    rows = []
    for user in range(1, USERS_PLANTED + 1):
        item = user * 7 % CYCLE
        for step in range(WALK):
            disliked = step not in (0, WALK - 1) and rng.random() < 2 / 3
            item = (item + (DISLIKED_STEP if disliked else LIKED_STEP)) % CYCLE
            split = 2 if step == WALK - 1 else 1 if step == WALK - 2 else 0
            rows.append((user, item + 1, float(step), 0.3 if disliked else 3.0, split))
    return make_prepared(rows, num_users=USERS_PLANTED, num_items=CYCLE, name="planted")


def _liked_successor(last: np.ndarray) -> np.ndarray:
    return (last - 1 + LIKED_STEP) % CYCLE + 1


def _disliked_successor(last: np.ndarray) -> np.ndarray:
    return (last - 1 + DISLIKED_STEP) % CYCLE + 1


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])  # SASRec with BCE (its default), GRU4Rec with CE
def test_a_model_trained_on_liked_views_learns_the_liked_rule(name: str) -> None:
    data = _planted()
    task = build_eval_task(data, "leave_one_out", "test", maxlen=WALK, relevance="liked")
    rows = np.arange(len(task))
    last = task.sequences[:, -1]
    prefers_liked = {}
    for target in ("views", "liked"):
        config = TrainConfig.for_model(
            name, dataset="planted", split="leave_one_out", device="cpu", hidden_units=32, num_blocks=1,
            maxlen=WALK, dropout_rate=0.0, lr=0.01, batch_size=32, num_epochs=20, patience=0, eval_every=100,
            progress=False, target=target,
        )  # fmt: skip
        result = loop.train(data, config, save=False)
        scorer = SequentialScorer(result.model, popularity=result.popularity)
        scores = scorer.score(task, rows).numpy()
        prefers_liked[target] = np.mean(
            scores[rows, _liked_successor(last)] > scores[rows, _disliked_successor(last)]
        )
        if target == "liked":
            summary = evaluate(scorer, task, k=10, progress=False).summary
            assert summary["users"] == USERS_PLANTED  # every test target is liked
            assert summary["hr@10"] == pytest.approx(1.0)
    # liked-only training ranks the liked successor above the disliked one; every view: mostly the reverse
    # (two steps in three are disliked), the two rules mixed
    assert prefers_liked["liked"] >= 0.9
    assert prefers_liked["views"] <= 0.5


# -------------------------------------------------------------------------------------- (3) baselines
def _train_mask(data: PreparedData) -> np.ndarray:
    return data.events["split_leave_one_out"].to_numpy() == 0


def test_pop_under_liked_ranks_the_most_liked_item_first() -> None:
    # item 1: 5 views, 1 liked; item 2: 3 views, 3 liked; item 3: 2 views, 2 liked (relevant: watch_ratio 3)
    rows = [(u, 1, 0.0, 0.3 if u > 1 else 1.0, 0) for u in range(1, 6)]
    rows += [(u, 2, 1.0, 1.0, 0) for u in range(1, 4)] + [(u, 3, 2.0, 3.0, 0) for u in range(1, 3)]
    rows += [(u, 4, 3.0, 1.0, 2) for u in range(1, 6)]
    data = make_prepared(sorted(rows), num_users=5, num_items=4, name="pop")  # events sorted by (user, time)
    task = build_eval_task(data, "temporal", "test", maxlen=4, mask_history=False)
    rank = {
        target: make_baseline("pop", target=target)
        .fit(data)
        .score(task, np.arange(1))[0, 1:4]
        .argsort(descending=True)
        .tolist()
        for target in ("views", "liked", "relevant")
    }
    assert rank["views"][0] == 0 and rank["liked"][0] == 1 and rank["relevant"][0] == 2  # items 1, 2, 3


def test_markov_under_liked_predicts_the_liked_successor() -> None:
    data = _planted()
    task = build_eval_task(data, "leave_one_out", "test", maxlen=WALK)
    last = task.sequences[:, -1]
    views = make_baseline("markov", split="leave_one_out").fit(data, _train_mask(data))
    liked = make_baseline("markov", split="leave_one_out", target="liked").fit(data, _train_mask(data))
    rows = np.arange(len(task))
    assert np.mean(liked.score(task, rows).argmax(1).numpy() == _liked_successor(last)) == 1.0
    assert np.mean(views.score(task, rows).argmax(1).numpy() == _disliked_successor(last)) > 0.9
    # a transition counts from the previous viewed item into a liked item only: +1 steps, never +3
    steps = liked.transitions.tocoo()
    assert set(((steps.col - steps.row) % CYCLE).tolist()) == {LIKED_STEP}
    liked_events = data.events[_train_mask(data) & data.events["liked"].to_numpy()]
    assert liked.popularity.sum() == pytest.approx(1.0)
    assert np.array_equal(liked.popularity > 0, np.bincount(liked_events["item"], minlength=CYCLE + 1) > 0)


def _liked_only(data: PreparedData) -> PreparedData:
    """The same data with the disliked events dropped (what a views baseline fit on liked events sees)."""
    events = data.events[data.events["liked"].to_numpy()].reset_index(drop=True)
    return PreparedData(name=data.name, events=events, labels=data.labels, user_ids=data.user_ids,
                        item_ids=data.item_ids, meta=data.meta)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "attribute"),
    [("itemknn", "similarity"), ("ease", "weights"), ("als", "item_factors")],
)
def test_matrix_baselines_fit_only_the_target_events(name: str, attribute: str) -> None:
    data = _planted()
    mask = _train_mask(data)
    fitted = target_matrix(data, mask, "liked")
    liked = data.events[mask & data.events["liked"].to_numpy()]
    pairs = {(int(u), int(i)) for u, i in zip(liked["user"], liked["item"], strict=True)}
    assert fitted.nnz == len(pairs) < data.interaction_matrix(mask).nnz and set(fitted.data.tolist()) == {1.0}
    params = {"factors": 4, "iterations": 2, "num_threads": 1} if name == "als" else {}
    under_liked = make_baseline(name, split="leave_one_out", target="liked", **params).fit(data, mask)
    liked_data = _liked_only(data)
    on_liked_events = make_baseline(name, split="leave_one_out", **params).fit(
        liked_data, _train_mask(liked_data)
    )
    assert torch.equal(getattr(under_liked, attribute), getattr(on_liked_events, attribute))
    task = build_eval_task(data, "leave_one_out", "test", maxlen=WALK)
    rows = np.arange(len(task))  # scored from every view of the history: the same task, the same scores
    assert torch.equal(under_liked.score(task, rows), on_liked_events.score(task, rows))


def test_the_graded_matrix_holds_each_pairs_largest_weight() -> None:
    data = _small()
    mask = data.events["split_temporal"].to_numpy() == 0
    weights = event_weights(data, mask, "graded")
    matrix = target_matrix(data, mask, "graded")
    assert matrix.nnz == 5  # user 1: items 1 (twice), 2, 3; user 2: items 2, 3
    assert matrix[1, 1] == pytest.approx(weights[3])  # item 1 viewed at 0.2 and 9.0: the larger weight
    assert matrix[2, 3] == pytest.approx(weights[6])
    ease = make_baseline("ease", target="graded").fit(data)
    assert not torch.equal(ease.weights, make_baseline("ease").fit(data).weights)


# ------------------------------------------------------------------------------- (4) views unchanged
def _reference_data() -> PreparedData:
    """24 users with 4..13 random views of 30 items (watch_ratio exponential, some liked, some not)."""
    rng = np.random.default_rng(7)
    rows = []
    for user in range(1, 25):
        n = int(rng.integers(4, 14))
        items, ratios = rng.integers(1, 31, size=n), rng.exponential(1.2, size=n)
        for position in range(n):
            split = 2 if position == n - 1 else 1 if position == n - 2 else 0
            rows.append((user, int(items[position]), float(position), float(ratios[position]), split))
    return make_prepared(rows, num_users=24, num_items=30, name="ref")


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _three_epochs(data: PreparedData, mask: np.ndarray, **values: object) -> tuple[str, list[str], str]:
    """(parameter digest, epoch losses in hex, popularity digest) after 3 epochs of a tiny model."""
    model = str(values.pop("model"))
    config = TrainConfig.for_model(model, dataset=data.name, device="cpu", maxlen=8, hidden_units=16,
                                   num_blocks=1, batch_size=8, num_epochs=3, progress=False, **values)  # fmt: skip
    run = loop.build_run(data, config, mask=mask, validate=False, folder=Path("unused"))
    losses = [float(loop.run_epoch(run, epoch)).hex() for epoch in (1, 2, 3)]
    return _digest(run.model.state_dict()), losses, hashlib.sha256(run.popularity.tobytes()).hexdigest()[:16]


#: Digests computed with the code before the ``target`` option existed (same data, seeds and settings, CPU,
#: one thread): parameters after 3 epochs and the first epoch's loss. Floating-point kernels differ between
#: CPU types, so on another machine a mismatch here may be the platform: the comparisons below against
#: targets that select or weight every event equally do not depend on it. The three full cross-entropy entries
#: were recomputed when that loss became one fused pass (``losses._cross_entropy_and_grads``): its first losses
#: agree with the earlier code's to 1e-7 (3.40413181 vs 3.40413189, 3.40022937 vs 3.40022930, equal for
#: GRU4Rec), and ``tests/test_ce_cost.py`` checks it against a dense reference.
BEFORE_TARGETS = {
    "sasrec_bce": ({"model": "sasrec"}, "a49aff193be846d0", "0x1.606fbc0000000p+0"),
    "sasrec_wd": ({"model": "sasrec", "weighted_dislike": True}, "5318e6c502d23f69", "0x1.ac12fd5555555p+0"),
    "sasrec_ce": ({"model": "sasrec", "loss": "ce", "ce_chunk_size": 7}, "9e952b1876b80f89", "0x1.b3ba975555555p+1"),
    "sasrec_ssm": ({"model": "sasrec", "loss": "sampled_softmax", "num_negatives": 5}, "780505fef4cc05d6",
                   "0x1.cabf0a0000000p+0"),
    "gsasrec": ({"model": "gsasrec", "num_negatives": 5}, "face37bda77d8bcb", "0x1.40edceaaaaaabp-1"),
    "bert4rec_ce": ({"model": "bert4rec", "num_heads": 2}, "b64bb756c8ad0d9a", "0x1.b33ab75555555p+1"),
    "gru4rec_ce": ({"model": "gru4rec"}, "fab9fb4e8e76d97e", "0x1.b35936aaaaaabp+1"),
}  # fmt: skip
BASELINES_BEFORE = {"random": "7b68f18521bc5ed4", "pop": "4b19d44185b0f053", "itemknn": "7470e5be572c3b3d",
                    "ease": "81a02354b74e9ef6", "als": "e2032768bb2a012c", "markov": "4e4f234c28ec7988"}  # fmt: skip


@pytest.mark.parametrize("key", sorted(BEFORE_TARGETS))
def test_views_trains_bit_identically_to_the_code_before_targets(key: str) -> None:
    data = _reference_data()
    mask, _ = data.stage_masks("temporal", "valid")
    values, params, first_loss = BEFORE_TARGETS[key]
    omitted = _three_epochs(data, mask, **values)
    assert omitted == _three_epochs(data, mask, **values, target="views")
    assert (omitted[0], omitted[1][0]) == (params, first_loss)


@pytest.mark.parametrize("name", sorted(BASELINES_BEFORE))
def test_views_baselines_score_bit_identically_to_the_code_before_targets(name: str) -> None:
    data = _reference_data()
    mask, _ = data.stage_masks("temporal", "valid")
    task = build_eval_task(data, "temporal", "test", maxlen=8)
    params = {"itemknn": {"neighbors": 5}, "als": {"factors": 4, "iterations": 3, "num_threads": 1}}.get(
        name, {}
    )
    omitted = make_baseline(name, seed=1, **params).fit(data, mask).score(task, np.arange(len(task)))
    explicit = (
        make_baseline(name, seed=1, target="views", **params)
        .fit(data, mask)
        .score(task, np.arange(len(task)))
    )
    assert torch.equal(omitted, explicit)
    assert hashlib.sha256(omitted.numpy().tobytes()).hexdigest()[:16] == BASELINES_BEFORE[name]


@pytest.mark.parametrize(
    ("model", "loss"), [("sasrec", "bce"), ("sasrec", "ce"), ("bert4rec", "ce"), ("gru4rec", "bce")]
)
def test_targets_that_keep_every_event_equally_train_exactly_as_views(model: str, loss: str) -> None:
    """Every event liked and relevant, one watch_ratio: liked, relevant and graded (weights exactly 1) take
    the same random draws and the same steps as views, bit for bit."""
    data = _reference_data()
    data.events["watch_ratio"] = np.float32(3.0)
    data.events["liked"] = data.events["relevant"] = True
    mask, _ = data.stage_masks("temporal", "valid")
    values = {"model": model, "loss": loss, "num_heads": 2 if model == "bert4rec" else 1}
    views = _three_epochs(data, mask, **values)
    for target in ("liked", "relevant", "graded"):
        assert _three_epochs(data, mask, **values, target=target) == views, target


# ------------------------------------------------------------------------------------ (5) bad values
@pytest.mark.parametrize(
    "make", [lambda: TrainConfig(target="likes"), lambda: make_baseline("pop", target="likes")]
)
def test_a_bad_target_is_a_one_line_error_naming_target(make) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message and message.startswith("target must be one of views, liked, relevant, graded")


@pytest.mark.parametrize("option", ["explicit_negatives", "weighted_dislike"])
def test_graded_with_disliked_negatives_is_refused_naming_both(option: str) -> None:
    with pytest.raises(ConfigError, match=f"target='graded'.*{option}"):
        TrainConfig(target="graded", **{option: True})
    TrainConfig(target="liked", **{option: True})  # liked positives, disliked negatives: consistent


def test_graded_needs_watch_ratio_and_a_target_needs_target_events() -> None:
    data = _small()
    data.events["watch_ratio"] = np.float32("nan")
    mask = data.events["split_temporal"].to_numpy() == 0
    with pytest.raises(ConfigError, match="target='graded'.*watch_ratio"):
        event_weights(data, mask, "graded")
    data.events["liked"] = False
    with pytest.raises(ConfigError, match="target='liked'.*leaves no fitted event"):
        make_baseline("pop", target="liked").fit(data)


def test_the_target_is_recorded_with_the_fitted_events(tmp_path: Path) -> None:
    data = _planted()
    config = TrainConfig(dataset="planted", split="leave_one_out", device="cpu", hidden_units=8, num_blocks=1,
                         maxlen=8, num_epochs=1, progress=False, target="liked")  # fmt: skip
    result = loop.train(data, config, out_dir=tmp_path)
    liked = int((_train_mask(data) & data.events["liked"].to_numpy()).sum())
    assert result.fit_events["target"] == "liked" and result.fit_events["target_events"] == liked
    assert result.fit_events["target_rule"] == "watch_ratio > 0.7"
    payload = torch.load(result.checkpoint_path, weights_only=False)
    assert payload["config"]["target"] == "liked" and payload["fit_events"] == result.fit_events
    views = loop.train(data, TrainConfig(**{**config.to_dict(), "target": "views"}), save=False)
    assert "target" not in views.fit_events  # views: the fitted events as before (config: target views)


# ------------------------------------------------------------------------------------- command line
def test_train_command_takes_target_and_records_it(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import json

    import sasrec.cli.train as train_cli
    from sasrec.cli import main

    monkeypatch.setattr(train_cli, "_load", lambda *args, **kwargs: _planted())
    metrics = root / "metrics.json"
    argv = ["train", "--dataset=small_matrix", "--split=leave_one_out", "--maxlen=8", "--hidden_units=8",
            "--num_blocks=1", "--device=cpu", "--num_epochs=1", "--progress=false", f"--metrics_json={metrics}"]  # fmt: skip
    assert main([*argv, "--target=liked"]) == 0
    assert "target liked" in capsys.readouterr().out
    payload = json.loads(metrics.read_text())
    assert payload["config"]["target"] == "liked" and payload["fit_events"]["target"] == "liked"
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main([*argv, "--target=likes"])


def test_baseline_command_takes_target_and_records_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    import sasrec.data.preparation.pipeline as pipeline
    from sasrec.cli import main

    monkeypatch.setattr(pipeline, "load_prepared", lambda dataset, **kwargs: _planted())
    out = tmp_path / "pop.json"
    argv = [
        "baseline",
        "--dataset=small_matrix",
        "--model=markov",
        "--split=leave_one_out",
        f"--metrics_json={out}",
    ]
    assert main([*argv, "--target=liked"]) == 0
    assert "target liked" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["target"] == "liked" and payload["fit_events"]["target"] == "liked"
    liked = int((_train_mask(data := _planted()) & data.events["liked"].to_numpy()).sum())
    assert payload["fit_events"]["target_events"] == liked
    assert main(argv) == 0
    views = json.loads(out.read_text())
    assert views["target"] == "views" and "target" not in views["fit_events"]
    assert views["test"]["mrr@10"] != payload["test"]["mrr@10"]
    assert main([*argv, "--param", "target=liked"]) == 2  # one line: use --target
    assert "use --target" in capsys.readouterr().err
