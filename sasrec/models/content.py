"""Side-feature baselines: a content-based profile model and a hybrid (LightFM-style) factorisation model.

Both score every item, a video nobody has watched included, from its side features (tags, categories,
caption, ...), which they receive as plain arrays in an :class:`ItemSideFeatures` (models never read
files): the study layer builds one from a feature table of the same dataset with
:meth:`ItemSideFeatures.from_arrays` and passes it as the ``features`` parameter
(``make_baseline("content", features=side)``).

* ``content``: content-based filtering (Pazzani & Billsus, "Content-Based Recommendation Systems", The
  Adaptive Web, 2007): a user profile is the mean side-feature vector of the videos the user liked (Rocchio,
  1971, without negative feedback), and an item's score is the cosine (Salton & McGill, 1983) between the
  profile and the item's vector.
* ``hybrid``: LightFM (Kula, "Metadata Embeddings for User and Item Cold-start Recommendations", CBRecSys
  2015) re-implemented in torch (the ``lightfm`` wheel does not build on this Python): users and items are
  the sums of the embeddings of their id and of their features, trained with BPR (Rendle et al., UAI 2009).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from sasrec.data.contracts import EvalTask, PreparedData
from sasrec.errors import ConfigError
from sasrec.models.baselines import _REGISTRY, Baseline, _rows_csr
from sasrec.models.targets import target_matrix

#: Item blocks :meth:`ItemSideFeatures.from_arrays` assembles, in this column order, and each block's kind.
ITEM_BLOCKS: dict[str, str] = {
    "tags": "multi_hot",
    "categories": "categorical",
    "topics": "multi_hot",
    "caption": "dense",
    "item_static": "categorical",
}
#: User blocks :meth:`ItemSideFeatures.from_arrays` assembles.
USER_BLOCKS: dict[str, str] = {"user": "categorical"}
CONTENT_BASELINES = ("content", "hybrid")
"""Baselines that need side features (``features=``): registered in :mod:`sasrec.models.baselines`, not in
its ``BASELINES`` (which every fit loop runs without parameters)."""


# ---------------------------------------------------------------------------------------- encoding
def encode_block(
    name: str, values: np.ndarray | sp.spmatrix, kind: str, vocab_sizes: Sequence[int] | None = None
) -> sp.csr_matrix:
    """One side-feature group as a (rows, width) float32 CSR block, before normalisation.

    Args:
        name: the group's name (for messages).
        values: ``multi_hot``: (rows, V) sparse or dense 0/1 matrix; ``categorical``: (rows, K) integer
            ids per column, 0 = unknown; ``dense``: (rows, D) float matrix.
        kind: ``multi_hot``, ``categorical`` or ``dense``.
        vocab_sizes: ``categorical`` only: per column the number of ids including 0 (the values of
            ``FeatureGroup.vocab_sizes``, in column order); default the largest id + 1 of each column.

    Returns:
        ``multi_hot`` and ``dense``: the values; ``categorical``: the concatenated one-hot encodings of the
        columns, id 0 (unknown) encoded as no column at all, so an unknown value adds nothing.

    Raises:
        ConfigError: a wrong dtype, a non-finite value or an id outside its vocabulary.
    """
    if kind == "multi_hot" or kind == "dense":
        if kind == "dense" and sp.issparse(values):
            raise ConfigError(f"side feature {name} (dense) must be a numpy array; got a sparse matrix")
        block = sp.csr_matrix(values, dtype=np.float32, copy=True)  # a table's arrays are read-only
        if block.ndim != 2:
            raise ConfigError(f"side feature {name} must be 2-D; got shape {block.shape}")
        if not np.isfinite(block.data).all():
            raise ConfigError(f"side feature {name} holds non-finite values")
        block.eliminate_zeros()
        return block
    if kind != "categorical":
        raise ConfigError(f"side feature kind must be multi_hot, categorical or dense; got {kind!r}")
    ids = np.asarray(values)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise ConfigError(
            f"side feature {name} (categorical) must be a 2-D integer array of ids (0 = unknown); "
            f"got dtype {ids.dtype} and shape {ids.shape}"
        )
    ids = ids.astype(np.int64)
    n_rows, n_cols = ids.shape
    sizes = ids.max(axis=0, initial=0) + 1 if vocab_sizes is None else np.asarray(vocab_sizes, dtype=np.int64)
    if sizes.shape != (n_cols,):
        raise ConfigError(f"side feature {name}: {len(sizes)} vocabulary sizes for {n_cols} columns")
    if (ids < 0).any() or (ids >= sizes[None, :]).any():
        raise ConfigError(f"side feature {name}: ids must lie in 0..vocabulary size - 1 of their column")
    offsets = np.concatenate([[0], np.cumsum(sizes - 1)[:-1]])  # (K,) first one-hot column of each column
    known = ids > 0  # (rows, K)
    rows = np.broadcast_to(np.arange(n_rows)[:, None], ids.shape)[known]
    cols = (offsets[None, :] + ids - 1)[known]
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_rows, int((sizes - 1).sum()))
    )


def _unit_rows(block: sp.csr_matrix) -> sp.csr_matrix:
    """``block`` with each non-empty row divided by its L2 norm (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1), dtype=np.float64).ravel())  # (rows,)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ block, dtype=np.float32)


