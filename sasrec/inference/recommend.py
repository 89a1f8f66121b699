"""Top-N recommendations for every user of a prepared dataset, in original user and video ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sasrec.data.contracts import VALID, PreparedData, split_column
from sasrec.data.tasks import recommendation_task
from sasrec.errors import ConfigError, SasrecError
from sasrec.evaluation.protocol import Scorer
from sasrec.paths import atomic_path
from sasrec.ranking import top_k_items

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
        history_mask = data.events[split_column(split)].to_numpy() <= VALID
        popularity = np.bincount(data.events["item"].to_numpy()[history_mask], minlength=n_cols)
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


def write_recommendations(df: pd.DataFrame, stem: str | Path) -> tuple[Path, Path]:
    """Write ``df`` to ``stem.parquet`` and ``stem.csv`` atomically; return both paths."""
    missing = [c for c in RECOMMENDATION_COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(
            f"recommendations lack column {missing[0]!r}; expected {', '.join(RECOMMENDATION_COLUMNS)}"
        )
    stem = Path(stem)
    parquet_path = stem.parent / f"{stem.name}.parquet"
    csv_path = stem.parent / f"{stem.name}.csv"
    with atomic_path(parquet_path) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=False)
    return parquet_path, csv_path
