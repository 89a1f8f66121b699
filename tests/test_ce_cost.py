"""Cost and exactness of the full-softmax cross-entropy (``loss: ce``; SASRec, BERT4Rec, GRU4Rec).

The chunked loss and both its gradients equal a dense ``F.cross_entropy`` for chunk sizes that do and do not
divide the rows; it never holds more than one chunk of logits; it computes logits only at the loss positions
(non-padding for the causal models, the masked ones for BERT4Rec), so padded positions change nothing.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sasrec.errors import ConfigError
from sasrec.models.base import build_model
from sasrec.training import loop
from sasrec.training.config import TrainConfig
from sasrec.training.losses import CE_CPU_CHUNK_BYTES, chunk_rows, chunked_cross_entropy

ROOT = Path(__file__).resolve().parents[1]
N, D, CLASSES = 23, 5, 17  # rows, hidden size, I + 1 (column 0 is padding)


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Tiny tensors: one thread."""


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=generator, dtype=torch.float64, requires_grad=True)  # (N, d)
    weight = torch.randn(CLASSES, D, generator=generator, dtype=torch.float64, requires_grad=True)  # (I+1, d)
    targets = torch.randint(1, CLASSES, (N,), generator=generator)  # (N,)
    rows = torch.rand(N, generator=generator, dtype=torch.float64) * 2  # (N,) graded weights
    return hidden, weight, targets, rows


def _dense(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor | None):
    logits = (hidden @ weight.T).index_fill(1, torch.tensor([0]), float("-inf"))  # (N, I+1)
    terms = F.cross_entropy(logits, targets, reduction="none")  # (N,)
    return terms.mean() if rows is None else (terms * rows).sum() / len(terms)


@pytest.mark.parametrize("chunk", [1, 4, 7, 23, 64])  # 4 and 7 do not divide 23 rows; 64 is one chunk
@pytest.mark.parametrize("weighted", [False, True])
def test_chunked_loss_and_gradients_equal_dense_cross_entropy(chunk: int, weighted: bool) -> None:
    hidden, weight, targets, rows = _inputs()
    row_weight = rows if weighted else None
    loss = chunked_cross_entropy(hidden, weight, targets, chunk, row_weight)
    got = torch.autograd.grad(loss * 2.5, (hidden, weight))  # an incoming gradient other than 1
    dense = _dense(hidden, weight, targets, row_weight)
    want = torch.autograd.grad(dense * 2.5, (hidden, weight))
    torch.testing.assert_close(loss, dense, rtol=1e-12, atol=0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)
    assert weight.grad is None and float(got[1][0].abs().max()) == 0.0  # padding is never a class


def test_hand_computed_two_row_value() -> None:
    """Rows h = (1, 0), (0, 2) against items (0, 0) padding, (1, 0), (0, 1): -log p of targets 1 and 2."""
    hidden = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    weight = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss = chunked_cross_entropy(hidden, weight, torch.tensor([1, 2]), 1)
    first = math.log(math.e + 1.0) - 1.0  # logits (1, 0) over items 1, 2
    second = math.log(1.0 + math.e**2) - 2.0  # logits (0, 2)
    assert float(loss) == pytest.approx((first + second) / 2, rel=1e-14)


def test_only_one_input_needing_gradients_and_no_grad_mode() -> None:
    hidden, weight, targets, _ = _inputs()
    frozen = weight.detach()
    loss = chunked_cross_entropy(hidden, frozen, targets, 5)
    (grad,) = torch.autograd.grad(loss, (hidden,))
    torch.testing.assert_close(grad, torch.autograd.grad(_dense(hidden, frozen, targets, None), (hidden,))[0])
    with torch.no_grad():
        value = chunked_cross_entropy(hidden, weight, targets, 5)
    assert not value.requires_grad
    torch.testing.assert_close(value, _dense(hidden, weight, targets, None).detach())


