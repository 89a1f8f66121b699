"""Top-K ranking metrics on a batch of users: pure torch functions on dense (B, I+1) tensors.

Conventions shared by every function here:

* Column 0 is the padding item and is never rankable.
* The ranked list of a row is the top-K of its scores over its *rankable* items. Ties are broken
  deterministically in favour of the lower item index (see :func:`top_k_items`), so a constant scorer
  ranks items 1, 2, 3, ... and two runs on any device give the same list.
* Binary metrics (NDCG, precision, recall, HR, MRR, MAP) use the relevant targets; they are NaN for a row
  without any relevant target, and the evaluation runner excludes such rows from their means.
* Graded NDCG uses linear gains ``min(watch_ratio, gain_clip)`` of every target (Jarvelin & Kekalainen,
  "Cumulated gain-based evaluation of IR techniques", TOIS 2002, with the log2(rank + 1) discount); its
  ideal DCG orders the row's rankable targets by gain. It is NaN when that ideal is 0 (no target with a
  positive gain).
"""

from __future__ import annotations

import torch

METRIC_NAMES = (
    "ndcg",
    "graded_ndcg",
    "precision",
    "recall",
    "hr",
    "mrr",
    "map",
)
"""Per-user metrics computed by :func:`ranking_metrics` (keys are ``f"{name}@{k}"``)."""

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (xor-shift-multiply) on int64 tensors; modifies ``x`` in place.

    Values are kept below 2**32 and the multiplier below 2**31, so int64 products never overflow.
    """
    x.bitwise_and_(_MASK32)
    x.bitwise_xor_(x >> 16)
    x.mul_(0x45D9F3B).bitwise_and_(_MASK32)
    x.bitwise_xor_(x >> 16)
    x.mul_(0x45D9F3B).bitwise_and_(_MASK32)
    return x.bitwise_xor_(x >> 16)


def _hash32(seed: int, row_keys: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(B, n_cols) int64 hashes in [0, 2**32) of (seed, row key, column)."""
    device = row_keys.device
    seed_part = _mix32(torch.tensor([int(seed) & _MASK32], dtype=torch.int64, device=device) + 0x9E3779B9)
    row_part = _mix32(row_keys.to(torch.int64) + seed_part)  # (B,)
    cols = torch.arange(n_cols, dtype=torch.int64, device=device)  # (C,)
    return _mix32(row_part[:, None] * 31 + (cols + 0x7F4A7C15)[None, :])  # (B, C)


