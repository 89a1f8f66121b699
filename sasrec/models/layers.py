"""Building blocks of the self-attentive models: cheap CPU dropout, self-attention, feed-forward.

Dropout on CPU draws its keep mask from 16-bit random integers (:func:`fast_dropout`): the same
Bernoulli(1 - p) keep/scale rule as ``torch.nn.functional.dropout`` with p rounded to a multiple of 2**-16,
several times cheaper on the 2-core machines this study runs on, where dropout masks were ~44% of a
training step. Evaluation (``model.eval()``) never draws masks.

Attention itself is neither causal nor bidirectional: the mask decides. :func:`self_attention_mask` builds
SASRec's causal mask (Kang & McAuley, ICDM 2018) or BERT4Rec's bidirectional one (Sun et al., CIKM 2019),
both hiding padded keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_INT16_LEVELS = 65536


def _keep_mask(
    shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, float]:
    """(mask, scale): a 0/1 float mask with P(1) = 1 - p (p rounded to a multiple of 2**-16) and 1 / P(1).

    Draws 64-bit random words and reads them as four 16-bit integers each: one random draw per four
    elements instead of one per element. The comparison writes the mask directly in ``dtype``, so that
    applying it is one same-dtype multiplication (bool masks and mixed-dtype products are several times
    slower on CPU); the scale is left to the caller, who may apply it to a smaller tensor.
    """
    numel = math.prod(shape)
    drop_levels = round(p * _INT16_LEVELS)
    keep_prob = 1.0 - drop_levels / _INT16_LEVELS
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    uniform16 = words.view(torch.int16)[:numel].view(shape)  # uniform over [-32768, 32767]
    mask = torch.empty(shape, dtype=dtype, device=device)
    torch.ge(uniform16, drop_levels - _INT16_LEVELS // 2, out=mask)  # (shape) 0.0 / 1.0
    return mask, 1.0 / keep_prob


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
    boolean mask, since exp(-1e9) is 0 in float32.
    """
    length = valid.shape[1]
    device = valid.device
    if additive:
        padded_keys = torch.where(valid, 0.0, -1e9)  # (B, T)
        if not causal:
            return padded_keys[:, None, :].expand(-1, length, -1)  # (B, T, T)
        future = torch.full((length, length), float("-inf"), device=device).triu_(1)  # (T, T)
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
        the explicit training path (Tq = T), a (B, T, T) additive float bias (0 or a large negative number).
        """
        batch, length, hidden = queries.shape
        heads, head_dim = self.num_heads, self.head_dim
        q = self.q_proj(queries).view(batch, length, heads, head_dim).transpose(1, 2)  # (B, h, Tq, dh)
        kv = self.kv_proj(keys).view(batch, keys.shape[1], 2, heads, head_dim)  # (B, T, 2, h, dh)
        k = kv[:, :, 0].transpose(1, 2)  # (B, h, T, dh)
        v = kv[:, :, 1].transpose(1, 2)  # (B, h, T, dh)
        if mask.dtype != torch.bool:
            # Explicit attention so the probability dropout can use the cheap mask; the bias is added
            # inside the batched matrix product and the 1/sqrt(dh) scale is applied to the small q.
            q = (q * (1.0 / math.sqrt(head_dim))).reshape(batch * heads, length, head_dim)  # (B*h, Tq, dh)
            k = k.reshape(batch * heads, keys.shape[1], head_dim)  # (B*h, T, dh)
            v = v.reshape(batch * heads, keys.shape[1], head_dim)  # (B*h, T, dh)
            bias = mask if heads == 1 else mask.repeat_interleave(heads, dim=0)  # (B*h, Tq, T)
            scores = torch.baddbmm(bias, q, k.transpose(1, 2))  # (B*h, T, T)
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


CausalSelfAttention = SelfAttention
"""SASRec's name for :class:`SelfAttention` (it passes a causal mask)."""


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
