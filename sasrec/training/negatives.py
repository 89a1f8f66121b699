"""Vectorised negative sampling on the training device (uniform and disliked negatives)."""

from __future__ import annotations

import numpy as np
import torch

from sasrec.data.contracts import PreparedData


class NegativeSampler:
    """Vectorised negatives on the training device.

    Uniform negatives are drawn exactly from the items the user has no training event with: for a user
    with sorted training items ``s_0 < s_1 < ...``, ``c_j = s_j - 1 - j`` counts the non-members below
    ``s_j``, and the r-th non-member (0-based) is ``r + 1 + #{j: c_j <= r}``; the count is one
    ``searchsorted`` over the keys ``user * (I + 1) + c_j``. A user whose training items cover every item
    gets unrestricted uniform negatives.

    Disliked negatives are drawn uniformly from the user's disliked training items (an event with
    ``liked`` False and no liked event of the same item).

    Args:
        data: the prepared dataset.
        train_mask: boolean mask over ``data.events`` of the training events.
        device: where the lookup tables live and samples are drawn.
        generator: torch generator on ``device`` (its state is saved in checkpoints).
        unavailable: (I+1,) bool items never drawn as uniform negatives, for any user: the videos withheld
            under item cold-start, which do not exist yet while the model trains (else every step would
            teach the model that they are never watched).
    """

    def __init__(
        self,
        data: PreparedData,
        train_mask: np.ndarray,
        *,
        device: torch.device,
        generator: torch.Generator,
        unavailable: np.ndarray | None = None,
    ) -> None:
        self.num_items = data.num_items
        self.device = device
        self.generator = generator
        stride = self.num_items + 1
        events = data.events[train_mask]
        users = events["user"].to_numpy().astype(np.int64)
        items = events["item"].to_numpy().astype(np.int64)
        n_slots = data.num_users + 1

        keys = np.unique(users * stride + items)  # sorted distinct (user, item) pairs
        self.train_keys = torch.from_numpy(keys).to(device)
        #: (C,) the items a full softmax ranks over and (I+1,) each one's row among them; None: every item
        self.catalogue: torch.Tensor | None = None
        self.catalogue_rows: torch.Tensor | None = None
        if unavailable is not None and np.asarray(unavailable).any():  # members of every user's excluded set
            kept = np.flatnonzero(~np.asarray(unavailable, dtype=bool)).astype(
                np.int64
            )  # (C,) padding 0 included
            rows = np.zeros(stride, dtype=np.int64)
            rows[kept] = np.arange(len(kept))
            self.catalogue = torch.from_numpy(kept).to(device)
            self.catalogue_rows = torch.from_numpy(rows).to(device)
            hidden = np.flatnonzero(np.asarray(unavailable, dtype=bool)).astype(np.int64)  # (H,)
            grid = (np.arange(n_slots, dtype=np.int64)[:, None] * stride + hidden[None, :]).ravel()  # (U+1)*H
            keys = np.union1d(keys, grid)
        key_users = keys // stride
        key_items = keys % stride
        counts = np.bincount(key_users, minlength=n_slots)
        starts = np.zeros(n_slots, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        rank_in_user = np.arange(len(keys)) - starts[key_users]
        rank_keys = key_users * stride + (key_items - 1 - rank_in_user)  # non-decreasing
        self._rank_keys = torch.from_numpy(rank_keys).to(device)
        self._starts = torch.from_numpy(starts).to(device)
        self._free = torch.from_numpy(self.num_items - counts).to(device)  # (U+1,) items never trained on

        liked = events["liked"].to_numpy().astype(bool)
        liked_keys = np.unique(users[liked] * stride + items[liked])
        disliked_keys = np.unique(users[~liked] * stride + items[~liked])
        disliked_keys = disliked_keys[~np.isin(disliked_keys, liked_keys)]
        d_users = disliked_keys // stride
        d_counts = np.bincount(d_users, minlength=n_slots)
        d_starts = np.zeros(n_slots, dtype=np.int64)
        np.cumsum(d_counts[:-1], out=d_starts[1:])
        self.disliked_keys = torch.from_numpy(disliked_keys).to(device)
        self._disliked_items = torch.from_numpy(disliked_keys % stride).to(device)
        self._disliked_starts = torch.from_numpy(d_starts).to(device)
        self._disliked_counts = torch.from_numpy(d_counts).to(device)

    def _random_below(self, bounds: torch.Tensor) -> torch.Tensor:
        """Uniform integers in [0, bounds) elementwise (bounds >= 1), from 62-bit random words."""
        words = torch.randint(0, 2**62, bounds.shape, generator=self.generator, device=self.device)
        return torch.remainder(words, bounds)

    def uniform(self, users: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """(len(users), *shape) uniform items outside each user's training items."""
        extra = (1,) * len(shape)
        user_grid = users.view(-1, *extra).expand(-1, *shape)  # (B, *shape)
        free = self._free[user_grid]  # (B, *shape)
        unrestricted = free <= 0
        bounds = torch.where(unrestricted, self.num_items, free)
        r = self._random_below(bounds)  # (B, *shape)
        query = user_grid * (self.num_items + 1) + r
        members_below = torch.searchsorted(self._rank_keys, query, right=True) - self._starts[user_grid]
        items = r + 1 + members_below
        return torch.where(unrestricted, r + 1, items)

    def disliked(self, users: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(items, available): a uniform disliked item per slot, and whether the user has any dislike."""
        extra = (1,) * len(shape)
        user_grid = users.view(-1, *extra).expand(-1, *shape)  # (B, *shape)
        counts = self._disliked_counts[user_grid]
        available = counts > 0
        r = self._random_below(counts.clamp(min=1))
        if self._disliked_items.numel() == 0:
            return torch.zeros_like(r), available
        index = (self._disliked_starts[user_grid] + r).clamp(max=self._disliked_items.numel() - 1)
        return self._disliked_items[index], available

    def bce_negatives(
        self, users: torch.Tensor, targets: torch.Tensor, *, explicit: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One negative per position of ``targets`` (B, T): (negatives, is_disliked), 0 at padding.

        With ``explicit``, each position independently takes a disliked item with probability 0.5 when
        the user has dislikes (a disliked item equal to the position's target is replaced by the uniform
        draw); otherwise, and always without ``explicit``, a uniform non-training item.
        """
        shape = tuple(targets.shape[1:])
        negatives = self.uniform(users, shape)  # (B, T)
        is_disliked = torch.zeros_like(targets, dtype=torch.bool)
        if explicit:
            disliked, available = self.disliked(users, shape)
            coin = torch.randint(0, 2, targets.shape, generator=self.generator, device=self.device).bool()
            is_disliked = coin & available & (disliked != targets)
            negatives = torch.where(is_disliked, disliked, negatives)
        padding = targets == 0
        negatives = negatives.masked_fill(padding, 0)
        return negatives, is_disliked & ~padding
