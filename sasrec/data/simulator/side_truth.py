"""How much of the simulated taste the user features carry: mutual information with the main tag.

``user_features.csv`` is drawn from the real file's marginals, independently of the users' tastes, so its
columns should carry no information about them. The figures here measure it: per column, the plug-in
mutual information (bits) with the user's main tag, the same under random permutations of the column
(the estimator's bias, large for columns with many values), their difference, and for numeric columns the
correlation ratio eta^2. The same figures against the user's big-matrix activity (deciles of rows) follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sasrec.data.simulator.calibration import N_TAGS, SimulationParams
from sasrec.data.simulator.world import _World

#: What the figures of side_ground_truth.json mean (written into the file).
NOTES = {
    "captions": (
        "token shares over the tokens of all captions (hashtags included): own = a vocabulary token of one of "
        "the video's tags, other = of another tag, filler = shared filler tokens and generic hashtags; "
        "main_tag_from_caption_characters: the tag whose characters (tag_characters) are most frequent in "
        "the caption, among captions holding any; *_level_accuracy: the main tag predicted by the most "
        "frequent main tag of each category id (in sample, unknown -124 as one id); chance: the most "
        "frequent main tag"
    ),
    "item_daily": (
        "play_cnt = daily_play_scale x the big-matrix rows of the video dated that day (duplicates "
        "included); like_per_play correlations against the video's mean big-matrix watch_ratio, per video "
        "(all days) and per day with plays; the median date cuts the rows: aggregates before it differ "
        "from those of all rows; author and video_tag accuracies: the majority main tag of the other videos "
        "of the same author / video tag"
    ),
    "user_features": (
        "plug-in mutual information (bits) of each column (numeric columns with more than 10 values in "
        "quantile deciles) with the user's main tag and with the decile of the user's big-matrix rows; the "
        "permutation baseline is the estimator's bias (mean over shuffled columns); excess = mi - baseline; "
        "eta_squared: variance share explained by the target's groups (numeric columns)"
    ),
}
PERMUTATIONS = 20
NUMERIC_BINS = 10  # quantile bins of numeric columns with more distinct values than this


def main_tags(world: _World, params: SimulationParams) -> np.ndarray:
    """(U,) each user's main tag: the largest weight of the taste :func:`world._signal` uses."""
    taste = (1 - params.taste_drift / 2) * world.taste_start + (params.taste_drift / 2) * world.taste_end
    return taste.argmax(axis=1)


def _codes(column: pd.Series) -> np.ndarray:
    """Integer codes of a column: its values, numeric columns with many values as quantile bins; NA a code."""
    if pd.api.types.is_numeric_dtype(column) and column.nunique() > NUMERIC_BINS:
        ranks = column.rank(method="average").to_numpy(dtype=np.float64, na_value=np.nan)
        bins = np.floor((ranks - 1) / len(column) * NUMERIC_BINS)
        return np.where(np.isnan(bins), NUMERIC_BINS, bins).astype(np.int64)
    return pd.factorize(column, use_na_sentinel=False)[0].astype(np.int64)


def _mutual_information(x: np.ndarray, y: np.ndarray, n_y: int) -> float:
    """Plug-in mutual information (bits) of two code arrays."""
    joint = np.bincount(x * n_y + y, minlength=(x.max() + 1) * n_y).reshape(-1, n_y) / len(x)
    px, py = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log2(joint[nonzero] / (px @ py)[nonzero])))


def _eta_squared(values: np.ndarray, groups: np.ndarray) -> float:
    """Correlation ratio: the share of the variance of ``values`` explained by the group means."""
    finite = np.isfinite(values)
    values, groups = values[finite], groups[finite]
    if len(values) < 2 or values.var() == 0:
        return 0.0
    counts = np.bincount(groups)
    means = np.bincount(groups, weights=values) / np.maximum(counts, 1)
    between = np.sum(counts * (means - values.mean()) ** 2)
    return float(between / (values.var() * len(values)))


def _information_table(
    frame: pd.DataFrame, target: np.ndarray, n_target: int, rng: np.random.Generator
) -> dict[str, Any]:
    """Per column of ``frame``: MI with ``target``, its permutation baseline, the excess, eta^2."""
    columns: dict[str, Any] = {}
    for name in frame.columns:  # 30 columns
        column = frame[name]
        codes = _codes(column)
        mi = _mutual_information(codes, target, n_target)
        baseline = np.mean(
            [_mutual_information(rng.permutation(codes), target, n_target) for _ in range(PERMUTATIONS)]
        )
        entry: dict[str, Any] = {
            "distinct_values": int(column.nunique(dropna=False)),
            "mi_bits": round(mi, 5),
            "mi_permutation_baseline_bits": round(float(baseline), 5),
            "excess_mi_bits": round(mi - float(baseline), 5),
        }
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            entry["eta_squared"] = round(_eta_squared(values, target), 5)
        columns[name] = entry
    return columns


def _entropy_bits(codes: np.ndarray) -> float:
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def user_feature_truth(
    world: _World,
    params: SimulationParams,
    features: pd.DataFrame,
    big_user: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Mutual information of every user_features.csv column with the main tag and with the activity."""
    frame = features.drop(columns=["user_id"])
    main = main_tags(world, params)  # (U,)
    rows = np.bincount(big_user, minlength=world.n_users)  # (U,) big-matrix rows per user
    activity = np.floor(pd.Series(rows).rank(method="average").to_numpy() / (world.n_users + 1) * 10).astype(
        np.int64
    )
    return {
        "users": int(world.n_users),
        "drawn_independently_of_taste": True,
        "main_tag_entropy_bits": round(_entropy_bits(main), 4),
        "main_tag_chance": round(float(np.bincount(main, minlength=N_TAGS).max() / world.n_users), 4),
        "permutations": PERMUTATIONS,
        "against_main_tag": _information_table(frame, main, N_TAGS, rng),
        "against_activity_decile": _information_table(frame, activity, 10, rng),
    }
