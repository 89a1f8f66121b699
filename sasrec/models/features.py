"""Side-feature fusion shared by every sequential model: an item is its id embedding plus its side features.

The item representation of SASRecF (RecBole's feature-aware SASRec), the feature-level branch of FDSA
(Zhang et al., "Feature-level Deeper Self-Attention Network for Sequential Recommendation", IJCAI 2019)
and CARCA's item encoder (Rashed et al., "Context and Attribute-Aware Sequential Recommendation via
Cross-Attention", RecSys 2022): each side-feature group of an item is projected into the hidden size and
the projections are summed with the item's id embedding (or replace it: content only). One table of these
vectors serves as the model's input embeddings and as its output embeddings, so an item never seen in
training still gets a meaningful score from its features.

Models never read feature files: the training layer turns a feature table into a :class:`FeatureBundle`
(plain tensors, one row per internal index, row 0 = padding) and :class:`FeatureFusion` holds them as
buffers, so a checkpoint's state dict carries what the model needs to score. Per group kind:

* ``multi_hot`` (tags, topics): the row's values in CSR form; the mean of one learned vector per value,
  zero for an empty row;
* ``categorical`` (category levels, item attributes, user profile): one learned table per column, id 0
  (unknown) a zero vector; the columns' vectors are summed;
* ``dense`` (caption vectors, item statistics): a bias-free linear projection, so a zero row stays zero.

Multi-hot and categorical groups are one sparse (rows, values) matrix times a learned table each: a CSR
product forward and backward (``embedding_bag``'s backward sorts its indices at every step, several times
slower here). Every group starts at the scale of the id embeddings (std about 0.02), and row 0 (padding)
is exactly zero. User groups give one vector per user, which :class:`~sasrec.models.base.SequentialRecommender`
adds to every real position of the user's input sequence.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sasrec.errors import ConfigError

FEATURE_KINDS = ("multi_hot", "categorical", "dense")
FEATURE_ENTITIES = ("item", "user")
#: Standard deviation of every group's initial output (the id embeddings' N(0, 0.02)).
FEATURE_INIT_STD = 0.02


@dataclass(frozen=True)
class GroupTensors:
    """One side-feature group as tensors, one row per internal index of its entity (row 0 = padding).

    Attributes:
        name: the group's name in the feature table (``tags``, ``categories``, ``caption``, ``user``, ...).
        entity: ``item`` (num_items + 1 rows) or ``user`` (num_users + 1 rows).
        kind: ``multi_hot``, ``categorical`` or ``dense``.
        rows: number of rows, padding included.
        sizes: ``multi_hot``: (number of values,); ``categorical``: vocabulary size of each column, id 0
            (unknown) included; ``dense``: (dimensions,).
        values: ``multi_hot``: (nnz,) int64 value of each entry, rows one after the other (CSR indices);
            ``categorical``: (rows, C) int64 ids; ``dense``: (rows, D) float32.
        offsets: ``multi_hot``: (rows,) int64 start of each row in ``values`` (CSR indptr without its last
            entry); None otherwise.
    """

    name: str
    entity: str
    kind: str
    rows: int
    sizes: tuple[int, ...]
    values: torch.Tensor
    offsets: torch.Tensor | None = None

    def spec(self) -> dict[str, Any]:
        """The group's shapes (JSON-ready): enough to rebuild the module that holds it."""
        entry: dict[str, Any] = {
            "name": self.name,
            "entity": self.entity,
            "kind": self.kind,
            "rows": int(self.rows),
            "sizes": [int(size) for size in self.sizes],
        }
        if self.kind == "multi_hot":
            entry["nnz"] = int(self.values.numel())
        return entry


@dataclass(frozen=True)
class FeatureBundle:
    """The side-feature tensors one model uses, and the digest of the feature table they come from."""

    groups: tuple[GroupTensors, ...]
    digest: str = ""

    def spec(self) -> dict[str, Any]:
        """Constructor keyword ``feature_spec`` of a model holding these groups (stored in checkpoints)."""
        return {"groups": [group.spec() for group in self.groups]}


