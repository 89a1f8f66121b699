"""Candidate lists of the sampled protocol, reproducible per (seed, user)."""

from __future__ import annotations

import torch

from sasrec.ranking import hashed_keys


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