def assemble(
    blocks: Mapping[str, sp.csr_matrix], weights: Mapping[str, float]
) -> tuple[sp.csr_matrix, dict[str, tuple[int, int]]]:
    """``hstack_b sqrt(w_b) * x_b / ||x_b||``: the row-wise concatenation of the L2-normalised blocks.

    The square root makes the dot product of two rows the weighted sum of the blocks' cosines,
    ``v_i . v_j = sum_b w_b cos(x_ib, x_jb)``. Returns the (rows, F) CSR and each block's (start, stop)
    columns.
    """
    parts, spans, start = [], {}, 0
    for name, block in blocks.items():
        parts.append(_unit_rows(block) * np.float32(math.sqrt(weights[name])))
        spans[name] = (start, start + block.shape[1])
        start += block.shape[1]
    matrix = sp.hstack(parts, format="csr", dtype=np.float32)
    matrix.eliminate_zeros()
    return matrix, spans


def _canonical(matrix: sp.spmatrix | np.ndarray, label: str) -> sp.csr_matrix:
    csr = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if csr.ndim != 2:
        raise ConfigError(f"{label} must be a 2-D matrix; got shape {csr.shape}")
    if not np.isfinite(csr.data).all():
        raise ConfigError(f"{label} hold non-finite values")
    csr.sum_duplicates()
    csr.sort_indices()
    return csr


