"""Scorers of trained sequential models: every item scored from each task row's input sequence."""

from __future__ import annotations

import numpy as np
import torch

from sasrec.data.contracts import EvalTask
from sasrec.errors import ConfigError
from sasrec.models.sasrec import SASRec


# ------------------------------------------------------------------------------------------------ scorer
class SequentialScorer:
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
