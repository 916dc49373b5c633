"""Rotary position embedding: norms kept, dot products depend on relative position only."""

import math

import pytest
import torch

from attnlab.nn.rotary import Rotary


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_norm_preserved():
    rope = Rotary(16)
    x = _randn(2, 3, 40, 16)
    torch.testing.assert_close(rope(x).norm(dim=-1), x.norm(dim=-1))


def test_position_zero_is_identity():
    x = _randn(1, 2, 5, 8)
    torch.testing.assert_close(Rotary(8)(x, torch.zeros(5, dtype=torch.long)), x)


@pytest.mark.parametrize("shift", [1, 7, 300])
def test_dot_products_depend_only_on_relative_position(shift):
    # float64: in float32 an angle near 300 rad already carries ~3e-5 rounding error.
    rope = Rotary(32)
    q = _randn(2, 2, 12, 32, seed=1, dtype=torch.float64)
    k = _randn(2, 2, 12, 32, seed=2, dtype=torch.float64)
    p_q = torch.arange(12) * 3
    p_k = torch.arange(12).flip(0) + 5
    before = rope(q, p_q) @ rope(k, p_k).transpose(-1, -2)
    after = rope(q, p_q + shift) @ rope(k, p_k + shift).transpose(-1, -2)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_rotation_really_depends_on_position():
    rope = Rotary(8)
    q = _randn(1, 1, 1, 8)
    dots = [(rope(q, torch.tensor([0])) * rope(q, torch.tensor([p]))).sum() for p in (1, 2)]
    assert all(d < q.norm() ** 2 - 1e-3 for d in dots)


def test_matches_explicit_pair_rotation():
    # Pair (i, i + d/2) rotated by angle p * base**(-2i/d).
    d, base, p = 6, 10000.0, 3
    x = _randn(1, 1, 1, d, dtype=torch.float64)
    out = Rotary(d, base)(x, torch.tensor([p]))
    for i in range(d // 2):
        theta = p * base ** (-2 * i / d)
        a, b = x[..., i].item(), x[..., i + d // 2].item()
        c, s = math.cos(theta), math.sin(theta)
        assert out[..., i].item() == pytest.approx(a * c - b * s)
        assert out[..., i + d // 2].item() == pytest.approx(b * c + a * s)


def test_positions_equal_slice_of_longer_default():
    rope = Rotary(16)
    x = _randn(2, 2, 30, 16)
    full = rope(x)
    torch.testing.assert_close(rope(x[:, :, 10:20], torch.arange(10, 20)), full[:, :, 10:20])
    # Per-batch positions (B, L) pick each row's own offset.
    batch_pos = torch.stack([torch.arange(0, 10), torch.arange(20, 30)])
    pieces = torch.stack([x[0, :, 0:10], x[1, :, 20:30]])
    expected = torch.stack([full[0, :, 0:10], full[1, :, 20:30]])
    torch.testing.assert_close(rope(pieces, batch_pos), expected)


def test_cache_grows_and_short_after_long_agrees():
    rope = Rotary(8)
    x = _randn(1, 1, 50, 8)
    short_first = rope(x[:, :, :5])
    long_out = rope(x)
    torch.testing.assert_close(rope(x[:, :, :5]), short_first)
    torch.testing.assert_close(long_out[:, :, :5], short_first)


@pytest.mark.parametrize("head_dim", [7, 0, -2])
def test_bad_head_dim_raises(head_dim):
    with pytest.raises(ValueError, match="even head_dim"):
        Rotary(head_dim)


def test_wrong_input_width_raises():
    with pytest.raises(ValueError, match="head_dim=8"):
        Rotary(8)(_randn(1, 1, 3, 6))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_round_trip(dtype):
    rope = Rotary(16)
    x = _randn(2, 2, 9, 16)
    out = rope(x.to(dtype))
    assert out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.float(), rope(x), atol=0.05, rtol=0.02)


def test_table_cached_under_inference_mode_still_trains():
    rope = Rotary(8)
    with torch.inference_mode():
        rope(_randn(1, 1, 6, 8))
    x = _randn(1, 1, 6, 8).requires_grad_()
    rope(x).sum().backward()
    assert x.grad is not None


def test_state_dict_is_empty():
    assert Rotary(8).state_dict() == {}
