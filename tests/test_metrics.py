"""Metric functions on hand-made batches, with the arithmetic written out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sasrec.evaluation.metrics import log2_discounts, metrics_from_hits, ranking_metrics
from sasrec.ranking import (
    hashed_below,
    hashed_uniform,
    hashed_words,
    ranking_keys,
    top_k_items,
    top_k_keyed,
    top_k_narrow,
)


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


def test_hashed_words_are_reproducible_distinct_and_seed_dependent() -> None:
    users = torch.tensor([5, 9, 5])
    words = hashed_words(7, users, 50)
    assert torch.equal(words[0], words[2])  # same user key, same words whatever the row
    assert len(set(words[0].tolist())) == 50  # distinct column keys give distinct words within a row
    assert words.min().item() >= 0 and words.max().item() < 2**32
    assert torch.equal(words, hashed_words(7, users, 50))
    assert not torch.equal(words, hashed_words(8, users, 50))
    assert not torch.equal(words[0], words[1])
    assert not torch.equal(words, hashed_words(7, users, 50, stream=1))  # streams are independent
    # column keys: the word of (user, key) does not depend on the column's position
    keys = torch.tensor([40, 3, 17])
    assert torch.equal(hashed_words(7, users, keys)[:, 0], hashed_words(7, users, 41)[:, 40])
    u = hashed_uniform(0, torch.arange(200), 300)
    assert 0.0 <= u.min().item() and u.max().item() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.01  # 60,000 draws: the mean's standard error is about 0.0012


def test_hashed_below_stays_in_bounds_and_extends_its_sequence() -> None:
    keys = torch.arange(1, 401)
    bounds = torch.arange(1, 401)  # row b draws in [0, b + 1)
    draws = hashed_below(3, keys, 64, bounds, stream=1)
    assert draws.min().item() >= 0 and (draws < bounds[:, None]).all()
    assert (draws[0] == 0).all()  # a bound of 1 leaves one value
    assert torch.equal(hashed_below(3, keys, 128, bounds, stream=1)[:, :64], draws)  # counter-based
    # uniform: 100 rows x 400 draws in [0, 4)
    top = hashed_below(3, keys[-100:], 400, torch.full((100,), 4, dtype=torch.int64), stream=1)
    shares = torch.bincount(top.ravel(), minlength=4).double() / top.numel()
    assert (shares - 0.25).abs().max().item() < 0.01  # 40,000 draws: standard error of a share 0.0022


def test_top_k_keyed_matches_top_k_items_and_needs_no_mask() -> None:
    gen = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 3, (50, 30), generator=gen).float()
    scores[:, 7] = float("-inf")  # rankable -inf scores still precede non-rankable items
    rankable = torch.rand(50, 30, generator=gen) > 0.5
    rankable[:, 0] = False
    keyed = ranking_keys(scores).masked_fill_(~rankable, float("-inf"))
    for k in (1, 5, 30):
        items, valid = top_k_keyed(keyed, k)
        ref_items, ref_valid = top_k_items(scores, rankable, k)
        assert torch.equal(valid, ref_valid)
        assert torch.equal(items[valid], ref_items[ref_valid])
        narrow_items, narrow_valid = top_k_narrow(keyed.numpy(), k)  # the numpy variant: same lists
        assert np.array_equal(narrow_valid, valid.numpy())
        assert np.array_equal(narrow_items[narrow_valid], items[valid].numpy())
    for row in range(50):  # reference: a stable sort of -score over the rankable items
        cand = np.flatnonzero(rankable[row].numpy())
        order = cand[np.argsort(-scores[row].numpy()[cand], kind="stable")][:5]
        assert top_k_keyed(keyed[row : row + 1], 5)[0][0, : len(order)].tolist() == order.tolist()


def test_metrics_from_hits_equals_the_dense_form() -> None:
    # ranked 2, 3, 5, 1 with relevant {1, 3, 4}: hits at ranks 2 and 4; gains 1 -> 2.0, 3 -> 1.0, 4 -> 4.0
    hits = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    ranked_gains = torch.tensor([[0.0, 1.0, 0.0, 2.0]])
    ideal = torch.tensor([[4.0, 2.0, 1.0, 0.0]])
    out = metrics_from_hits(hits, ranked_gains, torch.tensor([3]), ideal, 4)
    d = [1.0, 1 / math.log2(3), 0.5, 1 / math.log2(5)]
    assert out["graded_ndcg@4"].item() == pytest.approx((1.0 * d[1] + 2.0 * d[3]) / (4.0 + 2.0 * d[1] + 0.5))
    assert out["ndcg@4"].item() == pytest.approx((d[1] + d[3]) / (1 + d[1] + d[2]))
    assert out["mrr@4"].item() == pytest.approx(0.5)
