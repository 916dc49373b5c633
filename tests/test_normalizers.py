"""Tests for attnlab.exec.normalizers: oracles from the `entmax` package, masking, edge rows."""

from __future__ import annotations

import math

import entmax
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab.exec import normalizers as N

F64 = torch.float64

ALL = {
    "softmax": N.softmax,
    "sparsemax": N.sparsemax,
    "entmax15": N.entmax15,
    "entmax_bisect": N.entmax_bisect,
    "entmax_bisect_a3": lambda s, v=None: N.entmax_bisect(s, v, alpha=3.0),
    "topk": lambda s, v=None: N.topk(s, v, k=3),
    "gumbel": N.gumbel,
    "gumbel_train_hard": lambda s, v=None: N.gumbel(
        s, v, hard=True, training=True, generator=torch.Generator().manual_seed(0)
    ),
    "sigmoid": N.sigmoid,
    "relu": N.relu,
}
SUM_TO_ONE = [
    "softmax",
    "sparsemax",
    "entmax15",
    "entmax_bisect",
    "entmax_bisect_a3",
    "topk",
    "gumbel",
    "gumbel_train_hard",
]

# (ours, oracle, tolerance): the oracle's bisection gets more iterations than its default so the
# comparison measures our error, not the oracle's.
ORACLES = {
    "sparsemax": (N.sparsemax, entmax.sparsemax, 1e-6),
    "entmax15": (N.entmax15, entmax.entmax15, 1e-6),
    **{
        f"bisect_{a}": (
            lambda s, v=None, a=a: N.entmax_bisect(s, v, alpha=a),
            lambda s, a=a: entmax.entmax_bisect(s, alpha=a, n_iter=100),
            1e-5,
        )
        for a in (1.25, 1.5, 2.0, 3.0)
    },
}

shapes = st.tuples(st.integers(1, 6), st.integers(1, 12))
seeds = st.integers(0, 2**31 - 1)
scales = st.sampled_from([0.1, 1.0, 3.0, 10.0])


def _scores(shape, seed, scale=1.0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen, dtype=F64) * scale).to(dtype)


def _mask(shape, seed, p_visible):
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.rand(shape, generator=gen) < p_visible


def _value_and_grad(fn, x, upstream):
    x = x.detach().clone().requires_grad_(True)
    w = fn(x)
    (w * upstream).sum().backward()
    return w.detach(), x.grad


@pytest.mark.parametrize("name", list(ORACLES))
@settings(max_examples=25, deadline=None)
@given(shape=shapes, seed=seeds, scale=scales)
def test_matches_entmax_oracle(name, shape, seed, scale):
    ours, oracle, tol = ORACLES[name]
    x = _scores(shape, seed, scale)
    g = _scores(shape, seed + 7)
    w, dx = _value_and_grad(ours, x, g)
    w_ref, dx_ref = _value_and_grad(oracle, x, g)
    torch.testing.assert_close(w, w_ref, atol=tol, rtol=0)
    torch.testing.assert_close(dx, dx_ref, atol=tol, rtol=0)


@pytest.mark.parametrize("name", list(ORACLES))
@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=seeds, scale=scales, p_visible=st.sampled_from([0.2, 0.5, 0.9]))
def test_masked_rows_match_oracle_on_visible_keys(name, shape, seed, scale, p_visible):
    ours, oracle, tol = ORACLES[name]
    x = _scores(shape, seed, scale)
    g = _scores(shape, seed + 7)
    vis = _mask(shape, seed, p_visible)
    w, dx = _value_and_grad(lambda s: ours(s, vis), x, g)
    assert (w[~vis] == 0).all()
    assert (dx[~vis] == 0).all()
    for r in range(shape[0]):
        keep = vis[r]
        if not keep.any():
            continue
        w_ref, dx_ref = _value_and_grad(oracle, x[r, keep][None], g[r, keep][None])
        torch.testing.assert_close(w[r, keep], w_ref[0], atol=tol, rtol=0)
        torch.testing.assert_close(dx[r, keep], dx_ref[0], atol=tol, rtol=0)


