"""Tests of the SASRec model: causality, padding, initialisation, scoring and the fast dropout."""

from __future__ import annotations

import math

import pytest
import torch

from sasrec.errors import ConfigError
from sasrec.models.layers import fast_dropout
from sasrec.models.sasrec import EMBEDDING_INIT_STD, SASRec


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test of this module runs on one thread (tests/conftest.py)."""


def _model(**kwargs: object) -> SASRec:
    torch.manual_seed(0)
    params: dict = {"hidden_units": 16, "num_blocks": 2, "num_heads": 2, "maxlen": 12, "dropout_rate": 0.2}
    params.update(kwargs)
    return SASRec(30, **params).eval()


def test_causality_later_items_never_change_earlier_outputs() -> None:
    model = _model()
    seqs = torch.tensor([[0, 0, 3, 7, 9, 11, 2, 5], [1, 2, 3, 4, 5, 6, 7, 8]])
    changed = seqs.clone()
    changed[:, 5] = torch.tensor([29, 28])
    with torch.no_grad():
        before, after = model(seqs), model(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=1e-6)
    assert (before[:, 5:] - after[:, 5:]).abs().amax() > 1e-3  # later positions do see the change


def test_last_position_ignores_left_padding_amount() -> None:
    model = _model()
    items = [4, 8, 15, 16]
    short = torch.tensor([[0, 0] + items])  # T = 6
    long = torch.tensor([[0] * 8 + items])  # T = 12 (= maxlen)
    with torch.no_grad():
        a = model(short)[:, -1]
        b = model(long)[:, -1]
        scores_a, scores_b = model.score_all(short), model.score_all(long)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(scores_a, scores_b, rtol=0, atol=1e-5)


def test_every_valid_position_ignores_left_padding() -> None:
    """Padding is masked from the attention keys: all valid positions match the unpadded sequence."""
    model = _model(num_blocks=1)
    with torch.no_grad():
        padded = model(torch.tensor([[0, 0, 0, 5, 6, 7]]))[:, 3:]
        unpadded = model(torch.tensor([[5, 6, 7]]))
    torch.testing.assert_close(padded, unpadded, rtol=0, atol=1e-6)


def test_fully_padded_sequence_gives_finite_output() -> None:
    model = _model()
    with torch.no_grad():
        out = model.score_all(torch.zeros(2, 5, dtype=torch.long))
    assert torch.isfinite(out).all()


def test_embedding_initialisation_is_normal_0_02() -> None:
    torch.manual_seed(1)
    model = SASRec(5000, hidden_units=50, maxlen=200)
    item = model.item_emb.weight.detach()
    assert torch.equal(item[0], torch.zeros(50))  # padding row
    rest = item[1:]
    assert abs(float(rest.mean())) < 1e-3
    assert float(rest.std()) == pytest.approx(EMBEDDING_INIT_STD, rel=0.02)  # 250k draws
    pos = model.pos_emb.weight.detach()
    assert float(pos.std()) == pytest.approx(EMBEDDING_INIT_STD, rel=0.05)  # 10k draws
    assert EMBEDDING_INIT_STD == 0.02


def test_scores_are_dot_products_with_item_embeddings() -> None:
    model = _model()
    seqs = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    with torch.no_grad():
        hidden = model(seqs)  # (2, 4, 16)
        all_scores = model.score_all(seqs)
        expected = hidden[:, -1] @ model.item_emb.weight.T
        torch.testing.assert_close(all_scores, expected)
        items = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
        per_position = model.score_items(hidden, items)  # (2, 4)
        manual = (hidden * model.item_emb.weight[items]).sum(-1)
        torch.testing.assert_close(per_position, manual)
        candidates = torch.tensor([[1, 2, 3], [4, 5, 6]])  # (2, 3): one candidate set per sequence
        last = model.score_items(hidden[:, -1], candidates)
        torch.testing.assert_close(last, torch.gather(all_scores, 1, candidates))


@pytest.mark.parametrize("training", [False, True])
def test_last_only_forward_equals_the_full_forward_last_position(training: bool) -> None:
    model = _model(dropout_rate=1e-9 if training else 0.2).train(training)
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 9]])
    with torch.no_grad():
        full = model(seqs)[:, -1:]
        last = model(seqs, last_only=True)
    assert last.shape == (3, 1, 16)
    torch.testing.assert_close(last, full, rtol=1e-5, atol=1e-5)


def test_reference_dropout_defaults() -> None:
    model = SASRec(10)
    kwargs = model.model_kwargs()
    assert kwargs["dropout_rate"] == 0.2
    assert kwargs["attention_dropout"] == 0.2  # the reference drops attention probabilities too
    assert (kwargs["hidden_units"], kwargs["num_blocks"], kwargs["num_heads"], kwargs["maxlen"]) == (
        50,
        2,
        1,
        200,
    )


def test_explicit_training_attention_matches_sdpa_when_nothing_is_dropped() -> None:
    """With p so small that no element is dropped, the CPU training path equals the eval (SDPA) path."""
    model = _model(dropout_rate=1e-9)
    seqs = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        eval_out = model(seqs)
        model.train()
        train_out = model(seqs)
    torch.testing.assert_close(train_out, eval_out, rtol=1e-5, atol=1e-5)


def test_fast_dropout_keep_rate_scale_and_gradient() -> None:
    torch.manual_seed(3)
    x = torch.full((200_000,), 2.0, requires_grad=True)
    y = fast_dropout(x, 0.2, True)
    kept = y.detach() != 0
    assert float(kept.float().mean()) == pytest.approx(0.8, abs=0.005)
    keep_prob = 1 - round(0.2 * 65536) / 65536
    torch.testing.assert_close(y.detach()[kept], torch.full((int(kept.sum()),), 2.0 / keep_prob))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / keep_prob)
    assert fast_dropout(x, 0.2, False) is x  # identity at eval time


def test_model_is_deterministic_at_eval_and_random_in_training() -> None:
    model = _model()
    seqs = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(seqs), model(seqs))
        model.train()
        assert not torch.equal(model(seqs), model(seqs))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_heads": 3}, "num_heads"), ({"dropout_rate": 1.0}, "dropout_rate"), ({"maxlen": 0}, "maxlen")],
)
def test_invalid_architecture_names_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        SASRec(10, hidden_units=16, **kwargs)


def test_sequence_longer_than_maxlen_is_rejected() -> None:
    model = _model(maxlen=4)
    with pytest.raises(ConfigError, match="maxlen"):
        model(torch.ones(1, 5, dtype=torch.long))


def test_positional_embedding_count_is_maxlen() -> None:
    model = _model(maxlen=7)
    assert model.pos_emb.weight.shape == (7, 16)
    assert math.isclose(model.item_emb.weight.shape[0], 31)


# ------------------------------------------------------------------- blocked causal training attention
def _training_step(
    query_block: int, seqs: torch.Tensor, seed: int = 5
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hidden states and parameter gradients of one seeded training forward/backward pass."""
    model = _model(maxlen=12).train()
    for layer in model.attention_layers:
        layer.query_block = query_block
    torch.manual_seed(seed)  # the same dropout draws for every block size
    hidden = model(seqs)
    (hidden * torch.linspace(-1.0, 1.0, hidden.shape[-1])).sum().backward()
    return hidden.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("query_block", [1, 3, 5, 12])
