"""Every backend the planner may choose agrees with the reference, forward and backward,
over random programs and shapes: N ≠ M, GQA, padding, documents, fully hidden rows,
N not a multiple of the block size."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from attnlab import init_params, parse
from attnlab.exec.api import check_call
from attnlab.exec.backend import Call
from attnlab.exec.linear import LinearBackend
from attnlab.exec.reference import index_grid, reference_attention
from attnlab.exec.scores import compose_mods, compute_scores
from attnlab.exec.sdpa import SdpaBackend
from attnlab.exec.tiled import TiledBackend
from attnlab.lang import Entmax, Layout, LowRank
from attnlab.lang import approximations as A
from attnlab.lang import normalizers as N
from attnlab.lang import scores as S
from attnlab.lang.masks import MaskInputs
from strategies import masks, programs
from test_reference import call_inputs

FAST = [SdpaBackend(), TiledBackend(block=8), TiledBackend(block=5), LinearBackend()]


def compare(program, backend, b, h, hk, n, m, d, seed, dtype, atol):
    """Run `backend` and the reference on the same random call; compare values and grads.

    float64: backend == reference within atol. float32: both are measured against the
    reference in float64; the backend's error may be 4× the reference's own float32 error
    plus atol·max(1, |scores|/8): fused kernels lose accuracy as scores grow (PyTorch's CPU
    SDPA errs by ~2e-5 in gradients at |score| ≈ 100), so the bound follows the scores.
    """
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=g, dtype=dtype)
    k, v = (torch.randn(b, hk, m, d, generator=g, dtype=dtype) for _ in "kv")
    params = init_params(program, h, d, dtype=dtype, seed=seed)
    for path, part in program.parts():  # graph_distance starts at zero: give it a bias to read
        if isinstance(part, S.GraphDistance):
            key = f"{path}.table"
            params[key] = torch.randn(params[key].shape, generator=g, dtype=dtype)
    extra = call_inputs(program, b, n, m, g)
    if "bias" in extra:
        extra["bias"] = extra["bias"].to(dtype)
    inp = check_call(q, k, v, program, params=params, **extra)
    reason = backend.refuse(Call.of(program, q, k, v, params=params, needs_grad=True))
    if reason:
        assert not documented(backend.name, program), (
            f"{backend.name} refused '{program}', which it is documented to run: {reason}")
        return False
    up = torch.randn(b, h, n, d, generator=g, dtype=dtype)
    got = _run(backend.run, q, k, v, params, program, inp, extra.get("bias"), up)
    want = _run(_reference, q, k, v, params, program, inp, extra.get("bias"), up)
    if dtype == torch.float64:
        for name, a, w in zip(got, got.values(), want.values(), strict=True):
            close(a, w, atol, name)
        return True
    truth = _run(_reference, q.double(), k.double(), v.double(),
                 {n_: t.double() for n_, t in params.items()}, program, inp,
                 None if "bias" not in extra else extra["bias"].double(), up.double())
    slack = atol * max(1.0, _score_magnitude(program, q.double(), k.double(), params, inp,
                                             extra.get("bias")) / 8)
    for name in got:
        own = float((want[name].double() - truth[name]).abs().max()) if truth[name].numel() else 0
        err = float((got[name].double() - truth[name]).abs().max()) if truth[name].numel() else 0
        assert err <= 4 * own + slack, f"{name}: error {err:.3g} vs reference's own {own:.3g}"
    return True


def documented(backend: str, program) -> bool:
    """Whether `backend` is documented to run `program` (its docstring and DESIGN.md), written
    from the language's parts, not from the backend's own checks: a refusal of such a program
    is a bug. Small calls only: sdpa's dense-mask size limit is never reached here.

    sdpa: exact softmax with a dot-form score and affine mods (ALiBi, relative bias, bias,
    graph distance, temperature); tiled: any exact program with a dot-form score, any normalizer; linear:
    linear / favor / lowrank with no mask, causal, padding or causal & padding.
    """
    exact, dot = program.approximation is None, not isinstance(program.score, S.Additive)
    if backend == "sdpa":
        return (exact and dot and isinstance(program.normalizer, N.Softmax)
                and all(isinstance(m, (S.Alibi, S.RelativeBias, S.Bias, S.GraphDistance,
                                       S.Temperature))
                        for m in program.mods))
    if backend == "tiled":
        return exact and dot
    if backend == "linear":
        allowed = program.mask is None or str(program.mask) in (
            "causal", "padding", "causal & padding", "padding & causal")
        return isinstance(program.approximation, (A.Linear, A.Favor, A.LowRank)) and allowed
    raise ValueError(f"no documented coverage for backend '{backend}'")


def _score_magnitude(program, q, k, params, inp, bias) -> float:
    """max |score| after mods: how hard the call is for float32 softmax kernels."""
    if program.approximation is not None:
        return 0.0
    k = k.repeat_interleave(q.shape[1] // k.shape[1], 1)
    params = {n: t.double() for n, t in params.items()}
    scores = compute_scores(program.score, q, k, params)
    mods = compose_mods(program.mods, inp, params, None if bias is None else bias.double())
    if mods is not None:
        scores = mods(scores, *index_grid(inp))
    return float(scores.abs().max())


def _reference(q, k, v, program, inp, **kw):
    return reference_attention(q, k, v, program, inp, **kw)[0]


def _run(fn, q, k, v, params, program, inp, bias, up) -> dict:
    """Output and gradients (of sum(out · up)) of q, k, v and params, None grads as zeros."""
    leaves = [t.detach().requires_grad_() for t in (q, k, v, *params.values())]
    q, k, v, *values = leaves
    ps = dict(zip(params, values, strict=True))
    out = fn(q, k, v, program, inp, bias=bias, params=ps, training=False, generator=None)
    grads = torch.autograd.grad((out * up).sum(), leaves, allow_unused=True)
    result = {"out": out.detach()}
    for name, leaf, grad in zip(["q", "k", "v", *params], leaves, grads, strict=True):
        result[name] = torch.zeros_like(leaf) if grad is None else grad
    return result


def close(got, want, atol: float, name: str) -> None:
    """Equal within atol relative to the tensor's largest entry (at least atol absolute)."""
    tol = atol * max(1.0, float(want.detach().abs().max()) if want.numel() else 1.0)
    torch.testing.assert_close(got, want, atol=tol, rtol=atol, msg=lambda m: f"{name}: {m}")


