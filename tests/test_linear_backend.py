"""The linear backend agrees with reference, refuses what it cannot run, and stays O(N) in memory."""

from __future__ import annotations

import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlab import InputError, init_params, parse
from attnlab import lang as S
from attnlab.exec.backend import Call
from attnlab.exec.linear import LinearBackend
from attnlab.exec.reference import reference_attention
from attnlab.lang.masks import MaskInputs

MASKS = [None, S.Causal(), S.Padding(), S.And((S.Causal(), S.Padding()))]


@st.composite
def cases(draw):
    """A program the linear backend runs, with shapes, key lengths and a chunk size."""
    kv_heads = draw(st.integers(1, 2))
    heads = kv_heads * draw(st.integers(1, 3))
    n, m = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    if draw(st.integers(0, 3)):  # mostly self-attention or a KV cache: M ≥ N
        n, m = min(n, m), max(n, m)
    kind = draw(st.sampled_from(["elu1", "relu", "favor", "lowrank"]))
    if kind == "lowrank":
        rank = draw(st.integers(1, 6))
        approx = S.LowRank(rank, draw(st.integers(max(rank, m), 48)))
        mask = draw(st.sampled_from([None, S.Padding()]))
    else:
        approx = (S.Favor(draw(st.integers(1, 8)), draw(st.booleans()), draw(st.integers(0, 9)))
                  if kind == "favor" else S.Linear(kind))
        mask = draw(st.sampled_from(MASKS))
    batch = draw(st.integers(1, 2))
    lengths = None
    if mask is not None and "padding" in str(mask):
        lengths = draw(st.lists(st.integers(0, m), min_size=batch, max_size=batch))
    return dict(program=S.Program(mask=mask, approximation=approx), batch=batch, heads=heads,
                kv_heads=kv_heads, n=n, m=m, head_dim=draw(st.integers(1, 6)),
                value_dim=draw(st.integers(1, 5)), lengths=lengths, chunk=draw(st.integers(1, 9)),
                seed=draw(st.integers(0, 2**16)))


