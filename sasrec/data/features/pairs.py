"""Features of (user, candidate video) pairs for a ranker, from the events before a cut and the feature table.

:func:`pair_context` summarises the events a stage may read (``history_mask``: the stage's input events, e.g.
``PreparedData.stage_masks(split, stage)[0]``; nothing of the period it predicts) into small per-user,
per-item and per-(user, tag) arrays; :meth:`PairContext.features` gathers them for any (user, item) arrays in
one vectorised pass. Every value depends on the masked events and the (cut) feature table only, so rows of a
later period change nothing (``tests/test_two_stage.py`` moves test-period rows to check it).

Columns (``PairContext.columns``):

* user aggregates: ``user_log1p_views``, ``user_mean_watch_ratio``, ``user_like_share``;
* video behavioural aggregates of the masked events: ``item_log1p_views``, ``item_log1p_users``,
  ``item_mean_watch_ratio``, ``item_like_rate``, ``item_relevant_rate``, ``item_log1p_hours_since_view``
  (before the last masked event; NaN for a video nobody watched);
* user-candidate crosses (with the ``tags`` group): ``tag_affinity`` (mean over the candidate's tags of the
  share of the user's views carrying the tag), ``tag_like_share`` (liked views / views of the user in the
  candidate's tags), ``log1p_hours_since_tag_view`` (since the user's last view of a video sharing a tag,
  before the user's last masked event; NaN: never); with ``categories``: ``category_affinity`` (share of the
  user's views in the candidate's first-level category);
* side features looked up in the table: every column of the ``item_stats`` (dense) and ``item_static`` /
  ``categories`` (categorical ids) groups, ``n_tags``, and the ``user`` group's categorical ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sasrec.data.contracts import PreparedData
from sasrec.data.features.table import FeatureTable
from sasrec.errors import ConfigError

USER_COLUMNS = ("user_log1p_views", "user_mean_watch_ratio", "user_like_share")
ITEM_COLUMNS = (
    "item_log1p_views",
    "item_log1p_users",
    "item_mean_watch_ratio",
    "item_like_rate",
    "item_relevant_rate",
    "item_log1p_hours_since_view",
)
TAG_COLUMNS = ("tag_affinity", "tag_like_share", "log1p_hours_since_tag_view")
SIDE_ITEM_GROUPS = ("item_stats", "item_static", "categories")
SIDE_USER_GROUPS = ("user",)
#: Side groups that describe how a video was watched, not what it is (as
#: ``sasrec.training.features.BEHAVIOUR_GROUPS``): unknown (NaN) for the withheld videos of item cold-start.
BEHAVIOUR_GROUPS = ("item_stats",)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` as float32, NaN where the denominator is 0."""
    out = np.full(np.shape(numerator), np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=np.asarray(denominator) > 0)
    return out.astype(np.float32)


def _hours(later: np.ndarray, earlier: np.ndarray) -> np.ndarray:
    """log1p of the hours from ``earlier`` to ``later`` (seconds), NaN where ``earlier`` is NaN."""
    return np.log1p(np.maximum(later - earlier, 0.0) / 3600.0).astype(np.float32)


