"""Training SASRec: losses, vectorised negative sampling, the training loop, checkpoints and the scorer.

Losses (``TrainConfig.loss``):

* ``bce``: the reference objective of Kang & McAuley (ICDM 2018): at every non-padding position the next
  item against one uniform negative that is never one of the user's training items. Variants of the
  study's seed project: ``explicit_negatives`` (with probability 0.5 the negative is one of the user's
  disliked videos) and ``weighted_dislike`` (those negatives' loss weighted by ``dislike_weight``).
* ``ce``: cross-entropy over all items (Klenitskiy & Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec
  really better than SASRec?", RecSys 2023), computed in chunks of positions so that the
  (positions x items) logits never exist at once.
* ``sampled_softmax``: softmax over the next item and ``num_negatives`` uniform negatives per sequence.
* ``gbce``: generalised BCE with calibration ``gbce_t`` (Petrov & Macdonald, "gSASRec: Reducing
  Overconfidence in Sequential Recommendation Trained with Negative Sampling", RecSys 2023).

Negatives are drawn in torch on the training device without any Python loop over positions and without
worker processes: uniform negatives come exactly from the complement of the user's training items (the
r-th non-member is found with one ``searchsorted`` over per-user rank keys), so no rejection is needed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from sasrec.cliutil import progress_enabled
from sasrec.data import SPLITS, EvalTask, PreparedData, build_eval_task, left_padded_tails
from sasrec.errors import CheckpointMismatchError, ConfigError, MissingDataError
from sasrec.model import SASRec
from sasrec.paths import atomic_path, models_dir

if TYPE_CHECKING:
    from sasrec.evaluate import EvalResult

LOSSES = ("bce", "ce", "sampled_softmax", "gbce")
EVAL_PROTOCOLS = ("full", "sampled")
CHECKPOINT_FORMAT = "sasrec-checkpoint/1"


# ------------------------------------------------------------------------------------------ configuration
@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (the original project's flags plus the study's).

    ``weighted_dislike`` implies ``explicit_negatives``. ``patience`` counts evaluations without a
    better validation NDCG@k (0 disables early stopping). ``attention_dropout`` None follows the reference
    (the same rate as ``dropout_rate``); ``fast_dropout`` selects the cheap CPU dropout masks of
    :func:`sasrec.model.fast_dropout`.
    """

    dataset: str = "small_matrix"
    train_dir: str = "default"
    split: str = "temporal"
    loss: str = "bce"
    explicit_negatives: bool = False
    weighted_dislike: bool = False
    dislike_weight: float = 2.0
    num_negatives: int = 100
    gbce_t: float = 0.75
    lr: float = 0.001
    batch_size: int = 128
    maxlen: int = 200
    hidden_units: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dropout_rate: float = 0.2
    attention_dropout: float | None = None
    fast_dropout: bool = True
    l2_emb: float = 0.0
    num_epochs: int = 20
    eval_every: int = 1
    patience: int = 3
    k: int = 10
    seed: int = 0
    device: str = "auto"
    relevance_threshold: float | None = None
    eval_protocol: str = "full"
    num_eval_negatives: int = 100
    eval_batch_size: int = 512
    ce_chunk_size: int = 2048
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.weighted_dislike:
            self.explicit_negatives = True
        self.validate()

    def validate(self) -> TrainConfig:
        """Raise :class:`ConfigError` naming the first invalid parameter; return self."""

        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
                raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}")

        def number(
            name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = True
        ) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number; got {value!r}")
            if (value <= low if low_open else value < low) or (value >= high if high_open else value > high):
                left, right = "(" if low_open else "[", ")" if high_open else "]"
                raise ConfigError(f"{name} must be in {left}{low}, {high}{right}; got {value!r}")

        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError(f"dataset must be a non-empty name or path; got {self.dataset!r}")
        if not isinstance(self.train_dir, str) or not self.train_dir or "/" in self.train_dir:
            raise ConfigError(
                f"train_dir must be a non-empty folder name without '/'; got {self.train_dir!r}"
            )
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)}; got {self.loss!r}")
        if self.explicit_negatives and self.loss != "bce":
            raise ConfigError(
                f"explicit_negatives / weighted_dislike need loss='bce' (one negative per position); got loss={self.loss!r}"
            )
        for name in ("batch_size", "maxlen", "hidden_units", "num_blocks", "num_heads", "num_epochs"):
            positive_int(name)
        for name in (
            "eval_every",
            "k",
            "num_negatives",
            "num_eval_negatives",
            "eval_batch_size",
            "ce_chunk_size",
        ):
            positive_int(name)
        positive_int("patience", 0)
        positive_int("seed", 0)
        if self.hidden_units % self.num_heads:
            raise ConfigError(f"num_heads ({self.num_heads}) must divide hidden_units ({self.hidden_units})")
        number("lr", 0.0, math.inf, low_open=True)
        number("dropout_rate", 0.0, 1.0)
        if self.attention_dropout is not None:
            number("attention_dropout", 0.0, 1.0)
        number("l2_emb", 0.0, math.inf)
        number("dislike_weight", 0.0, math.inf)
        number("gbce_t", 0.0, 1.0, high_open=False)
        if self.relevance_threshold is not None:
            number("relevance_threshold", -math.inf, math.inf)
        if self.eval_protocol not in EVAL_PROTOCOLS:
            raise ConfigError(
                f"eval_protocol must be one of {', '.join(EVAL_PROTOCOLS)}; got {self.eval_protocol!r}"
            )
        resolve_device(self.device, check_only=True)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)