@dataclass(frozen=True)
class ItemSideFeatures:
    """Side-feature vectors of one dataset's items (and optionally users), aligned on its internal ids.

    Attributes:
        items: (num_items + 1, F) float32 CSR; row i is item i's vector, row 0 (padding) is zeros. Built by
            :meth:`from_arrays` (L2-normalised, weighted blocks) or given as is (a dense array is converted).
        users: (num_users + 1, G) float32 CSR of user vectors, or None (only ``hybrid`` uses them).
        item_blocks: block name -> (start, stop) columns of ``items`` (informative).
        user_blocks: block name -> (start, stop) columns of ``users``.
        data_fingerprint: ``PreparedData.fingerprint`` of the id maps the rows follow (``FeatureTable.
            data_fingerprint``), checked at fit time; None: only the shapes are checked.
    """

    items: sp.csr_matrix
    users: sp.csr_matrix | None = None
    item_blocks: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    user_blocks: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    data_fingerprint: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", _canonical(self.items, "item side features"))
        if self.users is not None:
            object.__setattr__(self, "users", _canonical(self.users, "user side features"))

    @classmethod
    def from_arrays(
        cls,
        *,
        tags: sp.spmatrix | np.ndarray | None = None,
        categories: np.ndarray | None = None,
        topics: sp.spmatrix | np.ndarray | None = None,
        caption: np.ndarray | None = None,
        item_static: np.ndarray | None = None,
        user: np.ndarray | None = None,
        weights: Mapping[str, float] | None = None,
        vocab_sizes: Mapping[str, Sequence[int]] | None = None,
        data_fingerprint: str | None = None,
    ) -> ItemSideFeatures:
        """Assemble item (and user) vectors from the raw arrays of a feature table's groups.

        Pass ``table.group(name).values`` for each group to use (None leaves the block out); every item
        array has one row per item index 0..num_items (row 0 padding), the user array one per user index.

        Args:
            tags: (I+1, 31) multi-hot CSR (group ``tags``).
            categories: (I+1, 3) int category ids per level, 0 = unknown (group ``categories``): one-hot.
            topics: (I+1, T) multi-hot CSR (group ``topics``).
            caption: (I+1, D) float caption vectors (group ``caption``; zero rows without caption).
            item_static: (I+1, 7) int ids, 0 = unknown (group ``item_static``): one-hot.
            user: (U+1, 26) int ids, 0 = unknown (group ``user``): one-hot user vectors (``hybrid``).
            weights: block name -> weight w_b >= 0 (default 1.0 each); a block of weight 0 is left out.
            vocab_sizes: block name -> per-column vocabulary sizes including id 0
                (``list(table.group(name).vocab_sizes.values())``), for categorical blocks; default the
                largest id + 1 (the table's vocabularies keep ids stable across datasets, so pass them to
                compare one-hot columns across datasets).
            data_fingerprint: ``table.data_fingerprint``, checked against the fitted data.

        Each block is encoded (:func:`encode_block`), L2-normalised per row and scaled by ``sqrt(w_b)``
        (:func:`assemble`), so ``v_i . v_j = sum_b w_b cos(x_ib, x_jb)``.

        Raises:
            ConfigError: no item block, blocks of different row counts, an unknown weight name, a negative
                weight, or a malformed block.
        """
        given = {"tags": tags, "categories": categories, "topics": topics, "caption": caption}
        given["item_static"] = item_static
        weights = dict(weights or {})
        unknown = sorted(set(weights) - {*ITEM_BLOCKS, *USER_BLOCKS})
        if unknown:
            raise ConfigError(
                f"side-feature weights name unknown block(s) {unknown}; "
                f"blocks: {', '.join([*ITEM_BLOCKS, *USER_BLOCKS])}"
            )
        for name, value in weights.items():
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not (number and math.isfinite(value) and value >= 0):
                raise ConfigError(
                    f"side-feature weight of {name} must be a finite number >= 0; got {value!r}"
                )
        sizes = dict(vocab_sizes or {})

        def encoded(kinds: Mapping[str, str], arrays: Mapping[str, object]) -> dict[str, sp.csr_matrix]:
            out = {}
            for name, kind in kinds.items():
                if arrays.get(name) is not None and weights.get(name, 1.0) > 0:
                    out[name] = encode_block(name, arrays[name], kind, sizes.get(name))
            rows = {name: block.shape[0] for name, block in out.items()}
            if len(set(rows.values())) > 1:
                raise ConfigError(f"side-feature blocks must have one row per index; got rows {rows}")
            return out

        items = encoded(ITEM_BLOCKS, given)
        if not items:
            raise ConfigError(f"side features need at least one item block of {', '.join(ITEM_BLOCKS)}")
        full = {name: float(weights.get(name, 1.0)) for name in {*ITEM_BLOCKS, *USER_BLOCKS}}
        item_matrix, item_spans = assemble(items, full)
        users = encoded(USER_BLOCKS, {"user": user})
        user_matrix, user_spans = assemble(users, full) if users else (None, {})
        return cls(item_matrix, user_matrix, item_spans, user_spans, data_fingerprint)

    def check(self, data: PreparedData, owner: str, *, users: bool = False) -> None:
        """Raise a :class:`ConfigError` naming the expected and got shapes unless the rows follow ``data``."""
        expected = (data.num_items + 1, self.items.shape[1])
        if self.items.shape != expected:
            raise ConfigError(
                f"{owner}: item side features have shape {self.items.shape}; expected {expected}, one row "
                f"per item index 0..{data.num_items} of {data.name} (row 0 padding): build them from the "
                "feature table of the dataset the baseline is fitted on"
            )
        if users and self.users is not None and self.users.shape[0] != data.num_users + 1:
            raise ConfigError(
                f"{owner}: user side features have shape {self.users.shape}; expected "
                f"{(data.num_users + 1, self.users.shape[1])}, one row per user index 0..{data.num_users} of "
                f"{data.name} (row 0 padding)"
            )
        if self.data_fingerprint is not None and self.data_fingerprint != data.fingerprint:
            raise ConfigError(
                f"{owner}: side features were built for id maps {self.data_fingerprint}, not {data.name}'s "
                f"{data.fingerprint}: build them from the feature table of the same prepared dataset"
            )