@dataclass(frozen=True)
class PairContext:
    """What :meth:`features` gathers from: per-user, per-item and per-(user, tag) summaries of masked events.

    Attributes:
        user_values: (U+1, 3) float32 user aggregates (``USER_COLUMNS``).
        item_values: (I+1, 6) float32 video aggregates (``ITEM_COLUMNS``).
        user_last: (U+1,) float64 timestamp of each user's last masked event (NaN: none).
        item_tags: (I+1, T) CSR of the ``tags`` group, or None.
        tag_views, tag_likes: (U+1, T) float32 views / liked views of videos carrying each tag, or None.
        tag_last: (U+1, T) float64 last view of each tag (NaN: never), or None.
        item_category: (I+1,) int64 first-level category id (0 unknown), or None.
        category_share: (U+1, C) float32 share of the user's views per first-level category, or None.
        side_items, side_users: looked-up table columns (float32), or None; ``side_*_columns`` name them.
        history_events: number of masked events summarised (informative).
    """

    user_values: np.ndarray
    item_values: np.ndarray
    user_last: np.ndarray
    item_tags: sp.csr_matrix | None
    tag_views: np.ndarray | None
    tag_likes: np.ndarray | None
    tag_last: np.ndarray | None
    item_category: np.ndarray | None
    category_share: np.ndarray | None
    side_items: np.ndarray | None
    side_item_columns: tuple[str, ...]
    side_users: np.ndarray | None
    side_user_columns: tuple[str, ...]
    history_events: int

    @property
    def columns(self) -> tuple[str, ...]:
        """Names of the columns :meth:`features` returns, in order."""
        cross = TAG_COLUMNS if self.tag_views is not None else ()
        category = ("category_affinity",) if self.category_share is not None else ()
        return (
            *USER_COLUMNS,
            *ITEM_COLUMNS,
            *cross,
            *category,
            *self.side_item_columns,
            *self.side_user_columns,
        )

    def features(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n, len(columns)) float32 features of the pairs ``(users[j], items[j])`` (internal indices).

        Raises:
            ConfigError: ``users`` and ``items`` differ in length or hold an index out of range.
        """
        users = np.asarray(users, dtype=np.int64).ravel()
        items = np.asarray(items, dtype=np.int64).ravel()
        if users.shape != items.shape:
            raise ConfigError(f"pair features need as many users as items; got {len(users)} and {len(items)}")
        for name, index, size in (
            ("user", users, len(self.user_values)),
            ("item", items, len(self.item_values)),
        ):
            if len(index) and (index.min() < 0 or index.max() >= size):
                raise ConfigError(f"pair features: {name} index out of range 0..{size - 1}")
        parts = [self.user_values[users], self.item_values[items]]  # (n, 3), (n, 6)
        if self.tag_views is not None and self.item_tags is not None:
            parts.append(self._tag_crosses(users, items))  # (n, 3)
        if self.category_share is not None and self.item_category is not None:
            parts.append(self.category_share[users, self.item_category[items]][:, None])  # (n, 1)
        if self.side_items is not None:
            parts.append(self.side_items[items])
        if self.side_users is not None:
            parts.append(self.side_users[users])
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def _tag_crosses(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """(n, 3) tag affinity, liked share in the candidate's tags and hours since the last same-tag view."""
        assert self.item_tags is not None and self.tag_views is not None
        assert self.tag_likes is not None and self.tag_last is not None
        gathered = self.item_tags[items]  # (n, T) CSR: the candidate's tags
        counts = np.diff(gathered.indptr)  # (n,)
        owner = np.repeat(np.arange(len(items)), counts)  # (nnz,) pair of each (pair, tag) entry
        tag = gathered.indices.astype(np.int64)
        user = users[owner]
        total_views = self.tag_views.sum(axis=1)  # (U+1,)
        share = _ratio(self.tag_views[user, tag], total_views[user])  # (nnz,)
        n = len(items)
        affinity = _ratio(np.bincount(owner, weights=np.nan_to_num(share), minlength=n), counts)
        views = np.bincount(owner, weights=self.tag_views[user, tag], minlength=n)
        likes = np.bincount(owner, weights=self.tag_likes[user, tag], minlength=n)
        last = np.full(n, -np.inf)
        np.maximum.at(last, owner, np.nan_to_num(self.tag_last[user, tag], nan=-np.inf))
        last[~np.isfinite(last)] = np.nan
        since = _hours(self.user_last[users], last)
        return np.stack([affinity, _ratio(likes, views), since], axis=1)


