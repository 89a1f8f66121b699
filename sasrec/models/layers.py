"""Building blocks of the self-attentive models: cheap CPU dropout, self-attention, feed-forward.

Dropout on CPU draws its keep mask from 16-bit random integers (:func:`fast_dropout`): the same
Bernoulli(1 - p) keep/scale rule as ``torch.nn.functional.dropout`` with p rounded to a multiple of 2**-16,
several times cheaper on the 2-core machines this study runs on, where dropout masks were ~44% of a
training step. Evaluation (``model.eval()``) never draws masks.

Attention itself is neither causal nor bidirectional: the mask decides. :func:`self_attention_mask` builds
SASRec's causal mask (Kang & McAuley, ICDM 2018) or BERT4Rec's bidirectional one (Sun et al., CIKM 2019),
both hiding padded keys. :class:`CausalSelfAttention` (SASRec) knows its masks are causal: in CPU training
it computes blocks of queries against the keys up to each block's end only (:class:`_CausalDropoutAttention`),
the same values up to float rounding, 3/8 of the attention work skipped at T = 200.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_INT16_LEVELS = 65536


def _random_int16(shape: torch.Size | tuple[int, ...], device: torch.device) -> torch.Tensor:
    """int16 tensor of ``shape``, uniform over [-32768, 32767]: 64-bit random words read as four 16-bit ones.

    One random draw per four elements instead of one per element.
    """
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    return words.view(torch.int16)[:numel].view(shape)


def _drop_threshold(p: float) -> tuple[int, float]:
    """(threshold, scale): keep an element iff its uniform int16 is >= threshold; scale = 1 / P(keep).

    p is rounded to a multiple of 2**-16.
    """
    drop_levels = round(p * _INT16_LEVELS)
    return drop_levels - _INT16_LEVELS // 2, 1.0 / (1.0 - drop_levels / _INT16_LEVELS)


def _keep_mask(
    shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, float]:
    """(mask, scale): a 0/1 float mask with P(1) = 1 - p (p rounded to a multiple of 2**-16) and 1 / P(1).

    The comparison writes the mask directly in ``dtype``, so that applying it is one same-dtype
    multiplication (bool masks and mixed-dtype products are several times slower on CPU); the scale is
    left to the caller, who may apply it to a smaller tensor.
    """
    threshold, scale = _drop_threshold(p)
    mask = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(_random_int16(shape, device), threshold, out=mask)  # (shape) 0.0 / 1.0
    return mask, scale


class _MaskMultiply(torch.autograd.Function):
    """y = x * mask with the (constant) mask saved for backward."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        (mask,) = ctx.saved_tensors  # type: ignore[attr-defined]
        return grad * mask, None


