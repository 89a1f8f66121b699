"""Non-sequential and first-order baselines, and an oracle, all usable as evaluation scorers.

Every baseline is fitted on the events selected by a boolean mask over ``PreparedData.events`` (default:
the training events of its ``split``) and scores any :class:`~sasrec.data.EvalTask` of the same item
space from the task's own input (``task.history`` / ``task.sequences``), so one fitted model serves the
validation, test and big-to-small tasks. Scores are (B, I+1) float32 torch tensors with column 0 = -inf.

Every baseline takes ``target`` (:mod:`sasrec.models.targets`): the fitted matrix or counts hold only the
target events among the masked ones (``graded``: their weights as values); the history a user is scored
from stays every view. ``random`` accepts and ignores it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from sasrec.data.contracts import TRAIN, EvalTask, PreparedData, split_column
from sasrec.errors import ConfigError
from sasrec.models.targets import check_target, event_weights, target_counts, target_matrix
from sasrec.ranking import hashed_uniform, top_k_items

BASELINES = ("random", "pop", "itemknn", "ease", "als", "markov")


def _rows_csr(task: EvalTask, rows: np.ndarray) -> sp.csr_matrix:
    """Binary (len(rows), I+1) float32 CSR history of task rows."""
    hist = sp.csr_matrix(task.history[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
    hist.data[:] = 1.0
    return hist


def _rows_dense(task: EvalTask, rows: np.ndarray) -> torch.Tensor:
    """Binary (len(rows), I+1) float32 dense history of task rows."""
    hist = _rows_csr(task, rows).tocoo()
    out = torch.zeros(hist.shape, dtype=torch.float32)  # (B, C)
    out[torch.from_numpy(hist.row.astype(np.int64)), torch.from_numpy(hist.col.astype(np.int64))] = 1.0
    return out


def _gram(x: sp.csr_matrix, user_block: int = 4096) -> torch.Tensor:
    """Dense (C, C) float32 ``X^T X`` of a (U, C) CSR (binary: co-occurrence counts; or the ``graded``
    target's weights), accumulated over user blocks.

    Dense block products beat sparse-sparse products on KuaiRec's dense matrices (16% and 99.6% filled).
    """
    n_cols = x.shape[1]
    gram = torch.zeros((n_cols, n_cols), dtype=torch.float32)
    for lo in range(0, x.shape[0], user_block):
        block = x[lo : lo + user_block].tocoo()
        dense = torch.zeros(block.shape, dtype=torch.float32)  # (b, C)
        dense[torch.from_numpy(block.row.astype(np.int64)), torch.from_numpy(block.col.astype(np.int64))] = (
            torch.from_numpy(block.data.astype(np.float32))
        )
        gram.addmm_(dense.T, dense)  # (C, b) @ (b, C)
    return gram


def _finish(scores: torch.Tensor) -> torch.Tensor:
    """float32 scores with the padding column set to -inf."""
    scores = scores.to(torch.float32)
    scores[:, 0] = float("-inf")
    return scores


class Baseline:
    """Base class: ``fit(data, mask)`` then ``score(task, rows)``.

    Attributes:
        name: registry name.
        seed: random seed.
        split: split whose training events are the default fitting mask.
        target: which fitted events are positives (:data:`~sasrec.models.targets.TARGETS`; default views).
    """

    name: ClassVar[str] = "baseline"

    def __init__(self, *, seed: int = 0, split: str = "temporal", target: str = "views") -> None:
        split_column(split)  # validates
        self.seed = int(seed)
        self.split = split
        self.target = check_target(target)
        self.num_items: int | None = None

    def _mask(self, data: PreparedData, mask: np.ndarray | None) -> np.ndarray:
        """Default fitting mask (training events of ``self.split``) or a validated given mask."""
        if mask is None:
            return data.events[split_column(self.split)].to_numpy() == TRAIN
        mask = np.asarray(mask)
        if mask.dtype != bool or mask.shape != (len(data.events),):
            raise ConfigError(
                f"fit mask must be a bool array of shape ({len(data.events)},) over {data.name}'s events; "
                f"got dtype {mask.dtype} and shape {mask.shape}"
            )
        return mask

    def fit(self, data: PreparedData, mask: np.ndarray | None = None) -> Self:
        """Fit on ``data``'s events selected by ``mask`` (default: training events of ``self.split``)."""
        self.num_items = data.num_items
        self._fit(data, self._mask(data, mask))
        return self

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        raise NotImplementedError

    def _check_task(self, task: EvalTask) -> None:
        if self.num_items is None:
            raise ConfigError(f"baseline {self.name} must be fitted before scoring")
        if task.num_items != self.num_items:
            raise ConfigError(
                f"task {task.name} has {task.num_items} items but baseline {self.name} was fitted on "
                f"{self.num_items}: score tasks of the dataset the baseline was fitted on"
            )

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), I+1) float32 scores, column 0 = -inf; higher is better."""
        self._check_task(task)
        return _finish(self._score(task, np.asarray(rows, dtype=np.int64)))

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        target = "" if self.target == "views" else f", target={self.target!r}"
        return f"{type(self).__name__}(seed={self.seed}, split={self.split!r}{target})"


class RandomBaseline(Baseline):
    """Uniform random scores of (seed, original user id, original video id): chance level.

    Keyed by original ids (:attr:`EvalTask.row_keys`, :attr:`EvalTask.column_keys`), the scores depend
    neither on the batching nor on how the dataset was indexed: a user gets the same score for a video on
    ``small_matrix`` and ``small_matrix_no_remapping``.
    """

    name = "random"

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        return None

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        users = torch.from_numpy(task.row_keys[rows])  # (B,) original user ids
        return hashed_uniform(self.seed, users, torch.from_numpy(task.column_keys))  # (B, C)


class PopBaseline(Baseline):
    """Most popular: number of fitting target events of each item (repeat views count; ``graded``: weights)."""

    name = "pop"

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        self.counts = target_counts(data, mask, self.target).astype(np.float32)  # (C,)

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.counts).expand(len(rows), -1).clone()  # (B, C)


class ItemKNNBaseline(Baseline):
    """Item-based collaborative filtering with cosine similarity (Sarwar et al., WWW 2001).

    ``S[i, j] = |U_i & U_j| / sqrt(|U_i| |U_j|)`` on the binary user x item matrix of the target events
    (``graded``: the cosine of the weighted columns), diagonal zeroed, optionally keeping each item's
    ``neighbors`` largest similarities; ``score = history @ S``.
    """

    name = "itemknn"

    def __init__(
        self,
        *,
        seed: int = 0,
        split: str = "temporal",
        neighbors: int | None = None,
        block: int = 2048,
        target: str = "views",
    ) -> None:
        super().__init__(seed=seed, split=split, target=target)
        if neighbors is not None and int(neighbors) < 1:
            raise ConfigError(f"itemknn neighbors must be a positive integer or None; got {neighbors!r}")
        if int(block) < 1:
            raise ConfigError(f"itemknn block must be positive; got {block!r}")
        self.neighbors = None if neighbors is None else int(neighbors)
        self.block = int(block)

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        sim = _gram(target_matrix(data, mask, self.target))  # (C, C) co-occurrence counts |U_i & U_j|
        n_cols = sim.shape[0]
        norms = sim.diagonal().sqrt()  # (C,) sqrt(|U_i|)
        inv = torch.where(norms > 0, 1.0 / norms.clamp(min=1e-12), torch.zeros_like(norms))
        sim.mul_(inv[:, None]).mul_(inv[None, :])  # cosine, in place
        sim.diagonal().zero_()
        if self.neighbors is None or self.neighbors >= n_cols:
            self.similarity: sp.csr_matrix | torch.Tensor = sim
            return
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        keep = torch.ones((1, n_cols), dtype=torch.bool)
        for lo in range(0, n_cols, self.block):  # item blocks bound the temporaries of the selection
            block = sim[lo : lo + self.block]  # (b, C)
            # deterministic top-k: ties go to the lower item index
            top, _ = top_k_items(block, keep.expand_as(block), self.neighbors)  # (b, n)
            rows.append(np.repeat(np.arange(lo, lo + len(block)), self.neighbors))
            cols.append(top.numpy().ravel())
            vals.append(torch.gather(block, 1, top).numpy().ravel())
        sparse_sim = sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_cols, n_cols)
        )
        sparse_sim.eliminate_zeros()
        self.similarity = sparse_sim

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        if isinstance(self.similarity, torch.Tensor):
            return _rows_dense(task, rows) @ self.similarity  # (B, C) @ (C, C)
        return torch.from_numpy((_rows_csr(task, rows) @ self.similarity).toarray().astype(np.float32))


class EASEBaseline(Baseline):
    """EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    ``P = (X^T X + lambda I)^-1``, ``B = I - P diag(1 / diag(P))`` (so ``diag(B) = 0``), X the target
    events' matrix (binary, or the ``graded`` weights), ``score = history @ B``; dense float32 via a
    Cholesky inverse.
    """

    name = "ease"

    def __init__(
        self, *, seed: int = 0, split: str = "temporal", l2: float = 500.0, target: str = "views"
    ) -> None:
        super().__init__(seed=seed, split=split, target=target)
        if not float(l2) > 0:
            raise ConfigError(f"ease l2 (lambda) must be positive; got {l2!r}")
        self.l2 = float(l2)

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        gram = _gram(target_matrix(data, mask, self.target))  # (C, C) X^T X
        gram.diagonal().add_(self.l2)
        chol = torch.linalg.cholesky(gram)
        precision = torch.cholesky_inverse(chol)  # (C, C) P
        weights = -precision / precision.diagonal()[None, :]  # B_ij = -P_ij / P_jj
        weights.diagonal().zero_()
        self.weights = weights

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        return _rows_dense(task, rows) @ self.weights  # (B, C) @ (C, C)


class ALSBaseline(Baseline):
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky, ICDM 2008) with ``implicit``'s CPU ALS.

    Confidence of an observed (target) pair is ``1 + alpha`` (Hu et al.'s ``1 + alpha * r`` with binary r;
    under the ``graded`` target r is the pair's weight), unobserved pairs have confidence 1 and preference 0. Users of any task are scored from their
    history row: their factors are recomputed exactly by implicit's ``recalculate_user`` (a batched
    least-squares solve against the fitted item factors), then ``score = x_u . y_i``.
    """

    name = "als"

    def __init__(
        self,
        *,
        seed: int = 0,
        split: str = "temporal",
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        num_threads: int = 0,
        progress: bool = False,
        target: str = "views",
    ) -> None:
        super().__init__(seed=seed, split=split, target=target)
        for label, value in (("factors", factors), ("iterations", iterations)):
            if int(value) < 1:
                raise ConfigError(f"als {label} must be a positive integer; got {value!r}")
        if float(regularization) < 0 or float(alpha) < 0:
            raise ConfigError(f"als regularization and alpha must be >= 0; got {regularization!r}, {alpha!r}")
        self.factors = int(factors)
        self.regularization = float(regularization)
        self.alpha = float(alpha)
        self.iterations = int(iterations)
        self.num_threads = int(num_threads)
        self.progress = bool(progress)

    def _confidence(self, matrix: sp.csr_matrix, *, graded: bool = False) -> sp.csr_matrix:
        """``1 + alpha`` on every stored pair of a binary ``matrix``, ``1 + alpha * r`` when ``graded``."""
        conf = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        if graded:
            conf.data[:] = 1.0 + self.alpha * conf.data.astype(np.float64)
        else:
            conf.data[:] = 1.0 + self.alpha
        return conf

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        from threadpoolctl import threadpool_limits

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*threads.*", category=RuntimeWarning)
            # implicit imports tqdm.auto, which warns in Jupyter without ipywidgets; our bars are plain tqdm
            warnings.filterwarnings("ignore", message="IProgress not found", category=Warning)
            from implicit.cpu.als import AlternatingLeastSquares

            # implicit runs its own threads; BLAS threads on top of them slow it down (implicit's advice).
            with threadpool_limits(1, "blas"):
                model = AlternatingLeastSquares(
                    factors=self.factors,
                    regularization=self.regularization,
                    alpha=1.0,
                    iterations=self.iterations,
                    num_threads=self.num_threads,
                    random_state=self.seed,
                )
                fitted = target_matrix(data, mask, self.target)
                model.fit(
                    self._confidence(fitted, graded=self.target == "graded"), show_progress=self.progress
                )
        self.model = model
        self.item_factors = torch.from_numpy(np.asarray(model.item_factors, dtype=np.float32))  # (C, F)

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        from threadpoolctl import threadpool_limits

        conf = self._confidence(_rows_csr(task, rows))
        with threadpool_limits(1, "blas"):
            user_factors = self.model.recalculate_user(np.arange(len(rows)), conf)  # (B, F)
        user_factors = torch.from_numpy(np.asarray(user_factors, dtype=np.float32).reshape(len(rows), -1))
        return user_factors @ self.item_factors.T  # (B, F) @ (F, C)


