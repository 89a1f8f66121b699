"""Top-N recommendations for every user of a prepared dataset, in original user and video ids.

:func:`write_recommendations` writes ``STEM.parquet`` and ``STEM.csv`` with a sealed
``STEM.manifest.json`` (sizes and SHA-256 of both files, row count, what made them);
:func:`read_recommendations` returns the DataFrame only when both files match it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sasrec import __version__, integrity
from sasrec.data.contracts import PreparedData
from sasrec.data.tasks import recommendation_task
from sasrec.errors import ConfigError, IntegrityError, MissingDataError, SasrecError
from sasrec.evaluation.protocol import Scorer
from sasrec.evaluation.results import command_line
from sasrec.locks import locked
from sasrec.paths import atomic_path, atomic_write_text
from sasrec.ranking import top_k_items

logger = logging.getLogger(__name__)

RECOMMENDATION_COLUMNS = ("user_id", "rank", "video_id", "score", "fallback")


def recommend(
    scorer: Scorer,
    data: PreparedData,
    *,
    top_n: int = 10,
    split: str = "temporal",
    mask_history: bool = True,
    maxlen: int = 200,
    popularity: np.ndarray | None = None,
    batch_size: int = 512,
) -> pd.DataFrame:
    """Top-``top_n`` videos for every user of ``data`` (original ids), best first.

    The scorer sees each user's train + valid events of ``split`` (see :func:`recommendation_task`);
    already-seen videos are excluded when ``mask_history``. Users without any such event get the
    popularity list (``popularity``: (I+1,) scores, default the number of train + valid events per video)
    with ``fallback=True``, and ``score`` then holds the popularity value. Ties favour the lower item index.

    Returns:
        DataFrame with columns user_id (int64), rank (int32, 1..top_n), video_id (int64), score (float32),
        fallback (bool), sorted by user then rank.
    """
    if int(top_n) < 1:
        raise ConfigError(f"top_n must be a positive integer; got {top_n!r}")
    task = recommendation_task(data, split=split, maxlen=maxlen)
    n_cols = data.num_items + 1
    if popularity is None:
        popularity = task.item_popularity  # the counts of the train + valid events it ranks after
    popularity_t = torch.from_numpy(np.array(popularity, dtype=np.float32).ravel())
    if popularity_t.shape != (n_cols,):
        raise ConfigError(f"popularity has shape {tuple(popularity_t.shape)}; expected ({n_cols},)")
    history = task.history
    has_history = np.diff(history.indptr) > 0  # (U,)

    frames: list[pd.DataFrame] = []
    with torch.no_grad():
        for start in range(0, len(task), batch_size):
            stop = min(start + batch_size, len(task))
            rows = np.arange(start, stop)
            scores = scorer.score(task, rows)
            if not isinstance(scores, torch.Tensor):
                scores = torch.as_tensor(np.asarray(scores))
            if tuple(scores.shape) != (stop - start, n_cols):
                raise SasrecError(
                    f"scorer returned shape {tuple(scores.shape)}; expected ({stop - start}, {n_cols})"
                )
            scores = scores.detach().to("cpu", torch.float32)
            fallback = torch.from_numpy(~has_history[start:stop])  # (B,)
            scores = torch.where(fallback[:, None], popularity_t[None, :], scores)  # (B, C)
            scores = torch.nan_to_num(scores, nan=float("-inf"))
            rankable = torch.ones_like(scores, dtype=torch.bool)
            rankable[:, 0] = False
            if task.candidates is not None:  # ids that never occur (no-remapping data) are never recommended
                rankable &= torch.from_numpy(task.candidates)[None, :]
            if mask_history:  # watched videos: timed history and untimed (label-only) views
                for seen in (history, task.exclude):
                    if seen is None:
                        continue
                    sub = seen[start:stop].tocoo()
                    rankable[
                        torch.from_numpy(sub.row.astype(np.int64)),
                        torch.from_numpy(sub.col.astype(np.int64)),
                    ] = False
            items, valid = top_k_items(scores, rankable, int(top_n))  # (B, n)
            item_scores = torch.gather(scores, 1, items)
            n = items.shape[1]
            valid_np = valid.numpy().ravel()
            frames.append(
                pd.DataFrame(
                    {
                        "user_id": np.repeat(data.user_ids[task.users[start:stop]], n).astype(np.int64),
                        "rank": np.tile(np.arange(1, n + 1, dtype=np.int32), stop - start),
                        "video_id": data.item_ids[items.numpy().ravel()].astype(np.int64),
                        "score": item_scores.numpy().ravel().astype(np.float32),
                        "fallback": np.repeat(fallback.numpy(), n),
                    }
                )[valid_np]
            )
    if not frames:
        return pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in zip(RECOMMENDATION_COLUMNS, _DTYPES, strict=True)}
        )
    return pd.concat(frames, ignore_index=True)  # valid slots are a prefix of each list: ranks stay 1..


_DTYPES = ("int64", "int32", "int64", "float32", "bool")


MANIFEST_FORMAT = "sasrec-recommendations/1"


def recommendation_paths(stem: str | Path) -> tuple[Path, Path, Path]:
    """``STEM.parquet``, ``STEM.csv`` and ``STEM.manifest.json`` of a recommendation stem."""
    stem = Path(stem)
    return tuple(stem.parent / f"{stem.name}{suffix}" for suffix in (".parquet", ".csv", ".manifest.json"))  # type: ignore[return-value]


def _origin(made_by: Mapping[str, Any] | None, df: pd.DataFrame) -> dict[str, Any]:
    """What made the files: the package version, the given description, the checkpoint's size and digest."""
    origin: dict[str, Any] = {"package": "sasrec", "version": __version__, **dict(made_by or {})}
    checkpoint = origin.get("checkpoint")
    if checkpoint is not None:
        origin["checkpoint"] = str(checkpoint)
        if Path(checkpoint).is_file() and "checkpoint_sha256" not in origin:
            origin["checkpoint_sha256"] = integrity.sha256_file(checkpoint)
    origin.setdefault("top_n", int(df["rank"].max()) if len(df) else 0)
    origin.setdefault("rewritten_by", command_line())
    return origin