class _CausalDropoutAttention(torch.autograd.Function):
    """Causal attention with dropout on its probabilities, computed by blocks of queries (CPU training).

    ``out = (softmax(q k^T + bias) * keep) @ v * scale`` for (N, T, dh) ``q`` (already scaled by
    1/sqrt(dh)), ``k`` and ``v``, an additive (N, T, T) ``bias`` that is -inf above the diagonal, and a
    keep mask ``keep = draws >= threshold`` read from (N, T, T) int16 random ``draws``.

    Queries ``s..e-1`` meet keys ``0..e-1`` only: every later key is masked, so its probability is exactly 0
    and is not computed, which skips 3/8 of the (N, T, T) products, softmax and mask work at T = 200 with
    blocks of 50. Every computed position reads the same draw as the full computation, so outputs and
    gradients equal the full computation's up to float rounding (``tests/test_model.py``).

    Only the probabilities ``P`` and the kept ones ``Pd = P * keep`` are stored for the backward pass (not
    the mask): with ``dP = dPd * keep`` and ``P * keep = Pd``, the softmax gradient
    ``P * (dP - rowsum(P * dP))`` is ``Pd * dPd - P * rowsum(Pd * dPd)``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor,
        draws: torch.Tensor,
        threshold: int,
        scale: float,
        block: int,
    ) -> torch.Tensor:
        length = q.shape[1]
        out = torch.empty_like(q)  # (N, T, dh)
        saved: list[torch.Tensor] = []
        for start in range(0, length, block):
            stop = min(start + block, length)  # queries start..stop-1 meet keys 0..stop-1
            scores = torch.baddbmm(
                bias[:, start:stop, :stop], q[:, start:stop], k[:, :stop].transpose(1, 2)
            )  # (N, b, e)
            probs = torch.softmax(scores, dim=-1)  # (N, b, e)
            keep = torch.empty_like(probs)
            torch.ge(draws[:, start:stop, :stop], threshold, out=keep)  # (N, b, e) 0.0 / 1.0
            kept = probs * keep  # (N, b, e)
            out[:, start:stop] = torch.bmm(kept, v[:, :stop])  # (N, b, dh)
            saved += [probs, kept]
        out.mul_(scale)
        ctx.save_for_backward(q, k, v, *saved)
        ctx.block, ctx.scale = block, scale  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):  # type: ignore[override]
        q, k, v, *saved = ctx.saved_tensors  # type: ignore[attr-defined]
        block, scale = ctx.block, ctx.scale  # type: ignore[attr-defined]
        length = q.shape[1]
        grad = grad * scale  # (N, T, dh)
        dq = torch.empty_like(q)  # (N, T, dh)
        dk: torch.Tensor | None = None
        dv: torch.Tensor | None = None
        starts = list(range(0, length, block))
        for index in reversed(range(len(starts))):  # the last block meets every key: it creates dk, dv
            start, stop = starts[index], min(starts[index] + block, length)
            probs, kept = saved[2 * index], saved[2 * index + 1]  # (N, b, e)
            g = grad[:, start:stop]  # (N, b, dh)
            dv_part = torch.bmm(kept.transpose(1, 2), g)  # (N, e, dh)
            d_scores = torch.bmm(g, v[:, :stop].transpose(1, 2)).mul_(kept)  # (N, b, e) dPd * Pd
            row = d_scores.sum(dim=-1, keepdim=True)  # (N, b, 1)
            d_scores.addcmul_(probs, row, value=-1.0)  # Pd * dPd - P * rowsum(Pd * dPd)
            dq[:, start:stop] = torch.bmm(d_scores, k[:, :stop])  # (N, b, dh)
            dk_part = torch.bmm(d_scores.transpose(1, 2), q[:, start:stop])  # (N, e, dh)
            if dk is None or dv is None:
                dk, dv = dk_part, dv_part
            else:
                dk[:, :stop] += dk_part
                dv[:, :stop] += dv_part
        return dq, dk, dv, None, None, None, None, None


def unscaled_dropout(x: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """(x * mask, scale) with a 0/1 keep mask (P(keep) = 1 - p); ``x * mask * scale`` is inverted dropout.

    Lets a caller apply the 1 / (1 - p) scale to a smaller tensor downstream (attention: after the
    product with the values). CPU masks as in :func:`fast_dropout`.
    """
    if p <= 0.0:
        return x, 1.0
    if p >= 1.0:
        return torch.zeros_like(x), 1.0
    mask, scale = _keep_mask(x.shape, p, x.device, x.dtype)
    return _MaskMultiply.apply(x, mask), scale


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout whose mask comes from 16-bit random integers on CPU (torch's dropout elsewhere).

    Same rule as ``F.dropout``: each element is kept with probability 1 - p and scaled by 1 / (1 - p);
    here p is rounded to a multiple of 2**-16. On non-CPU devices ``F.dropout`` is used unchanged.
    """
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    dropped, scale = unscaled_dropout(x, p)
    return dropped * scale


class _Dropout(nn.Module):
    """Dropout module switching between :func:`fast_dropout` and ``F.dropout``."""

    def __init__(self, p: float, fast: bool) -> None:
        super().__init__()
        self.p = p
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast:
            return fast_dropout(x, self.p, self.training)
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, fast={self.fast}"


def self_attention_mask(valid: torch.Tensor, *, causal: bool, additive: bool) -> torch.Tensor:
    """Attention mask hiding padded keys, causal (SASRec) or bidirectional (BERT4Rec), from ``valid`` (B, T).

    ``additive=False``: boolean (B, 1, T, T) "may attend" for ``scaled_dot_product_attention``: key not
    padding (and, if causal, not after the query), or the query itself, so that a padded query, whose
    output is discarded, never has an empty row. ``additive=True`` (the explicit CPU training path of
    :class:`SelfAttention`): a (B, T, T) float bias, -inf above the diagonal if causal, -1e9 on padded
    keys (a padded query's row stays finite), 0 elsewhere; for every valid query this is exactly the
    boolean mask, since exp(-1e9) is 0 in float32. Causal without padded keys, it is the (T, T) causal bias
    broadcast over the batch (a view: nothing materialised).
    """
    batch, length = valid.shape
    device = valid.device
    if additive:
        if causal:
            future = torch.full((length, length), float("-inf"), device=device).triu_(1)  # (T, T)
            if bool(valid.all()):
                return future.expand(batch, length, length)  # (B, T, T)
        padded_keys = torch.where(valid, 0.0, -1e9)  # (B, T)
        if not causal:
            return padded_keys[:, None, :].expand(-1, length, -1)  # (B, T, T)
        return future[None, :, :] + padded_keys[:, None, :]  # (B, T, T)
    diagonal = torch.eye(length, dtype=torch.bool, device=device)  # (T, T)
    allowed = valid[:, None, :]  # (B, 1, T): every real key
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=device).tril_()  # (B, T, T)
    return (allowed | diagonal).unsqueeze(1)  # (B, 1, T, T)


