"""Top-K ranking metrics on a batch of users: pure torch functions on dense (B, I+1) tensors.

Conventions shared by every function here:

* Column 0 is the padding item and is never rankable.
* The ranked list of a row is the top-K of its scores over its *rankable* items. Ties are broken
  deterministically in favour of the lower item index (see :func:`top_k_items`), so a constant scorer
  ranks items 1, 2, 3, ... and two runs on any device give the same list.
* Binary metrics (NDCG, precision, recall, HR, MRR, MAP) use the relevant targets; they are NaN for a row
  without any relevant target, and the evaluation runner excludes such rows from their means.
* MAP@K divides by min(#relevant, K) (a perfect top-K list scores 1); trec_eval's and ir_measures' AP@K
  divide by #relevant. ``tests/test_ir_measures.py`` checks every binary metric against ir_measures.
* Graded NDCG uses linear gains ``min(watch_ratio, gain_clip)`` of every target (Jarvelin & Kekalainen,
  "Cumulated gain-based evaluation of IR techniques", TOIS 2002, with the log2(rank + 1) discount); its
  ideal DCG orders the row's rankable targets by gain. It is NaN when that ideal is 0 (no target with a
  positive gain).
"""

from __future__ import annotations

import torch

METRIC_NAMES = (
    "ndcg",
    "graded_ndcg",
    "precision",
    "recall",
    "hr",
    "mrr",
    "map",
)
"""Per-user metrics computed by :func:`ranking_metrics` (keys are ``f"{name}@{k}"``)."""


def headline_metrics(k: int) -> list[str]:
    """The metrics every table of the study leads with, at cut-off ``k``."""
    return [f"ndcg@{k}", f"graded_ndcg@{k}", f"precision@{k}", f"recall@{k}", f"hr@{k}"]


def log2_discounts(k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(k,) DCG discounts 1 / log2(rank + 1) for ranks 1..k."""
    ranks = torch.arange(1, k + 1, dtype=torch.float64, device=device)
    return (1.0 / torch.log2(ranks + 1.0)).to(torch.float32)


def ranking_metrics(
    items: torch.Tensor,
    valid: torch.Tensor,
    relevant: torch.Tensor,
    gains: torch.Tensor,
    rankable: torch.Tensor,
    k: int,
) -> dict[str, torch.Tensor]:
    """Per-row metrics at ``k`` of ranked lists, from dense relevance and gain tensors.

    Args:
        items: (B, k') ranked item indices from :func:`top_k_items` (k' = min(k, C)).
        valid: (B, k') bool, False for filler slots.
        relevant: (B, C) float, 1.0 for relevant targets, else 0.
        gains: (B, C) float, graded gain of each target (0 for non-targets).
        rankable: (B, C) bool rankable items (the graded ideal ranks only rankable targets).
        k: the cut-off K (precision divides by K even when fewer than K items were rankable).

    Returns:
        See :func:`metrics_from_hits`.
    """
    k_eff = items.shape[1]
    validf = valid.to(torch.float32)
    hits = torch.gather(relevant, 1, items).to(torch.float32) * validf  # (B, k')
    ranked_gains = torch.gather(gains.to(torch.float32), 1, items) * validf  # (B, k')
    n_rel = relevant.to(torch.float32).sum(dim=1)  # (B,)
    gains = gains.to(torch.float32)
    ideal = torch.topk(torch.where(rankable, gains, torch.zeros_like(gains)), k_eff, dim=1).values  # (B, k')
    return metrics_from_hits(hits, ranked_gains, n_rel, ideal, k)


def metrics_from_hits(
    hits: torch.Tensor,
    ranked_gains: torch.Tensor,
    n_relevant: torch.Tensor,
    ideal_gains: torch.Tensor,
    k: int,
) -> dict[str, torch.Tensor]:
    """Per-row metrics at ``k`` from what each ranked slot holds.

    NDCG: binary gains and the log2(rank + 1) discount, ideal DCG over min(#relevant, K) hits. Precision:
    hits / K. Recall: hits / #relevant. HR: at least one hit. MRR: 1 / rank of the first hit within K.
    MAP@K: the sum of precision@rank over the hit ranks divided by min(#relevant, K), so a perfect list
    scores 1 whatever the number of relevant items (trec_eval's AP@K divides by #relevant instead:
    multiply by min(#relevant, K) / #relevant to convert). Graded NDCG: linear gains, ideal DCG of the
    largest K gains among the rankable targets.

    Args:
        hits: (B, k') 1.0 where the slot holds a relevant target (0 for filler slots).
        ranked_gains: (B, k') graded gain of the item in each slot (0 for filler slots).
        n_relevant: (B,) number of relevant targets of the row.
        ideal_gains: (B, k') the row's largest rankable target gains, in decreasing order (0-padded).
        k: the cut-off K.

    Returns:
        ``{f"{name}@{k}": (B,) float32}`` for every name of :data:`METRIC_NAMES`; binary metrics are NaN for
        rows without relevant targets, graded NDCG is NaN for rows whose ideal DCG is 0.
    """
    k_eff = hits.shape[1]
    device = hits.device
    disc = log2_discounts(k_eff, device=device)  # (k',)
    hits = hits.to(torch.float32)
    n_rel = n_relevant.to(device=device, dtype=torch.float32)  # (B,)
    has_rel = n_rel > 0
    nan = torch.full_like(n_rel, float("nan"))

    n_ideal = torch.clamp(n_rel, max=k_eff).to(torch.int64)  # (B,) min(n_rel, K)
    cum_disc = torch.cat([torch.zeros(1, device=device), torch.cumsum(disc, 0)])  # (k'+1,)
    idcg = cum_disc[n_ideal]  # (B,)
    dcg = (hits * disc).sum(dim=1)
    ndcg = torch.where(has_rel, dcg / idcg.clamp(min=1e-12), nan)

    n_hits = hits.sum(dim=1)
    precision = torch.where(has_rel, n_hits / float(k), nan)
    recall = torch.where(has_rel, n_hits / n_rel.clamp(min=1.0), nan)
    hr = torch.where(has_rel, (n_hits > 0).to(torch.float32), nan)

    ranks = torch.arange(1, k_eff + 1, dtype=torch.float32, device=device)  # (k',)
    reciprocal = (hits / ranks).amax(dim=1) if k_eff else torch.zeros_like(n_rel)  # first hit: largest 1/rank
    mrr = torch.where(has_rel, reciprocal, nan)
    precision_at_rank = torch.cumsum(hits, dim=1) / ranks  # (B, k')
    ap = (precision_at_rank * hits).sum(dim=1) / torch.clamp(n_rel, max=float(k)).clamp(min=1.0)
    map_k = torch.where(has_rel, ap, nan)

    graded_dcg = (ranked_gains.to(torch.float32) * disc).sum(dim=1)
    graded_idcg = (ideal_gains.to(torch.float32) * disc).sum(dim=1)
    graded = torch.where(graded_idcg > 0, graded_dcg / graded_idcg.clamp(min=1e-12), nan)

    return {
        f"ndcg@{k}": ndcg,
        f"graded_ndcg@{k}": graded,
        f"precision@{k}": precision,
        f"recall@{k}": recall,
        f"hr@{k}": hr,
        f"mrr@{k}": mrr,
        f"map@{k}": map_k,
    }