@st.composite
def calls(draw):
    program = draw(programs()).replace(dropout=0.0, layout=Layout())
    if isinstance(program.approximation, LowRank):
        program = program.replace(approximation=LowRank(program.approximation.k, 64))
    hk = draw(st.integers(1, 2))
    h = hk * draw(st.integers(1, 3))
    n = draw(st.integers(1, 24))
    m = n + draw(st.integers(0, 12))
    return program, draw(st.integers(1, 2)), h, hk, n, m, draw(st.sampled_from([4, 8]))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls(), st.sampled_from(range(len(FAST))), st.integers(0, 10**6))
def test_backends_agree_with_reference_float64(call, which, seed) -> None:
    program, b, h, hk, n, m, d = call
    # a small softcap saturates tanh to exactly c for several keys: top-k of a tie is any of them
    assume(not (isinstance(program.normalizer, N.TopK) and any(isinstance(mod, S.Softcap)
                                                               for mod in program.mods)))
    ran = compare(program, FAST[which], b, h, hk, n, m, d, seed, torch.float64, 1e-8)
    event(f"{FAST[which].name}: {'compared' if ran else 'refused'}")


@settings(max_examples=60, deadline=None)
@given(calls(), st.sampled_from(range(len(FAST))), st.integers(0, 10**6))
def test_backends_agree_with_reference_float32(call, which, seed) -> None:
    program, b, h, hk, n, m, d = call
    # entmax with alpha > 2 weighs its exact Jacobian by p^(2 - alpha), unbounded as p -> 0:
    # fp32 rounding in the scores moves gradients by percents there (float64 agrees to 1e-8).
    assume(not (isinstance(program.normalizer, Entmax) and program.normalizer.alpha > 2))
    compare(program, FAST[which], b, h, hk, n, m, d, seed, torch.float32, 2e-5)


