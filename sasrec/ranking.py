"""Deterministic ranking primitives shared by models and metrics.

* :func:`top_k_items` / :func:`top_k_keyed` / :func:`top_k_narrow`: exact top-k with ties broken in favour
  of the lower item index.
* :func:`hashed_words` / :func:`hashed_uniform` / :func:`hashed_below`: counter-based pseudo-random
  numbers of (seed, row key, column key), independent of batch size and device.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

_MASK32 = 0xFFFFFFFF

IntArray = TypeVar("IntArray", torch.Tensor, np.ndarray)


def _mix32(x: IntArray) -> IntArray:
    """A 32-bit integer finaliser (xor-shift-multiply) on an int64 tensor or array; modifies ``x`` in place.

    Values are kept below 2**32 and the multiplier below 2**31, so int64 products never overflow. The same
    code runs on torch tensors (any device) and numpy arrays, with identical results.
    """
    x &= _MASK32
    x ^= x >> 16
    x *= 0x45D9F3B
    x &= _MASK32
    x ^= x >> 16
    x *= 0x45D9F3B
    x &= _MASK32
    x ^= x >> 16
    return x


def _seed_part(seed: int, stream: int) -> int:
    """Mixed key of (seed, stream): independent streams of numbers under one seed."""
    part = _mix32(np.array([(int(seed) & _MASK32) + 0x9E3779B9], dtype=np.int64))
    if stream:
        part = _mix32(part + (int(stream) * 0x632BE5AB & _MASK32))
    return int(part[0])


def hashed_words(seed: int, row_keys: IntArray, col_keys: IntArray | int, *, stream: int = 0) -> IntArray:
    """Counter-based pseudo-random 32-bit words: (B, C) int64 in [0, 2**32) of (seed, stream, row, column).

    The word of (row key, column key) depends only on those keys, ``seed`` and ``stream``, never on the
    batch, the device or the array library (numpy arrays in, numpy out; tensors in, tensors out), so random
    scores and sampled negatives are reproducible across batchings. Row and column keys are mixed
    separately and combined by xor before a final mix: within a row, distinct column keys (modulo 2**32)
    give distinct words.

    Args:
        seed: random seed.
        row_keys: (B,) integer key of each row (an original user id).
        col_keys: (C,) integer key of each column (an original item id, a draw counter), or an int C for
            the keys 0..C-1.
        stream: which independent stream under ``seed`` (evaluation sampling uses its own).
    """
    seed_part = _seed_part(seed, stream)
    if isinstance(row_keys, np.ndarray):
        cols = np.arange(col_keys) if isinstance(col_keys, int) else np.asarray(col_keys)
        row_part = _mix32(row_keys.astype(np.int64) + seed_part)  # (B,)
        col_part = _mix32(cols.astype(np.int64) + 0x7F4A7C15)  # (C,)
    else:
        device = row_keys.device
        cols = torch.arange(col_keys, device=device) if isinstance(col_keys, int) else col_keys
        row_part = _mix32(row_keys.to(torch.int64) + seed_part)  # (B,)
        col_part = _mix32(cols.to(device=device, dtype=torch.int64) + 0x7F4A7C15)  # (C,)
    return _mix32(row_part[:, None] ^ col_part[None, :])  # (B, C)


def hashed_uniform(seed: int, row_keys: torch.Tensor, col_keys: torch.Tensor | int) -> torch.Tensor:
    """(B, C) float32 pseudo-random values in [0, 1) (24-bit resolution) of (seed, row key, column key).

    ``col_keys`` as in :func:`hashed_words` (an int C means columns 0..C-1).
    """
    return (hashed_words(seed, row_keys, col_keys) >> 8).to(torch.float32).mul_(2.0**-24)


def hashed_below(seed: int, row_keys: IntArray, n_draws: int, bounds: IntArray, *, stream: int) -> IntArray:
    """(B, n_draws) int64 draws in [0, bounds[b]) of row b: draw j is ``(word_j * bound) >> 32``.

    Counter-based (draw j of a row key is always the same number), so a longer sequence extends a shorter
    one. The multiply-shift map of a 32-bit word is uniform up to a relative bias below bound / 2**32
    (under 1e-5 for 24,000 items). numpy arrays or tensors, as :func:`hashed_words`.

    Args:
        seed: random seed.
        row_keys: (B,) integer key of each row.
        n_draws: draws per row.
        bounds: (B,) exclusive upper bounds, 1 <= bound < 2**31.
        stream: the stream of :func:`hashed_words`.
    """
    words = hashed_words(seed, row_keys, n_draws, stream=stream)  # (B, n_draws)
    words *= bounds[:, None]
    words >>= 32
    return words


def ranking_keys(scores: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of ``scores`` whose ``-inf`` values are raised to the lowest finite float.

    ``-inf`` is thereby free to mark non-rankable items for :func:`top_k_keyed`: a rankable item scored
    ``-inf`` still precedes every non-rankable one. ``out``: a buffer of the same shape to write into
    (reusing one across batches avoids the cost of fresh memory).
    """
    return torch.clamp(scores, min=torch.finfo(scores.dtype).min, out=out)