def test_blocked_causal_attention_equals_the_plain_computation(query_block: int) -> None:
    """CPU training skips the keys after each block of queries: same outputs and gradients, dropout on."""
    seqs = torch.tensor([[0, 0, 3, 7, 9, 11, 2, 5, 1, 1, 4, 6], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
                         [0, 0, 0, 0, 0, 0, 0, 4, 8, 12, 13, 14]])  # fmt: skip
    plain_hidden, plain_grads = _training_step(0, seqs)  # one (T, T) computation
    hidden, grads = _training_step(query_block, seqs)
    torch.testing.assert_close(hidden, plain_hidden, rtol=1e-5, atol=1e-6)
    for name, grad in grads.items():  # float rounding: errors ~1e-7 of the gradient's largest entry
        assert float((grad - plain_grads[name]).abs().max()) <= 1e-5 * float(plain_grads[name].abs().max()), (
            name
        )
    assert not torch.equal(hidden, _training_step(query_block, seqs, seed=6)[0])  # dropout is on


def test_blocked_causal_attention_gradient_matches_finite_differences() -> None:
    """The hand-written backward (softmax gradient from P and the kept P only) against gradcheck."""
    from sasrec.models.layers import _CausalDropoutAttention, _drop_threshold, _random_int16

    torch.manual_seed(0)
    n, length, dh = 2, 7, 3
    q, k, v = (torch.randn(n, length, dh, dtype=torch.float64, requires_grad=True) for _ in range(3))
    causal = torch.full((length, length), float("-inf"), dtype=torch.float64).triu_(1)
    # a moderate bias on two keys of row 0 (the model's -1e9 would swamp finite differences)
    bias = causal + torch.tensor([[-30.0, -30.0] + [0.0] * 5, [0.0] * 7], dtype=torch.float64)[:, None, :]
    draws = _random_int16((n, length, length), q.device)
    threshold, scale = _drop_threshold(0.3)
    assert bool((draws < threshold).any())  # some probabilities are dropped

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _CausalDropoutAttention.apply(q, k, v, bias, draws, threshold, scale, 3)

    assert torch.autograd.gradcheck(attention, (q, k, v))
    keep = (draws >= threshold).to(torch.float64)
    dense = (torch.softmax(q @ k.transpose(1, 2) + bias, dim=-1) * keep) @ v * scale
    torch.testing.assert_close(attention(q, k, v), dense)
