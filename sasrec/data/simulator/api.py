"""The simulator's public entry points: :func:`simulate`, :func:`is_simulated`, :func:`load_ground_truth`."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from sasrec import paths
from sasrec.data.simulator.calibration import (
    BIG_SPAN,
    CAPTION_FILE,
    DAILY_FILE,
    DEFAULT_SCALE,
    GENERATOR_VERSION,
    GROUND_TRUTH_FILE,
    MAX_SCALE,
    METADATA_FILE,
    MIN_SCALE,
    SIDE_FILES_VERSION,
    SIDE_GROUND_TRUTH_FILE,
    SIDE_STREAM_KEY,
    SMALL_SPAN,
    SideFileParams,
    SimulationParams,
)
from sasrec.data.simulator.captions import _caption_table
from sasrec.data.simulator.daily import _daily_table
from sasrec.data.simulator.matrices import _big_matrix, _small_matrix
from sasrec.data.simulator.side_truth import NOTES as SIDE_TRUTH_NOTES
from sasrec.data.simulator.side_truth import user_feature_truth
from sasrec.data.simulator.world import _make_world, _World
from sasrec.data.simulator.writer import (
    _user_features,
    _write_captions,
    _write_interactions,
    _write_item_categories,
    _write_item_daily,
    _write_user_features,
)
from sasrec.errors import ConfigError, DataValidationError, MissingDataError
from sasrec.progress import progress_enabled

if TYPE_CHECKING:
    from tqdm import tqdm


# ------------------------------------------------------------------------------------------ public API
def is_simulated(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a simulator output (its ``simulation.json``)."""
    return (Path(data_dir) / METADATA_FILE).is_file()


def load_ground_truth(data_dir: Path) -> pd.DataFrame:
    """The simulator's expected watch_ratio of every small-matrix pair.

    Returns:
        Columns user_id, video_id (int64) and expected_watch_ratio (float64), one row per small pair.

    Raises:
        MissingDataError: ``data_dir`` holds no ``ground_truth.parquet`` (not a simulator folder).
        DataValidationError: the file lacks a column.
    """
    path = Path(data_dir) / GROUND_TRUTH_FILE
    if not path.is_file():
        raise MissingDataError(
            f"{path} does not exist; ground truth exists only for simulated data (`python -m sasrec simulate`)"
        )
    frame = pq.read_table(path).to_pandas()
    expected = ["user_id", "video_id", "expected_watch_ratio"]
    missing = [name for name in expected if name not in frame.columns]
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {missing}; expected the columns {expected}")
    return frame[expected]