def top_k_keyed(keyed: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` columns of each row of ``keyed``, best first, ties broken in favour of the lower column.

    ``keyed`` holds ``-inf`` exactly at non-rankable columns (see :func:`ranking_keys`). The selection is
    exact and deterministic: ``topk`` of k + 1 values finds the k-th largest value ``v`` of each row and
    tells whether a column outside the k it returned also scores ``v`` (the (k+1)-th value equals ``v``);
    only such rows, where ``topk`` chose freely among tied columns, are redone by taking tied columns in
    increasing order until the row holds ``k``. The selected columns (in increasing order) are then
    sorted by a *stable* descending sort, which keeps lower columns first among equal values.

    Args:
        keyed: (B, C) float keys, ``-inf`` for non-rankable columns; NaN is not allowed.
        k: list length; at most C is used.

    Returns:
        items: (B, k') int64 column indices, best first (k' = min(k, C)).
        valid: (B, k') bool, False where the row had fewer than k' rankable columns (those slots are filler).
    """
    n_rows, n_cols = keyed.shape
    k = min(int(k), n_cols)
    if k == 0:
        empty = torch.zeros((n_rows, 0), dtype=torch.int64, device=keyed.device)
        return empty, empty.to(torch.bool)
    if k < n_cols:
        top_values, items = torch.topk(keyed, k + 1, dim=1)  # (B, k+1); order among equal values unspecified
        ambiguous = top_values[:, k] == top_values[:, k - 1]  # (B,) a column left out ties the k-th value
        top_values, items = top_values[:, :k], items[:, :k]
    else:  # every column is selected: nothing to choose
        top_values, items = torch.topk(keyed, k, dim=1)
        ambiguous = torch.zeros(n_rows, dtype=torch.bool, device=keyed.device)
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero()[:, 0]
        sub, sub_kth = keyed[rows], top_values[rows, -1:]  # (b, C), (b, 1)
        above = sub > sub_kth
        equal = sub == sub_kth
        room = k - above.sum(dim=1, keepdim=True)  # slots left for columns tied at the threshold
        take_equal = equal & (torch.cumsum(equal.to(torch.int32), dim=1) <= room)  # lowest columns first
        items[rows] = (above | take_equal).nonzero()[:, 1].reshape(len(rows), k)  # exactly k per row
    items = torch.sort(items, dim=1).values  # the selected set in increasing column order
    values = torch.gather(keyed, 1, items)  # (B, k)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    items = torch.gather(items, 1, order)  # (B, k) best first, ties by lower column
    valid = torch.gather(values, 1, order) > float("-inf")
    return items, valid


def top_k_narrow(keyed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_keyed` for narrow numpy rows, such as sampled candidate lists: the same selection and order.

    One stable descending argsort per row (ties keep the lower column first); numpy runs it on one thread,
    which for rows of about a hundred columns is faster than waking a thread pool.

    Args:
        keyed: (B, C) float keys, ``-inf`` for non-rankable columns; NaN is not allowed.
        k: list length; at most C is used.

    Returns:
        items: (B, k') int64 column indices, best first (k' = min(k, C)); valid: (B, k') bool.
    """
    k = min(int(k), keyed.shape[1])
    items = np.argsort(-keyed, axis=1, kind="stable")[:, :k]  # ascending -key: descending key, stable
    valid = np.take_along_axis(keyed, items, axis=1) > -np.inf
    return items.astype(np.int64), valid


def top_k_items(scores: torch.Tensor, rankable: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` rankable items of each row, best first, ties broken in favour of the lower item index.

    Non-rankable items are set to ``-inf`` and rankable ``-inf`` scores are raised to the lowest finite
    float (:func:`ranking_keys`), so a rankable item always precedes a non-rankable one; the exact,
    deterministic selection is :func:`top_k_keyed`.

    Args:
        scores: (B, C) float scores, higher is better; NaN is not allowed.
        rankable: (B, C) bool, True where the item may be recommended.
        k: list length; at most C.

    Returns:
        items: (B, k) int64 item indices, best first.
        valid: (B, k) bool, False where the row had fewer than k rankable items (those slots are filler).
    """
    return top_k_keyed(ranking_keys(scores).masked_fill_(~rankable, float("-inf")), k)