class SelfAttention(nn.Module):
    """Multi-head attention of ``queries`` over keys/values ``keys`` (as ``nn.MultiheadAttention``).

    SASRec attends from ``LN(x)`` over ``x``; BERT4Rec from ``x`` over ``x``. Whether it is causal is up to
    the mask (:func:`self_attention_mask`).
    """

    #: Whether the masks passed are causal (keys after the query always masked): lets CPU training skip them.
    causal: bool = False
    #: Queries per block of the causal CPU training path (0: one block, the plain computation).
    query_block: int = 50

    def __init__(
        self, hidden_units: int, num_heads: int, attention_dropout: float, fast_dropout: bool
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_units // num_heads
        self.q_proj = nn.Linear(hidden_units, hidden_units)
        self.kv_proj = nn.Linear(hidden_units, 2 * hidden_units)
        self.out_proj = nn.Linear(hidden_units, hidden_units)
        self.attention_dropout = attention_dropout
        self.dropout = _Dropout(attention_dropout, fast_dropout)
        self.fast_dropout = fast_dropout

    def uses_explicit_attention(self, device: torch.device) -> bool:
        """Whether training on ``device`` takes the explicit path (fast dropout of attention probabilities)."""
        return self.training and self.attention_dropout > 0.0 and self.fast_dropout and device.type == "cpu"

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Attend from ``queries`` (B, Tq, d) over ``keys`` (B, T, d).

        ``mask`` is a (B, 1, Tq, T) boolean "may attend" mask for ``scaled_dot_product_attention``, or, on
        the explicit training path (Tq = T), a (B, T, T) additive float bias (0 or a large negative number;
        for :class:`CausalSelfAttention`, -inf above the diagonal), possibly a broadcast view.
        """
        batch, length, hidden = queries.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self.q_proj(queries).view(batch, length, heads, head_dim).transpose(1, 2)  # (B, h, Tq, dh)
        # Keys and values from the two halves of kv_proj: two products instead of one and a split, whose
        # backward would zero-fill and copy a (B, T, 2d) gradient.
        weight, kv_bias = self.kv_proj.weight, self.kv_proj.bias  # (2d, d), (2d,)
        k = F.linear(keys, weight[:hidden], kv_bias[:hidden])  # (B, T, d)
        v = F.linear(keys, weight[hidden:], kv_bias[hidden:])  # (B, T, d)
        k = k.view(batch, keys.shape[1], heads, head_dim).transpose(1, 2)  # (B, h, T, dh)
        v = v.view(batch, keys.shape[1], heads, head_dim).transpose(1, 2)  # (B, h, T, dh)
        if mask.dtype != torch.bool:
            # Explicit attention so the probability dropout can use the cheap mask; the bias is added
            # inside the batched matrix product and the 1/sqrt(dh) scale is applied to the small q.
            q = (q * (1.0 / math.sqrt(head_dim))).reshape(batch * heads, length, head_dim)  # (B*h, Tq, dh)
            k = k.reshape(batch * heads, keys.shape[1], head_dim)  # (B*h, T, dh)
            v = v.reshape(batch * heads, keys.shape[1], head_dim)  # (B*h, T, dh)
            # (B*h, Tq, T): each batch row's bias once per head (a view when the mask is a broadcast view)
            bias = (
                mask.unsqueeze(1)
                .expand(batch, heads, *mask.shape[1:])
                .reshape(batch * heads, *mask.shape[1:])
            )
            if self.causal and self.query_block > 0 and length == keys.shape[1]:
                threshold, scale = _drop_threshold(self.attention_dropout)
                draws = _random_int16(bias.shape, q.device)  # (B*h, T, T): the plain path's draws
                out = _CausalDropoutAttention.apply(q, k, v, bias, draws, threshold, scale, self.query_block)
                out = out.view(batch, heads, length, head_dim)  # (B, h, T, dh)
            else:
                scores = torch.baddbmm(bias, q, k.transpose(1, 2))  # (B*h, Tq, T)
                probs, scale = unscaled_dropout(
                    torch.softmax(scores, dim=-1), self.attention_dropout
                )  # (B*h, Tq, T)
                out = (torch.bmm(probs, v) * scale).view(batch, heads, length, head_dim)  # (B, h, Tq, dh)
        else:
            dropout_p = self.attention_dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p
            )  # (B, h, T, dh)
        out = out.transpose(1, 2).reshape(batch, length, hidden)  # (B, T, d)
        return self.out_proj(out)


class CausalSelfAttention(SelfAttention):
    """:class:`SelfAttention` given causal masks (SASRec): CPU training computes blocks of queries against
    the keys up to the block's end only (:class:`_CausalDropoutAttention`)."""

    causal = True


class PointWiseFeedForward(nn.Module):
    """Two position-wise linear layers with ReLU and dropout, plus the residual (as the reference)."""

    def __init__(self, hidden_units: int, dropout_rate: float, fast_dropout: bool) -> None:
        super().__init__()
        self.linear1 = nn.Linear(hidden_units, hidden_units)
        self.dropout1 = _Dropout(dropout_rate, fast_dropout)
        self.linear2 = nn.Linear(hidden_units, hidden_units)
        self.dropout2 = _Dropout(dropout_rate, fast_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.dropout1(self.linear1(x)))  # (B, T, d)
        return x + self.dropout2(self.linear2(hidden))  # (B, T, d)