def _compare(case: dict, dtype: torch.dtype, tol: float) -> None:
    """Outputs and gradients (q, k, v, params) of linear and reference agree within tol."""
    p, b, h, hkv, n, m = (case[key] for key in ("program", "batch", "heads", "kv_heads", "n", "m"))
    g = torch.Generator().manual_seed(case["seed"])
    q = torch.randn(b, h, n, case["head_dim"], generator=g, dtype=dtype).requires_grad_()
    k = torch.randn(b, hkv, m, case["head_dim"], generator=g, dtype=dtype).requires_grad_()
    v = torch.randn(b, hkv, m, case["value_dim"], generator=g, dtype=dtype).requires_grad_()
    lengths = None if case["lengths"] is None else torch.tensor(case["lengths"])
    inp = MaskInputs.build(b, h, n, m, key_lengths=lengths)
    params = {name: t.requires_grad_()
              for name, t in init_params(p, h, case["head_dim"], seed=case["seed"], dtype=dtype).items()}
    backend = LinearBackend(chunk=case["chunk"])
    assert backend.refuse(Call.of(p, q, k, v)) is None

    got = backend.run(q, k, v, p, inp, bias=None, params=params, training=False, generator=None)
    want = reference_attention(q, k, v, p, inp, params=params)[0]
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)

    up = torch.randn(want.shape, generator=g, dtype=dtype)
    wrt = (q, k, v, *params.values())
    got_grads = torch.autograd.grad((got * up).sum(), wrt)
    want_grads = torch.autograd.grad((want * up).sum(), wrt)
    for name, a, e in zip(["q", "k", "v", *params], got_grads, want_grads, strict=True):
        assert torch.isfinite(a).all(), name
        torch.testing.assert_close(a, e, atol=tol, rtol=tol, msg=lambda s, name=name: f"d{name}: {s}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_matches_reference_in_float64(case: dict) -> None:
    _compare(case, torch.float64, 1e-9)


@pytest.mark.parametrize("program", ["linear(elu1) ; causal & padding", "linear(relu) ; padding",
                                     "favor(16) ; causal", "favor(8, orthogonal=false) ; causal & padding",
                                     "lowrank(4, max_len=48) ; padding"])
def test_matches_reference_in_float32(program: str) -> None:
    case = dict(program=parse(program), batch=2, heads=4, kv_heads=2, n=37, m=45, head_dim=8,
                value_dim=8, lengths=[45, 20] if "padding" in program else None, chunk=16, seed=3)
    _compare(case, torch.float32, 1e-5)


def test_fully_padded_rows_are_zero_with_finite_gradients() -> None:
    p = parse("linear(relu) ; causal & padding")
    q, k, v = (torch.randn(2, 2, 9, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    inp = MaskInputs.build(2, 2, 9, 9, key_lengths=torch.tensor([0, 5]))
    out = LinearBackend(chunk=4).run(q, k, v, p, inp, bias=None, params={}, training=False,
                                     generator=None)
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    assert all(torch.isfinite(gr).all() for gr in grads)


def _reason(program: str, **kwargs) -> str | None:
    q = k = v = torch.zeros(1, 2, 8, 4)
    return LinearBackend().refuse(Call.of(parse(program), q, k, v, **kwargs))


def test_refusals_say_why() -> None:
    assert "exact programs need the score matrix" in _reason("scaled_dot ; causal ; softmax")
    for mask in ("window(4)", "~causal", "causal | padding", "causal & window(4)", "document"):
        reason = _reason(f"linear(elu1) ; {mask}")
        assert f"'{parse('linear ; ' + mask).mask}'" in reason and "reference" in reason, mask
    assert "only reference returns weights" in _reason("linear(elu1)", return_weights=True)
    assert "materialised weights" in _reason("favor(8) ; causal ; dropout(0.1)", training=True)
    assert _reason("favor(8) ; causal ; dropout(0.1)", training=False) is None
    assert _reason("linear(elu1) ; causal & padding") is None
    assert _reason("lowrank(4, max_len=8) ; padding") is None


def test_lowrank_longer_than_max_len_is_an_input_error() -> None:
    p = parse("lowrank(2, max_len=6)")
    q = k = v = torch.zeros(1, 1, 7, 4)
    with pytest.raises(InputError, match="at most 6 keys, got 7"):
        LinearBackend().run(q, k, v, p, MaskInputs.build(1, 1, 7, 7), bias=None,
                            params=init_params(p, 1, 4), training=False, generator=None)


def test_half_precision_computes_in_float32() -> None:
    p = parse("favor(16) ; causal")
    q, k, v = (torch.randn(1, 2, 20, 8) for _ in range(3))
    inp = MaskInputs.build(1, 2, 20, 20)
    got = LinearBackend(chunk=8).run(q.bfloat16(), k.bfloat16(), v.bfloat16(), p, inp, bias=None,
                                     params={}, training=False, generator=None)
    want = reference_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), p, inp)[0]
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, atol=1e-2, rtol=1e-2)


def test_causal_memory_is_linear_in_sequence_length() -> None:
    """N = M = 65536: an N×N float32 matrix would take 16 GiB."""
    n, p = 65536, parse("linear(elu1) ; causal")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 16, generator=g) for _ in range(3))
    start = time.perf_counter()
    with torch.no_grad():
        out = LinearBackend().run(q, k, v, p, MaskInputs.build(1, 1, n, n), bias=None, params={},
                                  training=False, generator=None)
    elapsed = time.perf_counter() - start
    assert out.shape == (1, 1, n, 16) and torch.isfinite(out).all()
    assert elapsed < 20, f"took {elapsed:.1f} s"
    # The first and the last rows against reference, which can afford a few rows over all keys.
    head = reference_attention(q[..., :64, :], k[..., :64, :], v[..., :64, :], p,
                               MaskInputs.build(1, 1, 64, 64))[0]
    tail = reference_attention(q[..., -3:, :], k, v, p, MaskInputs.build(1, 1, 3, n))[0]
    torch.testing.assert_close(out[..., :64, :], head, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[..., -3:, :], tail, atol=1e-5, rtol=1e-5)
