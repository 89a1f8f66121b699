"""Side features of a training run: the ``features`` switches, the groups they select, the model's tensors.

``TrainConfig.features`` is ``none`` (default: id embeddings only, exactly the old models), ``all`` or a
comma list of the switches of :data:`FEATURE_SWITCHES`; each switch turns on one or two groups of the
feature table (:mod:`sasrec.data.features`). :func:`run_features` loads the table of the run's dataset and
split (cached next to the prepared dataset, :mod:`sasrec.data.features.cache`), keeps the selected groups
and converts them into the :class:`~sasrec.models.features.FeatureBundle` the model holds. Under ``all`` a
group whose side file is missing is skipped with a warning; a group named explicitly must be available.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sasrec.errors import CheckpointMismatchError, ConfigError
from sasrec.models.features import FeatureBundle, GroupTensors

if TYPE_CHECKING:
    from sasrec.data.contracts import PreparedData
    from sasrec.data.features import FeatureTable

logger = logging.getLogger(__name__)

#: Each ``features`` switch and the feature-table groups it turns on.
FEATURE_SWITCHES: dict[str, tuple[str, ...]] = {
    "tags": ("tags",),
    "categories": ("categories", "topics"),
    "caption": ("caption",),
    "item_daily": ("item_static", "item_stats"),
    "user": ("user",),
}
FEATURE_CHOICES = ("none", "all", *FEATURE_SWITCHES)
#: The order of the groups in a model (its parameters' order): fixed, whatever order a table holds them in
#: (a table read back from disk lists them alphabetically), so that every process builds the same model.
GROUP_ORDER: tuple[str, ...] = tuple(group for groups in FEATURE_SWITCHES.values() for group in groups)


def parse_features(value: Any) -> tuple[str, ...]:
    """The switches a ``features`` setting names: () for ``none``, every switch for ``all``, else the list.

    Raises:
        ConfigError: not a string, an unknown switch, or ``none``/``all`` mixed with switches.
    """
    allowed = f"none, all or a comma list of {','.join(FEATURE_SWITCHES)}"
    if not isinstance(value, str):
        raise ConfigError(f"features must be {allowed}; got {value!r}")
    parts = [part.strip().lower() for part in value.split(",")]
    if parts == ["none"]:
        return ()
    if parts == ["all"]:
        return tuple(FEATURE_SWITCHES)
    unknown = [part for part in parts if part not in FEATURE_SWITCHES]
    if unknown:
        raise ConfigError(
            f"features must be {allowed}; got {value!r} (unknown: {', '.join(unknown) or 'empty'})"
        )
    return tuple(dict.fromkeys(parts))


def select_groups(
    table: FeatureTable, features: str, *, data_dir: str | Path | None = None
) -> tuple[str, ...]:
    """The table groups ``features`` selects, in :data:`GROUP_ORDER`.

    A switch uses those of its groups the table holds. Under ``all`` a switch without any is skipped with
    one warning; named explicitly it is refused.

    Raises:
        ConfigError: an explicitly requested group is unavailable (naming it and its missing file), or
            ``all`` finds no group at all.
    """
    switches = parse_features(features)
    explicit = features.strip().lower() != "all"
    where = f" under {data_dir}" if data_dir is not None else ""
    chosen: list[str] = []
    skipped: list[str] = []
    for switch in switches:
        groups = FEATURE_SWITCHES[switch]
        present = [group for group in groups if group in table.groups]
        if present:  # a switch's groups come from one file: all of them, or a table built with fewer
            chosen += present
            continue
        reason = table.unavailable.get(groups[0], f"group {groups[0]} is not in the feature table")
        if explicit:
            raise ConfigError(
                f"features: group {switch!r} is unavailable ({reason}{where}); add the file or leave "
                f"{switch} out of features (choices: {', '.join(FEATURE_CHOICES)})"
            )
        skipped.append(f"{switch} ({reason})")
    if skipped:
        logger.warning("features=all: skipping unavailable group(s) %s%s", "; ".join(skipped), where)
    if not chosen:
        raise ConfigError(
            f"features=all but no side-feature file of {table.dataset} is available{where}; "
            "use features=none or add the side files"
        )
    return tuple(group for group in GROUP_ORDER if group in chosen)


def subset_table(table: FeatureTable, groups: Sequence[str]) -> FeatureTable:
    """``table`` restricted to ``groups`` (its schema and digest describe what a model used)."""
    from sasrec.data.features import FeatureTable

    missing = [name for name in groups if name not in table.groups]
    if missing:
        raise ConfigError(f"feature table of {table.dataset} has no group(s) {', '.join(missing)}")
    return FeatureTable(
        dataset=table.dataset,
        data_fingerprint=table.data_fingerprint,
        num_items=table.num_items,
        num_users=table.num_users,
        groups={name: table.groups[name] for name in groups},
        unavailable={},
        params=dict(table.params),
    )


def _dense_scaled(values: np.ndarray) -> np.ndarray:
    """(rows, D) float32 dense values with each column divided by its root mean square over rows 1.. (zeros
    stay zero, so padding and rows without information keep the zero vector); all-zero columns stay 0."""
    values = np.asarray(values, dtype=np.float64)
    rms = np.sqrt(np.mean(np.square(values[1:]), axis=0)) if len(values) > 1 else np.ones(values.shape[1])
    scaled = np.divide(values, rms, out=np.zeros_like(values), where=rms > 1e-12)
    scaled[0] = 0.0
    return scaled.astype(np.float32)


#: Groups that describe how a video was watched (not what it is): blank for a video withheld under item
#: cold-start, which has no behaviour to aggregate.
BEHAVIOUR_GROUPS = ("item_stats",)


def feature_bundle(
    table: FeatureTable, groups: Sequence[str], *, blank_items: np.ndarray | None = None
) -> FeatureBundle:
    """The tensors of ``groups`` of ``table`` for a model, with the digest of the sub-table they come from.

    Multi-hot groups keep their CSR layout (values and row offsets), categorical ids become int64, dense
    columns are scaled to unit root mean square (a zero row stays zero).

    Args:
        blank_items: (I+1,) bool; the rows of these items in :data:`BEHAVIOUR_GROUPS` are zeroed (item
            cold-start: a withheld video's behavioural aggregates would tell the model how popular it is).
    """
    used = subset_table(table, groups)
    tensors = []
    for name in groups:  # in the given order: the model's parameters follow it
        group = used.groups[name]
        if group.kind == "multi_hot":
            csr = group.values
            tensors.append(GroupTensors(
                name=name, entity=group.entity, kind=group.kind, rows=csr.shape[0], sizes=(group.width,),
                values=torch.from_numpy(np.asarray(csr.indices, dtype=np.int64)),
                offsets=torch.from_numpy(np.asarray(csr.indptr[:-1], dtype=np.int64)),
            ))  # fmt: skip
        elif group.kind == "categorical":
            sizes = tuple(group.vocab_sizes[column] for column in group.columns)
            tensors.append(GroupTensors(
                name=name, entity=group.entity, kind=group.kind, rows=group.values.shape[0], sizes=sizes,
                values=torch.from_numpy(np.asarray(group.values, dtype=np.int64)),
            ))  # fmt: skip
        else:
            dense = _dense_scaled(group.values)  # (rows, D)
            # blanked after scaling, so every other video keeps its values
            if blank_items is not None and name in BEHAVIOUR_GROUPS:
                dense[np.asarray(blank_items, dtype=bool)] = 0.0
            tensors.append(GroupTensors(
                name=name, entity=group.entity, kind=group.kind, rows=group.values.shape[0],
                sizes=(group.width,), values=torch.from_numpy(dense),
            ))  # fmt: skip
    return FeatureBundle(groups=tuple(tensors), digest=used.digest())


@dataclass(frozen=True)
class RunFeatures:
    """The side features of one training run: the setting, the groups used, their tensors and description.

    Attributes:
        features: the ``features`` setting (``all``, ``tags,user``, ...).
        groups: the feature-table groups used.
        bundle: the tensors the model holds.
        schema: ``FeatureTable.schema()`` of the groups used (JSON-ready).
        digest: ``FeatureTable.digest()`` of the groups used.
    """

    features: str
    groups: tuple[str, ...]
    bundle: FeatureBundle
    schema: dict[str, Any]
    digest: str

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor keywords of a model holding these features."""
        return {"feature_spec": self.bundle.spec()}

    def describe(self, id_embedding: bool) -> dict[str, Any]:
        """What a checkpoint records (``features`` entry): setting, groups, schema, digest, id embedding."""
        return {
            "features": self.features,
            "groups": list(self.groups),
            "id_embedding": bool(id_embedding),
            "schema": self.schema,
            "digest": self.digest,
        }


def table_of(
    data: PreparedData,
    split: str,
    *,
    table: FeatureTable | None = None,
    data_dir: str | Path | None = None,
) -> FeatureTable:
    """``table``, or the split's table cached next to the prepared dataset, checked to belong to ``data``.

    Raises:
        CheckpointMismatchError: the table was built from another dataset (naming both).
    """
    if table is None:
        from sasrec.data.features.cache import cached_feature_table

        table = cached_feature_table(data, split, data_dir=data_dir)
    if table.data_fingerprint != data.fingerprint or table.num_items != data.num_items:
        raise CheckpointMismatchError(
            f"the feature table belongs to dataset {table.dataset!r} (fingerprint {table.data_fingerprint}, "
            f"{table.num_items} items), not to {data.name!r} (fingerprint {data.fingerprint}, {data.num_items} "
            "items); build it from the run's dataset"
        )
    return table


def run_features(
    data: PreparedData,
    features: str,
    split: str,
    *,
    table: FeatureTable | None = None,
    data_dir: str | Path | None = None,
    blank_items: np.ndarray | None = None,
) -> RunFeatures | None:
    """The side features a run on ``data`` / ``split`` uses under ``features``; None under ``none``.

    Args:
        data: the run's prepared dataset.
        features: the ``features`` setting.
        split: the run's split (the daily aggregates stop before its held-out period).
        table: a feature table to use instead of the cached one (it must belong to ``data``).
        data_dir: where the side files are (default: beside the dataset's source file).
        blank_items: (I+1,) bool items whose behavioural aggregates are zeroed (the withheld videos of item
            cold-start, :func:`feature_bundle`); the schema and digest stay the table's.
    """
    if not parse_features(features):
        return None
    table = table_of(data, split, table=table, data_dir=data_dir)
    groups = select_groups(table, features, data_dir=data_dir)
    bundle = feature_bundle(table, groups, blank_items=blank_items)
    schema = json.loads(json.dumps(subset_table(table, groups).schema()))  # plain JSON types (checkpoints)
    logger.info("side features of %s: %s (digest %s)", data.name, ", ".join(groups), bundle.digest[:12])
    return RunFeatures(features=features, groups=groups, bundle=bundle, schema=schema, digest=bundle.digest)


def check_feature_table(payload: dict[str, Any], table: FeatureTable, path: str | Path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``table`` holds the features the checkpoint used.

    Compares the digest of the checkpoint's groups of ``table`` with the recorded one; a checkpoint trained
    without features accepts any table (it reads none).
    """
    recorded = payload.get("features")
    if not recorded:
        return
    groups = list(recorded["groups"])
    missing = [name for name in groups if name not in table.groups]
    digest = subset_table(table, groups).digest() if not missing else f"(no group {', '.join(missing)})"
    if digest != recorded["digest"]:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained with feature table digest {recorded['digest'][:16]} (groups "
            f"{', '.join(groups)}) but the table given has digest {digest[:16]}; pass the feature table it was "
            "trained with, or load it without one (the checkpoint carries its features)"
        )


def baseline_side_features(
    data: PreparedData,
    features: str,
    split: str,
    *,
    table: FeatureTable | None = None,
    data_dir: str | Path | None = None,
) -> Any:
    """The :class:`~sasrec.models.content.ItemSideFeatures` of ``data`` for the ``content`` and ``hybrid``
    baselines: the groups ``features`` selects (:func:`select_groups`), encoded as each baseline expects.

    ``item_stats`` (dense behavioural aggregates) is left out: the baselines' blocks are the item's content
    (tags, categories, topics, caption, static attributes) and the user's attributes.

    Raises:
        ConfigError: ``features`` is ``none`` (these baselines need side features) or names an unavailable
            group; CheckpointMismatchError: the table belongs to another dataset.
    """
    from sasrec.models.content import ItemSideFeatures

    if not parse_features(features):
        raise ConfigError(
            "the content and hybrid baselines need side features: set features to all or a comma list of "
            f"{','.join(FEATURE_SWITCHES)} (got {features!r})"
        )
    table = table_of(data, split, table=table, data_dir=data_dir)
    groups = [group for group in select_groups(table, features, data_dir=data_dir) if group != "item_stats"]
    arrays = {group: table.group(group).values for group in groups}
    vocab = {
        group: list(table.group(group).vocab_sizes.values())
        for group in groups
        if table.group(group).kind == "categorical"
    }
    return ItemSideFeatures.from_arrays(**arrays, vocab_sizes=vocab, data_fingerprint=table.data_fingerprint)
