"""Build the side-feature table of a prepared dataset from the official side files.

Each group comes from one file found under the data folder (``DIR``, ``DIR/data`` or
``DIR/KuaiRec 2.0/data``). A missing file is not an error: its groups are listed as unavailable with one
logged warning and the others are built. A file that is present but wrong (header, values, duplicated
ids, ids of another dataset) raises :class:`sasrec.errors.DataValidationError` naming file and column.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from sasrec.data.contracts import TRAIN, PreparedData, split_column
from sasrec.data.features import caption, categories, item_daily, tags, users
from sasrec.data.features.alignment import check_overlap, check_unique, internal_index
from sasrec.data.features.table import FEATURE_FORMAT_VERSION, FeatureGroup, FeatureTable
from sasrec.data.kuairec.readers import find_file, read_captions
from sasrec.data.kuairec.schema import LOCAL_TIMEZONE
from sasrec.errors import ConfigError

logger = logging.getLogger(__name__)

#: Every group and the file it is read from.
GROUP_SOURCES: dict[str, str] = {
    "tags": tags.SOURCE,
    "categories": categories.SOURCE,
    "topics": categories.SOURCE,
    "caption": caption.SOURCE,
    "item_static": item_daily.SOURCE,
    "item_stats": item_daily.SOURCE,
    "user": users.SOURCE,
}
GROUPS: tuple[str, ...] = tuple(GROUP_SOURCES)


def cut_date_of(cut_timestamp: int | None) -> int | None:
    """The Asia/Shanghai day (yyyymmdd) of a Unix-seconds cut: daily rows dated before it end before the cut."""
    if cut_timestamp is None:
        return None
    instant = pd.Timestamp(int(cut_timestamp), unit="s", tz="UTC").tz_convert(LOCAL_TIMEZONE)
    return instant.year * 10_000 + instant.month * 100 + instant.day


def feature_cut(data: PreparedData, split: str = "temporal") -> int | None:
    """The earliest timestamp (Unix seconds, floored) of a validation or test event of ``split``.

    Passing it as ``cut_timestamp`` keeps every evaluated event's period out of the daily aggregates; for
    per-user splits it is the earliest held-out event of any user (conservative). None: nothing held out.
    """
    held_out = data.events[split_column(split)].to_numpy() != TRAIN
    if not held_out.any():
        return None
    return math.floor(float(data.events["timestamp"].to_numpy()[held_out].min()))


def _checked_cut(cut_timestamp: int | float | None) -> int | None:
    if cut_timestamp is None:
        return None
    if isinstance(cut_timestamp, bool) or not isinstance(
        cut_timestamp, int | float | np.integer | np.floating
    ):
        raise ConfigError(f"cut_timestamp must be Unix seconds (an integer) or None; got {cut_timestamp!r}")
    if not math.isfinite(float(cut_timestamp)) or cut_timestamp < 0:
        raise ConfigError(f"cut_timestamp must be finite Unix seconds >= 0; got {cut_timestamp!r}")
    return math.floor(float(cut_timestamp))


def _selected(groups: Iterable[str] | None) -> tuple[str, ...]:
    if groups is None:
        return GROUPS
    chosen = tuple(dict.fromkeys(groups))
    unknown = [name for name in chosen if name not in GROUP_SOURCES]
    if unknown:
        raise ConfigError(f"unknown feature group(s) {unknown}; expected some of {', '.join(GROUPS)}")
    return chosen


def _located(data_dir: Path, selected: tuple[str, ...]) -> tuple[dict[str, Path | None], dict[str, str]]:
    """The path of each needed side file (None: absent) and the groups left unavailable, warning once per file."""
    unavailable: dict[str, str] = {}
    paths = {name: find_file(data_dir, name) for name in dict.fromkeys(GROUP_SOURCES[g] for g in selected)}
    for file_name, path in paths.items():
        if path is None:
            missing = [g for g in selected if GROUP_SOURCES[g] == file_name]
            for group in missing:
                unavailable[group] = f"{file_name} not found"
            logger.warning(
                "side features: %s not found under %s; group(s) %s unavailable, the others are built",
                file_name,
                data_dir,
                ", ".join(missing),
            )
    return paths, unavailable


def _caption_file_groups(
    path: Path, data: PreparedData, wanted: set[str], caption_dim: int, seed: int, min_topic_videos: int
) -> dict[str, FeatureGroup]:
    """The wanted ``categories``, ``topics`` and ``caption`` groups, from one read of the captions file."""
    built: dict[str, FeatureGroup] = {}
    frame = read_captions(path)
    video = frame["video_id"].to_numpy(dtype=np.int64)
    check_unique(path, "video_id", video, "video")
    file_rows = internal_index(data.item_ids, video)
    check_overlap(path, "video_id", video, file_rows, data.name)
    if "categories" in wanted:
        built["categories"] = categories.category_group(path, frame, file_rows, data)
    if "topics" in wanted:
        built["topics"] = categories.topic_group(path, frame, file_rows, data, min_topic_videos)
    if "caption" in wanted:
        built["caption"] = caption.caption_group(frame, file_rows, data, caption_dim, seed)
    return built


def _built_groups(
    data: PreparedData,
    paths: dict[str, Path | None],
    wanted: set[str],
    cut: int | None,
    cut_date: int | None,
    caption_dim: int,
    seed: int,
    min_topic_videos: int,
) -> dict[str, FeatureGroup]:
    """Every wanted group whose file was found, by name."""
    built: dict[str, FeatureGroup] = {}
    if "tags" in wanted:
        built["tags"] = tags.tag_group(paths[tags.SOURCE], data)
    if wanted & {"categories", "topics", "caption"}:
        built.update(
            _caption_file_groups(paths[categories.SOURCE], data, wanted, caption_dim, seed, min_topic_videos)
        )
    if wanted & {"item_static", "item_stats"}:
        if cut is None:
            logger.warning(
                "side features: no cut_timestamp: the item_daily aggregates use every day of %s, including "
                "any evaluation period; pass feature_cut(data) to keep it out",
                item_daily.SOURCE,
            )
        static, stats = item_daily.item_daily_groups(paths[item_daily.SOURCE], data, cut_date)
        built.update({g.name: g for g in (static, stats) if g.name in wanted})
    if "user" in wanted:
        built["user"] = users.user_group(paths[users.SOURCE], data)
    return built


def build_feature_table(
    data: PreparedData,
    data_dir: Path,
    *,
    cut_timestamp: int | None,
    caption_dim: int = 32,
    seed: int = 0,
    min_topic_videos: int = 5,
    groups: Iterable[str] | None = None,
) -> FeatureTable:
    """Build every available side-feature group of ``data``, aligned on its internal ids.

    Args:
        data: the prepared dataset (its ``item_ids`` / ``user_ids`` map original ids to rows).
        data_dir: folder holding the official side files.
        cut_timestamp: Unix seconds; daily rows dated on or after its Asia/Shanghai day are never read
            (use :func:`feature_cut`). None: every daily row is used (a warning when the file exists).
        caption_dim: dimensions of the caption vectors.
        seed: random state of the caption SVD.
        min_topic_videos: a topic tag gets its own column when at least this many videos carry it.
        groups: the groups to build (default: all of :data:`GROUPS`).

    Returns:
        The table; ``groups_available`` and ``unavailable`` say what was built.

    Raises:
        DataValidationError: a present side file is malformed or does not match the dataset.
        ConfigError: a bad parameter.
    """
    started = time.perf_counter()
    cut = _checked_cut(cut_timestamp)
    cut_date = cut_date_of(cut)
    if isinstance(caption_dim, bool) or not isinstance(caption_dim, int | np.integer) or caption_dim < 1:
        raise ConfigError(f"caption_dim must be a positive integer; got {caption_dim!r}")
    selected = _selected(groups)
    data_dir = Path(data_dir)
    paths, unavailable = _located(data_dir, selected)
    wanted = {g for g in selected if g not in unavailable}
    built = _built_groups(data, paths, wanted, cut, cut_date, int(caption_dim), int(seed), min_topic_videos)
    for group in built.values():  # read-only: a table is a value
        for array in group.array_parts().values():
            array.setflags(write=False)
    table = FeatureTable(
        dataset=data.name,
        data_fingerprint=data.fingerprint,
        num_items=data.num_items,
        num_users=data.num_users,
        groups={name: built[name] for name in GROUPS if name in built},
        unavailable=unavailable,
        params={
            "format_version": FEATURE_FORMAT_VERSION,
            "cut_timestamp": cut,
            "cut_date": cut_date,
            "caption_dim": int(caption_dim),
            "seed": int(seed),
            "min_topic_videos": int(min_topic_videos),
        },
    )
    logger.info(
        "side features of %s: %s built, %s unavailable (%.1f s)",
        data.name,
        ", ".join(table.groups_available) or "none",
        ", ".join(sorted(unavailable)) or "none",
        time.perf_counter() - started,
    )
    return table