def test_non_positive_chunk_is_refused() -> None:
    hidden, weight, targets, _ = _inputs()
    with pytest.raises(ConfigError, match="ce_chunk_size"):
        chunked_cross_entropy(hidden, weight, targets, 0)


# ------------------------------------------------------------------------------------------ memory
class _Shapes(TorchDispatchMode):
    """Records the element count of every tensor an operator returns, and the matrix products run."""

    def __init__(self) -> None:
        super().__init__()
        self.largest, self.products = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, tuple | list) else (out,):
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm, torch.ops.aten.addmm_):
            self.products += 1
        return out


@contextmanager
def _recording() -> Iterator[_Shapes]:
    with _Shapes() as mode:
        yield mode


@pytest.mark.parametrize("chunk", [3, 8])
def test_never_materialises_more_than_one_chunk_of_logits(chunk: int) -> None:
    """Forward and backward: no tensor larger than chunk x (I+1) (the dense way holds N x (I+1))."""
    generator = torch.Generator().manual_seed(1)
    n, classes, d = 40, 300, 4  # N x (I+1) = 12,000 elements; a chunk 900 or 2,400
    hidden = torch.randn(n, d, generator=generator, requires_grad=True)
    weight = torch.randn(classes, d, generator=generator, requires_grad=True)
    targets = torch.randint(1, classes, (n,), generator=generator)
    with _recording() as mode:
        chunked_cross_entropy(hidden, weight, targets, chunk).backward()
    assert mode.largest == max(chunk * classes, classes * d)  # one chunk of logits, or the (I+1, d) gradient
    chunks = math.ceil(n / chunk)
    assert mode.products == 3 * chunks  # logits once per chunk, then the two gradients: nothing recomputed
    with torch.no_grad(), _recording() as mode:
        chunked_cross_entropy(hidden, weight, targets, chunk)
    assert mode.products == chunks  # without gradients only the logits are computed
    with _recording() as dense:
        _dense(hidden, weight, targets, None).backward()
    assert dense.largest >= n * classes  # the check can fail: the dense reference does exceed it


def test_cpu_chunk_rows_fit_the_cache_budget_and_never_exceed_chunk_size() -> None:
    cpu = torch.device("cpu")
    assert chunk_rows(2048, 10_729, torch.float32, cpu) == CE_CPU_CHUNK_BYTES // (10_729 * 4) == 390
    assert chunk_rows(100, 10_729, torch.float32, cpu) == 100  # the configured bound wins when smaller
    assert chunk_rows(2048, 10**8, torch.float32, cpu) == 16  # never fewer than 16 rows
    assert chunk_rows(2048, 10_729, torch.float32, torch.device("meta")) == 2048  # off the CPU: as configured


