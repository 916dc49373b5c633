"""The reference backend against formulas written out here, element by element."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnlab
from attnlab import InputError, attention, init_params, parse
from attnlab.exec.scores import alibi_slopes, t5_bucket
from strategies import programs

# Press et al.'s slopes, written out: 8 heads are 2^-1 … 2^-8; 6 heads take the 4-head
# slopes, then every other slope of the 8-head list.
SLOPES = {1: [2**-8], 2: [2**-4, 2**-8], 4: [2**-2, 2**-4, 2**-6, 2**-8],
          3: [2**-4, 2**-8, 2**-2], 6: [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3],
          8: [2.0**-i for i in range(1, 9)]}

MASKS = {  # the mask's definition on (query position, key position)
    "": lambda i, j: True,
    "causal": lambda i, j: j <= i,
    "window(2)": lambda i, j: abs(i - j) <= 2,
    "causal & window(2) | global_tokens(1)": lambda i, j: (j <= i and abs(i - j) <= 2) or i < 1
    or j < 1,
    "~causal": lambda i, j: j > i,
}


def direct_softmax_attention(q, k, v, visible, alibi: bool):
    """out[b,h,i] = Σ_j softmax_j(q_i·k_j/√d − slope_h·|i−j|) v_j over visible j, by loops."""
    b_, h_, n, d = q.shape
    m = k.shape[2]
    group = h_ // k.shape[1]
    rows = []
    for b in range(b_):
        for h in range(h_):
            for i in range(n):
                pos = i + m - n
                js = [j for j in range(m) if visible(pos, j)]
                if not js:
                    rows.append(torch.zeros(v.shape[-1], dtype=q.dtype))
                    continue
                s = torch.stack([q[b, h, i] @ k[b, h // group, j] / math.sqrt(d)
                                 - (SLOPES[h_][h] * abs(pos - j) if alibi else 0) for j in js])
                w = torch.exp(s - s.max())
                w = w / w.sum()
                rows.append(sum(w[t] * v[b, h // group, j] for t, j in enumerate(js)))
    return torch.stack(rows).view(b_, h_, n, -1)


@pytest.mark.parametrize("heads", sorted(SLOPES))
def test_alibi_slopes(heads: int) -> None:
    assert alibi_slopes(heads) == pytest.approx(SLOPES[heads])


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(MASKS)), st.booleans(), st.sampled_from([(1, 1), (2, 1), (3, 3),
       (4, 2), (6, 3), (8, 8)]), st.integers(1, 6), st.integers(0, 3), st.integers(0, 10**6))
def test_softmax_with_masks_and_alibi_equals_the_formula(mask, alibi, heads, n, extra, seed):
    h, hk = heads
    g = torch.Generator().manual_seed(seed)
    m = n + extra
    q = torch.randn(2, h, n, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, hk, m, 4, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, hk, m, 3, generator=g, dtype=torch.float64, requires_grad=True)
    program = ("alibi ; " if alibi else "") + (mask or "softmax")
    out = attention(q, k, v, program)
    expected = direct_softmax_attention(q, k, v, MASKS[mask], alibi)
    torch.testing.assert_close(out, expected, atol=1e-10, rtol=1e-10)
    up = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((out * up).sum(), (q, k, v))
    if not expected.requires_grad:  # every row hidden: the output is constant zero
        assert all(torch.equal(a, torch.zeros_like(a)) for a in got)
        return
    want = torch.autograd.grad((expected * up).sum(), (q, k, v), allow_unused=True)
    want = [torch.zeros_like(t) if w is None else w for t, w in zip((q, k, v), want, strict=True)]
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


EVERY_WEIGHTING = ["softmax", "sparsemax", "entmax(1.5)", "entmax(1.3)", "entmax(2.5)", "topk(3)",
                   "gumbel(0.5)", "gumbel(1.0, hard=true)", "sigmoid", "relu", "linear(elu1)",
                   "linear(relu)", "favor(16)", "lowrank(4, max_len=16)"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weighting", EVERY_WEIGHTING)
def test_fully_masked_rows_give_zeros_never_nan(weighting: str, dtype: torch.dtype) -> None:
    program = parse(f"{weighting} ; padding")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8, generator=g, dtype=dtype, requires_grad=True)
               for _ in range(3))
    params = {n: p.requires_grad_() for n, p in init_params(program, 2, 8, dtype=dtype).items()}
    for training in (False, True):
        out, w = attention(q, k, v, program, key_lengths=torch.tensor([0, 3]), params=params,
                           return_weights=True, training=training, generator=g)
        assert torch.equal(out[0], torch.zeros_like(out[0]))
        assert torch.equal(w[0], torch.zeros_like(w[0]))
        assert torch.equal(w[1, ..., 3:], torch.zeros_like(w[1, ..., 3:]))
        assert out[1].abs().sum() > 0
        grads = torch.autograd.grad(out.square().sum(), (q, k, v, *params.values()))
        assert all(torch.isfinite(gr).all() for gr in grads)
    # A mask that hides everything from some rows, not via padding: ~causal hides the last row.
    if "lowrank" not in weighting:
        out, w = attention(q, k, v, f"{weighting} ; ~causal", return_weights=True)
        assert torch.equal(out[:, :, -1], torch.zeros_like(out[:, :, -1]))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("program", ["causal", "alibi ; causal", "relative_bias(bidirectional=false)"
                                     " ; causal ; sparsemax", "linear(elu1) ; causal"])
def test_decoding_one_query_matches_the_full_sequence(program: str) -> None:
    """KV-cache alignment: a query over all M keys sits at position M − 1."""
    p = parse(program)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 4, 9, 8, generator=g, dtype=torch.float64) for _ in range(3))
    params = init_params(p, 4, 8, dtype=torch.float64)
    full = attention(q, k, v, p, params=params)
    last = attention(q[:, :, -3:], k, v, p, params=params)
    torch.testing.assert_close(last, full[:, :, -3:])


def test_gqa_equals_repeated_heads() -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 6, 7, 8, generator=g)
    k, v = torch.randn(2, 2, 7, 8, generator=g), torch.randn(2, 2, 7, 8, generator=g)
    out = attention(q, k, v, "alibi ; causal ; entmax(1.5)")
    rep = attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1),
                    "alibi ; causal ; entmax(1.5)")
    torch.testing.assert_close(out, rep)


def test_t5_buckets() -> None:
    rel = torch.tensor([0, -1, 1, -7, -8, -127, -200, 5])
    assert t5_bucket(rel, 32, 128, True).tolist() == [0, 1, 17, 7, 8, 15, 15, 21]
    # one-directional: keys after the query all share bucket 0
    assert t5_bucket(torch.tensor([3, 0, -1, -15, -20]), 32, 128, False).tolist() == [0, 0, 1, 15, 17]


def test_scores_and_mods_by_formula() -> None:
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=g, dtype=torch.float64) for _ in range(3))
    bias = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    s = q @ k.transpose(-1, -2)
    cases = {
        "dot": s,
        "scaled_dot(scale=0.5) + temperature(2.0)": s * 0.5 / 2,
        "scaled_dot + softcap(0.5)": 0.5 * torch.tanh(s / math.sqrt(8) / 0.5),
        "cosine(3.0) + bias": 3 * torch.nn.functional.normalize(q, dim=-1)
        @ torch.nn.functional.normalize(k, dim=-1).transpose(-1, -2) + bias,
    }
    for text, scores in cases.items():
        _, w = attention(q, k, v, text, bias=bias if "bias" in text else None, return_weights=True)
        torch.testing.assert_close(w, torch.softmax(scores, -1))
    params = init_params("additive ; softmax", 2, 8, dtype=torch.float64, seed=4)
    _, w = attention(q, k, v, "additive", params=params, return_weights=True)
    wq, wk, vv = params["score.w_q"], params["score.w_k"], params["score.v"]
    for h in range(2):
        for i in range(4):
            for j in range(4):
                e = vv[h] @ torch.tanh(q[0, h, i] @ wq[h] + k[0, h, j] @ wk[h])
                assert torch.isclose(torch.log(w[0, h, i, j]) - torch.log(w[0, h, i, 0]),
                                     e - (vv[h] @ torch.tanh(q[0, h, i] @ wq[h] + k[0, h, 0]
                                                             @ wk[h])))
    general = init_params("general", 2, 8, dtype=torch.float64)
    out_general = attention(q, k, v, "general", params=general)
    torch.testing.assert_close(out_general, attention(q, k, v, "scaled_dot"))


def test_output_is_weights_times_values_for_every_form() -> None:
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 2, 6, 8, generator=g) for _ in range(3))
    for text in EVERY_WEIGHTING:
        p = parse(text)
        out, w = attention(q, k, v, p, params=init_params(p, 2, 8), return_weights=True)
        torch.testing.assert_close(out, w @ v, atol=1e-5, rtol=1e-5)


def test_learnable_parameters_receive_gradients() -> None:
    p = parse("additive + relative_bias ; causal")
    params = {n: t.requires_grad_() for n, t in init_params(p, 2, 8).items()}
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    attention(q, k, v, p, params=params).square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in params.values())


def test_half_precision_and_dropout() -> None:
    q, k, v = (torch.randn(1, 2, 5, 8, dtype=torch.bfloat16) for _ in range(3))
    out = attention(q, k, v, "causal ; entmax(1.5)")
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    x = torch.randn(1, 2, 5, 8)
    p = "causal ; softmax ; dropout(0.5)"
    torch.testing.assert_close(attention(x, x, x, p), attention(x, x, x, "causal"))
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = attention(x, x, x, p, training=True, generator=g1)
    assert torch.equal(a, attention(x, x, x, p, training=True, generator=g2))
    assert not torch.allclose(a, attention(x, x, x, "causal"))


@pytest.mark.parametrize("call, message", [
    (lambda q: attention(q, q, q, "document"), "needs segments="),
    (lambda q: attention(q, q, q, "causal", key_lengths=torch.tensor([2])), "nothing reads it"),
    (lambda q: attention(q, q, q, "bias ; causal"), "needs bias="),
    (lambda q: attention(q, *(torch.randn(1, 3, 4, 8),) * 2, "causal"), "does not divide"),
    (lambda q: attention(q[0], q, q), "4-d tensor"),
    (lambda q: attention(q, q, q, "additive"), "attnlab.init_params"),
    (lambda q: attention(q, q, q, "heads(8)"), "heads(8) but the tensors have 2"),
    (lambda q: attention(q, q, q, backend="refrence"), "did you mean 'reference'"),
    (lambda q: attention(q, q, q, "lowrank(2, max_len=3)", params=init_params(
        "lowrank(2, max_len=3)", 2, 8)), "at most 3 keys"),
])
def test_bad_calls_say_what_to_do(call, message) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        call(torch.randn(1, 2, 4, 8))


def test_public_names() -> None:
    assert attnlab.attention is attention and callable(attnlab.init_params)


def call_inputs(program, batch: int, n: int, m: int, g: torch.Generator) -> dict:
    """Random call-time inputs for whatever the program reads; batch row 0 has no real keys."""
    needs, out = program.requires(), {}
    if "key_padding" in needs:
        out["key_lengths"] = torch.cat([torch.zeros(1, dtype=torch.long),
                                        torch.randint(1, m + 1, (batch - 1,), generator=g)])
    if "segments" in needs:
        out["segments"] = torch.sort(torch.randint(0, 2, (batch, m), generator=g), 1).values
    if "graph" in needs:
        out["graph"] = torch.rand(batch, n, m, generator=g) < 0.5
    if "distances" in needs:  # -1 (unreachable) and lengths past any max_distance drawn
        out["distances"] = torch.randint(-1, 9, (batch, n, m), generator=g)
    if "bias" in needs:
        out["bias"] = torch.randn(batch, 1, n, m, generator=g, dtype=torch.float64)
    return out


@settings(max_examples=150, deadline=None)
@given(programs(), st.integers(1, 6), st.integers(0, 3), st.integers(0, 10**6))
def test_random_programs_with_an_empty_row_give_zeros_never_nan(program, n, extra, seed) -> None:
    """Property (d) over random programs: padding hides every key of batch row 0."""
    from attnlab.lang import Layout, LowRank, Padding

    if isinstance(program.approximation, LowRank):  # long enough for any drawn sequence
        program = program.replace(approximation=LowRank(program.approximation.k, 8192))
    mask = Padding() if program.mask is None or program.approximation else program.mask & Padding()
    program = program.replace(mask=mask, layout=Layout())
    g = torch.Generator().manual_seed(seed)
    m = n + extra
    q = torch.randn(2, 2, n, 4, generator=g, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 1, m, 4, generator=g, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    params = {name: t.requires_grad_() for name, t in
              init_params(program, 2, 4, dtype=torch.float64).items()}
    for training in (False, True):
        out, w = attention(q, k, v, program, params=params, return_weights=True,
                           training=training, generator=g, **call_inputs(program, 2, n, m, g))
        assert torch.equal(out[0], torch.zeros_like(out[0]))
        assert torch.equal(w[0], torch.zeros_like(w[0]))
        assert torch.isfinite(out).all() and torch.isfinite(w).all()
        grads = torch.autograd.grad(out.square().sum(), (q, k, v, *params.values()),
                                    allow_unused=True)
        assert all(gr is None or torch.isfinite(gr).all() for gr in grads)


def test_favor_program_approaches_softmax_as_m_grows() -> None:
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 2, 32, 16, generator=g, dtype=torch.float64) * s
               for s in (0.4, 0.4, 1.0))
    exact = attention(q, k, v, "causal ; softmax")
    errors = [sum((attention(q, k, v, f"favor({m}, seed={seed}) ; causal") - exact).abs().mean()
                  for seed in range(8)) / 8 for m in (16, 256, 4096)]
    assert errors[0] > 3 * errors[1] > 9 * errors[2]  # ~ m^-1/2: 4x per 16x features


def test_favor_padding_keys_cannot_change_real_outputs() -> None:
    """The key stabiliser ignores padding: a huge padding key must not underflow real keys."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(1, 1, 4, 8, generator=g)
    k, v = torch.randn(1, 1, 5, 8, generator=g), torch.randn(1, 1, 5, 8, generator=g)
    lengths = torch.tensor([4])
    calm = attention(q, k, v, "favor(16) ; padding", key_lengths=lengths)
    k[0, 0, 4] = 1e3  # padding key with an enormous projection
    for backend in ("reference", "linear"):
        loud = attention(q, k, v, "favor(16) ; padding", key_lengths=lengths, backend=backend)
        torch.testing.assert_close(loud, calm)
