"""Deterministic ranking primitives shared by models and metrics.

* :func:`top_k_items`: exact top-k with ties broken in favour of the lower item index.
* :func:`hashed_keys` / :func:`hashed_uniform`: counter-based pseudo-random numbers of
  (seed, row key, column), independent of batch size and device.
"""

from __future__ import annotations

import torch

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
