"""A learning-to-rank second stage: LightGBM's LambdaRank over (user, candidate) feature rows.

LambdaMART (Burges, "From RankNet to LambdaRank to LambdaMART: An Overview", MSR-TR-2010-82) as LightGBM
implements it (Ke et al., "LightGBM: A Highly Efficient Gradient Boosting Decision Tree", NeurIPS 2017):
one query group per user, graded labels (:func:`graded_labels`), NDCG-driven gradients. The ranker is seeded
and deterministic (``deterministic=True``, ``num_threads`` fixed). A saved ranker (sealed JSON, written
atomically) records its feature columns, the schema and digest of the feature table the columns were built
from; :meth:`LightGBMRanker.load` refuses, in one line, a table or columns other than those.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sasrec import integrity
from sasrec.errors import CheckpointMismatchError, ConfigError, IntegrityError, MissingDataError
from sasrec.paths import atomic_write_text

RANKER_FORMAT = "sasrec-ranker/1"
#: Label levels: not a target, watched, liked (watch_ratio > like threshold), relevant (> relevance threshold).
LABEL_LEVELS = ("not_watched", "watched", "liked", "relevant")
DEFAULTS: dict[str, Any] = {
    "num_leaves": 31,
    "learning_rate": 0.05,
    "n_estimators": 200,
    "min_child_samples": 20,
    "feature_fraction": 0.9,
    "lambdarank_truncation_level": 20,
    "num_threads": 2,
    "seed": 0,
}


def graded_labels(
    is_target: np.ndarray, watch_ratio: np.ndarray, *, like_threshold: float, relevance_threshold: float
) -> np.ndarray:
    """(n,) int32 labels 0..3 of candidate rows: 0 not a target, 1 watched, 2 liked, 3 relevant.

    ``liked``: ``watch_ratio > like_threshold`` (0.7 in preparation); ``relevant``: ``watch_ratio >
    relevance_threshold`` (2.0). A target without a watch_ratio (NaN) counts as watched.
    """
    wr = np.asarray(watch_ratio, dtype=np.float64)
    target = np.asarray(is_target, dtype=bool)
    with np.errstate(invalid="ignore"):
        labels = 1 + (wr > like_threshold).astype(np.int32) + (wr > relevance_threshold).astype(np.int32)
    return np.where(target, labels, 0).astype(np.int32)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults updated with ``params`` (unknown keys refused, naming the section)."""
    given = dict(params or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(
            f"two_stage.ranker has no parameter {unknown[0]!r}; accepted: {', '.join(DEFAULTS)}"
        )
    merged = {**DEFAULTS, **given}
    for key in (
        "num_leaves",
        "n_estimators",
        "min_child_samples",
        "num_threads",
        "lambdarank_truncation_level",
    ):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"two_stage.ranker.{key} must be a positive integer; got {value!r}")
    if not 0 < float(merged["learning_rate"]) <= 1 or not 0 < float(merged["feature_fraction"]) <= 1:
        raise ConfigError("two_stage.ranker.learning_rate and feature_fraction must lie in (0, 1]")
    return merged


