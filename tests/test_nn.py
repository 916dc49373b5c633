"""`attnlab.nn.Attention`: projections, GQA, rotary, cross-attention, padding, learnable parts."""

from __future__ import annotations

import io

import pytest
import torch

import attnlab
from attnlab import ConfigError, InputError
from attnlab.nn import Attention, MixedAttention


def test_self_attention_shapes_and_gqa() -> None:
    m = Attention(32, "alibi ; causal ; entmax(1.5)", heads=4, kv_heads=2)
    x = torch.randn(3, 10, 32)
    with attnlab.record(m) as rec:
        out = m(x)
    w = rec.weights(0)
    assert out.shape == (3, 10, 32) and w.shape == (3, 4, 10, 10)
    assert m.to_k.out_features == 2 * 8 and m.to_q.out_features == 4 * 8
    assert torch.equal(torch.triu(w[0, 0], 1), torch.zeros(10, 10))  # causal: no look-ahead


def test_layout_comes_from_the_program_or_the_module() -> None:
    m = Attention(32, "causal ; heads(2) + kv_heads(1) + head_dim(24)")
    assert (m.heads, m.kv_heads, m.head_dim) == (2, 1, 24)
    assert m(torch.randn(1, 5, 32)).shape == (1, 5, 32)
    with pytest.raises(ConfigError, match="disagrees"):
        Attention(32, "heads(2)", heads=4)
    with pytest.raises(ConfigError, match="not divisible by heads=3"):
        Attention(32, heads=3)
    with pytest.raises(ConfigError, match="must divide"):
        Attention(32, heads=4, kv_heads=3)


def test_future_tokens_do_not_change_the_past() -> None:
    torch.manual_seed(0)
    m = Attention(16, "relative_bias(bidirectional=false) ; causal ; sparsemax", heads=2,
                  rotary=True)
    x = torch.randn(1, 8, 16)
    y = x.clone()
    y[:, 5:] = torch.randn(1, 3, 16)
    torch.testing.assert_close(m(x)[:, :5], m(y)[:, :5])


def test_cross_attention_and_kv_dim() -> None:
    m = Attention(16, "scaled_dot ; softmax ; cross", heads=4, kv_dim=24)
    out = m(torch.randn(2, 5, 16), torch.randn(2, 7, 24))
    assert out.shape == (2, 5, 16)
    with pytest.raises(InputError, match="cross-attention"):
        m(torch.randn(2, 5, 16))
    with pytest.raises(InputError, match="self-attention"):
        Attention(16, "self", heads=4)(torch.randn(1, 3, 16), torch.randn(1, 3, 16))
    with pytest.raises(InputError, match="rotary"):
        Attention(16, heads=4, rotary=True)(torch.randn(1, 3, 16), torch.randn(1, 3, 16))


def test_key_padding_hides_padded_keys() -> None:
    torch.manual_seed(1)
    m = Attention(16, "padding ; entmax(1.5)", heads=2)
    x = torch.randn(2, 6, 16)
    pad = torch.tensor([[False] * 4 + [True] * 2, [False] * 6])
    y = x.clone()
    y[0, 4:] = torch.randn(2, 16) * 10  # change only what sits under padding
    torch.testing.assert_close(m(x, key_padding_mask=pad)[0, :4], m(y, key_padding_mask=pad)[0, :4])
    with attnlab.record(m) as rec:
        m(x, key_lengths=torch.tensor([4, 6]))
    w = rec.weights(0)
    assert torch.equal(w[0, ..., 4:], torch.zeros_like(w[0, ..., 4:]))
    with pytest.raises(InputError, match="nothing reads it"):
        Attention(16, "causal", heads=2)(x, key_padding_mask=pad)


@pytest.mark.parametrize("program, names", [
    ("additive + relative_bias ; causal",
     {"score__w_q", "score__w_k", "score__v", "mods__0__table"}),
    ("cosine ; softmax", {"score__log_tau"}),
    ("lowrank(4, max_len=32)", {"approximation__e", "approximation__f"}),
    ("general ; topk(2)", {"score__w"}),
])
def test_learnable_parts_train_and_save(program: str, names: set[str]) -> None:
    torch.manual_seed(2)
    m = Attention(16, program, heads=2)
    assert set(m.program_params) == names
    x = torch.randn(2, 6, 16)
    m(x).square().mean().backward()
    for name in names:
        grad = m.program_params[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    buffer = io.BytesIO()
    torch.save(m.state_dict(), buffer)
    buffer.seek(0)
    fresh = Attention(16, program, heads=2)
    fresh.load_state_dict(torch.load(buffer))
    torch.testing.assert_close(fresh(x), m(x))


def test_train_mode_turns_on_dropout() -> None:
    m = Attention(16, "causal ; softmax ; dropout(0.5)", heads=2)
    x = torch.randn(1, 6, 16)
    m.eval()
    torch.testing.assert_close(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, m(x))


def test_repr_names_the_program() -> None:
    assert "alibi" in repr(Attention(8, "alibi ; causal", heads=2))
    assert attnlab.nn.Attention is Attention


def test_program_parameters_keep_their_state_dict_keys() -> None:
    m = Attention(16, "additive + relative_bias ; causal", heads=2)
    assert {k for k in m.state_dict() if k.startswith("program_params.")} == {
        "program_params.score__w_q", "program_params.score__w_k", "program_params.score__v",
        "program_params.mods__0__table"}
    assert set(m.program_params.as_params()) == {"score.w_q", "score.w_k", "score.v",
                                                 "mods.0.table"}
    mixed = MixedAttention(16, [("causal", 2), ("general ; causal", 2)])
    assert [k for k in mixed.state_dict() if k.startswith("program_params.")] == [
        "program_params.1.score__w"]
    assert mixed.program_params[1].as_params()["score.w"] is mixed.program_params[1]["score__w"]