def _check_spec(spec: Mapping[str, Any], num_items: int) -> list[dict[str, Any]]:
    """The groups of a ``feature_spec``; :class:`ConfigError` naming the first bad entry."""
    groups = spec.get("groups") if isinstance(spec, Mapping) else None
    if not isinstance(groups, Sequence) or not groups:
        raise ConfigError(f"feature_spec must hold a non-empty list of groups; got {spec!r}")
    checked, names = [], set()
    for entry in groups:
        name, kind, entity = entry.get("name"), entry.get("kind"), entry.get("entity")
        if kind not in FEATURE_KINDS:
            raise ConfigError(
                f"feature group {name}: kind must be one of {', '.join(FEATURE_KINDS)}; got {kind!r}"
            )
        if entity not in FEATURE_ENTITIES:
            raise ConfigError(f"feature group {name}: entity must be item or user; got {entity!r}")
        if name in names:
            raise ConfigError(f"feature group {name} is listed twice in feature_spec")
        names.add(name)
        sizes = [int(size) for size in entry.get("sizes", [])]
        if not sizes or min(sizes) < 1 or (kind != "categorical" and len(sizes) != 1):
            raise ConfigError(
                f"feature group {name}: sizes must be positive ({kind}); got {entry.get('sizes')!r}"
            )
        if entity == "item" and int(entry.get("rows", -1)) != num_items + 1:
            raise ConfigError(
                f"feature group {name} has {entry.get('rows')} rows; an item group needs num_items + 1 = "
                f"{num_items + 1} (the feature table belongs to another dataset)"
            )
        checked.append({**entry, "sizes": sizes, "rows": int(entry["rows"])})
    return checked


def _sparse_rows(
    crow: torch.Tensor, columns: torch.Tensor, values: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """(n, d) rows of a sparse (n, V) matrix in CSR form (``crow`` (n + 1,), ``columns``, ``values`` (nnz,))
    times ``weight`` (V, d): one sparse product, whose backward is one more (no sort of the indices, unlike
    ``embedding_bag``'s backward); ``embedding_bag`` with per-entry weights where CSR products are missing."""
    n_rows = crow.numel() - 1
    if weight.device.type not in ("cpu", "cuda"):
        return F.embedding_bag(columns, weight, crow[:-1], mode="sum", per_sample_weights=values)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": construction only, every release
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(
            crow, columns, values.to(weight.dtype), (n_rows, weight.shape[0]), check_invariants=False
        )
    return matrix @ weight  # (n, d)


class _MultiHotEncoder(nn.Module):
    """Mean of one learned vector per present value: (rows, d); an empty row gives zeros."""

    def __init__(self, rows: int, width: int, nnz: int, hidden_units: int) -> None:
        super().__init__()
        self.register_buffer("values", torch.zeros(nnz, dtype=torch.long))
        self.register_buffer("offsets", torch.zeros(rows, dtype=torch.long))
        self.weight = nn.Parameter(torch.empty(width, hidden_units))
        nn.init.normal_(self.weight, mean=0.0, std=FEATURE_INIT_STD)

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n, d) vectors of ``rows`` (n,), or of every row."""
        crow = torch.cat([self.offsets, self.offsets.new_tensor([self.values.numel()])])  # (rows + 1,)
        counts = crow.diff()  # (rows,)
        weights = (1.0 / counts.clamp(min=1).to(self.weight.dtype)).repeat_interleave(counts)  # (nnz,) mean
        table = _sparse_rows(crow, self.values, weights, self.weight)  # (rows, d)
        return table if rows is None else table[rows]

    def load(self, group: GroupTensors) -> None:
        assert group.offsets is not None
        self.values.copy_(group.values)
        self.offsets.copy_(group.offsets)


class _CategoricalEncoder(nn.Module):
    """Sum over the columns of one learned vector per id (id 0, unknown, a zero vector): (rows, d).

    The columns' vocabularies are concatenated into one table (column c's id k >= 1 is row 1 + starts[c] +
    k - 1; row 0 unused), and the known ids of each row form one row of a sparse matrix, multiplied by it.
    """

    def __init__(self, rows: int, sizes: Sequence[int], hidden_units: int) -> None:
        super().__init__()
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size - 1)
        self.sizes = tuple(int(size) for size in sizes)
        self.register_buffer("ids", torch.zeros(rows, len(sizes), dtype=torch.long))
        self.register_buffer("starts", torch.tensor(starts, dtype=torch.long), persistent=False)
        self.weight = nn.Parameter(torch.empty(1 + sum(size - 1 for size in sizes), hidden_units))
        nn.init.normal_(self.weight, mean=0.0, std=FEATURE_INIT_STD / math.sqrt(len(sizes)))
        with torch.no_grad():
            self.weight[0].zero_()

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n, d) vectors of ``rows`` (n,), or of every row."""
        ids = self.ids if rows is None else self.ids[rows]  # (n, C)
        known = ids > 0  # (n, C)
        columns = (ids + self.starts)[known]  # (nnz,) row by row: a CSR's column indices
        crow = F.pad(known.sum(1).cumsum(0), (1, 0))  # (n + 1,)
        ones = torch.ones(columns.shape, dtype=self.weight.dtype, device=ids.device)
        return _sparse_rows(crow, columns, ones, self.weight)  # (n, d)

    def load(self, group: GroupTensors) -> None:
        ids = group.values.to(torch.long)
        limits = torch.tensor(self.sizes, dtype=torch.long)
        if ids.numel() and (bool((ids < 0).any()) or bool((ids >= limits).any())):
            raise ConfigError(
                f"feature group {group.name}: an id is outside its column's vocabulary {self.sizes}"
            )
        self.ids.copy_(ids)