def resolve_device(device: str, *, check_only: bool = False) -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; explicit devices must be available."""
    if not isinstance(device, str) or not device:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        if check_only:
            return resolved
        raise ConfigError(f"device {device!r} requested but CUDA is not available; use --device=cpu or auto")
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if (mps is None or not mps.is_available()) and not check_only:
            raise ConfigError(
                f"device {device!r} requested but MPS is not available; use --device=cpu or auto"
            )
    if resolved.type not in {"cpu", "cuda", "mps"}:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps; got {device!r}")
    return resolved


# --------------------------------------------------------------------------------------- training data
@dataclass
class TrainingSequences:
    """One training sequence per user (the reference's): inputs and next-item targets, left-padded.

    Attributes:
        users: (n,) internal user ids with at least two training events.
        inputs: (n, maxlen) the last maxlen training items before the user's final training item.
        targets: (n, maxlen) the next item at each position, 0 at padding.
    """

    users: np.ndarray
    inputs: np.ndarray
    targets: np.ndarray


def training_sequences(data: PreparedData, split: str, maxlen: int) -> TrainingSequences:
    """Build :class:`TrainingSequences` from ``data``'s training events of ``split`` (vectorised)."""
    train_mask, _ = data.stage_masks(split, "valid")
    indptr, items = data.sequences(train_mask)
    lengths = np.diff(indptr)  # (U+1,)
    users = np.flatnonzero(lengths >= 2).astype(np.int64)
    tails = left_padded_tails(indptr, items, users, maxlen + 1)  # (n, maxlen + 1)
    inputs = tails[:, :-1].copy()
    targets = tails[:, 1:].copy()
    targets[inputs == 0] = 0
    return TrainingSequences(users=users, inputs=inputs, targets=targets)


def item_popularity(data: PreparedData, mask: np.ndarray | None = None) -> np.ndarray:
    """(I+1,) float32 number of (masked) events per item; the fallback scores of users without history."""
    items = data.events["item"].to_numpy()
    if mask is not None:
        items = items[mask]
    counts = np.bincount(items, minlength=data.num_items + 1).astype(np.float32)
    counts[0] = 0.0
    return counts


class NegativeSampler:
    """Vectorised negatives on the training device.

    Uniform negatives are drawn exactly from the items the user has no training event with: for a user
    with sorted training items ``s_0 < s_1 < ...``, ``c_j = s_j - 1 - j`` counts the non-members below
    ``s_j``, and the r-th non-member (0-based) is ``r + 1 + #{j: c_j <= r}``; the count is one
    ``searchsorted`` over the keys ``user * (I + 1) + c_j``. A user whose training items cover every item
    gets unrestricted uniform negatives.

    Disliked negatives are drawn uniformly from the user's disliked training items (an event with
    ``liked`` False and no liked event of the same item).

    Args:
        data: the prepared dataset.
        train_mask: boolean mask over ``data.events`` of the training events.
        device: where the lookup tables live and samples are drawn.
        generator: torch generator on ``device`` (its state is saved in checkpoints).
    """

    def __init__(
        self, data: PreparedData, train_mask: np.ndarray, *, device: torch.device, generator: torch.Generator
    ) -> None:
        self.num_items = data.num_items
        self.device = device
        self.generator = generator
        stride = self.num_items + 1
        events = data.events[train_mask]
        users = events["user"].to_numpy().astype(np.int64)
        items = events["item"].to_numpy().astype(np.int64)
        n_slots = data.num_users + 1

        keys = np.unique(users * stride + items)  # sorted distinct (user, item) pairs
        key_users = keys // stride
        key_items = keys % stride
        counts = np.bincount(key_users, minlength=n_slots)
        starts = np.zeros(n_slots, dtype=np.int64)
        np.cumsum(counts[:-1], out=starts[1:])
        rank_in_user = np.arange(len(keys)) - starts[key_users]
        rank_keys = key_users * stride + (key_items - 1 - rank_in_user)  # non-decreasing
        self.train_keys = torch.from_numpy(keys).to(device)
        self._rank_keys = torch.from_numpy(rank_keys).to(device)
        self._starts = torch.from_numpy(starts).to(device)
        self._free = torch.from_numpy(self.num_items - counts).to(device)  # (U+1,) items never trained on

        liked = events["liked"].to_numpy().astype(bool)
        liked_keys = np.unique(users[liked] * stride + items[liked])
        disliked_keys = np.unique(users[~liked] * stride + items[~liked])
        disliked_keys = disliked_keys[~np.isin(disliked_keys, liked_keys)]
        d_users = disliked_keys // stride
        d_counts = np.bincount(d_users, minlength=n_slots)
        d_starts = np.zeros(n_slots, dtype=np.int64)
        np.cumsum(d_counts[:-1], out=d_starts[1:])
        self.disliked_keys = torch.from_numpy(disliked_keys).to(device)
        self._disliked_items = torch.from_numpy(disliked_keys % stride).to(device)
        self._disliked_starts = torch.from_numpy(d_starts).to(device)
        self._disliked_counts = torch.from_numpy(d_counts).to(device)

    def _random_below(self, bounds: torch.Tensor) -> torch.Tensor:
        """Uniform integers in [0, bounds) elementwise (bounds >= 1), from 62-bit random words."""
        words = torch.randint(0, 2**62, bounds.shape, generator=self.generator, device=self.device)
        return torch.remainder(words, bounds)

    def uniform(self, users: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """(len(users), *shape) uniform items outside each user's training items."""
        extra = (1,) * len(shape)
        user_grid = users.view(-1, *extra).expand(-1, *shape)  # (B, *shape)
        free = self._free[user_grid]  # (B, *shape)
        unrestricted = free <= 0
        bounds = torch.where(unrestricted, self.num_items, free)
        r = self._random_below(bounds)  # (B, *shape)
        query = user_grid * (self.num_items + 1) + r
        members_below = torch.searchsorted(self._rank_keys, query, right=True) - self._starts[user_grid]
        items = r + 1 + members_below
        return torch.where(unrestricted, r + 1, items)

    def disliked(self, users: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(items, available): a uniform disliked item per slot, and whether the user has any dislike."""
        extra = (1,) * len(shape)
        user_grid = users.view(-1, *extra).expand(-1, *shape)  # (B, *shape)
        counts = self._disliked_counts[user_grid]
        available = counts > 0
        r = self._random_below(counts.clamp(min=1))
        if self._disliked_items.numel() == 0:
            return torch.zeros_like(r), available
        index = (self._disliked_starts[user_grid] + r).clamp(max=self._disliked_items.numel() - 1)
        return self._disliked_items[index], available

    def bce_negatives(
        self, users: torch.Tensor, targets: torch.Tensor, *, explicit: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One negative per position of ``targets`` (B, T): (negatives, is_disliked), 0 at padding.

        With ``explicit``, each position independently takes a disliked item with probability 0.5 when
        the user has dislikes (a disliked item equal to the position's target is replaced by the uniform
        draw); otherwise, and always without ``explicit``, a uniform non-training item.
        """
        shape = tuple(targets.shape[1:])
        negatives = self.uniform(users, shape)  # (B, T)
        is_disliked = torch.zeros_like(targets, dtype=torch.bool)
        if explicit:
            disliked, available = self.disliked(users, shape)
            coin = torch.randint(0, 2, targets.shape, generator=self.generator, device=self.device).bool()
            is_disliked = coin & available & (disliked != targets)
            negatives = torch.where(is_disliked, disliked, negatives)
        padding = targets == 0
        negatives = negatives.masked_fill(padding, 0)
        return negatives, is_disliked & ~padding


# ------------------------------------------------------------------------------------------------ losses
def bce_loss(
    pos_logits: torch.Tensor,
    neg_logits: torch.Tensor,
    valid: torch.Tensor,
    neg_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference SASRec loss: mean over valid positions of -log s(pos) plus (weighted) -log(1 - s(neg)).

    Equals ``BCEWithLogits(pos, 1) + BCEWithLogits(neg, 0)`` averaged over the non-padding positions, as
    in Kang & McAuley; ``neg_weight`` (same shape) scales each negative term (``weighted_dislike``).
    """
    n_valid = valid.sum().clamp(min=1)
    neg_terms = F.softplus(neg_logits)
    if neg_weight is not None:
        neg_terms = neg_terms * neg_weight
    per_position = F.softplus(-pos_logits) + neg_terms  # (B, T)
    return (per_position * valid).sum() / n_valid


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean softmax cross-entropy over all items except padding, never materialising all logits.

    Forward keeps only each row's log-sum-exp; backward recomputes the logits chunk by chunk.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
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
        return (lse - target_logits).sum() / max(n, 1)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, targets, lse = ctx.saved_tensors  # type: ignore[attr-defined]
        chunk_size: int = ctx.chunk_size  # type: ignore[attr-defined]
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
            probs *= scale
            grad_hidden[start : start + chunk_size] = probs @ weight  # (c, d)
            grad_weight.addmm_(probs.T, h)  # (I+1, d)
        return grad_hidden, grad_weight, None, None


def chunked_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk_size: int = 2048
) -> torch.Tensor:
    """Full cross-entropy of ``targets`` (N,) given ``hidden`` (N, d) and item embeddings (I+1, d).

    Klenitskiy & Vasilev (RecSys 2023): softmax over every item; column 0 (padding) is excluded. Memory is
    O(chunk_size x I) instead of O(N x I).
    """
    return _ChunkedCrossEntropy.apply(hidden, weight, targets, int(chunk_size))


def sampled_softmax_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Mean of -log softmax([pos, negs])[0] over rows: ``pos_logits`` (N,), ``neg_logits`` (N, K)."""
    logits = torch.cat([pos_logits.unsqueeze(-1), neg_logits], dim=-1)  # (N, K+1)
    return (torch.logsumexp(logits, dim=-1) - pos_logits).mean()


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gSASRec's beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = negatives / (items - 1)."""
    alpha = num_negatives / max(num_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalised BCE (Petrov & Macdonald, RecSys 2023): -log s(pos)^beta - sum log(1 - s(neg)).

    Averaged over the N x (K + 1) logits as gSASRec's ``BCEWithLogitsLoss`` over the transformed positive
    logit and the negatives; computed in the stable form beta * softplus(-pos) + softplus(neg).
    """
    pos_terms = beta * F.softplus(-pos_logits)  # (N,)
    neg_terms = F.softplus(neg_logits).sum(-1)  # (N,)
    return (pos_terms + neg_terms).sum() / (pos_logits.numel() * (neg_logits.shape[-1] + 1))


# ------------------------------------------------------------------------------------------------ scorer
class SASRecScorer:
    """Scores every item from each task row's last ``maxlen`` items (the ``Scorer`` protocol).

    Rows with an empty sequence get ``popularity`` (or zeros) and are recorded in ``fallback_rows`` /
    ``fallback_users``.
    """

    def __init__(
        self,
        model: SASRec,
        *,
        popularity: np.ndarray | torch.Tensor | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
    ) -> None:
        self.model = model
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.batch_size = int(batch_size)
        n_cols = model.num_items + 1
        if popularity is None:
            self.popularity = torch.zeros(n_cols)
        else:
            self.popularity = torch.as_tensor(np.asarray(popularity, dtype=np.float32)).reshape(-1)
            if self.popularity.shape != (n_cols,):
                raise ConfigError(
                    f"popularity has shape {tuple(self.popularity.shape)}; expected ({n_cols},)"
                )
        self._fallback_rows: list[np.ndarray] = []
        self._fallback_users: list[np.ndarray] = []

    @property
    def fallback_rows(self) -> np.ndarray:
        """Task rows scored by popularity because their sequence was empty (sorted, distinct)."""
        return (
            np.unique(np.concatenate(self._fallback_rows)) if self._fallback_rows else np.zeros(0, np.int64)
        )

    @property
    def fallback_users(self) -> np.ndarray:
        """Internal user ids of :attr:`fallback_rows`."""
        return (
            np.unique(np.concatenate(self._fallback_users)) if self._fallback_users else np.zeros(0, np.int64)
        )

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), I+1) float32 scores on the model's device; column 0 is -inf."""
        n_cols = self.model.num_items + 1
        if task.num_items != self.model.num_items:
            raise ConfigError(
                f"task {task.name} has {task.num_items} items but the model was trained on {self.model.num_items}"
            )
        rows = np.asarray(rows, dtype=np.int64)
        seqs = np.asarray(task.sequences[rows], dtype=np.int64)[:, -self.model.maxlen :]  # (n, T)
        lengths = (seqs != 0).sum(axis=1)
        empty = lengths == 0
        if empty.any():
            self._fallback_rows.append(rows[empty])
            self._fallback_users.append(np.asarray(task.users)[rows[empty]].astype(np.int64))
        # Allocated outside inference mode: callers may modify the returned scores in place.
        out = torch.empty((len(rows), n_cols), dtype=torch.float32, device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), self.batch_size):
                    part = seqs[start : start + self.batch_size]
                    width = max(int((part != 0).sum(axis=1).max()), 1)  # left padding: drop all-pad columns
                    batch = torch.from_numpy(np.ascontiguousarray(part[:, -width:])).to(self.device)
                    out[start : start + len(part)] = self.model.score_all(batch)
        finally:
            self.model.train(was_training)
        if empty.any():
            out[torch.from_numpy(empty).to(self.device)] = self.popularity.to(self.device)
        out[:, 0] = float("-inf")
        return out


# ----------------------------------------------------------------------------------------- checkpoints
def checkpoint_name(config: TrainConfig, epoch: int) -> str:
    """The original project's file name: ``SASRec.epoch=<n>.lr=<lr>.layer=<b>.head=<h>.hidden=<d>.maxlen=<l>.pth``."""
    return (
        f"SASRec.epoch={epoch}.lr={config.lr}.layer={config.num_blocks}.head={config.num_heads}"
        f".hidden={config.hidden_units}.maxlen={config.maxlen}.pth"
    )


def log_name(config: TrainConfig) -> str:
    """Per-epoch log CSV beside the checkpoint (the checkpoint name without the epoch)."""
    return (
        f"SASRec.lr={config.lr}.layer={config.num_blocks}.head={config.num_heads}"
        f".hidden={config.hidden_units}.maxlen={config.maxlen}.log.csv"
    )


def run_dir(dataset_name: str, train_dir: str) -> Path:
    """``models/<dataset>_<train_dir>`` under the project root."""
    return models_dir() / f"{dataset_name}_{train_dir}"


def _read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise MissingDataError(f"checkpoint {p} does not exist")
    try:
        payload = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise ConfigError(f"checkpoint {p} cannot be read as a SASRec checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"checkpoint {p} is not a {CHECKPOINT_FORMAT} file written by `python -m sasrec train` "
            "(the original project's .pth files hold bare weights without ids or config)"
        )
    return payload


def check_fingerprint(payload: dict[str, Any], data: PreparedData, path: str | Path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``data`` is the dataset the checkpoint was trained on."""
    if payload["fingerprint"] != data.fingerprint:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained on dataset {payload['dataset']!r} (fingerprint {payload['fingerprint']}, "
            f"{len(payload['item_ids']) - 1} items) but the data given is {data.name!r} (fingerprint "
            f"{data.fingerprint}, {data.num_items} items); pass the training dataset (--training_dataset)"
        )


def load_checkpoint(
    path: str | Path, data: PreparedData | None = None, *, map_location: str | torch.device = "cpu"
) -> tuple[SASRec, TrainConfig, dict[str, Any]]:
    """Load a checkpoint written by :func:`train`: (model with the best weights, in eval mode; config; payload).

    Raises:
        MissingDataError: no such file.
        ConfigError: not a checkpoint of this project.
        CheckpointMismatchError: ``data`` is given and its fingerprint differs from the checkpoint's.
    """
    payload = _read_checkpoint(path, map_location)
    if data is not None:
        check_fingerprint(payload, data, path)
    config = TrainConfig.from_dict({**payload["config"], "device": "cpu"})
    model = SASRec(**payload["model_kwargs"])
    model.load_state_dict(payload["model_state"])
    model.to(map_location)
    model.eval()
    return model, config, payload


def _rng_state(generator: torch.Generator, device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "sampler": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())
    generator.set_state(state["sampler"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


# ------------------------------------------------------------------------------------------------ train
@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        model: the model with the best-on-validation weights restored, in eval mode.
        log: one row per epoch: epoch, loss, seconds, and ``valid_<metric>`` where evaluated.
        best_epoch: epoch of the best validation NDCG@k (0 if never evaluated).
        best_valid: validation summary of the best epoch.
        checkpoint_path: the last checkpoint written (None when ``out_dir`` writing was disabled).
        config: the configuration used.
        stopped_early: whether patience ran out.
        popularity: (I+1,) training-event counts per item (the scorer's fallback).
    """

    model: SASRec
    log: pd.DataFrame
    best_epoch: int
    best_valid: dict[str, float]
    checkpoint_path: Path | None
    config: TrainConfig
    stopped_early: bool = False
    popularity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def _check_resume(saved: TrainConfig, config: TrainConfig) -> None:
    for name in ("split", "maxlen", "hidden_units", "num_blocks", "num_heads", "loss", "explicit_negatives"):
        if getattr(saved, name) != getattr(config, name):
            raise ConfigError(
                f"cannot resume: {name} is {getattr(config, name)!r} but the checkpoint was trained with "
                f"{getattr(saved, name)!r}"
            )


def _batch_loss(
    model: SASRec,
    sampler: NegativeSampler,
    users: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: TrainConfig,
    beta: float,
) -> torch.Tensor:
    """Loss of one batch (B users) under ``config.loss``; padding targets contribute nothing."""
    hidden = model(inputs)  # (B, T, d)
    valid = targets != 0  # (B, T)
    if config.loss == "bce":
        negatives, disliked = sampler.bce_negatives(users, targets, explicit=config.explicit_negatives)
        logits = model.score_items(hidden, torch.stack([targets, negatives], dim=-1))  # (B, T, 2): one lookup
        pos_logits, neg_logits = logits[..., 0], logits[..., 1]  # (B, T) each
        weight = None
        if config.weighted_dislike:
            weight = torch.where(disliked, float(config.dislike_weight), 1.0)  # (B, T)
        loss = bce_loss(pos_logits, neg_logits, valid, weight)
    elif config.loss == "ce":
        loss = chunked_cross_entropy(
            hidden[valid], model.item_emb.weight, targets[valid], config.ce_chunk_size
        )
    else:
        negatives = sampler.uniform(users, (config.num_negatives,))  # (B, K) shared by a row's positions
        pos_logits = model.score_items(hidden, targets)[valid]  # (N,)
        neg_emb = model.item_emb(negatives)  # (B, K, d)
        neg_logits = torch.matmul(hidden, neg_emb.transpose(1, 2))[valid]  # (N, K)
        if config.loss == "sampled_softmax":
            loss = sampled_softmax_loss(pos_logits, neg_logits)
        else:
            loss = gbce_loss(pos_logits, neg_logits, beta)
    if config.l2_emb > 0:
        loss = loss + config.l2_emb * torch.linalg.vector_norm(model.item_emb.weight)  # as the reference
    return loss


def evaluate_model(
    scorer: SASRecScorer, task: EvalTask, config: TrainConfig, progress: bool | None = False
) -> EvalResult:
    """Evaluate a SASRec scorer on ``task`` with the config's K, protocol, negatives and seed."""
    from sasrec.evaluate import evaluate

    return evaluate(
        scorer,
        task,
        k=config.k,
        protocol=config.eval_protocol,
        num_negatives=config.num_eval_negatives,
        seed=config.seed,
        batch_size=config.eval_batch_size,
        progress=progress,
    )


def _evaluate_valid(
    model: SASRec, task: EvalTask, config: TrainConfig, popularity: np.ndarray, device: torch.device
) -> dict[str, float]:
    scorer = SASRecScorer(model, popularity=popularity, batch_size=config.eval_batch_size, device=device)
    return {key: float(value) for key, value in evaluate_model(scorer, task, config).summary.items()}


def _write_log(log: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(log).to_csv(tmp, index=False)


def train(
    data: PreparedData,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    resume_from: str | Path | None = None,
    save: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train SASRec on ``data``'s training events of ``config.split``; validate on its validation events.

    Adam(betas=(0.9, 0.98)) as the reference; validation NDCG@k every ``eval_every`` epochs with
    ``sasrec.evaluate.evaluate``; early stopping after ``patience`` evaluations without improvement; the
    best-on-validation weights are restored at the end. The test events are never used. Deterministic
    on CPU for a given seed; resuming from a checkpoint reproduces the uninterrupted run exactly.

    Args:
        data: prepared dataset.
        config: hyperparameters.
        out_dir: checkpoint folder (default ``models/<dataset>_<train_dir>``).
        resume_from: checkpoint to continue from (its last-epoch weights, optimizer and RNG states).
        save: write a checkpoint and the log CSV after every epoch.
        on_epoch: called with each epoch's log row (the command line prints it).
    """
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    model = SASRec(
        data.num_items,
        hidden_units=config.hidden_units,
        num_blocks=config.num_blocks,
        num_heads=config.num_heads,
        maxlen=config.maxlen,
        dropout_rate=config.dropout_rate,
        attention_dropout=config.attention_dropout,
        fast_dropout=config.fast_dropout,
    ).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))

    train_mask, _ = data.stage_masks(config.split, "valid")
    sequences = training_sequences(data, config.split, config.maxlen)
    if len(sequences.users) == 0:
        raise ConfigError(
            f"dataset {data.name} has no user with at least 2 training events under split {config.split!r}"
        )
    sampler = NegativeSampler(data, train_mask, device=device, generator=generator)
    users_t = torch.from_numpy(sequences.users).to(device)
    inputs_t = torch.from_numpy(sequences.inputs).to(device)
    targets_t = torch.from_numpy(sequences.targets).to(device)
    popularity = item_popularity(data, train_mask)
    valid_task = build_eval_task(
        data, config.split, "valid", maxlen=config.maxlen, relevance_threshold=config.relevance_threshold
    )
    beta = gbce_beta(config.num_negatives, data.num_items, config.gbce_t)
    metric = f"ndcg@{config.k}"

    log: list[dict[str, Any]] = []
    start_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, best_valid, best_value, bad_evals = 0, {}, -math.inf, 0
    if resume_from is not None:
        payload = _read_checkpoint(resume_from, device)
        check_fingerprint(payload, data, resume_from)
        _check_resume(TrainConfig.from_dict({**payload["config"], "device": "cpu"}), config)
        model.load_state_dict(payload["last_model_state"])
        optimizer.load_state_dict(payload["optimizer_state"])
        _set_rng_state(payload["rng"], generator, device)
        log = [dict(row) for row in payload["log"]]
        start_epoch = int(payload["epoch"])
        best_state = payload["model_state"] if payload["best_epoch"] > 0 else None
        best_epoch = int(payload["best_epoch"])
        best_valid = dict(payload["best_valid"])
        best_value = float(best_valid.get(metric, -math.inf))
        bad_evals = int(payload["bad_evals"])

    folder = Path(out_dir) if out_dir is not None else run_dir(data.name, config.train_dir)
    checkpoint_path: Path | None = Path(resume_from) if resume_from is not None else None
    written_by_us: Path | None = None
    stopped_early = 0 < config.patience <= bad_evals
    show = progress_enabled(config.progress)
    n_users = len(sequences.users)
    for epoch in range(start_epoch + 1, config.num_epochs + 1):
        if stopped_early:
            break
        started = time.perf_counter()
        model.train()
        order = torch.randperm(n_users, generator=generator, device=device)
        batches = order.split(config.batch_size)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not show, leave=False)
        for rows in bar:
            loss = _batch_loss(model, sampler, users_t[rows], inputs_t[rows], targets_t[rows], config, beta)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            total += value * len(rows)
            count += len(rows)
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        row: dict[str, Any] = {"epoch": epoch, "loss": total / max(count, 1)}
        if epoch % config.eval_every == 0 or epoch == config.num_epochs:
            summary = _evaluate_valid(model, valid_task, config, popularity, device)
            row.update({f"valid_{key}": value for key, value in summary.items()})
            current = summary.get(metric, float("nan"))
            if best_state is None or (not math.isnan(current) and current > best_value):
                best_value = current if not math.isnan(current) else -math.inf
                best_epoch, best_valid = epoch, summary
                best_state = {key: value.detach().clone() for key, value in model.state_dict().items()}
                bad_evals = 0
            else:
                bad_evals += 1
            stopped_early = 0 < config.patience <= bad_evals
        row["seconds"] = time.perf_counter() - started
        log.append(row)
        if on_epoch is not None:
            on_epoch(row)
        if save:
            checkpoint_path = folder / checkpoint_name(config, epoch)
            payload = {
                "format": CHECKPOINT_FORMAT,
                "model_state": best_state if best_state is not None else model.state_dict(),
                "last_model_state": model.state_dict(),
                "optimizer_state": optimizer.state_dict(),
                "model_kwargs": model.model_kwargs(),
                "config": config.to_dict(),
                "dataset": data.name,
                "fingerprint": data.fingerprint,
                "item_ids": torch.tensor(np.array(data.item_ids, dtype=np.int64)),
                "user_ids": torch.tensor(np.array(data.user_ids, dtype=np.int64)),
                "epoch": epoch,
                "best_epoch": best_epoch,
                "best_valid": best_valid,
                "bad_evals": bad_evals,
                "stopped_early": stopped_early,
                "rng": _rng_state(generator, device),
                "log": log,
                "popularity": torch.from_numpy(popularity),
            }
            with atomic_path(checkpoint_path) as tmp:
                torch.save(payload, tmp)
            _write_log(log, folder / log_name(config))
            if written_by_us is not None and written_by_us != checkpoint_path and written_by_us.exists():
                written_by_us.unlink()
            written_by_us = checkpoint_path

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        log=pd.DataFrame(log),
        best_epoch=best_epoch,
        best_valid=best_valid,
        checkpoint_path=checkpoint_path,
        config=config,
        stopped_early=stopped_early,
        popularity=popularity,
    )