def load_side_ground_truth(data_dir: Path) -> dict[str, Any]:
    """How much signal the simulated side files carry (``side_ground_truth.json``).

    Returns:
        {"version", "captions", "item_daily", "user_features", "notes"}: figures per side file (signal about
        the tags, the watch_ratio and the taste; ``notes`` says what each section's figures mean).

    Raises:
        MissingDataError: ``data_dir`` holds no ``side_ground_truth.json`` (not a simulator folder, or one
            written with ``side_files=False`` or by an older simulator).
    """
    path = Path(data_dir) / SIDE_GROUND_TRUTH_FILE
    if not path.is_file():
        raise MissingDataError(
            f"{path} does not exist; the side files' ground truth exists only for simulated data written "
            "with side files (`python -m sasrec simulate`)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def simulate(
    scale: float = DEFAULT_SCALE,
    seed: int = 0,
    out_dir: Path | None = None,
    *,
    progress: bool | None = None,
    params: SimulationParams | None = None,
    side_files: bool = True,
    side_params: SideFileParams | None = None,
) -> dict[str, Any]:
    """Generate KuaiRec-shaped data into ``out_dir`` (default ``sasrec.paths.simulated_dir()``).

    Args:
        scale: size relative to KuaiRec 2.0 (users, videos, small-matrix sides and per-user big-matrix
            counts are multiplied by it); 1.0 gives ~12.5M big-matrix rows.
        seed: random seed; the same seed and scale give byte-identical files.
        out_dir: output folder (created when missing).
        progress: show a progress bar (default: ``sasrec.cliutil.progress_enabled``).
        params: generative parameters (default :class:`SimulationParams`).
        side_files: also write kuairec_caption_category.csv, item_daily_features.csv and
            side_ground_truth.json (their random numbers come from a separate stream: the other files are
            byte-identical either way; ``simulation.json`` gains the key ``side_files``).
        side_params: parameters of the side files (default :class:`SideFileParams`).

    Returns:
        Summary: out_dir, counts, watch_ratio shares of each matrix, seconds.

    Raises:
        ConfigError: scale outside [MIN_SCALE, MAX_SCALE], a negative seed, or ``out_dir`` holding
            interaction matrices that the simulator did not write (real data is never overwritten).
    """
    from tqdm import tqdm

    _check_arguments(scale, seed)
    params = params or SimulationParams()
    side_params = side_params or SideFileParams()
    out = _prepare_output_folder(out_dir)
    started = time.perf_counter()
    rngs = _random_streams(seed)

    bar = tqdm(total=7 + side_files, desc="simulate", disable=not progress_enabled(progress), unit="step")
    try:
        world, big, small, truth = _generate(scale, params, rngs, bar)
        users = _user_features(world.n_users, rngs[3])
        side_counts = None
        if side_files:
            bar.set_postfix_str("caption and daily files")
            side_counts = _write_side_files(out, world, big, users, params, side_params, seed)
            bar.update()
        else:
            for name in (CAPTION_FILE, DAILY_FILE, SIDE_GROUND_TRUTH_FILE):  # no stale side files
                (out / name).unlink(missing_ok=True)
        _write_files(out, world, big, small, truth, users, bar)
        counts = _counts(world, big, small)
        shares = {
            "big_matrix": watch_ratio_statistics(big["watch_ratio"]),
            "small_matrix": watch_ratio_statistics(small["watch_ratio"]),
        }
        metadata = _metadata(scale, seed, params, counts, shares)
        if side_counts is not None:
            metadata["side_files"] = {
                "version": SIDE_FILES_VERSION,
                "files": [CAPTION_FILE, DAILY_FILE, SIDE_GROUND_TRUTH_FILE],
                "parameters": asdict(side_params),
                "counts": side_counts,
            }
        paths.atomic_write_text(out / METADATA_FILE, json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        bar.update()
    finally:
        bar.close()
    return {
        "out_dir": str(out),
        "scale": float(scale),
        "seed": int(seed),
        "counts": counts,
        "watch_ratio": shares,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _prepare_output_folder(out_dir: Path | None) -> Path:
    """Resolve, check and create the output folder, removing any stale metadata."""
    out = Path(out_dir) if out_dir is not None else paths.simulated_dir()
    _check_output_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / METADATA_FILE).unlink(missing_ok=True)  # a run that fails leaves no stale metadata behind
    return out


def _random_streams(seed: int) -> list[np.random.Generator]:
    """One independent generator per generative step, all derived from ``seed``."""
    streams = np.random.SeedSequence([int(seed), 0x5A5EC]).spawn(8)
    return [np.random.default_rng(s) for s in streams]


def _side_streams(seed: int) -> dict[str, np.random.Generator]:
    """The side files' generators: independent of :func:`_random_streams` (another entropy key)."""
    streams = np.random.SeedSequence([int(seed), 0x5A5EC, SIDE_STREAM_KEY]).spawn(3)
    return {
        name: np.random.default_rng(s)
        for name, s in zip(("captions", "daily", "truth"), streams, strict=True)
    }


def _generate(
    scale: float, params: SimulationParams, rngs: list[np.random.Generator], bar: tqdm
) -> tuple[_World, dict[str, np.ndarray], dict[str, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Draw the world, then the big and small matrices (and the small matrix's ground truth)."""
    bar.set_postfix_str("world")
    world = _make_world(scale, params, rngs[0])
    bar.update()
    bar.set_postfix_str("big matrix")
    big = _big_matrix(world, scale, params, rngs[1])
    bar.update()
    bar.set_postfix_str("small matrix")
    small, truth = _small_matrix(world, params, rngs[2])
    bar.update()
    return world, big, small, truth


def _write_ground_truth(path: Path, truth: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Write the expected watch_ratio of every small pair as zstd parquet (atomically)."""
    truth_table = pa.table(
        {
            "user_id": pa.array(truth[0], pa.int64()),
            "video_id": pa.array(truth[1], pa.int64()),
            "expected_watch_ratio": pa.array(truth[2], pa.float64()),
        }
    )  # (n_small_pairs, 3)
    with paths.atomic_path(path) as tmp:
        pq.write_table(truth_table, tmp, compression="zstd")


def _write_files(
    out: Path,
    world: _World,
    big: dict[str, np.ndarray],
    small: dict[str, np.ndarray],
    truth: tuple[np.ndarray, np.ndarray, np.ndarray],
    users: pd.DataFrame,
    bar: tqdm,
) -> None:
    """Write the side files first, then the matrices (what loaders look for) last."""
    bar.set_postfix_str("side files")
    _write_ground_truth(out / GROUND_TRUTH_FILE, truth)
    _write_item_categories(out / "item_categories.csv", world)
    _write_user_features(out / "user_features.csv", users)
    bar.update()
    bar.set_postfix_str("writing big_matrix.csv")
    _write_interactions(out / "big_matrix.csv", big, date_as_float=False)
    bar.update()
    bar.set_postfix_str("writing small_matrix.csv")
    _write_interactions(out / "small_matrix.csv", small, date_as_float=True)
    bar.update()


def _write_side_files(
    out: Path,
    world: _World,
    big: dict[str, np.ndarray],
    users: pd.DataFrame,
    params: SimulationParams,
    side_params: SideFileParams,
    seed: int,
) -> dict[str, int]:
    """Write the caption and daily files and the ground truth of their signal; return their row counts."""
    rngs = _side_streams(seed)
    captions, caption_truth, tag_names = _caption_table(world, side_params, rngs["captions"])
    daily, daily_truth = _daily_table(world, big, tag_names, side_params, rngs["daily"])
    side_truth = {
        "version": SIDE_FILES_VERSION,
        "captions": caption_truth,
        "item_daily": daily_truth,
        "user_features": user_feature_truth(world, params, users, big["user_id"], rngs["truth"]),
        "notes": SIDE_TRUTH_NOTES,
    }
    _write_captions(out / CAPTION_FILE, captions)
    _write_item_daily(out / DAILY_FILE, daily)
    paths.atomic_write_text(
        out / SIDE_GROUND_TRUTH_FILE,
        json.dumps(side_truth, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
    )
    return {"caption_rows": len(captions), "item_daily_rows": daily.num_rows}


def _counts(world: _World, big: dict[str, np.ndarray], small: dict[str, np.ndarray]) -> dict[str, int]:
    """Sizes of the simulated world and matrices, as reported in the summary and metadata."""
    return {
        "users": world.n_users,
        "videos": world.n_videos,
        "small_users": len(world.small_users),
        "small_videos": len(world.small_videos),
        "big_rows": len(big["user_id"]),
        "small_rows": len(small["user_id"]),
        "small_pairs_missing": len(world.small_users) * len(world.small_videos) - len(small["user_id"]),
        "chains": len(world.chain_start),
    }


def _metadata(
    scale: float,
    seed: int,
    params: SimulationParams,
    counts: dict[str, int],
    shares: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The content of ``simulation.json``: what was generated, how, and from which parameters."""
    return {
        "simulated": True,
        "generator_version": GENERATOR_VERSION,
        "scale": float(scale),
        "seed": int(seed),
        "parameters": asdict(params),
        "counts": counts,
        "watch_ratio": shares,
        "spans": {"big_matrix": list(BIG_SPAN), "small_matrix": list(SMALL_SPAN)},
        "timezone": "Asia/Shanghai",
        "files": [
            "big_matrix.csv",
            "small_matrix.csv",
            "item_categories.csv",
            "user_features.csv",
            GROUND_TRUTH_FILE,
        ],
    }


def watch_ratio_statistics(watch_ratio: np.ndarray) -> dict[str, float]:
    """The calibration statistics of :data:`REAL_CALIBRATION` plus the maximum, for one matrix."""
    wr = np.asarray(watch_ratio, dtype=np.float64)
    return {
        "share_gt_2": float(np.mean(wr > 2.0)),
        "share_ge_1": float(np.mean(wr >= 1.0)),
        "share_lt_0.5": float(np.mean(wr < 0.5)),
        "median_le_5": float(np.median(wr[wr <= 5.0])),
        "share_gt_5": float(np.mean(wr > 5.0)),
        "max": float(wr.max()),
    }


def _check_arguments(scale: float, seed: int) -> None:
    if not isinstance(scale, int | float) or not np.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise ConfigError(
            f"simulate: scale must be a number in [{MIN_SCALE}, {MAX_SCALE}] (1.0 = real KuaiRec sizes); "
            f"got {scale!r}"
        )
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"simulate: seed must be a non-negative integer; got {seed!r}")


def _check_output_folder(out: Path) -> None:
    """Refuse to overwrite interaction matrices that the simulator did not write (e.g. the real archive)."""
    matrices = [name for name in ("big_matrix.csv", "small_matrix.csv") if (out / name).exists()]
    ours = (out / METADATA_FILE).is_file() or (out / GROUND_TRUTH_FILE).is_file()
    if matrices and not ours:
        raise ConfigError(
            f"simulate: {out} already holds {', '.join(matrices)} not written by the simulator (no "
            f"{METADATA_FILE} or {GROUND_TRUTH_FILE}); refusing to overwrite them. Choose another --out "
            "folder or delete those files."
        )


# ------------------------------------------------------------------------------ sequential signal check
def _transition_vs_popularity_ndcg(
    small: pd.DataFrame, threshold: float = 2.0, k: int = 10
) -> dict[str, float]:
    """Full-ranking NDCG@k of popularity and of a first-order transition model on the positives.

    The protocol of KUAIREC.md's "sequential signal": each user's positives (watch_ratio > threshold,
    timed rows) in time order, the last one held out, the user's earlier positives masked. Popularity
    counts training positives per video; the transition model counts consecutive (last -> next) pairs of
    training positives over all users (ties broken by popularity). Remaining ties rank ahead of the
    target (pessimistic), so that a constant score earns nothing.

    Args:
        small: rows with user_id, video_id, timestamp, watch_ratio.

    Returns:
        {"popularity": ndcg, "transition": ndcg, "users": number of evaluated users}.
    """
    rows = small[(small["watch_ratio"] > threshold) & small["timestamp"].notna()]
    rows = rows.sort_values(["user_id", "timestamp"], kind="stable")
    users = rows["user_id"].to_numpy(np.int64)
    items = rows["video_id"].to_numpy(np.int64)
    n_items = int(small["video_id"].max()) + 1
    last = np.r_[users[1:] != users[:-1], True]
    first = np.r_[True, users[1:] != users[:-1]]
    counts = np.bincount(users)[users]
    evaluated = last & (counts >= 2)  # held-out target rows of users with at least one training positive
    train = ~last
    popularity = np.bincount(items[train], minlength=n_items).astype(np.float64)
    pair = train[:-1] & train[1:] & ~first[1:]  # consecutive training positives of one user
    transitions = sp.csr_matrix(
        (np.ones(int(pair.sum())), (items[:-1][pair], items[1:][pair])), shape=(n_items, n_items)
    )  # duplicates summed: counts of last -> next

    target_rows = np.flatnonzero(evaluated)
    targets = items[target_rows]
    previous = items[target_rows - 1]
    n_eval = len(target_rows)
    # Mask: each evaluated user's training positives.
    eval_index = np.full(users.max() + 1, -1, dtype=np.int64)
    eval_index[users[target_rows]] = np.arange(n_eval)
    train_of_eval = train & (eval_index[users] >= 0)
    mask_rows, mask_cols = eval_index[users[train_of_eval]], items[train_of_eval]

    def ndcg(scores: np.ndarray) -> float:
        scores = scores.copy()  # (n_eval, n_items)
        scores[mask_rows, mask_cols] = -np.inf
        target_score = scores[np.arange(n_eval), targets]
        rank = (scores >= target_score[:, None]).sum(axis=1) - 1  # ties ranked ahead of the target
        gains = np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)
        return float(gains.mean()) if n_eval else 0.0

    tie_break = popularity / (popularity.max() + 1.0)
    pop_scores = np.broadcast_to(popularity, (n_eval, n_items))
    transition_scores = transitions[previous].toarray() + tie_break[None, :]
    return {
        "popularity": ndcg(pop_scores),
        "transition": ndcg(transition_scores),
        "users": float(n_eval),
    }
