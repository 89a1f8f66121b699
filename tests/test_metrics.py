"""Metric functions on hand-made batches, with the arithmetic written out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sasrec.evaluation.metrics import log2_discounts, ranking_metrics
from sasrec.evaluation.sampling import sampled_candidates
from sasrec.ranking import hashed_keys, hashed_uniform, top_k_items


def _all_but_padding(n_rows: int, n_cols: int) -> torch.Tensor:
    rankable = torch.ones((n_rows, n_cols), dtype=torch.bool)
    rankable[:, 0] = False
    return rankable


def test_top_k_breaks_ties_towards_lower_item_index() -> None:
    # items 1..5 score 1, 3, 3, 1, 2 -> order 2, 3 (tie at 3: lower first), 5, then 1, 4 (tie at 1)
    scores = torch.tensor([[100.0, 1.0, 3.0, 3.0, 1.0, 2.0]])
    items, valid = top_k_items(scores, _all_but_padding(1, 6), 4)
    assert items.tolist() == [[2, 3, 5, 1]]
    assert valid.all()
    # a constant scorer ranks items in index order; the padding column (score 100) is never ranked
    items, _ = top_k_items(torch.zeros(1, 6), _all_but_padding(1, 6), 5)
    assert items.tolist() == [[1, 2, 3, 4, 5]]


def test_top_k_matches_a_stable_descending_sort_with_many_ties() -> None:
    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (64, 40), generator=gen).float()  # heavy ties
    rankable = torch.rand(64, 40, generator=gen) > 0.3
    rankable[:, 0] = False
    items, valid = top_k_items(scores, rankable, 10)
    for row in range(64):  # reference: numpy stable sort of -score over the rankable items only
        cand = np.flatnonzero(rankable[row].numpy())
        order = cand[np.argsort(-scores[row].numpy()[cand], kind="stable")][:10]
        n = len(order)
        assert items[row, :n].tolist() == order.tolist()
        assert valid[row].tolist() == [True] * n + [False] * (10 - n)


def test_top_k_puts_rankable_minus_infinity_before_unrankable_items() -> None:
    # item 1 scores -inf but is rankable; items 2, 3 are excluded (history) although they score high
    scores = torch.tensor([[0.0, float("-inf"), 9.0, 8.0, 1.0]])
    rankable = torch.tensor([[False, True, False, False, True]])
    items, valid = top_k_items(scores, rankable, 3)
    assert items[0, :2].tolist() == [4, 1]
    assert valid.tolist() == [[True, True, False]]


def test_discounts() -> None:
    assert log2_discounts(3).tolist() == pytest.approx([1.0, 1 / math.log2(3), 0.5])


def test_binary_metrics_by_hand() -> None:
    # ranked list (k = 4): items 2, 3, 5, 1; relevant {1, 3, 4} -> hits at ranks 2 and 4
    items = torch.tensor([[2, 3, 5, 1], [1, 2, 3, 4]])
    valid = torch.ones(2, 4, dtype=torch.bool)
    relevant = torch.zeros(2, 6)
    relevant[0, [1, 3, 4]] = 1.0  # row 1 has no relevant target
    gains = relevant.clone()
    out = ranking_metrics(items, valid, relevant, gains, _all_but_padding(2, 6), 4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # ranks 2 and 4
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # min(n_rel=3, K=4) = 3 ideal hits
    assert out["ndcg@4"][0].item() == pytest.approx(dcg / idcg)
    assert out["precision@4"][0].item() == pytest.approx(2 / 4)
    assert out["recall@4"][0].item() == pytest.approx(2 / 3)
    assert out["hr@4"][0].item() == 1.0
    assert out["mrr@4"][0].item() == pytest.approx(1 / 2)  # first hit at rank 2
    # MAP: precision at hit ranks (1/2 at rank 2, 2/4 at rank 4) summed over min(3, 4) = 3
    assert out["map@4"][0].item() == pytest.approx((1 / 2 + 2 / 4) / 3)
    for name in ("ndcg@4", "precision@4", "recall@4", "hr@4", "mrr@4", "map@4", "graded_ndcg@4"):
        assert math.isnan(out[name][1].item()), name


def test_fewer_relevant_than_k_and_filler_slots() -> None:
    # one relevant item (3) ranked first: perfect NDCG (IDCG over min(1, K) = 1 hit), precision 1/K
    items = torch.tensor([[3, 1, 2]])
    relevant = torch.zeros(1, 5)
    relevant[0, 3] = 1.0
    out = ranking_metrics(
        items, torch.ones(1, 3, dtype=torch.bool), relevant, relevant, _all_but_padding(1, 5), 3
    )
    assert out["ndcg@3"].item() == pytest.approx(1.0)
    assert out["precision@3"].item() == pytest.approx(1 / 3)
    assert out["map@3"].item() == pytest.approx(1.0)
    # a filler slot (valid False) holding a relevant item is not a hit
    items = torch.tensor([[1, 3, 2]])
    valid = torch.tensor([[True, False, False]])
    out = ranking_metrics(items, valid, relevant, relevant, _all_but_padding(1, 5), 3)
    assert out["hr@3"].item() == 0.0
    assert out["ndcg@3"].item() == 0.0


def test_graded_ndcg_by_hand() -> None:
    # gains: item 1 -> 5 (clipped upstream), item 2 -> 3, item 4 -> 0.5; ranked 2, 3, 1
    gains = torch.tensor([[0.0, 5.0, 3.0, 0.0, 0.5]])
    relevant = torch.tensor([[0.0, 1.0, 1.0, 0.0, 0.0]])
    items = torch.tensor([[2, 3, 1]])
    out = ranking_metrics(
        items, torch.ones(1, 3, dtype=torch.bool), relevant, gains, _all_but_padding(1, 5), 3
    )
    dcg = 3.0 + 0.0 / math.log2(3) + 5.0 * 0.5  # 5.5
    idcg = 5.0 + 3.0 / math.log2(3) + 0.5 * 0.5
    assert out["graded_ndcg@3"].item() == pytest.approx(dcg / idcg)
    # the ideal only uses rankable targets: with item 1 excluded, the ideal is 3 then 0.5
    rankable = _all_but_padding(1, 5)
    rankable[0, 1] = False
    out = ranking_metrics(items, torch.tensor([[True, True, False]]), relevant, gains, rankable, 3)
    assert out["graded_ndcg@3"].item() == pytest.approx(3.0 / (3.0 + 0.5 / math.log2(3)))


def test_hashed_keys_are_reproducible_distinct_and_seed_dependent() -> None:
    users = torch.tensor([5, 9, 5])
    keys = hashed_keys(7, users, 50)
    assert torch.equal(keys[0], keys[2])  # same user, same keys whatever the row
    assert len(set(keys[0].tolist())) == 50  # distinct within a row
    assert torch.equal(keys, hashed_keys(7, users, 50))
    assert not torch.equal(keys, hashed_keys(8, users, 50))
    assert not torch.equal(keys[0], keys[1])
    u = hashed_uniform(0, torch.arange(200), 300)
    assert 0.0 <= u.min().item() and u.max().item() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.01  # 60,000 draws: the mean's standard error is about 0.0012


def test_sampled_candidates_rules() -> None:
    n_rows, n_cols, n_neg = 30, 200, 25
    gen = torch.Generator().manual_seed(0)
    history = torch.rand(n_rows, n_cols, generator=gen) < 0.2
    targets = (torch.rand(n_rows, n_cols, generator=gen) < 0.05) & ~history
    relevant = targets & (torch.rand(n_rows, n_cols, generator=gen) < 0.5)
    history[:, 0] = targets[:, 0] = relevant[:, 0] = False
    rankable = _all_but_padding(n_rows, n_cols) & ~history
    users = torch.arange(1, n_rows + 1)
    cand = sampled_candidates(rankable, history, targets, relevant, users, n_neg, seed=1)
    negatives = cand & ~relevant
    assert (negatives.sum(dim=1) == n_neg).all()  # exactly num_negatives per row
    assert (cand.sum(dim=1) == n_neg + relevant.sum(dim=1)).all()  # plus every relevant target
    assert not (negatives & (history | targets)).any()  # never history or (even non-relevant) targets
    assert not cand[:, 0].any()
    assert torch.equal(cand, sampled_candidates(rankable, history, targets, relevant, users, n_neg, seed=1))
    # batch independence: the same user alone in a batch gets the same list
    alone = sampled_candidates(rankable[3:4], history[3:4], targets[3:4], relevant[3:4], users[3:4], n_neg, 1)
    assert torch.equal(alone[0], cand[3])
    other = sampled_candidates(rankable, history, targets, relevant, users, n_neg, seed=2)
    assert not torch.equal(other, cand)


def test_sampled_candidates_takes_all_when_too_few_eligible() -> None:
    rankable = torch.tensor([[False, True, True, True]])
    none = torch.zeros(1, 4, dtype=torch.bool)
    history = torch.tensor([[False, True, False, False]])
    cand = sampled_candidates(rankable & ~history, history, none, none, torch.tensor([1]), 10, 0)
    assert cand.tolist() == [[False, False, True, True]]
