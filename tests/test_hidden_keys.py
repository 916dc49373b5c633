"""Hidden keys have no effect: NaN or inf planted in k or v at a key that some queries cannot see
(masked, padding, another document) leaves those queries' outputs and every gradient they feed
exactly as they were with finite values there, on every backend. Queries that do see the key
still get a non-finite output: a visible NaN is never silently zeroed."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from attnlab import attention, init_params
from attnlab.exec.api import check_call
from attnlab.exec.backend import Call
from attnlab.exec.linear import LinearBackend
from attnlab.exec.reference import ReferenceBackend
from attnlab.exec.sdpa import SdpaBackend
from attnlab.exec.tiled import TiledBackend
from attnlab.lang import Layout, LowRank
from strategies import programs

BACKENDS = [ReferenceBackend(), SdpaBackend(), TiledBackend(block=8), TiledBackend(block=5),
            LinearBackend()]
BAD = [math.nan, math.inf, -math.inf]


def call_data(program, b: int, n: int, m: int, g: torch.Generator) -> dict:
    """Call-time inputs for what the program reads; batch row 0 may be all padding, and
    segments come per query and per key, so any N and M fit."""
    needs, out = program.requires(), {}
    if "key_padding" in needs:
        out["key_lengths"] = torch.randint(0, m + 1, (b,), generator=g)
    if "segments" in needs:
        out["segments"] = (torch.randint(0, 2, (b, n), generator=g),
                           torch.randint(0, 2, (b, m), generator=g))
    if "graph" in needs:
        out["graph"] = torch.rand(b, n, m, generator=g) < 0.5
    if "distances" in needs:
        out["distances"] = torch.randint(-1, 9, (b, n, m), generator=g)
    if "bias" in needs:
        out["bias"] = torch.randn(b, 1, n, m, generator=g, dtype=torch.float64)
    return out


def run(backend, program, q, k, v, params, inp, bias, keep_rows, up):
    """Output, and gradients of sum(out · up) over the rows kept (others held out with where,
    so a NaN there cannot reach any gradient)."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v, *params.values())]
    q, k, v, *values = leaves
    ps = dict(zip(params, values, strict=True))
    out = backend.run(q, k, v, program, inp, bias=bias, params=ps, training=False, generator=None)
    loss = (torch.where(keep_rows[..., None], out, 0) * up).sum()
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out.detach(), [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads,
                                                                                    strict=True)]


@st.composite
def planted_calls(draw):
    program = draw(programs()).replace(dropout=0.0, layout=Layout())
    if isinstance(program.approximation, LowRank):
        program = program.replace(approximation=LowRank(program.approximation.k, 64))
    hk = draw(st.integers(1, 2))
    return (program, draw(st.integers(1, 2)), hk * draw(st.integers(1, 2)), hk,
            draw(st.integers(1, 20)), draw(st.integers(1, 20)), draw(st.sampled_from([4, 8])))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_calls(), st.sampled_from(range(len(BACKENDS))), st.integers(0, 10**6), st.data())
def test_non_finite_values_at_hidden_keys_change_nothing_they_hide_from(call, which, seed,
                                                                         data) -> None:
    program, b, h, hk, n, m, d = call
    backend = BACKENDS[which]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    k, v = (torch.randn(b, hk, m, d, generator=g, dtype=torch.float64) for _ in "kv")
    params = init_params(program, h, d, dtype=torch.float64, seed=seed)
    extra = call_data(program, b, n, m, g)
    inp = check_call(q, k, v, program, params=params, **extra)
    if backend.refuse(Call.of(program, q, k, v, params=params, needs_grad=True)):
        event("refused")
        return
    visible = (torch.ones(b, h, n, m, dtype=torch.bool) if program.mask is None
               else program.mask.dense(inp).expand(b, h, n, m))
    # plant at key j of batch row b0, in k (some channels), in v (some channels), or both
    b0, j = data.draw(st.integers(0, b - 1)), data.draw(st.integers(0, m - 1))
    where = data.draw(st.sampled_from(["k", "v", "kv"]))
    k_bad, v_bad = k.clone(), v.clone()
    channels = {t: data.draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d, unique=True))
                for t in where}
    for name, t in (("k", k_bad), ("v", v_bad)):
        for c in channels.get(name, []):
            t[b0, :, j, c] = data.draw(st.sampled_from(BAD))
    seen = torch.zeros(b, h, n, dtype=torch.bool)
    seen[b0] = visible[b0, :, :, j]
    unseen = ~seen
    event(f"{backend.name}: {int(unseen.sum())} of {unseen.numel()} rows hidden from the key")
    up = torch.randn(b, h, n, d, generator=g, dtype=torch.float64)
    bias = extra.get("bias")
    want_out, want = run(backend, program, q, k, v, params, inp, bias, unseen, up)
    got_out, got = run(backend, program, q, k_bad, v_bad, params, inp, bias, unseen, up)
    close = dict(atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(got_out[unseen], want_out[unseen], **close)
    if program.mask is not None:  # without a mask no key is hidden: nothing else to hold
        _same_gradients(want, got, ["q", "k", "v", *params], b0, j, close)
    # what a query sees, it shows: a whole row for a bad key, the bad channels for a bad value
    rows = got_out[seen]
    if "k" in channels:
        assert not rows.isfinite().any()
    for c in channels.get("v", []):
        assert not rows[:, c].isfinite().any()


def _same_gradients(want, got, names, b0, j, close) -> None:
    for name, gw, gg in zip(names, want, got, strict=True):
        if name in ("k", "v"):  # the planted key's own gradient may be anything
            gw, gg = gw.clone(), gg.clone()
            gw[b0, :, j], gg[b0, :, j] = 0, 0
        torch.testing.assert_close(gg, gw, **close, msg=lambda m, name=name: f"grad {name}: {m}")


def test_flex_hands_non_finite_hidden_keys_to_a_safe_backend() -> None:
    """FlexAttention, like SDPA, multiplies a hidden NaN by weight 0; no compile is needed to
    check the call is rerouted (finite calls are compared by test_flex_backend)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 12, 8, generator=g) for _ in "qkv")
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[..., 11, 0], v_bad[..., 11, 3] = math.nan, math.inf
    for program in ("scaled_dot ; causal ; softmax", "alibi ; window(2) ; softmax"):
        with torch.no_grad():
            want = attention(q, k, v, program, backend="reference")
            got = attention(q, k_bad, v_bad, program, backend="flex")
        torch.testing.assert_close(got[..., :9, :], want[..., :9, :])  # 9+ see key 11
        assert not got[..., 11, :].isfinite().any()


@pytest.mark.parametrize("backend", ["reference", "sdpa", "tiled"])
def test_the_issue_cases(backend) -> None:
    """NaN in v (every backend) and in k (sdpa, tiled) at a causal-hidden or padding key."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 13, 8, generator=g) for _ in "qkv")
    k[..., -1, :], v[..., -1, :] = math.nan, math.nan
    causal = attention(q, k, v, "scaled_dot ; causal ; softmax", backend=backend)
    assert causal[..., :12, :].isfinite().all() and causal[..., 12, :].isnan().all()
    padded = attention(q, k, v, "scaled_dot ; padding ; softmax", key_lengths=torch.tensor([12]),
                       backend=backend)
    assert padded.isfinite().all()