CASES = ["causal", "alibi ; causal & window(3)", "relative_bias + temperature(2.0) ; "
         "window(4) | global_tokens(2)", "softcap(5.0) ; causal ; softmax", "causal & padding ; "
         "entmax(1.5)", "document ; sparsemax", "general ; causal ; topk(3)", "cosine ; dilated(2, 2)",
         "bias ; graph ; sigmoid", "random_blocks(0.3, block=4) ; relu", "causal ; entmax(1.7)",
         "~causal & padding ; softmax",
         "graph_distance(3) + alibi ; causal & (rule(within, 2) | rule(summary, 4)) ; softmax"]


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("backend", FAST[:3], ids=["sdpa", "tiled8", "tiled5"])
def test_named_programs_on_every_applicable_backend(text, backend) -> None:
    for n, m in ((13, 13), (7, 19), (16, 16)):
        compare(parse(text), backend, 2, 4, 2, n, m, 8, n * m, torch.float64, 1e-8)


def test_tiled_runs_every_non_approximate_program_the_reference_runs() -> None:
    for text in CASES:
        program = parse(text)
        call = Call(program, 1, 2, 2, 8, 8, 4, 4, torch.float32, torch.device("cpu"), True)
        assert TiledBackend().refuse(call) is None, text


# -- more queries than keys (N > M): queries before the first key sit at negative positions ----


def test_random_blocks_with_more_queries_than_keys_match_the_reference() -> None:
    """The issue's repro: the tiled backend was off by 2.3 (or raised IndexError)."""
    from attnlab import attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 17, 8, generator=g)
    k, v = torch.randn(1, 1, 13, 8, generator=g), torch.randn(1, 1, 13, 8, generator=g)
    program = "random_blocks(0.3, block=8) ; topk(1)"
    want = attention(q, k, v, program, backend="reference")
    torch.testing.assert_close(attention(q, k, v, program), want)
    torch.testing.assert_close(attention(q, k, v, program, backend="tiled"), want)
    q = torch.randn(1, 1, 40, 8, generator=g)
    program = "random_blocks(0.5, block=4) ; softmax"
    torch.testing.assert_close(attention(q, k, v, program, backend="tiled"),
                               attention(q, k, v, program, backend="reference"))


def _blocks_by_slicing(dense: torch.Tensor, bq: int, bk: int) -> torch.Tensor:
    from attnlab.lang.masks import EMPTY, FULL, PARTIAL

    b, h, n, m = dense.shape
    out = torch.empty(b, h, -(-n // bq), -(-m // bk), dtype=torch.int8)
    for qi in range(out.shape[2]):
        for ki in range(out.shape[3]):
            tile = dense[:, :, qi * bq:(qi + 1) * bq, ki * bk:(ki + 1) * bk].flatten(2)
            out[:, :, qi, ki] = torch.where(tile.all(-1), FULL,
                                            torch.where(tile.any(-1), PARTIAL, EMPTY))
    return out


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 40), st.integers(1, 40), st.integers(1, 11), st.integers(1, 11),
       st.integers(0, 10**6))
def test_block_summary_is_exact_for_any_n_and_m(data, n, m, bq, bk, seed) -> None:
    """Every mask's block summary (what tiled and flex skip by) equals its predicate, N ≠ M
    both ways; call-time segments are given per query and per key, as N > M needs."""
    mask = data.draw(masks())
    g = torch.Generator().manual_seed(seed)
    inp = MaskInputs.build(
        2, 2, n, m, segments=(torch.randint(0, 2, (2, n), generator=g),
                              torch.randint(0, 2, (2, m), generator=g)),
        key_lengths=torch.randint(0, m + 1, (2,), generator=g),
        graph=torch.rand(2, n, m, generator=g) < 0.4,
        distances=torch.randint(-1, 6, (2, n, m), generator=g))
    dense = mask.dense(inp).expand(2, 2, n, m)
    state = mask.block_summary(inp, (bq, bk)).state.expand(2, 2, -1, -1)
    assert torch.equal(state, _blocks_by_slicing(dense, bq, bk)), str(mask)


@st.composite
def wide_calls(draw):
    """Calls with more queries than keys; segments-reading programs need per-query ids."""
    program, b, h, hk, _, _, d = draw(calls())
    assume("segments" not in program.requires())
    m = draw(st.integers(1, 20))
    return program, b, h, hk, m + draw(st.integers(1, 12)), m, d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wide_calls(), st.sampled_from(range(len(FAST))), st.integers(0, 10**6))
def test_backends_agree_with_reference_when_queries_outnumber_keys(call, which, seed) -> None:
    program, b, h, hk, n, m, d = call
    compare(program, FAST[which], b, h, hk, n, m, d, seed, torch.float64, 1e-8)