@pytest.mark.parametrize("name", list(ALL))
@settings(max_examples=15, deadline=None)
@given(shape=shapes, seed=seeds, p_visible=st.sampled_from([0.3, 0.7]))
def test_hidden_scores_never_leak(name, shape, seed, p_visible):
    """NaN, inf or huge values under hidden keys change neither weights nor visible gradients."""
    fn = ALL[name]
    x = _scores(shape, seed, 3.0)
    g = _scores(shape, seed + 7)
    vis = _mask(shape, seed, p_visible)
    garbage = torch.tensor([math.nan, math.inf, -math.inf, 1e30], dtype=F64)
    junk = garbage[torch.arange(x.numel()).reshape(shape) % 4]
    w0, dx0 = _value_and_grad(lambda s: fn(s, vis), x.masked_fill(~vis, 0.0), g)
    w1, dx1 = _value_and_grad(lambda s: fn(s, vis), torch.where(vis, x, junk), g)
    torch.testing.assert_close(w1, w0, atol=0, rtol=0)
    torch.testing.assert_close(dx1, dx0, atol=0, rtol=0)
    assert (dx1[~vis] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(ALL))
def test_fully_hidden_rows_are_zero_and_finite(name, dtype):
    fn = ALL[name]
    x = _scores((5, 7), 3, 4.0, dtype)
    vis = _mask((5, 7), 3, 0.6)
    vis[1] = False
    vis[4] = False
    vis[0] = True
    w, dx = _value_and_grad(lambda s: fn(s, vis), x, torch.ones_like(x))
    assert w.dtype == dtype
    assert torch.isfinite(w).all() and torch.isfinite(dx).all()
    assert (w[[1, 4]] == 0).all()
    assert (dx[[1, 4]] == 0).all()
    assert (w[0] != 0).any()
    # Every key hidden, in every row.
    nothing = torch.zeros(5, 7, dtype=torch.bool)
    w, dx = _value_and_grad(lambda s: fn(s, nothing), x, torch.ones_like(x))
    assert (w == 0).all() and (dx == 0).all()


@pytest.mark.parametrize("name", SUM_TO_ONE)
@settings(max_examples=15, deadline=None)
@given(shape=shapes, seed=seeds, scale=scales, p_visible=st.sampled_from([0.3, 1.0]))
def test_rows_sum_to_one_where_any_key_is_visible(name, shape, seed, scale, p_visible):
    for dtype, tol in [(torch.float32, 1e-5), (F64, 1e-12)]:
        vis = _mask(shape, seed, p_visible)
        w = ALL[name](_scores(shape, seed, scale, dtype), vis)
        assert (w >= 0).all()
        sums = w.sum(-1)
        live = vis.any(-1)
        torch.testing.assert_close(sums[live], torch.ones_like(sums[live]), atol=tol, rtol=0)
        assert (sums[~live] == 0).all()


def test_broadcast_mask_and_shapes():
    x = _scores((2, 3, 4, 5), 0)
    vis = _mask((2, 1, 4, 5), 0, 0.6)
    for fn in ALL.values():
        w = fn(x, vis)
        assert w.shape == x.shape
        assert (w[~vis.expand_as(x)] == 0).all()
    w = N.sparsemax(x[0, 0], vis[:, 0])  # scores (4, 5) broadcast up to the mask's (2, 4, 5)
    assert w.shape == (2, 4, 5)
    torch.testing.assert_close(w[1], N.sparsemax(x[0, 0], vis[1, 0]))


def test_empty_key_dim_gives_empty_weights():
    x = torch.zeros(3, 0, dtype=F64)
    for fn in ALL.values():
        assert fn(x).shape == (3, 0)


def test_bad_arguments_raise():
    x = _scores((2, 4), 0)
    with pytest.raises(ValueError):
        N.entmax_bisect(x, alpha=1.0)
    with pytest.raises(ValueError):
        N.topk(x, k=0)
    with pytest.raises(ValueError):
        N.gumbel(x, tau=0.0)
    with pytest.raises(TypeError):
        N.softmax(x, torch.ones(2, 4))


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds, scale=scales)
def test_softmax_matches_torch(shape, seed, scale):
    x = _scores(shape, seed, scale)
    torch.testing.assert_close(N.softmax(x), torch.softmax(x, -1), atol=1e-12, rtol=0)
    vis = _mask(shape, seed, 0.5)
    live = vis.any(-1)
    ref = torch.softmax(x.masked_fill(~vis, -math.inf)[live], -1)
    torch.testing.assert_close(N.softmax(x, vis)[live], ref, atol=1e-12, rtol=0)


def test_entmax_bisect_alpha_two_is_sparsemax_in_float32():
    x = _scores((8, 10), 5, 2.0, torch.float32)
    torch.testing.assert_close(N.entmax_bisect(x, alpha=2.0), N.sparsemax(x), atol=1e-5, rtol=0)
    assert N.entmax_bisect(x, alpha=2.0).dtype == torch.float32