def _checked_features(features: object, owner: str) -> ItemSideFeatures:
    """``features`` itself; a :class:`ConfigError` saying how to build one otherwise."""
    if not isinstance(features, ItemSideFeatures):
        raise ConfigError(
            f"baseline {owner} needs features=ItemSideFeatures (ItemSideFeatures.from_arrays("
            f"tags=table.group('tags').values, ...)); got {type(features).__name__}"
        )
    return features


# ------------------------------------------------------------------------------------------ content
class ContentBaseline(Baseline):
    """Content-based profile model: cosine between a user's liked-item profile and every item's vector.

    With ``v_i`` the side-feature vector of item i (:class:`ItemSideFeatures`), ``H_r`` the items of task
    row r's history (every view, as every baseline) and ``T_ui`` the target weight of the pair among the
    fitted events of the row's user u (``liked``, the default: 1 if a fitted view had
    ``watch_ratio > like_threshold``, the preparation's threshold recorded in ``data.meta``; ``relevant``
    likewise; ``graded``: the pair's largest weight; ``views``: 1 for every history item):

    ``a_ri = T_ui for i in H_r`` (every history item with ``a_ri = 1`` when that sums to 0: a user who liked
    nothing falls back to every view), ``p_r = sum_i a_ri v_i / sum_i a_ri`` and
    ``score_rj = p_r . v_j / (||p_r|| ||v_j||)`` for every item j, 0 when either norm is 0 (no history, or a
    video without side features). A video nobody watched scores by its features alone.
    """

    name: ClassVar[str] = "content"

    def __init__(
        self,
        *,
        seed: int = 0,
        split: str = "temporal",
        features: ItemSideFeatures | None = None,
        target: str = "liked",
    ) -> None:
        super().__init__(seed=seed, split=split, target=target)
        self.features = _checked_features(features, self.name)

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        self.features.check(data, self.name)
        self.vectors = self.features.items  # (C, F) v_j
        self.unit = _unit_rows(self.vectors)  # (C, F) v_j / ||v_j|| (zero rows stay zero)
        # (U+1, C) target weights of the fitted pairs; None under views (every history item counts)
        self.pairs = None if self.target == "views" else target_matrix(data, mask, self.target)

    def profile_weights(self, task_users: np.ndarray, history: sp.csr_matrix) -> sp.csr_matrix:
        """(B, C) row-stochastic ``a_r / sum_i a_ri`` of history rows (zero rows for an empty history)."""
        weights = history
        if self.pairs is not None:
            users = np.asarray(task_users, dtype=np.int64)
            known = (users >= 0) & (users < self.pairs.shape[0])
            fitted = self.pairs[np.where(known, users, 0)]  # (B, C); row 0 (padding user) is empty
            weights = sp.csr_matrix(history.multiply(fitted), dtype=np.float32)
            none = np.asarray(weights.sum(axis=1)).ravel() == 0  # (B,) liked nothing: every view instead
            weights = sp.csr_matrix(weights + sp.diags(none.astype(np.float32)) @ history, dtype=np.float32)
        total = np.asarray(weights.sum(axis=1), dtype=np.float64).ravel()  # (B,)
        inv = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
        return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ weights, dtype=np.float32)

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        weights = self.profile_weights(task.users[rows], _rows_csr(task, rows))  # (B, C)
        profile = np.asarray((weights @ self.vectors).toarray(), dtype=np.float32)  # (B, F) p_r
        norms = np.linalg.norm(profile, axis=1)  # (B,)
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        scores = np.asarray(self.unit @ (profile * inv[:, None]).T, dtype=np.float32).T  # (B, C)
        return torch.from_numpy(np.ascontiguousarray(scores))

    def __repr__(self) -> str:
        return f"ContentBaseline(seed={self.seed}, split={self.split!r}, target={self.target!r})"


