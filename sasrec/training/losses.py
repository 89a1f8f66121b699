"""Training losses: BCE with one negative, full cross-entropy in chunks, sampled softmax, gBCE.

Each loss takes optional per-position weights (``position_weight``): the ``graded`` training target's
``sum(w * loss) / N`` over the N loss positions (:mod:`sasrec.models.targets`); without them every loss is
computed exactly as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sasrec.errors import ConfigError


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


#: On the CPU, the cross-entropy's (c, I+1) logits buffer is kept within this many bytes (half the L3 cache of
#: these machines) when ``chunk_size`` would allow more: 256-512 rows of a 10,729-item catalogue ran the loss
#: 1.4x faster than 2,048 (the softmax passes then read the buffer from cache), and chunks not much smaller
#: keep the number of parallel regions, costly on a busy 2-core machine, low (``benchmarks/bench_ce.py``).
CE_CPU_CHUNK_BYTES = 16 * 2**20


def chunk_rows(chunk_size: int, num_classes: int, dtype: torch.dtype, device: torch.device) -> int:
    """Rows per cross-entropy chunk: ``chunk_size`` (the memory bound), on the CPU at most what fits
    :data:`CE_CPU_CHUNK_BYTES` (never fewer than 16 rows)."""
    if device.type != "cpu":
        return int(chunk_size)
    fitting = CE_CPU_CHUNK_BYTES // max(num_classes * torch.finfo(dtype).bits // 8, 1)
    return int(min(int(chunk_size), max(16, fitting)))


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over all items except padding, with its gradients computed in the forward pass.

    The loss is a scalar, so its gradients are known up to the incoming scale when the logits are: each chunk
    of rows computes its logits once into one reused (c, I+1) buffer, turns them in place into
    log-probabilities (the loss terms) and then probabilities, and folds them into both gradients by two more
    matrix products (the fused linear cross-entropy of Liger Kernel, Hsu et al. 2024). Backward only scales
    the stored (N, d) and (I+1, d) gradients: three matrix products in all, never an (N, I+1) tensor, no
    recomputation. With ``row_weight`` (N,), row n's term is scaled by ``row_weight[n]`` (the sum is still
    divided by N).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
        row_weight: torch.Tensor | None = None,
        need_grads: tuple[bool, bool] = (True, True),
    ) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):  # the products below write into buffers
            loss, grad_hidden, grad_weight = _cross_entropy_and_grads(
                hidden, weight, targets, chunk_size, row_weight, need_grads
            )
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        grad_hidden, grad_weight = ctx.saved_tensors  # type: ignore[attr-defined]
        hidden_grad = grad_hidden * grad_out if ctx.needs_input_grad[0] else None  # type: ignore[attr-defined]
        weight_grad = grad_weight * grad_out if ctx.needs_input_grad[1] else None  # type: ignore[attr-defined]
        return hidden_grad, weight_grad, None, None, None, None


def _cross_entropy_and_grads(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int,
    row_weight: torch.Tensor | None,
    need_grads: tuple[bool, bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, d loss / d hidden (N, d), d loss / d weight (I+1, d)); an ungradiented input's is empty."""
    n = hidden.shape[0]
    need_hidden, need_weight = need_grads
    dtype = torch.promote_types(hidden.dtype, weight.dtype)
    hidden_c, weight_c = hidden.detach().to(dtype), weight.detach().to(dtype)  # (N, d), (I+1, d)
    # d loss_n / d logits_n = scale_n (softmax_n - onehot(target_n)); scale_n = w_n / N
    scale = torch.full((n,), 1.0 / max(n, 1), dtype=dtype, device=hidden.device)  # (N,)
    if row_weight is not None:
        scale = scale * row_weight.to(dtype)
    terms = torch.empty(n, dtype=dtype, device=hidden.device)  # (N,) -log p(target)
    grad_hidden = torch.empty_like(hidden_c) if need_hidden else hidden_c.new_empty(0)
    grad_weight = torch.zeros_like(weight_c) if need_weight else weight_c.new_empty(0)
    rows = max(1, min(chunk_rows(chunk_size, weight_c.shape[0], dtype, hidden.device), n))
    buffer = torch.empty(rows, weight_c.shape[0], dtype=dtype, device=hidden.device)  # (c, I+1), reused
    offsets = torch.arange(rows, device=hidden.device)  # (c,)
    for start in range(0, n, rows):
        h = hidden_c[start : start + rows]  # (c, d)
        c, chunk_targets = h.shape[0], targets[start : start + rows]
        logits = buffer[:c]  # (c, I+1)
        torch.mm(h, weight_c.T, out=logits)
        logits[:, 0] = float("-inf")  # padding is never a class
        torch.log_softmax(logits, dim=1, out=logits)  # in place: log-probabilities
        terms[start : start + c] = -logits[offsets[:c], chunk_targets]
        if not (need_hidden or need_weight):
            continue
        probs = logits.exp_()  # (c, I+1), in place
        probs[offsets[:c], chunk_targets] -= 1.0  # softmax - onehot
        chunk_scale = scale[start : start + c, None]  # (c, 1)
        if need_hidden:
            torch.mm(probs, weight_c, out=grad_hidden[start : start + c])  # (c, d)
            grad_hidden[start : start + c] *= chunk_scale
        if need_weight:
            grad_weight.addmm_(probs.T, h * chunk_scale)  # (I+1, d)
    weighted = terms if row_weight is None else terms * row_weight.to(dtype)
    loss = weighted.sum() / max(n, 1)
    return loss.to(hidden.dtype), grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype)


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
    O(chunk_size x I) instead of O(N x I) (on the CPU the chunk is at most :data:`CE_CPU_CHUNK_BYTES`, see
    :func:`chunk_rows`); the logits are computed once, for the N rows given only (the loop passes the loss
    positions). ``position_weight`` (N,) scales each row's term (``graded``): ``sum(w * ce) / N``.
    """
    if int(chunk_size) < 1:
        raise ConfigError(f"ce_chunk_size must be a positive number of rows, got {chunk_size}")
    grad = torch.is_grad_enabled()
    need_grads = (grad and hidden.requires_grad, grad and weight.requires_grad)
    row_weight = None if position_weight is None else position_weight.detach().to(hidden.dtype)  # (N,)
    return _ChunkedCrossEntropy.apply(hidden, weight, targets, int(chunk_size), row_weight, need_grads)


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
