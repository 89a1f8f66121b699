"""Training targets: which fitted events a model learns to predict (``target``), as per-event weights.

Every model, sequential or baseline, takes the same option:

* ``views`` (the default): every view is a positive, as before (no weights: the original code path).
* ``liked``: views with ``watch_ratio > like_threshold`` (the events' ``liked`` flag, set by the
  preparation with its ``like_threshold``, recorded in ``PreparedData.meta``; 0.7 by default).
* ``relevant``: views with ``watch_ratio > relevance_threshold`` (the events' ``relevant`` flag, set by the
  preparation with its ``relevance_threshold``, 2.0 by default: the rule the evaluation's ``threshold``
  relevance applies with the dataset's threshold).
* ``graded``: every view, weighted by its watch_ratio clipped to :data:`GRADED_CLIP` ([0, 5]: KuaiRec's
  long tail of replays, up to watch_ratio ~500, would otherwise let a few events dominate) and divided by
  the mean clipped value over the fitted events, so that the mean weight of the fitted events is 1 and the
  loss keeps the scale of ``views``.

Models only ever change what they fit: a sequential model's input sequences (and a baseline's scoring
history) stay every view, the history the user was shown. The loop turns the weights into a per-position
mask (``liked``, ``relevant``) or per-position weights (``graded``) of the loss
(:func:`sasrec.training.loop.batch_loss_terms`); baselines fit their matrix or counts on the target events
(:func:`target_matrix`, :func:`target_counts`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from sasrec.data.contracts import PreparedData
from sasrec.errors import ConfigError

TARGETS = ("views", "liked", "relevant", "graded")
"""The training targets (see the module docstring)."""
MASK_TARGETS = ("liked", "relevant")
"""Targets that keep a subset of the fitted events (weights 0 or 1); ``graded`` weights them."""
GRADED_CLIP = (0.0, 5.0)
"""The range watch_ratio is clipped to before it weights an event under ``graded``."""


def check_target(target: object) -> str:
    """``target`` itself; a one-line :class:`ConfigError` naming ``target`` and the allowed values otherwise."""
    if not isinstance(target, str) or target not in TARGETS:
        raise ConfigError(f"target must be one of {', '.join(TARGETS)}; got {target!r}")
    return target


def target_rule(data: PreparedData, target: str) -> str:
    """The rule of ``target`` in words, with ``data``'s thresholds (``watch_ratio > 0.7``)."""
    check_target(target)
    if target == "liked":
        return f"watch_ratio > {float(data.meta.get('like_threshold', 0.7))}"
    if target == "relevant":
        return f"watch_ratio > {float(data.meta.get('relevance_threshold', 2.0))}"
    if target == "graded":
        low, high = GRADED_CLIP
        return f"every view, weight clip(watch_ratio, {low}, {high}) / mean over the fitted events"
    return "every view"


def event_weights(data: PreparedData, mask: np.ndarray, target: str) -> np.ndarray | None:
    """(len(events),) float32 target weight of each event (0 outside ``mask``), or None under ``views``.

    ``liked`` and ``relevant`` give 1.0 to the masked events with the flag and 0.0 elsewhere; ``graded`` gives
    every masked event ``clip(watch_ratio, 0, 5)`` divided by the mean of that over the masked events.

    Raises:
        ConfigError: ``target`` is unknown, leaves no fitted event, or is ``graded`` on events without
            watch_ratio (SASRec text files).
    """
    check_target(target)
    if target == "views":
        return None
    mask = np.asarray(mask, dtype=bool)
    if target in MASK_TARGETS:
        weights = (mask & data.events[target].to_numpy(dtype=bool)).astype(np.float32)  # (n,)
    else:
        ratio = data.events["watch_ratio"].to_numpy(dtype=np.float64)
        missing = int(np.isnan(ratio[mask]).sum())
        if missing:
            raise ConfigError(
                f"target='graded' weights events by watch_ratio, but {missing} fitted events of {data.name} have "
                "none (SASRec text data): choose target views, liked or relevant"
            )
        clipped = np.where(mask, np.clip(np.nan_to_num(ratio), *GRADED_CLIP), 0.0)  # (n,)
        total = clipped.sum()
        mean = total / max(int(mask.sum()), 1)
        weights = (clipped / mean if mean > 0 else clipped).astype(np.float32)
    if not np.any(weights > 0):
        raise ConfigError(
            f"target={target!r} ({target_rule(data, target)}) leaves no fitted event of {data.name} "
            f"({int(mask.sum())} fitted events): choose another target"
        )
    return weights


def describe_target(data: PreparedData, mask: np.ndarray, target: str) -> dict[str, Any]:
    """What a run records about its target next to its fitted events; empty under ``views`` (the events are
    the fitted events themselves, described as before)."""
    weights = event_weights(data, mask, target)
    if weights is None:
        return {}
    return {
        "target": target,
        "target_rule": target_rule(data, target),
        "target_events": int((weights > 0).sum()),
    }


def target_counts(data: PreparedData, mask: np.ndarray, target: str) -> np.ndarray:
    """(I+1,) float64 target events per item among the ``mask``ed events (``graded``: the sum of weights)."""
    weights = event_weights(data, mask, target)
    if weights is None:
        return data.item_counts(mask)
    items = data.events["item"].to_numpy()
    return np.bincount(items, weights=weights.astype(np.float64), minlength=data.num_items + 1)


def target_matrix(data: PreparedData, mask: np.ndarray, target: str) -> sp.csr_matrix:
    """(U+1, I+1) float32 CSR of the target events among the ``mask``ed ones.

    ``views``: :meth:`PreparedData.interaction_matrix` (1 per distinct pair); ``liked``/``relevant``: 1 per
    pair with at least one target event; ``graded``: the pair's largest weight (repeat views keep the max, as
    the evaluation's targets), pairs of weight 0 left out.
    """
    weights = event_weights(data, mask, target)
    if weights is None:
        return data.interaction_matrix(mask)
    if target in MASK_TARGETS:
        return data.interaction_matrix(weights > 0)
    keep = weights > 0
    users = data.events["user"].to_numpy()[keep].astype(np.int64)
    items = data.events["item"].to_numpy()[keep].astype(np.int64)
    values = weights[keep]
    n_cols = data.num_items + 1
    keys = users * n_cols + items  # (m,)
    order = np.lexsort((values, keys))  # by pair, then by value: each pair's last entry is its max
    keys, values = keys[order], values[order]
    last = np.ones(len(keys), dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    keys, values = keys[last], values[last]
    return sp.csr_matrix(
        (values.astype(np.float32), (keys // n_cols, keys % n_cols)), shape=(data.num_users + 1, n_cols)
    )