def _user_item_aggregates(data: PreparedData, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user values (U+1, 3), item values (I+1, 6), user last timestamp (U+1,)) of the masked events."""
    ev = data.events[mask]
    user = ev["user"].to_numpy().astype(np.int64)
    item = ev["item"].to_numpy().astype(np.int64)
    wr = ev["watch_ratio"].to_numpy(dtype=np.float64)
    liked = ev["liked"].to_numpy().astype(np.float64)
    relevant = ev["relevant"].to_numpy().astype(np.float64)
    time = ev["timestamp"].to_numpy(dtype=np.float64)
    n_users, n_items = data.num_users + 1, data.num_items + 1
    known = ~np.isnan(wr)
    wr0 = np.where(known, wr, 0.0)
    u_views = np.bincount(user, minlength=n_users).astype(np.float64)
    user_values = np.stack(
        [
            np.log1p(u_views),
            _ratio(
                np.bincount(user, weights=wr0, minlength=n_users),
                np.bincount(user, weights=known, minlength=n_users),
            ),
            _ratio(np.bincount(user, weights=liked, minlength=n_users), u_views),
        ],
        axis=1,
    ).astype(np.float32)
    i_views = np.bincount(item, minlength=n_items).astype(np.float64)
    distinct = pd.unique(user * n_items + item) if len(user) else np.zeros(0, dtype=np.int64)
    i_users = np.bincount(np.asarray(distinct) % n_items, minlength=n_items).astype(np.float64)
    last_item = np.full(n_items, -np.inf)
    np.maximum.at(last_item, item, time)
    reference = float(time.max()) if len(time) else 0.0
    item_since = np.where(np.isfinite(last_item), _hours(np.full(n_items, reference), last_item), np.nan)
    item_values = np.stack(
        [
            np.log1p(i_views),
            np.log1p(i_users),
            _ratio(
                np.bincount(item, weights=wr0, minlength=n_items),
                np.bincount(item, weights=known, minlength=n_items),
            ),
            _ratio(np.bincount(item, weights=liked, minlength=n_items), i_views),
            _ratio(np.bincount(item, weights=relevant, minlength=n_items), i_views),
            item_since,
        ],
        axis=1,
    ).astype(np.float32)
    user_last = np.full(n_users, -np.inf)
    np.maximum.at(user_last, user, time)
    user_last[~np.isfinite(user_last)] = np.nan
    return user_values, item_values, user_last


def _tag_summaries(
    data: PreparedData, mask: np.ndarray, item_tags: sp.csr_matrix
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(views, liked views, last view timestamp) of every (user, tag): each (U+1, T)."""
    ev = data.events[mask]
    user = ev["user"].to_numpy().astype(np.int64)
    item = ev["item"].to_numpy().astype(np.int64)
    n_users, n_tags = data.num_users + 1, item_tags.shape[1]
    shape = (n_users, data.num_items + 1)
    views = sp.csr_matrix(
        (np.ones(len(user), dtype=np.float32), (user, item)), shape=shape
    )  # repeat views sum
    likes = sp.csr_matrix((ev["liked"].to_numpy().astype(np.float32), (user, item)), shape=shape)
    tag_views = np.asarray((views @ item_tags).toarray(), dtype=np.float32)  # (U+1, T)
    tag_likes = np.asarray((likes @ item_tags).toarray(), dtype=np.float32)
    # last view per (user, item), then per (user, tag) over the item's tags
    frame = pd.DataFrame({"key": user * shape[1] + item, "time": ev["timestamp"].to_numpy(dtype=np.float64)})
    last_pair = frame.groupby("key", sort=False)["time"].max()
    keys = last_pair.index.to_numpy(dtype=np.int64)
    pair_tags = item_tags[keys % shape[1]]  # (pairs, T)
    owner = np.repeat(np.arange(len(keys)), np.diff(pair_tags.indptr))
    flat = np.full(n_users * n_tags, -np.inf)
    np.maximum.at(flat, (keys[owner] // shape[1]) * n_tags + pair_tags.indices, last_pair.to_numpy()[owner])
    tag_last = flat.reshape(n_users, n_tags)
    tag_last[~np.isfinite(tag_last)] = np.nan
    return tag_views, tag_likes, tag_last


def _side_columns(
    table: FeatureTable, groups: tuple[str, ...], blank_items: np.ndarray | None = None
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The dense and categorical columns of the available ``groups`` as float32, and their names; the rows of
    ``blank_items`` in :data:`BEHAVIOUR_GROUPS` are NaN (unknown)."""
    arrays, names = [], []
    for name in groups:
        if name not in table.groups:
            continue
        group = table.groups[name]
        if group.kind == "multi_hot":
            continue
        values = np.array(group.values, dtype=np.float32)  # a copy: the table stays as it is
        if blank_items is not None and name in BEHAVIOUR_GROUPS:
            values[np.asarray(blank_items, dtype=bool)] = np.nan
        arrays.append(values)
        names.extend(f"{name}.{column}" for column in group.columns)
    if not arrays:
        return None, ()
    return np.concatenate(arrays, axis=1), tuple(names)


def pair_context(
    data: PreparedData,
    history_mask: np.ndarray,
    table: FeatureTable | None = None,
    *,
    blank_items: np.ndarray | None = None,
) -> PairContext:
    """Summaries of the events selected by ``history_mask`` (and the table's side features) for pair features.

    Args:
        data: the prepared dataset.
        history_mask: (len(data.events),) bool: the events a stage may read (its input events).
        table: the dataset's feature table (``tags`` and ``categories`` give the crosses), or None.
        blank_items: (I+1,) bool videos whose behavioural side features (:data:`BEHAVIOUR_GROUPS`) are
            unknown: the withheld videos of item cold-start (their events must be out of ``history_mask``
            too, :meth:`sasrec.data.cold_start.ColdStartSelection.keep`, so their aggregates are empty).

    Raises:
        ConfigError: a mask of the wrong shape or dtype, or a table of another dataset.
    """
    mask = np.asarray(history_mask)
    if mask.dtype != bool or mask.shape != (len(data.events),):
        raise ConfigError(
            f"history_mask must be a bool array of shape ({len(data.events)},) over {data.name}'s events; "
            f"got dtype {mask.dtype} and shape {mask.shape}"
        )
    if table is not None and table.data_fingerprint != data.fingerprint:
        raise ConfigError(
            f"feature table of {table.dataset} ({table.data_fingerprint}) does not follow {data.name}'s id maps "
            f"({data.fingerprint}): build the table of the same prepared dataset"
        )
    user_values, item_values, user_last = _user_item_aggregates(data, mask)
    item_tags = tag_views = tag_likes = tag_last = None
    item_category = category_share = None
    if blank_items is not None and np.shape(blank_items) != (data.num_items + 1,):
        raise ConfigError(
            f"blank_items must have shape ({data.num_items + 1},) over {data.name}'s items; got {np.shape(blank_items)}"
        )
    side_items, item_names = (
        (None, ()) if table is None else _side_columns(table, SIDE_ITEM_GROUPS, blank_items)
    )
    side_users, user_names = (None, ()) if table is None else _side_columns(table, SIDE_USER_GROUPS)
    if table is not None and "tags" in table.groups:
        item_tags = sp.csr_matrix(table.groups["tags"].values, dtype=np.float32)
        tag_views, tag_likes, tag_last = _tag_summaries(data, mask, item_tags)
        n_tags = np.diff(item_tags.indptr).astype(np.float32)[:, None]  # (I+1, 1)
        side_items = n_tags if side_items is None else np.concatenate([side_items, n_tags], axis=1)
        item_names = (*item_names, "n_tags")
    if table is not None and "categories" in table.groups:
        item_category = np.asarray(table.groups["categories"].values[:, 0], dtype=np.int64)  # first level
        ev = data.events[mask]
        n_cat = int(item_category.max()) + 1
        counts = sp.csr_matrix(
            (
                np.ones(len(ev), dtype=np.float32),
                (ev["user"].to_numpy(), item_category[ev["item"].to_numpy()]),
            ),
            shape=(data.num_users + 1, n_cat),
        ).toarray()  # (U+1, C)
        category_share = _ratio(counts, counts.sum(axis=1, keepdims=True))
    return PairContext(
        user_values=user_values,
        item_values=item_values,
        user_last=user_last,
        item_tags=item_tags,
        tag_views=tag_views,
        tag_likes=tag_likes,
        tag_last=tag_last,
        item_category=item_category,
        category_share=category_share,
        side_items=side_items,
        side_item_columns=item_names,
        side_users=side_users,
        side_user_columns=user_names,
        history_events=int(mask.sum()),
    )