def hashed_keys(seed: int, row_keys: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Counter-based pseudo-random keys: (B, n_cols) int64, unique within a row, uniform in order.

    The key of (row_key, column) depends only on ``seed``, the row key (e.g. the user index) and the
    column, never on the batch size or device, so sampled negatives and random scores are reproducible
    across batchings. Keys are ``hash * n_cols + column``: distinct within a row, so a top-k over them
    has no ties.

    Args:
        seed: random seed.
        row_keys: (B,) integer key of each row (the user index).
        n_cols: number of columns (items + 1).
    """
    cols = torch.arange(n_cols, dtype=torch.int64, device=row_keys.device)
    return _hash32(seed, row_keys, n_cols).mul_(n_cols).add_(cols[None, :])


def hashed_uniform(seed: int, row_keys: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(B, n_cols) float32 pseudo-random values in [0, 1) (24-bit resolution), reproducible per key."""
    return (_hash32(seed, row_keys, n_cols) >> 8).to(torch.float32).mul_(2.0**-24)


def sampled_candidates(
    rankable: torch.Tensor,
    history: torch.Tensor,
    targets: torch.Tensor,
    relevant: torch.Tensor,
    user_keys: torch.Tensor,
    num_negatives: int,
    seed: int,
) -> torch.Tensor:
    """Candidate lists of the sampled protocol: relevant rankable targets plus sampled negatives.

    Negatives are drawn uniformly without replacement from the rankable items that are neither history
    nor targets, by taking the ``num_negatives`` largest :func:`hashed_keys` of each row (fewer when fewer
    items are eligible). Vectorised over the batch; reproducible per (seed, user) whatever the batching.

    Args:
        rankable: (B, C) bool items that may be ranked at all (candidates, minus masked history).
        history: (B, C) bool history items (never negatives).
        targets: (B, C) bool target items (never negatives).
        relevant: (B, C) bool relevant targets (always in the list when rankable).
        user_keys: (B,) user indices (row keys of the random keys).
        num_negatives: negatives per row.
        seed: random seed.

    Returns:
        (B, C) bool: the rows' candidate lists.
    """
    n_cols = rankable.shape[1]
    eligible = rankable & ~history & ~targets  # (B, C)
    keys = hashed_keys(seed, user_keys, n_cols)  # (B, C), distinct within a row
    keys = torch.where(eligible, keys, torch.full_like(keys, -1))
    neg_keys, neg_items = torch.topk(keys, min(int(num_negatives), n_cols), dim=1)  # (B, n)
    sampled = torch.zeros_like(eligible)
    sampled.scatter_(1, neg_items, neg_keys >= 0)
    return (rankable & relevant) | sampled


def top_k_items(scores: torch.Tensor, rankable: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` rankable items of each row, best first, ties broken in favour of the lower item index.

    The selection is exact and deterministic: ``topk`` finds the k-th largest value ``v`` of each row;
    every item scoring above ``v`` belongs to the list, and when ``topk`` had to choose among items
    scoring exactly ``v``, those rows are redone by taking tied items in increasing index order until the
    row holds ``k`` items. The selected items (in index order) are then sorted by a *stable* descending
    sort, which keeps lower indices first among equal scores. Non-rankable
    items score ``-inf`` and rankable ``-inf`` scores are raised to the lowest finite float, so a rankable
    item always precedes a non-rankable one.

    Args:
        scores: (B, C) float scores, higher is better; NaN is not allowed.
        rankable: (B, C) bool, True where the item may be recommended.
        k: list length; at most C.

    Returns:
        items: (B, k) int64 item indices, best first.
        valid: (B, k) bool, False where the row had fewer than k rankable items (those slots are filler).
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    keyed = scores.clamp(min=torch.finfo(scores.dtype).min).masked_fill_(~rankable, float("-inf"))  # (B, C)
    top_values, items = torch.topk(keyed, k, dim=1)  # (B, k); order among equal values unspecified
    kth = top_values[:, -1:]  # (B, 1)
    # A row is ambiguous when items tied with its k-th value were left out: topk chose among them freely.
    ambiguous = (keyed == kth).sum(dim=1) > (top_values == kth).sum(dim=1)  # (B,)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero()[:, 0]
        sub, sub_kth = keyed[rows], kth[rows]  # (b, C), (b, 1)
        above = sub > sub_kth
        equal = sub == sub_kth
        room = k - above.sum(dim=1, keepdim=True)  # slots left for items tied at the threshold
        take_equal = equal & (torch.cumsum(equal.to(torch.int32), dim=1) <= room)  # lowest indices first
        items[rows] = (above | take_equal).nonzero()[:, 1].reshape(len(rows), k)  # exactly k per row
    items = torch.sort(items, dim=1).values  # the selected set in increasing index order
    order = torch.sort(torch.gather(keyed, 1, items), dim=1, descending=True, stable=True).indices
    items = torch.gather(items, 1, order)  # (B, k) best first, ties by lower index
    valid = torch.gather(rankable, 1, items)
    return items, valid


def log2_discounts(k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(k,) DCG discounts 1 / log2(rank + 1) for ranks 1..k."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    return (1.0 / torch.log2(ranks + 1.0)).to(torch.float32)


def ranking_metrics(
    items: torch.Tensor,
    valid: torch.Tensor,
    relevant: torch.Tensor,
    gains: torch.Tensor,
    rankable: torch.Tensor,
    k: int,
) -> dict[str, torch.Tensor]:
    """Per-row metrics at ``k`` of ranked lists.

    Args:
        items: (B, k') ranked item indices from :func:`top_k_items` (k' = min(k, C)).
        valid: (B, k') bool, False for filler slots.
        relevant: (B, C) float, 1.0 for relevant targets, else 0.
        gains: (B, C) float, graded gain of each target (0 for non-targets).
        rankable: (B, C) bool rankable items (the graded ideal ranks only rankable targets).
        k: the cut-off K (precision divides by K even when fewer than K items were rankable).

    Returns:
        ``{f"{name}@{k}": (B,) float32}`` for every name of :data:`METRIC_NAMES`; binary metrics are NaN for
        rows without relevant targets, graded NDCG is NaN for rows whose ideal DCG is 0.
    """
    k_eff = items.shape[1]
    disc = log2_discounts(k_eff, device=items.device)  # (k',)
    validf = valid.to(torch.float32)
    hits = torch.gather(relevant, 1, items).to(torch.float32) * validf  # (B, k')
    n_rel = relevant.to(torch.float32).sum(dim=1)  # (B,)
    has_rel = n_rel > 0
    nan = torch.full_like(n_rel, float("nan"))

    n_ideal = torch.clamp(n_rel, max=k_eff).to(torch.int64)  # (B,) min(n_rel, K)
    cum_disc = torch.cat([torch.zeros(1, device=items.device), torch.cumsum(disc, 0)])  # (k'+1,)
    idcg = cum_disc[n_ideal]  # (B,)
    dcg = (hits * disc).sum(dim=1)
    ndcg = torch.where(has_rel, dcg / idcg.clamp(min=1e-12), nan)

    n_hits = hits.sum(dim=1)
    precision = torch.where(has_rel, n_hits / float(k), nan)
    recall = torch.where(has_rel, n_hits / n_rel.clamp(min=1.0), nan)
    hr = torch.where(has_rel, (n_hits > 0).to(torch.float32), nan)

    ranks = torch.arange(1, k_eff + 1, dtype=torch.float32, device=items.device)  # (k',)
    reciprocal = (hits / ranks).amax(dim=1)  # first hit has the largest 1/rank
    mrr = torch.where(has_rel, reciprocal, nan)
    precision_at_rank = torch.cumsum(hits, dim=1) / ranks  # (B, k')
    ap = (precision_at_rank * hits).sum(dim=1) / torch.clamp(n_rel, max=float(k)).clamp(min=1.0)
    map_k = torch.where(has_rel, ap, nan)

    gains = gains.to(torch.float32)
    graded_gains = torch.gather(gains, 1, items) * validf  # (B, k')
    graded_dcg = (graded_gains * disc).sum(dim=1)
    ideal_gains = torch.topk(torch.where(rankable, gains, torch.zeros_like(gains)), k_eff, dim=1).values
    graded_idcg = (ideal_gains * disc).sum(dim=1)
    graded = torch.where(graded_idcg > 0, graded_dcg / graded_idcg.clamp(min=1e-12), nan)

    return {
        f"ndcg@{k}": ndcg,
        f"graded_ndcg@{k}": graded,
        f"precision@{k}": precision,
        f"recall@{k}": recall,
        f"hr@{k}": hr,
        f"mrr@{k}": mrr,
        f"map@{k}": map_k,
    }