class MarkovBaseline(Baseline):
    """First-order transition model: ``P(next = j | last = i)`` from consecutive pairs of training sequences.

    ``score_j = (1 - backoff) * (T_ij + smoothing) / (T_i + smoothing * I) + backoff * pop_j`` where
    ``T_ij`` counts transitions i -> j inside each user's fitting sequence (time order, repeats kept) and
    ``pop_j`` is item j's share of fitting events. Under a ``target`` other than views, the sequence stays
    every view and a transition counts (with its weight) only into a target event: from the previous
    viewed item i into a target item j; ``pop_j`` is the share of target events. A user without history (last item 0) gets the
    popularity ranking. This is the "first-order transition" baseline of KuaiRec measurements (and the
    Markov-chain component of FPMC, Rendle et al., WWW 2010).
    """

    name = "markov"

    def __init__(
        self,
        *,
        seed: int = 0,
        split: str = "temporal",
        smoothing: float = 0.1,
        backoff: float = 0.01,
        target: str = "views",
    ) -> None:
        super().__init__(seed=seed, split=split, target=target)
        if float(smoothing) < 0:
            raise ConfigError(f"markov smoothing must be >= 0; got {smoothing!r}")
        if not 0.0 <= float(backoff) <= 1.0:
            raise ConfigError(f"markov backoff must be in [0, 1]; got {backoff!r}")
        self.smoothing = float(smoothing)
        self.backoff = float(backoff)

    def _fit(self, data: PreparedData, mask: np.ndarray) -> None:
        indptr, items = data.sequences(mask)
        n_cols = data.num_items + 1
        starts = np.zeros(len(items), dtype=bool)
        starts[indptr[:-1][np.diff(indptr) > 0]] = True  # first event of each user's sequence
        nxt = np.flatnonzero(~starts)  # positions with a predecessor of the same user
        prev_items, next_items = items[nxt - 1], items[nxt]
        weights = event_weights(data, mask, self.target)
        if weights is None:
            step_weights, counts = np.ones(len(nxt), dtype=np.float32), np.bincount(items, minlength=n_cols)
        else:
            masked = weights[mask]  # (n_masked,) in sequence order, as ``items``
            step_weights = masked[nxt]  # (n_steps,) the weight of the event stepped into
            counts = np.bincount(items, weights=masked.astype(np.float64), minlength=n_cols)
        self.transitions = sp.csr_matrix(
            (step_weights, (prev_items, next_items)), shape=(n_cols, n_cols)
        )  # duplicates summed: transition counts (or weights)
        if weights is not None:
            self.transitions.eliminate_zeros()  # steps into non-target events
        self.out_counts = np.asarray(self.transitions.sum(axis=1), dtype=np.float64).ravel()  # (C,)
        counts = counts.astype(np.float64)
        counts[0] = 0.0
        self.popularity = (counts / max(counts.sum(), 1.0)).astype(np.float32)  # (C,)

    def _score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        n_items = task.num_items
        last = np.asarray(task.sequences, dtype=np.int64)[rows, -1]  # (B,) most recent item, 0 = none
        denom = self.out_counts[last] + self.smoothing * n_items  # (B,)
        denom = np.where(denom > 0, denom, 1.0)
        counts = torch.from_numpy(self.transitions[last].toarray())  # (B, C)
        denom_t = torch.from_numpy(denom.astype(np.float32))[:, None]
        transition = (counts + self.smoothing) / denom_t  # (B, C)
        no_history = torch.from_numpy(last == 0)[:, None]
        transition = torch.where(no_history, torch.zeros_like(transition), transition)
        pop = torch.from_numpy(self.popularity)[None, :]
        return (1.0 - self.backoff) * transition + self.backoff * pop


