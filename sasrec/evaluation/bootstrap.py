"""Bootstrap confidence intervals over users."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sasrec.errors import ConfigError


def bootstrap_ci(
    per_user: pd.DataFrame,
    metrics: Sequence[str],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Percentile bootstrap intervals of metric means, resampling users with replacement.

    The same resampled user sets serve every metric (paired intervals). A resample's mean of a metric
    averages the metric over the resampled users where it is defined (NaN users are left out, as in the
    summary). Vectorised: an (n_boot, n_users) index matrix, processed in chunks of boots.

    Returns:
        DataFrame with columns metric, mean, low, high (one row per metric).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha!r}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be positive; got {n_boot!r}")
    missing = [m for m in metrics if m not in per_user.columns]
    if missing:
        raise ConfigError(
            f"per_user has no column {missing[0]!r}; available: {', '.join(map(str, per_user.columns))}"
        )
    n_users = len(per_user)
    rows: list[dict[str, Any]] = []
    if n_users == 0:
        return pd.DataFrame(
            [{"metric": m, "mean": np.nan, "low": np.nan, "high": np.nan} for m in metrics],
            columns=["metric", "mean", "low", "high"],
        )
    values = per_user[list(metrics)].to_numpy(dtype=np.float64)  # (n, M)
    defined = ~np.isnan(values)
    filled = np.where(defined, values, 0.0)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 20_000_000 // max(n_users, 1)))
    boot_means = np.empty((n_boot, len(metrics)), dtype=np.float64)
    for lo in range(0, n_boot, chunk):
        hi = min(lo + chunk, n_boot)
        idx = rng.integers(0, n_users, size=(hi - lo, n_users))  # (b, n)
        flat = (idx + (np.arange(hi - lo) * n_users)[:, None]).ravel()
        counts = np.bincount(flat, minlength=(hi - lo) * n_users).reshape(hi - lo, n_users).astype(np.float64)
        sums = counts @ filled  # (b, M)
        n_defined = counts @ defined.astype(np.float64)  # (b, M)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot_means[lo:hi] = sums / n_defined
    means = np.where(defined.any(axis=0), filled.sum(axis=0) / np.maximum(defined.sum(axis=0), 1), np.nan)
    with warnings.catch_warnings():  # a metric defined for no user has an all-NaN column
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(boot_means, alpha / 2, axis=0)
        high = np.nanquantile(boot_means, 1 - alpha / 2, axis=0)
    for j, metric in enumerate(metrics):
        rows.append({"metric": metric, "mean": means[j], "low": low[j], "high": high[j]})
    return pd.DataFrame(rows, columns=["metric", "mean", "low", "high"])
