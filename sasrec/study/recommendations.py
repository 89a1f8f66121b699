"""Example recommendations of a trained model for a few test users, through the public inference API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError
from sasrec.inference.recommender import Recommender


def best_trained_model(training: dict[str, Any]) -> str:
    """Name of the trained model with the highest validation NDCG@k (the summary's own k) in a training summary."""
    metric = f"ndcg@{training.get('k', 10)}"
    scores = {name: run.get("valid", {}).get(metric, -np.inf) for name, run in training["models"].items()}
    if not scores:
        raise ConfigError("the training summary names no trained model")
    return max(scores, key=lambda name: (scores[name], name))


def example_recommendations(
    training: dict[str, Any],
    data: PreparedData,
    *,
    relevance_threshold: float,
    users: int = 3,
    k: int = 10,
    model: str | None = None,
) -> pd.DataFrame:
    """Top-``k`` of the first ``users`` test users (by original id) who have a relevant test event.

    The model (default: the best on the training summary's validation NDCG) is loaded with :meth:`Recommender.from_checkpoint` from
    its best checkpoint and given each user's test-stage input (train + valid events of the checkpoint's split,
    original video ids, oldest first), exactly as a user of the API would.

    Returns:
        user_id, rank, video_id, score, watched_in_test (a test event of the user) and relevant_in_test (one
        with watch_ratio above ``relevance_threshold``), one row per recommendation.
    """
    name = model or best_trained_model(training)
    if name not in training["models"]:
        raise ConfigError(
            f"model={name!r} is not in the training summary; trained: {sorted(training['models'])}"
        )
    recommender = Recommender.from_checkpoint(Path(training["models"][name]["best_checkpoint"]))
    history, target = data.stage_masks(recommender.config.split, "test")
    user_of_event = data.events["user"].to_numpy()
    video_of_event = data.item_ids[data.events["item"].to_numpy()]  # original video ids
    relevant = target & (data.events["watch_ratio"].to_numpy() > relevance_threshold)
    chosen = np.unique(user_of_event[relevant])
    chosen = chosen[np.argsort(data.user_ids[chosen], kind="stable")][:users]  # by original user id
    tables = []
    for user in chosen:  # a handful of users: one API call each, as a reader of the example would make
        mine = user_of_event == user
        video_ids, scores = recommender.recommend(video_of_event[mine & history], k=k)
        tables.append(pd.DataFrame({
            "model": name, "user_id": int(data.user_ids[user]), "rank": np.arange(1, len(video_ids) + 1),
            "video_id": video_ids, "score": scores,
            "watched_in_test": np.isin(video_ids, video_of_event[mine & target]),
            "relevant_in_test": np.isin(video_ids, video_of_event[mine & relevant]),
        }))  # fmt: skip
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