# --------------------------------------------------------------------------- loss positions only
def _capture(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Record the hidden rows the loop hands to the cross-entropy."""
    seen: list[torch.Tensor] = []

    def spy(hidden: torch.Tensor, *args: object) -> torch.Tensor:
        seen.append(hidden.detach().clone())
        return chunked_cross_entropy(hidden, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "chunked_cross_entropy", spy)
    return seen


class _Generator:
    """What the cross-entropy path reads of the negative sampler: its generator and catalogue (None: every
    item is in the softmax, as outside item cold-start)."""

    catalogue = None
    catalogue_rows = None

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)


NUM_ITEMS, MAXLEN = 12, 6
WINDOW = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 7, 8, 9], [0, 0, 0, 0, 11, 12]])  # (B, T) left-padded
INPUTS = torch.tensor([[0, 0, 0, 3, 4, 5], [0, 1, 2, 3, 7, 8], [0, 0, 0, 0, 0, 11]])  # (B, T) previous items
TARGETS = torch.where(INPUTS != 0, WINDOW, 0)  # (B, T): 3 + 5 + 1 = 9 loss positions
USERS = torch.tensor([1, 2, 3])


def _model(name: str) -> tuple[torch.nn.Module, TrainConfig]:
    values = {"hidden_units": 8, "num_heads": 2, "num_blocks": 1, "dropout_rate": 0.0, "maxlen": MAXLEN}
    config = TrainConfig.for_model(name, device="cpu", loss="ce", ce_chunk_size=4, **values)
    torch.manual_seed(0)
    return build_model(name, NUM_ITEMS, **config.to_dict()).eval(), config


@pytest.mark.parametrize(("name", "positions"), [("sasrec", 9), ("gru4rec", 9), ("bert4rec", 4)])
def test_logits_are_computed_only_at_the_loss_positions(
    name: str, positions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Causal models: the 9 non-padding targets; BERT4Rec: its masked positions only (4 of 12 items here)."""
    model, config = _model(name)
    seen = _capture(monkeypatch)
    mean, n = loop.batch_loss_terms(model, model, _Generator(5), USERS, INPUTS, TARGETS, WINDOW, config, 1.0)  # type: ignore[arg-type]
    model_input, loss_targets = model.training_batch(
        INPUTS, TARGETS, WINDOW, torch.Generator().manual_seed(5)
    )
    loss_positions = loss_targets != 0  # (B, T)
    assert n == int(loss_positions.sum()) == seen[0].shape[0] == positions
    hidden = model(model_input)[loss_positions]  # (N, d)
    torch.testing.assert_close(seen[0], hidden.detach())
    dense = _dense(hidden, model.output_embeddings(), loss_targets[loss_positions], None)
    torch.testing.assert_close(mean, dense)


@pytest.mark.parametrize("chunk", [2, 5, 100])
def test_padded_positions_change_neither_loss_nor_gradients(chunk: int) -> None:
    """The loop's hidden[valid]: whatever the model outputs at padded positions, nothing moves."""
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(3, 6, D, generator=generator, dtype=torch.float64)  # (B, T, d)
    weight = torch.randn(CLASSES, D, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = torch.where(TARGETS != 0, TARGETS % (CLASSES - 1) + 1, 0)  # (B, T)
    valid = targets != 0

    def loss_and_grads(states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states = states.clone().requires_grad_()
        loss = chunked_cross_entropy(states[valid], weight, targets[valid], chunk)
        return (loss, *torch.autograd.grad(loss, (states, weight)))

    before = loss_and_grads(hidden)
    changed = torch.where(
        valid[..., None], hidden, 1e3 * torch.randn(hidden.shape, generator=generator, dtype=torch.float64)
    )
    after = loss_and_grads(changed)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    assert float(before[1][~valid].abs().max()) == 0.0  # padded positions receive no gradient


# ------------------------------------------------------------------------------------------- report
def test_bench_summary_renders_the_cross_entropy_section() -> None:
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    run_all = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(run_all)  # type: ignore[union-attr]
    variant = {"hidden_units": 50, "loss_positions": 25600, "before_ms": 5000.0, "after_ms": 900.0, "rest_ms": 300.0,
               "matmul_ms": 500.0, "matmul_gflops": 164.8, "bound_ms": 800.0, "before_over_bound": 6.25,
               "after_over_bound": 1.12, "after_over_bound_fastest": 1.05}  # fmt: skip
    figures = {"threads": 2, "batch": 128, "maxlen": 200, "items": 10728, "variants": {"sasrec_ce": variant}}
    text = run_all.render_markdown({"bench_ce": {"returncode": 0, "figures": figures}})
    assert "## Full-softmax cross-entropy: before/after and the compute bound" in text
    assert "After / bound on the fastest batches: sasrec_ce 1.05x" in text
    assert (
        "| sasrec_ce | 50 | 25,600 | 5000.0 | 900.0 | 300.0 | 500.0 (164.8 GFLOP/s) | 800.0 | 6.25x | 1.12x |"
        in text
    )
    failed = run_all.render_markdown({"bench_ce": {"returncode": 1, "figures": None}})
    assert "Full-softmax cross-entropy" not in failed
