"""The side-feature table of one prepared dataset: groups of arrays aligned on internal ids, schema, digest.

Every group has one row per internal index of its entity: items 0..num_items, users 0..num_users, as
:class:`sasrec.data.contracts.PreparedData` indexes them. Row 0 is the padding index and always holds
"unknown" (id 0) or zeros, like a row whose video or user has no side information.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp

from sasrec import integrity
from sasrec.errors import ConfigError, MissingDataError

if TYPE_CHECKING:
    from sasrec.data.contracts import PreparedData

#: Bump when the groups, their columns or their computation change (the digest covers it).
FEATURE_FORMAT_VERSION = 1

GroupKind = Literal["multi_hot", "categorical", "dense"]
Entity = Literal["item", "user"]
KINDS: tuple[str, ...] = ("multi_hot", "categorical", "dense")


def canonical_csr(matrix: sp.spmatrix, shape: tuple[int, int]) -> sp.csr_matrix:
    """``matrix`` as CSR with sorted, summed indices, int64 indptr, int32 indices and float32 data."""
    csr = sp.csr_matrix(matrix, shape=shape, dtype=np.float32)
    csr.sum_duplicates()
    csr.sort_indices()
    return sp.csr_matrix(
        (csr.data.astype(np.float32), csr.indices.astype(np.int32), csr.indptr.astype(np.int64)), shape=shape
    )


@dataclass(frozen=True)
class FeatureGroup:
    """One group of side features of one entity, one row per internal index.

    Attributes:
        name: group name (``tags``, ``categories``, ``topics``, ``caption``, ``item_static``, ``item_stats``,
            ``user``).
        entity: ``item`` (rows 0..num_items) or ``user`` (rows 0..num_users).
        kind: ``multi_hot`` (CSR, float32 1.0 per present value), ``categorical`` (int32 id per column,
            0 = unknown) or ``dense`` (float32).
        source: name of the official file the group is read from.
        columns: one name per categorical column, per dense dimension or per multi-hot value.
        values: (rows, len(columns)) numpy array, or CSR matrix for ``multi_hot``.
        vocabularies: ``categorical`` only: per column, the original value of ids 1..V (id 0 = unknown).
        covered: number of the dataset's rows with events or labels that carry side information.
        notes: one line on how the group was computed.
    """

    name: str
    entity: Entity
    kind: GroupKind
    source: str
    columns: tuple[str, ...]
    values: np.ndarray | sp.csr_matrix
    vocabularies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    covered: int = 0
    notes: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"feature group {self.name}: kind must be one of {', '.join(KINDS)}; got {self.kind!r}"
            )
        if self.values.ndim != 2 or self.values.shape[1] != len(self.columns):
            raise ConfigError(
                f"feature group {self.name}: values of shape {self.values.shape} do not match its "
                f"{len(self.columns)} columns"
            )
        if self.kind == "categorical" and set(self.vocabularies) != set(self.columns):
            raise ConfigError(f"feature group {self.name}: every categorical column needs a vocabulary")

    @property
    def width(self) -> int:
        """Number of columns (multi-hot values, categorical columns or dense dimensions)."""
        return len(self.columns)

    @property
    def vocab_sizes(self) -> dict[str, int]:
        """Per categorical column, the number of ids including 0 (unknown): an embedding table's size."""
        return (
            {column: len(self.vocabularies[column]) + 1 for column in self.columns}
            if self.kind == "categorical"
            else {}
        )

    def describe(self) -> dict[str, Any]:
        """The group's schema entry (JSON-ready)."""
        entry: dict[str, Any] = {
            "entity": self.entity,
            "kind": self.kind,
            "source": self.source,
            "rows": int(self.values.shape[0]),
            "width": self.width,
            "dtype": str(self.values.dtype),
            "covered": int(self.covered),
            "notes": self.notes,
        }
        if self.kind == "categorical":
            entry["vocab_sizes"] = self.vocab_sizes
        if self.kind == "dense" or self.kind == "categorical":
            entry["columns"] = list(self.columns)
        else:
            entry["nnz"] = int(self.values.nnz)
        return entry

    def array_parts(self) -> dict[str, np.ndarray]:
        """The arrays that store the group: ``values``, or ``indptr``/``indices``/``data`` of the CSR."""
        if self.kind == "multi_hot":
            return {"indptr": self.values.indptr, "indices": self.values.indices, "data": self.values.data}
        return {"values": self.values}