@pytest.mark.parametrize("k", [1, 3, 8])
@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=seeds, p_visible=st.sampled_from([0.3, 0.8, 1.0]))
def test_topk_keeps_k_largest_visible_and_is_straight_through(k, shape, seed, p_visible):
    x = _scores(shape, seed, 2.0)
    g = _scores(shape, seed + 7)
    vis = _mask(shape, seed, p_visible)
    w, dx = _value_and_grad(lambda s: N.topk(s, vis, k=k), x, g)
    _, dx_soft = _value_and_grad(lambda s: N.softmax(s, vis), x, g)
    torch.testing.assert_close(dx, dx_soft, atol=0, rtol=0)
    for r in range(shape[0]):
        kept = w[r] > 0
        n_vis = int(vis[r].sum())
        assert int(kept.sum()) == min(k, n_vis)
        assert not (kept & ~vis[r]).any()
        if n_vis == 0:
            continue
        dropped = vis[r] & ~kept
        if dropped.any():
            assert x[r][kept].min() >= x[r][dropped].max()
        torch.testing.assert_close(w[r][kept], torch.softmax(x[r][kept], -1), atol=1e-12, rtol=0)


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=seeds, tau=st.sampled_from([0.3, 1.0, 2.5]))
def test_gumbel(shape, seed, tau):
    x = _scores(shape, seed, 2.0)
    vis = _mask(shape, seed, 0.7)

    def noisy(s, hard=False, gen_seed=seed):
        gen = torch.Generator().manual_seed(gen_seed)
        return N.gumbel(s, vis, tau=tau, hard=hard, training=True, generator=gen)

    def plain(s, hard=False):
        return N.gumbel(s, vis, tau=tau, hard=hard)

    # Eval mode: no noise at all.
    torch.testing.assert_close(plain(x), N.softmax(x / tau, vis))
    # Training: seeded noise is reproducible and is -log(-log(u)) from that generator.
    torch.testing.assert_close(noisy(x), noisy(x), atol=0, rtol=0)
    u = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
    expected = N.softmax((x - torch.log(-torch.log(u))) / tau, vis)
    torch.testing.assert_close(noisy(x), expected, atol=1e-12, rtol=0)
    if (vis.sum(-1) > 1).any():
        assert not torch.equal(noisy(x), noisy(x, gen_seed=seed + 1))
    # Hard: one-hot of the (noisy) argmax among visible keys, straight-through gradient.
    g = _scores(shape, seed + 7)
    for fn in (plain, noisy):
        w, dx = _value_and_grad(lambda s, fn=fn: fn(s, hard=True), x, g)
        soft, dx_soft = _value_and_grad(fn, x, g)
        torch.testing.assert_close(dx, dx_soft, atol=0, rtol=0)
        live = vis.any(-1)
        assert ((w == 0) | (w == 1)).all()
        assert (w.sum(-1)[live] == 1).all() and (w.sum(-1)[~live] == 0).all()
        assert (w[~vis] == 0).all()
        hot = w.argmax(-1)[live]
        assert torch.equal(hot, soft.argmax(-1)[live])


@settings(max_examples=20, deadline=None)
@given(shape=shapes, seed=seeds, scale=scales, bias=st.sampled_from([None, 0.0, -2.5]))
def test_sigmoid_and_relu_formulas(shape, seed, scale, bias):
    x = _scores(shape, seed, scale)
    vis = _mask(shape, seed, 0.6)
    b = -math.log(shape[-1]) if bias is None else bias
    expected = torch.where(vis, 1 / (1 + torch.exp(-(x + b))), 0.0)
    torch.testing.assert_close(N.sigmoid(x, vis, bias=bias), expected, atol=1e-12, rtol=0)
    n_vis = vis.sum(-1, keepdim=True).clamp(min=1).to(F64)
    expected = torch.where(vis, x.clamp(min=0) / n_vis, 0.0)
    torch.testing.assert_close(N.relu(x, vis), expected, atol=1e-12, rtol=0)
    # Unmasked: the bias defaults to -log(M) and relu divides by M.
    torch.testing.assert_close(N.sigmoid(x), torch.sigmoid(x - math.log(shape[-1])))
    torch.testing.assert_close(N.relu(x), torch.relu(x) / shape[-1])