class _DenseEncoder(nn.Module):
    """Bias-free linear projection of dense vectors: (rows, d); a zero row stays zero."""

    def __init__(self, rows: int, width: int, hidden_units: int) -> None:
        super().__init__()
        self.register_buffer("values", torch.zeros(rows, width, dtype=torch.float32))
        self.proj = nn.Linear(width, hidden_units, bias=False)
        nn.init.normal_(self.proj.weight, mean=0.0, std=FEATURE_INIT_STD / math.sqrt(width))

    def forward(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(n, d) vectors of ``rows`` (n,), or of every row."""
        return self.proj(self.values if rows is None else self.values[rows])  # (n, d)

    def load(self, group: GroupTensors) -> None:
        self.values.copy_(group.values.to(torch.float32))


class FeatureFusion(nn.Module):
    """Projections of every side-feature group into the hidden size, from tensors held as buffers.

    Args:
        spec: ``{"groups": [GroupTensors.spec(), ...]}`` (:meth:`FeatureBundle.spec`).
        hidden_units: the model's hidden size d.
        num_items: the model's number of items (item groups must have num_items + 1 rows).

    The buffers start at zero: fill them with :meth:`load_bundle` (training) or ``load_state_dict``
    (a checkpoint carries them).
    """

    def __init__(self, spec: Mapping[str, Any], hidden_units: int, *, num_items: int) -> None:
        super().__init__()
        self.spec = {"groups": _check_spec(spec, num_items)}
        self.num_items = int(num_items)
        self.item_groups = nn.ModuleDict()
        self.user_groups = nn.ModuleDict()
        for entry in self.spec["groups"]:
            rows, sizes = entry["rows"], entry["sizes"]
            if entry["kind"] == "multi_hot":
                module: nn.Module = _MultiHotEncoder(rows, sizes[0], int(entry.get("nnz", 0)), hidden_units)
            elif entry["kind"] == "categorical":
                module = _CategoricalEncoder(rows, sizes, hidden_units)
            else:
                module = _DenseEncoder(rows, sizes[0], hidden_units)
            (self.item_groups if entry["entity"] == "item" else self.user_groups)[entry["name"]] = module

    @property
    def has_items(self) -> bool:
        """Whether any item group is fused (else only user features are)."""
        return len(self.item_groups) > 0

    @property
    def has_users(self) -> bool:
        """Whether a user group is fused (the model then needs each batch row's user index)."""
        return len(self.user_groups) > 0

    def _summed(self, modules: nn.ModuleDict, rows: torch.Tensor | None) -> torch.Tensor:
        """Sum of ``modules``' vectors of ``rows`` (float32: sparse products run outside autocast)."""
        device = self._device()
        with torch.autocast(device.type, enabled=False) if device.type in ("cpu", "cuda") else nullcontext():
            total: torch.Tensor | None = None
            for module in modules.values():
                vectors = module(rows)  # (n, d)
                total = vectors if total is None else total + vectors
        assert total is not None
        return total

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def item_vectors(self) -> torch.Tensor | None:
        """(I + 1, d) sum of the item groups' projections, row 0 zero; None without item groups."""
        return self._summed(self.item_groups, None) if self.has_items else None

    def user_vectors(self, users: torch.Tensor) -> torch.Tensor:
        """(B, d) sum of the user groups' projections for user indices ``users`` (B,); 0 = unknown user."""
        return self._summed(self.user_groups, users)  # (B, d)

    def load_bundle(self, bundle: FeatureBundle) -> None:
        """Copy ``bundle``'s tensors into the buffers; its groups must match the spec this module was built for."""
        if bundle.spec() != self.spec:
            raise ConfigError(
                "the feature bundle does not match the model's feature_spec (groups "
                f"{[g.name for g in bundle.groups]} against {[g['name'] for g in self.spec['groups']]})"
            )
        with torch.no_grad():
            for group in bundle.groups:
                modules = self.item_groups if group.entity == "item" else self.user_groups
                modules[group.name].load(group)