def item_group(
    data: PreparedData,
    *,
    name: str,
    kind: GroupKind,
    source: str,
    columns: tuple[str, ...],
    values: np.ndarray | sp.csr_matrix,
    notes: str,
    vocabularies: Mapping[str, tuple[str, ...]] | None = None,
    covered: int | None = None,
) -> FeatureGroup:
    """An item :class:`FeatureGroup`; ``covered`` defaults to the existing items whose row holds a value."""
    if covered is None:
        filled = np.diff(values.indptr) > 0 if sp.issparse(values) else (values != 0).any(axis=1)
        covered = int(np.count_nonzero(data.existing_items() & filled))
    return FeatureGroup(
        name=name,
        entity="item",
        kind=kind,
        source=source,
        columns=columns,
        values=values,
        vocabularies={} if vocabularies is None else vocabularies,
        covered=covered,
        notes=notes,
    )


@dataclass(frozen=True)
class FeatureTable:
    """Every available side-feature group of one prepared dataset.

    Attributes:
        dataset: the prepared dataset's name.
        data_fingerprint: ``PreparedData.fingerprint`` of the id maps the rows are aligned with.
        num_items: item rows are 0..num_items (0 = padding).
        num_users: user rows are 0..num_users (0 = padding).
        groups: the available groups by name.
        unavailable: group name -> why it is unavailable (its optional source file is missing).
        params: what the groups were built with: cut timestamp and date, caption size, seed, format version.
    """

    dataset: str
    data_fingerprint: str
    num_items: int
    num_users: int
    groups: Mapping[str, FeatureGroup]
    unavailable: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def groups_available(self) -> tuple[str, ...]:
        """Names of the groups that were built, sorted."""
        return tuple(sorted(self.groups))

    def group(self, name: str) -> FeatureGroup:
        """The group ``name``; a clear error when it is unavailable or unknown."""
        if name in self.groups:
            return self.groups[name]
        if name in self.unavailable:
            raise MissingDataError(
                f"feature group {name} of {self.dataset} is unavailable: {self.unavailable[name]}"
            )
        known = ", ".join(sorted({*self.groups, *self.unavailable}))
        raise ConfigError(f"no feature group {name!r} in {self.dataset}; groups: {known}")

    def __getitem__(self, name: str) -> np.ndarray | sp.csr_matrix:
        return self.group(name).values

    def schema(self) -> dict[str, Any]:
        """Description of every group (kind, entity, width or vocabulary sizes, source file) and the params."""
        return {
            "format_version": FEATURE_FORMAT_VERSION,
            "dataset": self.dataset,
            "data_fingerprint": self.data_fingerprint,
            "num_items": int(self.num_items),
            "num_users": int(self.num_users),
            "params": dict(self.params),
            "groups": {name: self.groups[name].describe() for name in self.groups_available},
            "unavailable": dict(sorted(self.unavailable.items())),
        }

    def vocabularies(self) -> dict[str, dict[str, list[str]]]:
        """Per categorical group and column, the original value of ids 1..V."""
        return {
            name: {column: list(vocab) for column, vocab in self.groups[name].vocabularies.items()}
            for name in self.groups_available
            if self.groups[name].vocabularies
        }

    def digest(self) -> str:
        """Hex SHA-256 over the schema, the vocabularies, the column names and every array's bytes.

        Equal tables give equal digests in any process; one changed value changes it.
        """
        h = hashlib.sha256()
        head = {
            "schema": self.schema(),
            "vocabularies": self.vocabularies(),
            "columns": {name: list(self.groups[name].columns) for name in self.groups_available},
        }
        h.update(integrity.canonical_json(head).encode())
        for name in self.groups_available:
            for part, array in self.groups[name].array_parts().items():
                array = np.ascontiguousarray(array)
                h.update(f"\0{name}.{part}\0{array.dtype.str}\0{array.shape}\0".encode())
                h.update(array.tobytes())
        return h.hexdigest()