_REGISTRY: dict[str, type[Baseline]] = {
    "random": RandomBaseline,
    "pop": PopBaseline,
    "itemknn": ItemKNNBaseline,
    "ease": EASEBaseline,
    "als": ALSBaseline,
    "markov": MarkovBaseline,
}


def baseline_params(name: str) -> tuple[str, ...]:
    """Names of the keyword parameters accepted by baseline ``name`` (besides ``seed``)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    signature = inspect.signature(_REGISTRY[name].__init__)
    return tuple(p for p in signature.parameters if p not in {"self", "seed"})


def baseline_defaults(name: str) -> dict[str, Any]:
    """The default value of every keyword parameter of baseline ``name`` that has one (besides ``seed``)."""
    baseline_params(name)  # validates the name
    signature = inspect.signature(_REGISTRY[name].__init__)
    return {
        p: param.default
        for p, param in signature.parameters.items()
        if p not in {"self", "seed"} and param.default is not inspect.Parameter.empty
    }


def default_target(name: str) -> str:
    """The training target baseline ``name`` uses when none is given (``views``; ``liked`` for ``content``)."""
    baseline_params(name)  # validates the name
    return str(inspect.signature(_REGISTRY[name].__init__).parameters["target"].default)


def make_baseline(name: str, *, seed: int = 0, **params: Any) -> Baseline:
    """Instantiate baseline ``name`` (one of :data:`BASELINES`) with keyword ``params``.

    Raises:
        ConfigError: unknown name, unknown parameter or invalid value.
    """
    accepted = baseline_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"baseline {name!r} has no parameter {unknown[0]!r}; accepted: {', '.join(accepted)}"
        )
    try:
        return _REGISTRY[name](seed=seed, **params)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"baseline {name!r}: invalid parameter value ({exc})") from None


class OracleScorer:
    """Scores are a given expected-watch_ratio matrix: the upper bound on simulated data.

    Args:
        expected: (n_task_rows, I+1) sparse matrix aligned with the task's rows; items not stored score 0.
    """

    def __init__(self, expected: sp.csr_matrix) -> None:
        self.expected = sp.csr_matrix(expected, dtype=np.float32)

    def score(self, task: EvalTask, rows: np.ndarray) -> torch.Tensor:
        """(len(rows), I+1) expected watch_ratio of the task rows, column 0 = -inf."""
        if self.expected.shape != (len(task), task.num_items + 1):
            raise ConfigError(
                f"oracle matrix has shape {self.expected.shape}; task {task.name} needs "
                f"({len(task)}, {task.num_items + 1}) (task rows, items + 1)"
            )
        dense = self.expected[np.asarray(rows, dtype=np.int64)].toarray()
        return _finish(torch.from_numpy(dense))


# The side-feature baselines ("content", "hybrid": they need features=, so they are not in BASELINES) subclass
# Baseline: their module is imported last and adds them to _REGISTRY.
from sasrec.models import content as _content  # noqa: E402, F401
