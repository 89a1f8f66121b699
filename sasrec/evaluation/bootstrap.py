"""Bootstrap confidence intervals over users, and paired comparisons of two models on the same users."""

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


def _aligned_differences(
    per_user_a: pd.DataFrame, per_user_b: pd.DataFrame, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user values of ``metric`` of a and b, aligned by ``user``, over the users both define it for."""
    for name, frame in (("per_user_a", per_user_a), ("per_user_b", per_user_b)):
        for column in ("user", metric):
            if column not in frame.columns:
                raise ConfigError(
                    f"{name} has no column {column!r}; available: {', '.join(map(str, frame.columns))}"
                )
        if frame["user"].duplicated().any():
            raise ConfigError(
                f"{name}: column 'user' must hold each user once; {frame['user'].duplicated().sum()} repeat"
            )
    users_a = per_user_a["user"].to_numpy()
    users_b = per_user_b["user"].to_numpy()
    n_common = len(np.intersect1d(users_a, users_b))
    if n_common != len(users_a) or n_common != len(users_b):
        raise ConfigError(
            f"per_user_a has {len(users_a)} users and per_user_b {len(users_b)}, {n_common} in common; a paired "
            "comparison needs the same users (evaluate both models on the same task)"
        )
    a = per_user_a[metric].to_numpy(dtype=np.float64)
    b = per_user_b.set_index("user")[metric].reindex(users_a).to_numpy(dtype=np.float64)
    both = ~np.isnan(a) & ~np.isnan(b)
    return a[both], b[both]


def paired_difference(
    per_user_a: pd.DataFrame,
    per_user_b: pd.DataFrame,
    metric: str,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_permutations: int = 10_000,
) -> dict[str, Any]:
    """Mean difference a - b of a per-user metric, with a bootstrap interval and a paired permutation test.

    Rows are matched on the ``user`` column and only users for whom both define the metric count (the users
    its means are over). The interval is the percentile bootstrap of the mean difference, resampling users
    with replacement. The p-value is the two-sided paired sign-flip permutation test of a zero mean
    difference: each user's difference keeps or flips its sign (a and b exchanged for that user), and
    the p-value is the share of sign patterns whose |mean| reaches the observed one. All 2**n patterns are
    enumerated when 2**n <= ``n_permutations``; otherwise ``n_permutations`` random patterns are drawn and
    p = (1 + count) / (n_permutations + 1), the observed pattern counted once (Phipson & Smyth, "Permutation
    p-values should never be zero", 2010), so its minimum is 1 / (n_permutations + 1). Vectorised.

    Args:
        per_user_a: per-user table of model a (``EvalResult.per_user``): columns ``user`` and ``metric``.
        per_user_b: the same for model b, on the same users.
        metric: column to compare, e.g. ``ndcg@10``.
        n_boot: bootstrap resamples.
        alpha: 1 - the interval's level.
        seed: seed of the resamples and random sign patterns.
        n_permutations: random sign patterns (when they cannot all be enumerated).

    Returns:
        {"metric", "users", "mean_a", "mean_b", "difference", "low", "high", "p_value", "exact"}; NaN values
        (and ``users`` 0) when no user defines the metric in both.

    Raises:
        ConfigError: a missing column, repeated users, different user sets, or an invalid parameter.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1); got {alpha!r}")
    if int(n_boot) < 1:
        raise ConfigError(f"n_boot must be positive; got {n_boot!r}")
    if int(n_permutations) < 1:
        raise ConfigError(f"n_permutations must be positive; got {n_permutations!r}")
    a, b = _aligned_differences(per_user_a, per_user_b, metric)
    d = a - b  # (n,) paired differences
    n = len(d)
    out: dict[str, Any] = {"metric": metric, "users": int(n)}
    if n == 0:
        nan = float("nan")
        return {**out, "mean_a": nan, "mean_b": nan, "difference": nan, "low": nan, "high": nan,
                "p_value": nan, "exact": False}  # fmt: skip
    rng = np.random.default_rng(seed)
    chunk = max(1, 20_000_000 // n)
    boot = np.empty(int(n_boot), dtype=np.float64)
    for lo in range(0, int(n_boot), chunk):
        hi = min(lo + chunk, int(n_boot))
        boot[lo:hi] = d[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)  # (b,) resampled means
    observed = abs(float(d.sum()))
    tolerance = 1e-12 * float(np.abs(d).sum())  # sums equal in exact arithmetic count as reaching it
    exact = n < 63 and 2**n <= int(n_permutations)
    if exact:
        patterns = np.arange(2**n, dtype=np.int64)[:, None]  # (2^n, 1)
        signs = 1.0 - 2.0 * ((patterns >> np.arange(n)[None, :]) & 1)  # (2^n, n) every sign pattern
        p_value = float(np.mean(np.abs(signs @ d) >= observed - tolerance))
    else:
        count = 0
        for lo in range(0, int(n_permutations), chunk):
            hi = min(lo + chunk, int(n_permutations))
            bits = np.unpackbits(rng.integers(0, 256, size=(hi - lo, (n + 7) // 8), dtype=np.uint8), axis=1)
            signs = 1.0 - 2.0 * bits[:, :n]  # (b, n) random sign patterns
            count += int(np.count_nonzero(np.abs(signs @ d) >= observed - tolerance))
        p_value = (1 + count) / (int(n_permutations) + 1)
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return {
        **out,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "difference": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "p_value": p_value,
        "exact": bool(exact),
    }


def paired_table(
    per_user: dict[str, pd.DataFrame],
    reference: str,
    metrics: Sequence[str],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    n_permutations: int = 10_000,
) -> pd.DataFrame:
    """Every model against ``reference`` on each metric: :func:`paired_difference` of model - reference.

    Args:
        per_user: model name -> per-user table of the same task and protocol.
        reference: the model every other one is compared with.
        metrics: metric columns.
        n_boot, alpha, seed, n_permutations: as :func:`paired_difference`.

    Returns:
        One row per (model, metric): model, reference, metric, users, mean_model, mean_reference,
        difference, low, high, p_value, p_holm (Holm's step-down adjustment over the table's rows, for
        reading several comparisons at once), exact.
    """
    if reference not in per_user:
        raise ConfigError(f"reference model {reference!r} is not among {', '.join(map(str, per_user))}")
    rows = []
    for model, frame in per_user.items():
        if model == reference:
            continue
        for metric in metrics:
            result = paired_difference(
                frame, per_user[reference], metric, n_boot=n_boot, alpha=alpha, seed=seed,
                n_permutations=n_permutations,
            )  # fmt: skip
            rows.append({"model": model, "reference": reference, "metric": metric, "users": result["users"],
                         "mean_model": result["mean_a"], "mean_reference": result["mean_b"],
                         **{key: result[key] for key in ("difference", "low", "high", "p_value", "exact")}})  # fmt: skip
    columns = ["model", "reference", "metric", "users", "mean_model", "mean_reference", "difference", "low",
               "high", "p_value", "p_holm", "exact"]  # fmt: skip
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "p_holm"])
    table.insert(columns.index("p_holm"), "p_holm", _holm(table["p_value"].to_numpy(dtype=np.float64)))
    return table


def _holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted)."""
    adjusted = np.full(len(p_values), np.nan)
    defined = np.flatnonzero(~np.isnan(p_values))
    order = defined[np.argsort(p_values[defined], kind="stable")]
    m = len(order)
    steps = (m - np.arange(m)) * p_values[order]  # (m - i) * p_(i)
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted
