"""Scorers of trained sequential models: every item scored from each task row's input sequence."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch

from sasrec.data.contracts import EvalTask
from sasrec.errors import ConfigError
from sasrec.models.base import SequentialRecommender


# ------------------------------------------------------------------------------------------------ scorer
class SequentialScorer:
    """Scores every item from each task row's last ``maxlen`` items (the ``Scorer`` protocol).

    Rows with an empty sequence get ``popularity`` (or zeros) and are recorded in ``fallback_rows`` /
    ``fallback_users``. A model fusing user features also receives each row's user index (``task.users``). With ``reuse_buffer`` (the default) the scores of one call live in a buffer that the
    next call overwrites: use them (or copy them) before scoring again, as the evaluation does.
    """

    def __init__(
        self,
        model: SequentialRecommender,
        *,
        popularity: np.ndarray | torch.Tensor | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        amp: bool = False,
        reuse_buffer: bool = True,
    ) -> None:
        self.model = model
        self.amp = bool(amp)
        self.reuse_buffer = bool(reuse_buffer)
        self._out: torch.Tensor | None = None
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
        if task.num_items != self.model.num_items:
            raise ConfigError(
                f"task {task.name} has {task.num_items} items but the model was trained on {self.model.num_items}"
            )
        rows = np.asarray(rows, dtype=np.int64)
        seqs = np.asarray(task.sequences[rows], dtype=np.int64)  # (n, T)
        empty = (seqs[:, -self.model.maxlen :] != 0).sum(axis=1) == 0
        if empty.any():
            self._fallback_rows.append(rows[empty])
            self._fallback_users.append(np.asarray(task.users)[rows[empty]].astype(np.int64))
        fused_users = getattr(self.model, "user_features", False)
        users = np.asarray(task.users, dtype=np.int64)[rows] if fused_users else None  # (n,) or None
        return self.score_sequences(seqs, users=users)

    def _buffer(self, n_rows: int, n_cols: int) -> torch.Tensor:
        """The output scores: one buffer reused across calls when ``reuse_buffer`` (a fresh one per batch of
        evaluation costs more in page faults than in arithmetic). Allocated outside inference mode, so that
        callers may modify the scores in place."""
        if not self.reuse_buffer:
            return torch.empty((n_rows, n_cols), dtype=torch.float32, device=self.device)
        if self._out is None or self._out.shape[0] < n_rows or self._out.shape[1] != n_cols:
            self._out = torch.empty((n_rows, n_cols), dtype=torch.float32, device=self.device)
        return self._out[:n_rows]

    def score_sequences(self, seqs: np.ndarray, users: np.ndarray | None = None) -> torch.Tensor:
        """(n, I+1) float32 scores after left-padded item sequences ``seqs`` (n, T); column 0 is -inf.

        Only the last ``maxlen`` positions are used; all-padding columns of a batch are dropped (the models
        are invariant to left padding); empty sequences get the popularity scores. On CUDA the batches are
        copied from pinned memory without blocking, and ``amp`` scores under bf16 autocast. ``users`` (n,):
        each row's user index for models fusing user features (None: unknown users, index 0).
        """
        seqs = np.asarray(seqs, dtype=np.int64)[:, -self.model.maxlen :]  # (n, T)
        n_cols = self.model.num_items + 1
        empty = (seqs != 0).sum(axis=1) == 0
        out = self._buffer(len(seqs), n_cols)
        cuda = self.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and self.amp else nullcontext()
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast:
                for start in range(0, len(seqs), self.batch_size):
                    part = seqs[start : start + self.batch_size]
                    width = max(int((part != 0).sum(axis=1).max()), 1)  # left padding: drop all-pad columns
                    batch = torch.from_numpy(np.ascontiguousarray(part[:, -width:]))
                    if cuda:
                        batch = batch.pin_memory()
                    batch = batch.to(self.device, non_blocking=cuda)
                    extra = {}
                    if users is not None:
                        part_users = np.ascontiguousarray(users[start : start + len(part)], dtype=np.int64)
                        extra["users"] = torch.from_numpy(part_users).to(self.device)  # (b,)
                    if autocast.__class__ is nullcontext:  # float32: straight into the output rows
                        self.model.score_all(batch, out=out[start : start + len(part)], **extra)
                    else:
                        out[start : start + len(part)] = self.model.score_all(batch, **extra).float()
        finally:
            self.model.train(was_training)
        if empty.any():
            out[torch.from_numpy(empty).to(self.device)] = self.popularity.to(self.device)
        out[:, 0] = float("-inf")
        return out