class LightGBMRanker:
    """LambdaRank gradient-boosted trees over feature rows grouped per user.

    Args:
        params: any of :data:`DEFAULTS` (``n_estimators`` boosting rounds, ``num_threads``, ``seed``...).

    Attributes:
        columns: feature names, in the order of the matrix columns.
        feature_schema: what the columns were built from (the feature table's schema, or None).
        feature_digest: the feature table's digest, or None (no table).
        fit_seconds: wall time of :meth:`fit`.
    """

    def __init__(self, params: Mapping[str, Any] | None = None) -> None:
        self.params = _params(params)
        self.booster: Any = None
        self.columns: tuple[str, ...] = ()
        self.feature_schema: dict[str, Any] | None = None
        self.feature_digest: str | None = None
        self.fit_seconds = 0.0

    def _lgb_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "label_gain": [0.0, 1.0, 3.0, 7.0],  # 2^label - 1 over the four levels
            "lambdarank_truncation_level": int(p["lambdarank_truncation_level"]),
            "num_leaves": int(p["num_leaves"]),
            "learning_rate": float(p["learning_rate"]),
            "min_data_in_leaf": int(p["min_child_samples"]),
            "feature_fraction": float(p["feature_fraction"]),
            "feature_fraction_seed": int(p["seed"]),
            "seed": int(p["seed"]),
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": int(p["num_threads"]),
            "verbosity": -1,
        }

    def fit(
        self,
        features: np.ndarray,
        labels: np.ndarray,
        groups: np.ndarray,
        columns: Sequence[str],
        *,
        feature_schema: dict[str, Any] | None = None,
        feature_digest: str | None = None,
    ) -> LightGBMRanker:
        """Fit on (n, F) ``features`` whose rows are grouped per user (``groups``: rows per user, in order).

        Raises:
            ConfigError: shapes that disagree, or labels outside 0..3.
        """
        import time

        import lightgbm as lgb

        x = np.asarray(features, dtype=np.float32)
        y = np.asarray(labels, dtype=np.int32)
        g = np.asarray(groups, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != len(columns) or len(y) != len(x) or int(g.sum()) != len(x):
            raise ConfigError(
                f"ranker fit: features {x.shape}, {len(columns)} columns, {len(y)} labels and groups summing to "
                f"{int(g.sum())} must agree (rows = labels = sum of groups, columns = feature names)"
            )
        if len(y) and (y.min() < 0 or y.max() >= len(LABEL_LEVELS)):
            raise ConfigError(
                f"ranker labels must lie in 0..{len(LABEL_LEVELS) - 1}; got {y.min()}..{y.max()}"
            )
        started = time.perf_counter()
        dataset = lgb.Dataset(x, label=y, group=g, feature_name=list(columns), free_raw_data=True)
        self.booster = lgb.train(
            self._lgb_params(), dataset, num_boost_round=int(self.params["n_estimators"])
        )
        self.fit_seconds = time.perf_counter() - started
        self.columns = tuple(columns)
        self.feature_schema = feature_schema
        self.feature_digest = feature_digest
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(n,) float32 scores of feature rows (higher ranks first)."""
        if self.booster is None:
            raise ConfigError("the ranker must be fitted (or loaded) before it predicts")
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise ConfigError(f"ranker expects {len(self.columns)} feature columns; got shape {x.shape}")
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(
            self.booster.predict(x, num_threads=int(self.params["num_threads"])), dtype=np.float32
        )

    def importance(self) -> pd.DataFrame:
        """feature, gain, split (total gain and number of splits of every column), by decreasing gain."""
        if self.booster is None:
            raise ConfigError("the ranker must be fitted (or loaded) before its feature importance is read")
        frame = pd.DataFrame(
            {
                "feature": list(self.columns),
                "gain": self.booster.feature_importance(importance_type="gain").astype(np.float64),
                "split": self.booster.feature_importance(importance_type="split").astype(np.int64),
            }
        )
        return frame.sort_values(["gain", "feature"], ascending=[False, True], kind="stable").reset_index(
            drop=True
        )

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> Path:
        """Write the ranker as one sealed JSON file (atomic): the model text, columns, schema and digest."""
        if self.booster is None:
            raise ConfigError("the ranker must be fitted before it is saved")
        payload = {
            "format": RANKER_FORMAT,
            "params": self.params,
            "columns": list(self.columns),
            "feature_schema": self.feature_schema,
            "feature_digest": self.feature_digest,
            "model": self.booster.model_to_string(),
        }
        made_by = {"columns": len(self.columns), "feature_digest": self.feature_digest}
        return atomic_write_text(path, integrity.dumps_sealed(payload, made_by, indent=None), "ranker")

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        feature_digest: str | None = None,
        columns: Sequence[str] | None = None,
    ) -> LightGBMRanker:
        """Read a ranker written by :meth:`save`, checked against the features it will be given.

        Args:
            path: the ranker file.
            feature_digest: the digest of the feature table the caller builds features from (checked when
                given; pass ``None`` with a table only for a ranker saved without one).
            columns: the feature columns the caller builds (checked when given).

        Raises:
            MissingDataError: no such file.
            IntegrityError: a damaged file or one of another format.
            CheckpointMismatchError: another feature table or other columns (one line).
        """
        import lightgbm as lgb

        path = Path(path)
        if not path.is_file():
            raise MissingDataError(f"ranker file {path} does not exist")
        payload = integrity.read_sealed_json(path, f"ranker {path}")
        if payload.get("format") != RANKER_FORMAT:
            raise IntegrityError(f"ranker {path}: format {payload.get('format')!r}, expected {RANKER_FORMAT}")
        recorded = payload.get("feature_digest")
        if feature_digest is not None and recorded != feature_digest:
            raise CheckpointMismatchError(
                f"ranker {path} was trained on feature table {str(recorded)[:12]}, not {feature_digest[:12]}: "
                "another feature schema; retrain the ranker on this table"
            )
        if columns is not None and list(columns) != list(payload["columns"]):
            missing = sorted(set(payload["columns"]) - set(columns))
            extra = sorted(set(columns) - set(payload["columns"]))
            raise CheckpointMismatchError(
                f"ranker {path} was trained on {len(payload['columns'])} other feature columns (missing "
                f"{missing[:3]}, new {extra[:3]}): another feature schema; retrain the ranker"
            )
        ranker = cls(payload["params"])
        ranker.booster = lgb.Booster(model_str=payload["model"])
        ranker.columns = tuple(payload["columns"])
        ranker.feature_schema = payload.get("feature_schema")
        ranker.feature_digest = recorded
        return ranker
