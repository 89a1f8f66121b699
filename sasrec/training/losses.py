"""Training losses: BCE with one negative, full cross-entropy in chunks, sampled softmax, gBCE.

Each loss takes optional per-position weights (``position_weight``): the ``graded`` training target's
``sum(w * loss) / N`` over the N loss positions (:mod:`sasrec.models.targets`); without them every loss is
computed exactly as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------ losses
def bce_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    valid: torch.Tensor,
    neg_weight: torch.Tensor | None = None,
    position_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference SASRec loss: mean over valid positions of -log s(pos) plus (weighted) -log(1 - s(neg)).

    Equals ``BCEWithLogits(pos, 1) + BCEWithLogits(neg, 0)`` averaged over the non-padding positions, as
    in Kang & McAuley; ``neg_weight`` (same shape) scales each negative term (``weighted_dislike``),
    ``position_weight`` (same shape) each position's whole term (``graded``), still divided by the number
    of valid positions.
    """
    n_valid = valid.sum().clamp(min=1)
    neg_terms = F.softplus(neg_logits)
    if neg_weight is not None:
        neg_terms = neg_terms * neg_weight
    per_position = F.softplus(-pos_logits) + neg_terms  # (B, T)
    if position_weight is not None:
        per_position = per_position * position_weight  # (B, T)
    return (per_position * valid).sum() / n_valid


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over all items except padding, never materialising all logits.

    Forward keeps only each row's log-sum-exp; backward recomputes the logits chunk by chunk. With
    ``row_weight`` (N,), row n's term is scaled by ``row_weight[n]`` (the sum is still divided by N).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
        row_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        n = hidden.shape[0]
        lse = torch.empty(n, dtype=hidden.dtype, device=hidden.device)
        target_logits = (hidden * weight[targets]).sum(-1)  # (N,)
        for start in range(0, n, chunk_size):
            logits = hidden[start : start + chunk_size] @ weight.T  # (c, I+1)
            logits[:, 0] = float("-inf")
            lse[start : start + chunk_size] = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.chunk_size = chunk_size  # type: ignore[attr-defined]
        ctx.row_weight = row_weight  # type: ignore[attr-defined]
        if row_weight is not None:
            return ((lse - target_logits) * row_weight).sum() / max(n, 1)
        return (lse - target_logits).sum() / max(n, 1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, targets, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        chunk_size: int = ctx.chunk_size  # type: ignore[attr-defined]
        row_weight: torch.Tensor | None = ctx.row_weight  # type: ignore[attr-defined]
        n = hidden.shape[0]
        scale = grad_out / max(n, 1)
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        for start in range(0, n, chunk_size):
            h = hidden[start : start + chunk_size]  # (c, d)
            logits = h @ weight.T  # (c, I+1)
            logits[:, 0] = float("-inf")
            probs = torch.exp(logits - lse[start : start + chunk_size, None])  # (c, I+1)
            rows = torch.arange(h.shape[0], device=h.device)
            probs[rows, targets[start : start + chunk_size]] -= 1.0
            if row_weight is not None:
                probs *= (scale * row_weight[start : start + chunk_size])[:, None]  # (c, I+1)
            else:
                probs *= scale
            grad_hidden[start : start + chunk_size] = probs @ weight  # (c, d)
            grad_weight.addmm_(probs.T, h)  # (I+1, d)
        return grad_hidden, grad_weight, None, None, None


#: Above this many catalogue items per gathered item, gathered logits gather embeddings instead of computing
#: every item's logit (dense products of a chunk with the whole catalogue are then the dearer way).
DENSE_LOGITS_RATIO = 64


class _GatheredLogits(torch.autograd.Function):
    """Dot products of each row's hidden state with its own K items, chunk by chunk, storing only the indices.

    ``einsum(hidden[items])`` through autograd would keep the (N, K, d) item embeddings for backward (1.3 GB at
    N = 25,600 positions, K = 256, d = 50). Here each chunk of rows is computed in one of two exact ways: for
    a catalogue of at most ``DENSE_LOGITS_RATIO * K`` items, the chunk's logits of every item (one matrix
    product, then a gather; backward: a scatter and two matrix products); otherwise by gathering the K item
    embeddings of each row (memory-bound, but independent of the catalogue size).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        items: torch.Tensor,
        chunk_size: int,
    ) -> torch.Tensor:
        dense = weight.shape[0] <= DENSE_LOGITS_RATIO * max(items.shape[1], 1)
        out = torch.empty(items.shape, dtype=hidden.dtype, device=hidden.device)  # (N, K)
        for start in range(0, items.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            if dense:
                out[rows] = (hidden[rows] @ weight.T).gather(1, items[rows])  # (c, I+1) -> (c, K)
            else:
                out[rows] = torch.einsum("nd,nkd->nk", hidden[rows], weight[items[rows]])
        ctx.save_for_backward(hidden, weight, items)
        ctx.chunk_size, ctx.dense = chunk_size, dense  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, items = ctx.saved_tensors  # type: ignore[attr-defined]
        chunk_size: int = ctx.chunk_size  # type: ignore[attr-defined]
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        for start in range(0, items.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            grad = grad_out[rows]  # (c, K)
            if ctx.dense:  # type: ignore[attr-defined]
                full = torch.zeros(grad.shape[0], weight.shape[0], dtype=grad.dtype, device=grad.device)
                full.scatter_add_(1, items[rows], grad)  # (c, I+1): repeated items accumulate
                grad_hidden[rows] = full @ weight  # (c, d)
                grad_weight.addmm_(full.T, hidden[rows])  # (I+1, d)
            else:
                grad_hidden[rows] = torch.einsum("nk,nkd->nd", grad, weight[items[rows]])  # (c, d)
                contributions = grad[..., None] * hidden[rows, None, :]  # (c, K, d)
                grad_weight.index_add_(0, items[rows].reshape(-1), contributions.reshape(-1, hidden.shape[1]))
        return grad_hidden, grad_weight, None, None


def gathered_logits(
    hidden: torch.Tensor, weight: torch.Tensor, items: torch.Tensor, chunk_size: int = 2048
) -> torch.Tensor:
    """(N, K) logits ``hidden[n] . weight[items[n, k]]`` of each row's own items, memory O(chunk x max(K, I) ).

    Used for negatives drawn per position (gSASRec's k negatives per positive, Petrov & Macdonald, RecSys 2023).
    """
    return _GatheredLogits.apply(hidden, weight, items, int(chunk_size))


def chunked_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 2048,
    position_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Full cross-entropy of ``targets`` (N,) given ``hidden`` (N, d) and item embeddings (I+1, d).

    Klenitskiy & Vasilev (RecSys 2023): softmax over every item; column 0 (padding) is excluded. Memory is
    O(chunk_size x I) instead of O(N x I). ``position_weight`` (N,) scales each row's term (``graded``):
    ``sum(w * ce) / N``.
    """
    if position_weight is None:
        return _ChunkedCrossEntropy.apply(hidden, weight, targets, int(chunk_size))
    row_weight = position_weight.detach().to(hidden.dtype)  # (N,)
    return _ChunkedCrossEntropy.apply(hidden, weight, targets, int(chunk_size), row_weight)


def sampled_softmax_loss(
    pos_logits: torch.Tensor, neg_logits: torch.Tensor, position_weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of -log softmax([pos, negs])[0] over rows: ``pos_logits`` (N,), ``neg_logits`` (N, K).

    ``position_weight`` (N,) scales each row's term: ``sum(w * loss) / N``.
    """
    logits = torch.cat([pos_logits.unsqueeze(-1), neg_logits], dim=-1)  # (N, K+1)
    per_row = torch.logsumexp(logits, dim=-1) - pos_logits  # (N,)
    if position_weight is None:
        return per_row.mean()
    return (per_row * position_weight).sum() / max(per_row.numel(), 1)


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = negatives / (items - 1)."""
    alpha = num_negatives / max(num_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    beta: float,
    position_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalised BCE (Petrov & Macdonald, RecSys 2023): -log s(pos)^beta - sum log(1 - s(neg)).

    Averaged over the N x (K + 1) logits as gSASRec's ``BCEWithLogitsLoss`` over the transformed positive
    logit and the negatives; computed in the stable form beta * softplus(-pos) + softplus(neg).
    ``position_weight`` (N,) scales each row's K + 1 terms (the denominator stays N x (K + 1)).
    """
    pos_terms = beta * F.softplus(-pos_logits)  # (N,)
    neg_terms = F.softplus(neg_logits).sum(-1)  # (N,)
    per_row = pos_terms + neg_terms  # (N,)
    if position_weight is not None:
        per_row = per_row * position_weight
    return per_row.sum() / (pos_logits.numel() * (neg_logits.shape[-1] + 1))
