"""The public inference API: top-k videos from a trained checkpoint, in original KuaiRec ids.

>>> from sasrec import Recommender
>>> rec = Recommender.from_checkpoint("models/small_matrix_default/SASRec.epoch=22.lr=0.001.layer=2.head=1.hidden=50.maxlen=200.pth")
>>> video_ids, scores = rec.recommend([3405, 812, 77], k=10)  # a watch history, oldest first

The checkpoint carries everything needed: the architecture, the weights, the configuration it was
trained with and the map from its item indices to the original video ids, so no dataset has to be
loaded. Videos the model never saw are ignored (and counted); a history with no known video gets the
popularity ranking of the events the model was fit on.

A model trained with side features (``features``) carries their tensors too: a video of its dataset that
never occurred in the training events is scored from its features (as an input of a history and as a
candidate), without the side files. ``user_id`` (original id) adds the user's features when the model fuses
them; without it the user is unknown (no user features).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import torch

from sasrec.data.contracts import PreparedData, left_padded_tails
from sasrec.errors import ConfigError
from sasrec.evaluation.scorers import SequentialScorer
from sasrec.inference.recommend import recommend as recommend_for_dataset
from sasrec.models.base import SequentialRecommender
from sasrec.ranking import top_k_items
from sasrec.training.checkpoints import check_fingerprint, load_checkpoint
from sasrec.training.config import TrainConfig, resolve_device

if TYPE_CHECKING:
    from sasrec.data.features import FeatureTable
    from sasrec.inference.two_stage import TwoStage

logger = logging.getLogger(__name__)


class Recommendations(NamedTuple):
    """Top-k of one history: original video ids, best first, and their scores (unpackable as a pair)."""

    video_ids: np.ndarray
    scores: np.ndarray


class Recommender:
    """A trained sequential model that recommends in original KuaiRec video ids.

    Args:
        model: the trained model (eval mode).
        config: the configuration it was trained with.
        item_ids: (I+1,) original video id of each item index (entry 0 is padding, -1).
        popularity: (I+1,) counts of the fitted events per item (the fallback ranking).
        checkpoint: where it was loaded from, if anywhere.
        device: where scores are computed.
        existing: (I+1,) bool, the items that occur in the model's dataset (None: every item but padding);
            only these are recommended (data prepared without remapping index ids that never occur).
        fingerprint: the fingerprint of the model's dataset (checked by :meth:`recommend_dataset`).
        user_ids: (U+1,) original user id of each user index (entry 0 is padding), for ``user_id`` lookups of
            models fusing user features; None: users unknown.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        config: TrainConfig,
        item_ids: np.ndarray,
        popularity: np.ndarray,
        *,
        checkpoint: Path | None = None,
        device: str | torch.device = "cpu",
        existing: np.ndarray | None = None,
        fingerprint: str | None = None,
        user_ids: np.ndarray | None = None,
    ) -> None:
        self.model = model.eval()
        self.config = config
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.checkpoint = checkpoint
        self.existing = None if existing is None else np.asarray(existing, dtype=bool)
        self.fingerprint = fingerprint
        self.device = resolve_device(str(device))
        self.model.to(self.device)
        known = self.item_ids[1:]
        self._index = pd.Series(np.arange(1, len(self.item_ids), dtype=np.int64), index=known)
        self.user_ids = None if user_ids is None else np.asarray(user_ids, dtype=np.int64)
        self._user_index = (
            None
            if self.user_ids is None
            else pd.Series(np.arange(1, len(self.user_ids), dtype=np.int64), index=self.user_ids[1:])
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, device: str = "cpu", features: FeatureTable | None = None
    ) -> Recommender:
        """Load a checkpoint written by ``python -m sasrec train`` (verified against its recorded digest).

        ``features``: a side-feature table to check against the one the model was trained with (the model
        scores from the tensors its checkpoint carries; a table with another digest is refused with
        :class:`~sasrec.errors.CheckpointMismatchError`).
        """
        model, config, payload = load_checkpoint(path, map_location="cpu", features=features)
        return cls.from_loaded(model, config, payload, path, device=device)

    @classmethod
    def from_loaded(
        cls,
        model: SequentialRecommender,
        config: TrainConfig,
        payload: dict,
        path: str | Path,
        *,
        device: str = "cpu",
    ) -> Recommender:
        """From what :func:`~sasrec.training.checkpoints.load_checkpoint` returned (no second read of the file)."""
        popularity = (
            payload["popularity"].numpy() if "popularity" in payload else np.zeros(model.num_items + 1)
        )
        existing = payload["existing_items"].numpy() if "existing_items" in payload else None
        user_ids = payload["user_ids"].numpy() if "user_ids" in payload else None
        return cls(model, config, payload["item_ids"].numpy(), popularity, checkpoint=Path(path), device=device,
                   existing=existing, fingerprint=payload.get("fingerprint"), user_ids=user_ids)  # fmt: skip

    @property
    def num_items(self) -> int:
        """Number of videos the model can recommend."""
        return len(self.item_ids) - 1

    def _indices(self, video_ids: Sequence[int]) -> np.ndarray:
        """Item indices of the known videos of a history (original ids)."""
        mapped = self._index.reindex(np.asarray(list(video_ids), dtype=np.int64)).to_numpy()
        return mapped[~np.isnan(mapped)].astype(np.int64)

    def _user_indices(self, user_ids: Sequence[int | None] | None, n: int) -> np.ndarray | None:
        """(n,) user indices of original ``user_ids`` (0 for None or an unknown user), or None when the model
        fuses no user features."""
        if not self.model.user_features:
            return None
        if user_ids is None or self._user_index is None:
            return np.zeros(n, dtype=np.int64)
        if len(user_ids) != n:
            raise ConfigError(f"user_ids has {len(user_ids)} entries for {n} histories")
        keys = np.array([-1 if user is None else int(user) for user in user_ids], dtype=np.int64)  # (n,)
        mapped = self._user_index.reindex(keys).to_numpy()  # NaN for unknown users
        return np.where(np.isnan(mapped), 0, mapped).astype(np.int64)

    def score(
        self, histories: Sequence[Sequence[int]], user_ids: Sequence[int | None] | None = None
    ) -> torch.Tensor:
        """(n, I+1) scores of every item after each history (original video ids, oldest first).

        ``user_ids``: each history's original user id, read by models fusing user features (None: unknown).
        """
        lengths = np.array([len(history) for history in histories], dtype=np.int64)
        flat = np.fromiter(
            (v for history in histories for v in history), dtype=np.int64, count=int(lengths.sum())
        )
        mapped = self._index.reindex(flat).to_numpy()  # NaN for unknown videos
        known = ~np.isnan(mapped)
        if not known.all():
            logger.warning("%d of %d video ids are unknown to the model and ignored (first: %d)",
                           int((~known).sum()), len(flat), int(flat[~known][0]))  # fmt: skip
        rows = np.repeat(np.arange(len(histories)), lengths)[known]
        indptr = np.zeros(len(histories) + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=len(histories)), out=indptr[1:])
        seqs = left_padded_tails(
            indptr, mapped[known].astype(np.int64), np.arange(len(histories)), self.model.maxlen
        )
        scorer = SequentialScorer(self.model, popularity=self.popularity, device=self.device)
        users = self._user_indices(user_ids, len(histories))
        return scorer.score_sequences(seqs, users=users)  # (n, I+1); popularity for empty histories

    def recommend(
        self, video_ids: Sequence[int], k: int = 10, *, exclude_seen: bool = True, user_id: int | None = None
    ) -> Recommendations:
        """The top-``k`` videos after a watch history ``video_ids`` (original ids, oldest first).

        Args:
            video_ids: the history; only the last ``maxlen`` known videos are used.
            k: how many videos to return (at most the number of recommendable videos).
            exclude_seen: never recommend a video of the history.
            user_id: the user's original id, for a model fusing user features (None: an unknown user).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ConfigError(f"k must be a positive integer; got {k!r}")
        scores = self.score([video_ids], None if user_id is None else [user_id])  # (1, I+1)
        rankable = torch.ones_like(scores, dtype=torch.bool)
        rankable[:, 0] = False
        if self.existing is not None:
            rankable[0] = torch.from_numpy(self.existing).to(scores.device)
        if exclude_seen:
            seen = torch.from_numpy(self._indices(video_ids)).to(scores.device)
            rankable[0, seen] = False
        items, valid = top_k_items(scores, rankable, min(int(k), self.num_items))  # (1, k)
        items, values = items[0][valid[0]], scores[0, items[0]][valid[0]]
        return Recommendations(self.item_ids[items.cpu().numpy()], values.float().cpu().numpy())

    def recommend_dataset(
        self,
        data: PreparedData,
        *,
        top_n: int = 10,
        split: str | None = None,
        two_stage: TwoStage | None = None,
    ) -> pd.DataFrame:
        """Top-``top_n`` for every user of ``data`` from their train + valid events of the checkpoint's split.

        ``data`` must be the dataset the model was trained on (fingerprint checked). Columns: user_id,
        rank, video_id, score, fallback (see :func:`sasrec.inference.recommend.recommend`). ``two_stage``: a
        :class:`~sasrec.inference.two_stage.TwoStage` pipeline with a ranker (its retrievers and pair features
        those of the test stage): the lists are its re-ranked candidates instead of this model's scores.
        """
        if self.fingerprint is not None:
            recorded = {
                "fingerprint": self.fingerprint,
                "dataset": self.config.dataset,
                "item_ids": self.item_ids,
            }
            check_fingerprint(recorded, data, self.checkpoint or "model")
        split = split or self.config.split
        if split != self.config.split:
            raise ConfigError(
                f"split={split!r} differs from the checkpoint's split {self.config.split!r}: its input would "
                "include events the model was evaluated on"
            )
        scorer = SequentialScorer(self.model, popularity=self.popularity, device=self.device)
        if two_stage is not None:
            scorer = two_stage.scorer()  # re-ranked candidates (a Scorer too)
        return recommend_for_dataset(
            scorer, data, top_n=top_n, split=split, maxlen=self.model.maxlen, popularity=self.popularity
        )
