"""Shared fixtures: a hand-made PreparedData and environment hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sasrec.data.contracts import PreparedData, empty_labels


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test not marked ``notebooks`` or ``slow`` is a ``unit`` test (``pytest -m unit``)."""
    for item in items:
        if not any(item.get_closest_marker(name) for name in ("notebooks", "slow")):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _quiet_progress(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No progress bars in tests; the level the command line sets on the ``sasrec`` logger does not leak."""
    monkeypatch.setenv("SASREC_PROGRESS", "0")
    logger = logging.getLogger("sasrec")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated project root: every default path (cache, processed, models) lands under tmp_path."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.setenv("SASREC_ROOT", str(project))
    return project


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids thread-pool overhead on the shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_prepared(
    rows: list[tuple[int, int, float, float, int]], num_users: int, num_items: int, name: str = "tiny"
) -> PreparedData:
    """PreparedData from (user, item, timestamp, watch_ratio, split) rows; the same split for all three methods."""
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "watch_ratio", "split"])
    events = pd.DataFrame(
        {
            "user": frame["user"].astype("int32"),
            "item": frame["item"].astype("int32"),
            "timestamp": frame["timestamp"].astype("float64"),
            "watch_ratio": frame["watch_ratio"].astype("float32"),
            "liked": frame["watch_ratio"] > 0.7,
            "relevant": frame["watch_ratio"] > 2.0,
            "split_temporal": frame["split"].astype("int8"),
            "split_leave_last_n": frame["split"].astype("int8"),
            "split_leave_one_out": frame["split"].astype("int8"),
        }
    )
    labels = empty_labels()
    return PreparedData(
        name=name,
        events=events,
        labels=labels,
        user_ids=np.arange(-1, num_users, dtype=np.int64),
        item_ids=np.arange(-1, num_items, dtype=np.int64) * 10,
        meta={"relevance_threshold": 2.0, "remap": True},
    )


@pytest.fixture
def tiny_data() -> PreparedData:
    """Three users, five items. Split 0 train, 1 valid, 2 test."""
    rows = [
        # user 1: 1 -> 2 -> 3 (train), 4 valid (wr 3.0: relevant), 5 test (relevant), 2 again in test (seen)
        (1, 1, 1.0, 0.5, 0),
        (1, 2, 2.0, 1.0, 0),
        (1, 3, 3.0, 2.5, 0),
        (1, 4, 4.0, 3.0, 1),
        (1, 5, 5.0, 2.1, 2),
        (1, 2, 6.0, 4.0, 2),
        # user 2: train 2, 3; test 1 (not relevant)
        (2, 2, 1.0, 0.9, 0),
        (2, 3, 2.0, 0.1, 0),
        (2, 1, 7.0, 1.5, 2),
        # user 3: only training
        (3, 4, 1.0, 1.0, 0),
    ]
    return make_prepared(rows, num_users=3, num_items=5)