def write_recommendations(
    df: pd.DataFrame, stem: str | Path, *, made_by: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``df`` to ``STEM.parquet`` and ``STEM.csv``, described by a sealed ``STEM.manifest.json``.

    The manifest holds the size and SHA-256 of both files, the row and user counts, and what made them
    (``made_by``: e.g. ``checkpoint`` (its SHA-256 is added when the file exists), ``dataset``,
    ``fingerprint``, ``split``, ``top_n``; the package version is always recorded). The three files are
    written atomically under the stem's lock in this order: the old manifest removed, the parquet, the
    CSV, the new manifest. An interrupted write therefore leaves no manifest (refused by
    :func:`read_recommendations`), never a manifest describing files that are not complete.

    Returns:
        The parquet and CSV paths.
    """
    missing = [c for c in RECOMMENDATION_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"recommendations lack column {missing[0]!r}; expected {', '.join(RECOMMENDATION_COLUMNS)}"
        )
    parquet_path, csv_path, manifest_path = recommendation_paths(stem)
    origin = _origin(made_by, df)
    with locked(manifest_path, what="recommendation files"):
        manifest_path.unlink(missing_ok=True)
        with atomic_path(parquet_path, what="recommendations (parquet)") as tmp:
            df.to_parquet(tmp, index=False)
        with atomic_path(csv_path, what="recommendations (CSV)") as tmp:
            df.to_csv(tmp, index=False)
        content = {
            "format": MANIFEST_FORMAT,
            "files": integrity.manifest(parquet_path.parent, [parquet_path.name, csv_path.name]),
            "rows": int(len(df)),
            "users": int(df["user_id"].nunique()),
            "columns": list(RECOMMENDATION_COLUMNS),
        }
        atomic_write_text(
            manifest_path, integrity.dumps_sealed(content, origin), what="recommendation manifest"
        )
    logger.info(
        "wrote %s and %s (%d rows) with their manifest %s",
        parquet_path,
        csv_path,
        len(df),
        manifest_path.name,
    )
    return parquet_path, csv_path


def read_recommendations(stem: str | Path) -> pd.DataFrame:
    """The recommendations of ``STEM.parquet`` after checking both files against ``STEM.manifest.json``.

    Raises:
        MissingDataError: none of the three files exists.
        IntegrityError: one line naming the stem and what is wrong: no manifest (an interrupted or older
            write), a manifest that does not match its seal, a file missing, cut short or changed.
    """
    parquet_path, csv_path, manifest_path = recommendation_paths(stem)
    label = f"recommendation files {Path(stem)}.*"
    remedy = "write them again (train or baseline with --generate_recommendations=true)"
    if not manifest_path.is_file():
        if not parquet_path.exists() and not csv_path.exists():
            raise MissingDataError(f"{label} do not exist; {remedy}")
        raise IntegrityError(
            f"{label}: {manifest_path.name} is missing (the write was interrupted, or an older version wrote "
            f"them); {remedy}"
        )
    try:
        manifest = integrity.read_sealed_json(manifest_path, what=f"{label}: {manifest_path.name}")
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}; {remedy}") from None
    writer = integrity.made_by(manifest).get("rewritten_by")
    if writer:
        remedy = f"rerun `{writer}` to write them again"
    if manifest.get("format") != MANIFEST_FORMAT:
        raise IntegrityError(f"{label}: {manifest_path.name} is not a {MANIFEST_FORMAT} manifest; {remedy}")
    problems = integrity.check_manifest(parquet_path.parent, manifest.get("files") or {})
    if problems:
        raise IntegrityError(f"{label}: {'; '.join(problems)}; {remedy}")
    return pd.read_parquet(parquet_path)
