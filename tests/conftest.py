"""Shared fixtures: a hand-made PreparedData, a simulated KuaiRec world, tiny tasks and environment hygiene."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sasrec.data.contracts import EvalTask, PreparedData, empty_labels


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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A KuaiRec-shaped folder (simulator, scale 0.02) and a project root in tmp; one thread (one per module)."""
    import torch

    from sasrec.data.simulator.api import simulate

    root = tmp_path_factory.mktemp("root")
    raw = tmp_path_factory.mktemp("kuairec")
    simulate(scale=0.02, seed=0, out_dir=raw, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SASREC_ROOT", str(root))
        patch.setenv("SASREC_PROGRESS", "0")
        yield {"root": root, "raw": raw}
    torch.set_num_threads(threads)


def kuairec_sample_dir(required: str | None, what: str) -> Path:
    """The real KuaiRec files beside the checkout, located from this file (SASREC_ROOT may be redirected);
    skips the test, naming ``what``, when the folder (or its file ``required``) is absent."""
    directory = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kuairec_sample"
    present = (directory / required).is_file() if required else directory.is_dir()
    if not present:
        pytest.skip(f"../shared/data/kuairec_sample absent: real KuaiRec {what} unavailable")
    return directory


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


def history_task(histories: list[list[int]], n_cols: int = 6, users: list[int] | None = None) -> EvalTask:
    """A task whose rows have the given time-ordered histories (no targets); users 1..n unless given."""
    n = len(histories)
    rows = [r for r, h in enumerate(histories) for _ in h]
    cols = [i for h in histories for i in h]
    history = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n_cols))
    history.sum_duplicates()
    history.data[:] = 1.0
    maxlen = max(1, max(len(h) for h in histories))
    seqs = np.array([[0] * (maxlen - len(h)) + h for h in histories], dtype=np.int64)
    empty = sp.csr_matrix((n, n_cols), dtype=np.float32)
    who = np.arange(1, n + 1) if users is None else np.asarray(users)
    return EvalTask("h", who, seqs, history, empty, empty.copy(), None, True, 2.0)