# ------------------------------------------------------------------------------------------- hybrid
def _padded(matrix: sp.csr_matrix, offset: int, identity: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, L) int64 feature indices and float32 weights of each CSR row, padded with weight 0.

    Feature f of the matrix becomes index ``offset + f``; with ``identity`` the row's own index (weight 1)
    comes first. Vectorised: no loop over rows.
    """
    n_rows = matrix.shape[0]
    lengths = np.diff(matrix.indptr)  # (rows,)
    width = int(lengths.max(initial=0)) + int(identity)
    index = np.zeros((n_rows, max(width, 1)), dtype=np.int64)
    weight = np.zeros((n_rows, max(width, 1)), dtype=np.float32)
    if identity:
        index[:, 0], weight[:, 0] = np.arange(n_rows), 1.0
    row = np.repeat(np.arange(n_rows), lengths)
    pos = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], lengths) + int(identity)
    index[row, pos] = offset + matrix.indices.astype(np.int64)
    weight[row, pos] = matrix.data
    return torch.from_numpy(index), torch.from_numpy(weight)


class HybridBaseline(Baseline):
    """LightFM-style hybrid factorisation (Kula, CBRecSys 2015) trained with BPR (Rendle et al., UAI 2009).

    With ``x_i`` item i's side-feature vector and ``y_u`` user u's (:class:`ItemSideFeatures`), the user and
    item representations are sums of embeddings: ``p_u = E^U[u] + sum_g y_ug E^{UF}_g`` (id term with
    ``user_ids``), ``q_i = E^I[i] + sum_f x_if E^F_f`` (id term with ``item_ids``; a dense block such as the
    caption is thereby projected linearly), ``b_i = b^I_i + sum_f x_if b^F_f``, and
    ``score(u, i) = p_u . q_i + b_i``. Training: ``epochs`` passes over the distinct fitted target pairs
    (u, i) in a seeded random order, each with one negative j drawn uniformly from the items with a fitted
    event, minimising ``w_ui softplus(-(s_ui - s_uj))`` (the BPR loss; ``w_ui`` the ``graded`` weight, else
    1) + ``l2 (||p_u||^2 + ||q_i||^2 + ||q_j||^2)`` with Adam. Ids never seen in the fit (users without a
    target pair, items without a fitted event) keep no id embedding or bias: they are represented by their
    features alone, so a video nobody watched scores by its features.

    A task row is scored from its user's representation (the user's fitted id embedding and features), as
    LightFM does, not from the task's history; a row whose user is outside the fitted data gets ``b_i``.
    """

    name: ClassVar[str] = "hybrid"

    def __init__(
        self,
        *,
        seed: int = 0,
        split: str = "temporal",
        features: ItemSideFeatures | None = None,
        factors: int = 32,
        epochs: int = 10,
        lr: float = 0.01,
        l2: float = 1e-4,
        batch_size: int = 4096,
        user_ids: bool = True,
        item_ids: bool = True,
        target: str = "views",
    ) -> None:
        super().__init__(seed=seed, split=split, target=target)
        self.features = _checked_features(features, self.name)
        for label, value in (("factors", factors), ("epochs", epochs), ("batch_size", batch_size)):
            if isinstance(value, bool) or int(value) != value or int(value) < 1:
                raise ConfigError(f"hybrid {label} must be a positive integer; got {value!r}")
        if not (float(lr) > 0 and math.isfinite(float(lr))):
            raise ConfigError(f"hybrid lr must be a positive number; got {lr!r}")
        if not (float(l2) >= 0 and math.isfinite(float(l2))):
            raise ConfigError(f"hybrid l2 must be a number >= 0; got {l2!r}")
        if not user_ids and self.features.users is None:
            raise ConfigError("hybrid needs user_ids=True or user side features (ItemSideFeatures.users)")
        self.factors, self.epochs, self.batch_size = int(factors), int(epochs), int(batch_size)
        self.lr, self.l2 = float(lr), float(l2)
        self.user_ids, self.item_ids = bool(user_ids), bool(item_ids)

    def _tables(self, data: PreparedData) -> None:
        """Padded (index, weight) rows of users and items over their embedding tables, and the table sizes."""
        n_cols, n_users = data.num_items + 1, data.num_users + 1
        items = self.features.items
        self.item_index, self.item_weight = _padded(items, n_cols if self.item_ids else 0, self.item_ids)
        self.n_item_rows = (n_cols if self.item_ids else 0) + items.shape[1]
        users = self.features.users
        if users is None:
            users = sp.csr_matrix((n_users, 0), dtype=np.float32)
        self.user_index, self.user_weight = _padded(users, n_users if self.user_ids else 0, self.user_ids)
        self.n_user_rows = (n_users if self.user_ids else 0) + users.shape[1]

    @staticmethod
    def _represent(
        table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor, rows: torch.Tensor
    ) -> torch.Tensor:
        """(B, width) weighted sums of the table rows of ``rows``' features (a fused embedding bag)."""
        return F.embedding_bag(index[rows], table, per_sample_weights=weight[rows], mode="sum")

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        self.features.check(data, self.name, users=True)
        self._tables(data)
        pairs = target_matrix(data, mask, self.target).tocoo()  # distinct (u, i) target pairs
        users = torch.from_numpy(pairs.row.astype(np.int64))
        items = torch.from_numpy(pairs.col.astype(np.int64))
        pair_weights = torch.from_numpy(pairs.data.astype(np.float32))
        seen_items = np.flatnonzero(data.item_counts(mask) > 0)
        seen_items = torch.from_numpy(seen_items[seen_items > 0].astype(np.int64))  # (n_catalog,)
        gen = torch.Generator().manual_seed(self.seed)
        k = self.factors
        # LightFM's initialisation: uniform in [-0.5/k, 0.5/k); item rows carry their bias as column k (0)
        user_table = ((torch.rand(self.n_user_rows, k, generator=gen) - 0.5) / k).requires_grad_()
        item_table = torch.cat(
            [(torch.rand(self.n_item_rows, k, generator=gen) - 0.5) / k, torch.zeros(self.n_item_rows, 1)], 1
        ).requires_grad_()  # (n_item_rows, k + 1)
        optimizer = torch.optim.Adam([user_table, item_table], lr=self.lr)
        n_pairs = len(users)
        for _ in range(self.epochs if n_pairs and len(seen_items) else 0):
            order = torch.randperm(n_pairs, generator=gen)
            negatives = seen_items[torch.randint(len(seen_items), (n_pairs,), generator=gen)]
            for lo in range(0, n_pairs, self.batch_size):
                batch = order[lo : lo + self.batch_size]
                u, i, j = users[batch], items[batch], negatives[lo : lo + self.batch_size]
                p = self._represent(user_table, self.user_index, self.user_weight, u)  # (B, k)
                both = self._represent(item_table, self.item_index, self.item_weight, torch.cat([i, j]))
                q_pos, q_neg = both[: len(batch), :k], both[len(batch) :, :k]  # (B, k) each
                margin = (p * (q_pos - q_neg)).sum(dim=1) + both[: len(batch), k] - both[len(batch) :, k]
                w = pair_weights[batch]  # (B,); margin (B,) = s_ui - s_uj
                loss = (w * F.softplus(-margin)).sum() / w.sum().clamp(min=1e-12)
                norms = p.square().sum(1) + q_pos.square().sum(1) + q_neg.square().sum(1)  # (B,)
                loss = loss + self.l2 * norms.mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            if self.user_ids:  # users without a target pair: features only
                unseen = torch.ones(data.num_users + 1, dtype=torch.bool)
                unseen[users] = False
                user_table[: data.num_users + 1][unseen] = 0.0
            if self.item_ids:  # items without a fitted event: features only (no id embedding, no id bias)
                unseen = torch.ones(data.num_items + 1, dtype=torch.bool)
                unseen[seen_items] = False
                item_table[: data.num_items + 1][unseen] = 0.0
            every_user = torch.arange(data.num_users + 1)
            every_item = torch.arange(data.num_items + 1)
            self.user_factors = self._represent(user_table, self.user_index, self.user_weight, every_user)
            item_rows = self._represent(item_table, self.item_index, self.item_weight, every_item)
            self.item_factors = item_rows[:, :k].contiguous()  # (C, k) q_i
            self.item_biases = item_rows[:, k].contiguous()  # (C,) b_i

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        users = torch.from_numpy(np.asarray(task.users, dtype=np.int64)[rows])  # (B,)
        known = (users >= 1) & (users < len(self.user_factors))
        p = self.user_factors[torch.where(known, users, 0)] * known[:, None]  # (B, k); unknown user: 0
        return p @ self.item_factors.T + self.item_biases[None, :]  # (B, k) @ (k, C) + (1, C)

    def __repr__(self) -> str:
        return (
            f"HybridBaseline(seed={self.seed}, split={self.split!r}, factors={self.factors}, "
            f"epochs={self.epochs}, lr={self.lr}, l2={self.l2}, target={self.target!r})"
        )


# Registration: baselines.py imports this module last, so make_baseline("content" | "hybrid", ...) works.
_REGISTRY.update({ContentBaseline.name: ContentBaseline, HybridBaseline.name: HybridBaseline})
