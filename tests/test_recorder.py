"""The recorder keeps q, k, the program, its inputs and parameters of each attention call, and
recomputes the weights of the fused run: they equal the reference backend's, and weights @ v
gives back the output the fast backend computed."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.overrides import TorchFunctionMode

import attnlab
from attnlab.errors import AttnlabError, InputError
from attnlab.lang import Additive, Layout, LowRank, Program, ScaledDot, Softmax
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.nn import Attention, KVCache, MixedAttention
from attnlab.nn.attention import qkv
from strategies import programs
from test_hidden_keys import call_data

BACKENDS = [None, "sdpa", "tiled", "linear"]  # None: the planner's pick


def fused_output_from(m: Attention, x: Tensor, w: torch.Tensor, context=None) -> torch.Tensor:
    """What the module returns when its attention weights are `w`."""
    v = m._split(m.to_v(x if context is None else context), m.kv_heads)
    v = v.repeat_interleave(m.heads // m.kv_heads, 1)
    return m.to_out((w @ v).transpose(1, 2).flatten(2))


@torch.no_grad()
def reference_weights(m: Attention | MixedAttention, x: Tensor, context=None, **data) -> Tensor:
    """The module's weights from the functional reference backend on its own q, k (after
    rotary), head groups of a MixedAttention in group order."""
    q, k, v = qkv(m, x, context, None, None)
    if isinstance(m, Attention):
        groups = [(m.program, slice(0, m.heads), slice(0, m.kv_heads), m.program_params)]
    else:
        ends = torch.tensor(m.group_heads).cumsum(0).tolist()
        groups = [(p, slice(end - h, end), slice(end - h, end), params) for p, h, end, params
                  in zip(m.programs, m.group_heads, ends, m.program_params, strict=True)]
    return torch.cat([attnlab.attention(q[:, qh], k[:, kh], v[:, kh], p, params=params.as_params(),
                                        backend="reference", return_weights=True, **data)[1]
                      for p, qh, kh, params in groups], dim=1)


def recorded_errors(program, backend, hk, n, m, rotary, seed) -> tuple[float, float] | None:
    """Record one call of an Attention(heads 2·hk, kv_heads hk) running `program` on `backend`
    and return (max |recorded weights - reference weights|, max |weights @ v - fused output|),
    checked against 1e-6 and 1e-5; None when the backend does not run this program."""
    program = program.replace(dropout=0.0, layout=Layout())
    if isinstance(program.approximation, LowRank):
        program = program.replace(approximation=LowRank(program.approximation.k, 64))
    cross = n != m
    rotary = rotary and not cross
    torch.manual_seed(seed)
    module = Attention(16, program.replace(layout=Layout(cross=cross)), heads=2 * hk, kv_heads=hk,
                       rotary=rotary).eval()
    x, context = torch.randn(2, n, 16), (torch.randn(2, m, 16) if cross else None)
    data = call_data(program, 2, n, m, torch.Generator().manual_seed(seed))
    args = (x,) if context is None else (x, context)
    try:  # flex has no backward on CPU: run it as inference
        with attnlab.record(module) as rec, torch.set_grad_enabled(backend != "flex"):
            out = module(*args, backend=backend, **data)
    except AttnlabError:  # this backend does not run this program
        event(f"{backend}: refused")
        return None
    got = rec.weights(0)
    want = reference_weights(module, *args, **data)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0, equal_nan=True)
    errors = [_max_error(got, want), 0.0]
    if out.isfinite().all():  # the recomputed weights are the ones the fast backend used
        fused = fused_output_from(module, x, got, context)
        torch.testing.assert_close(fused, out, atol=1e-5, rtol=1e-4)
        errors[1] = _max_error(fused, out)
    event(f"{backend}: weights error {_bucket(errors[0])}")
    event(f"{backend}: output error {_bucket(errors[1])}")
    return errors[0], errors[1]


def _max_error(a: Tensor, b: Tensor) -> float:
    same = a.isnan() & b.isnan()
    return (a - b).abs().masked_fill(same, 0).max().item() if a.numel() else 0.0


def _bucket(error: float) -> str:
    """0, or the power of ten just above: what --hypothesis-show-statistics counts."""
    return "0" if error == 0 else f"< 1e{math.floor(math.log10(error)) + 1}"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.sampled_from(BACKENDS), st.integers(1, 2), st.integers(1, 12),
       st.integers(1, 12), st.booleans(), st.integers(0, 10**6))
def test_recorded_weights_equal_the_reference_on_every_backend(program, backend, hk, n, m, rotary,
                                                               seed) -> None:
    recorded_errors(program, backend, hk, n, m, rotary, seed)


def flex_runs(program: Program) -> Program:
    """The program made one FlexAttention takes (softmax, exact, a score a score_mod can
    express), so examples are not spent on refusals."""
    score = ScaledDot() if isinstance(program.score, Additive) else program.score
    return program.replace(score=score, normalizer=Softmax(), approximation=None)


# Each flex example compiles a kernel (seconds on CPU), so flex gets a few examples of its own,
# at one shape per length so that repeated lengths reuse the compile.
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs().map(flex_runs), st.integers(1, 2), st.sampled_from([5, 12]),
       st.sampled_from([5, 12]), st.booleans(), st.integers(0, 10**6))
def test_recorded_weights_equal_the_reference_on_flex(program, hk, n, m, rotary, seed) -> None:
    assert recorded_errors(program, "flex", hk, n, m, rotary, seed) is not None


@st.composite
def row_picks(draw, n: int) -> slice | list[int] | int:
    """What a caller may pass as rows=: a slice (maybe empty or stepped), a list of row numbers
    (maybe negative, repeated, unsorted) or one row."""
    kind = draw(st.sampled_from(["slice", "list", "int"]))
    if kind == "slice":
        return slice(draw(st.none() | st.integers(-n, n)), draw(st.none() | st.integers(-n, n)),
                     draw(st.integers(1, 3)))
    if kind == "int":
        return draw(st.integers(-n, n - 1))
    return draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=2 * n))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(1, 2), st.integers(1, 12), st.integers(1, 12), st.booleans(),
       st.integers(0, 10**6), st.data())
def test_asked_rows_are_those_rows_of_the_whole(program, hk, n, m, rotary, seed, data) -> None:
    """weights(rows=R) == weights()[:, :, R] for self- and cross-attention and GQA (heads
    2·kv_heads), every mask, mod, normalizer and approximation: rows are computed alone."""
    program = program.replace(dropout=0.0, layout=Layout(cross=n != m))
    if isinstance(program.approximation, LowRank):
        program = program.replace(approximation=LowRank(program.approximation.k, 64))
    torch.manual_seed(seed)
    module = Attention(16, program, heads=2 * hk, kv_heads=hk, rotary=rotary and n == m).eval()
    args = (torch.randn(2, n, 16),) + ((torch.randn(2, m, 16),) if n != m else ())
    with attnlab.record(module) as rec:
        module(*args, **call_data(program, 2, n, m, torch.Generator().manual_seed(seed)))
    rows = data.draw(row_picks(n), label="rows")
    whole = rec.weights(0)
    want = whole[:, :, rows] if not isinstance(rows, list) else whole[:, :, torch.tensor(rows)]
    # q @ kᵀ of fewer rows may take another float32 matmul kernel: scores of a sharp program
    # (scale 40, say) then round a unit or two apart, so the bound is relative as well
    torch.testing.assert_close(rec.weights(0, rows=rows), want, atol=1e-6, rtol=1e-5,
                               equal_nan=True)


def test_one_row_of_a_long_input_never_builds_the_whole_matrix() -> None:
    """Two rows of a 20,000-token call are computed from 2×M scores: no tensor made while
    recomputing them holds more than 64·N numbers (N×M is 20,000·N), and they equal the
    softmax written out."""
    n, d = 20_000, 8
    torch.manual_seed(0)
    m = Attention(d, "alibi ; causal & window(64) ; softmax", heads=1, bias=False).eval()
    x = torch.randn(1, n, d)
    with attnlab.record(m) as rec, torch.no_grad():
        m(x)
    with Largest() as largest:
        got = rec.weights(0, head=0, rows=[n - 1, 5])
    assert got.shape == (1, 2, n) and 0 < largest.numel <= n * 64
    q, k = m.to_q(x)[0].detach(), m.to_k(x)[0].detach()
    for row, i in enumerate([n - 1, 5]):
        j = torch.arange(max(0, i - 64), i + 1)  # causal & window(64): i-64 … i
        scores = k[j] @ q[i] / d**0.5 - 2**-8 * (i - j)  # one head's ALiBi slope is 2^-8
        want = torch.zeros(n)
        want[j] = torch.softmax(scores, 0)
        torch.testing.assert_close(got[0, row], want, atol=1e-6, rtol=0)


class Largest(TorchFunctionMode):
    """The most numbers any torch call made while it was on (views included)."""

    numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_mixed_head_groups_come_back_in_group_order() -> None:
    torch.manual_seed(0)
    m = MixedAttention(24, [("causal ; softmax", 1), ("causal & window(2) ; sparsemax", 2)]).eval()
    x = torch.randn(2, 9, 24)
    with attnlab.record(m) as rec:
        m(x)
    want = reference_weights(m, x)
    torch.testing.assert_close(rec.weights(0), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(rec.weights(0, head=2, rows=slice(3, 5)), want[:, 2, 3:5])
    torch.testing.assert_close(rec.weights(0, rows=[8, 0, 8]), want[:, :, [8, 0, 8]], atol=1e-6,
                               rtol=0)


def test_decoding_with_a_cache_records_each_step() -> None:
    torch.manual_seed(0)
    m = Attention(16, "alibi ; causal ; softmax", heads=2, rotary=True).eval()
    x = torch.randn(1, 6, 16)
    cache = KVCache()
    with attnlab.record(m) as rec:
        m(x[:, :4], cache=cache)
        m(x[:, 4:], cache=cache)
    whole = reference_weights(m, x)
    torch.testing.assert_close(rec.weights(0, call=0), whole[:, :, :4, :4], atol=1e-6, rtol=0)
    torch.testing.assert_close(rec.weights(0), whole[:, :, 4:], atol=1e-6, rtol=0)


def test_a_model_records_chosen_layers_and_nothing_after_the_block() -> None:
    torch.manual_seed(0)
    model = DecoderLM(DecoderLMConfig(vocab_size=20, d_model=16, layers=3, heads=2,
                                      programs=["causal", "causal & window(3)", "causal"])).eval()
    tokens = torch.randint(0, 20, (2, 7))
    with attnlab.record(model, layers=[1], heads=[1]) as rec:
        model(tokens)
    assert len(rec.layers) == 1 and "1" in rec.layers[0]
    assert rec.weights(0).shape == (2, 1, 7, 7)  # the head asked for
    w = rec.weights(rec.layers[0], head=[0, 1])
    assert w.shape == (2, 2, 7, 7)
    assert (w[..., 0, 1:] == 0).all() and (w.triu(1) == 0).all()  # causal
    assert (w.tril(-4) == 0).all() and (w.diagonal(-3, -2, -1) > 0).all()  # window(3): i-3 … i
    assert all(m.recorder is None for m in model.modules() if hasattr(m, "recorder"))
    # what a layer keeps is O(N·D): q and k, never an N×M tensor
    kept = rec.passes[rec.layers[0]][0].calls[0]
    assert kept.q.shape == (2, 2, 7, 8) and kept.k.shape == (2, 2, 7, 8)


def test_mistakes_are_one_clear_error() -> None:
    m = Attention(16, "causal", heads=2)
    with pytest.raises(InputError, match="no attnlab attention layer"), \
            attnlab.record(torch.nn.Linear(2, 2)):
        pass
    with attnlab.record(m) as rec:
        pass
    with pytest.raises(InputError, match="was not called while recording"):
        rec.weights(0)
    with pytest.raises(InputError, match="out of range"):
        rec.weights(3)
    with pytest.raises(InputError, match="no recorded attention layer 'nope'"):
        rec.weights("nope")
    with attnlab.record(m) as rec:
        m(torch.randn(1, 4, 16))
    with pytest.raises(InputError, match=r"rows=\[1, 9\] does not pick query rows out of 4"):
        rec.weights(0, rows=[1, 9])


@pytest.mark.parametrize("backend", ["sdpa", "tiled", "linear", None])
def test_recorded_gradients_are_those_of_the_loss(backend) -> None:
    """weight_grads is ∂loss/∂weights and head_grads is ∂loss/∂(head mask), as autograd gives
    them on the reference backend, while the recorded run is on a fast one."""
    torch.manual_seed(0)
    program = "causal ; softmax" if backend != "linear" else "causal ; favor(16)"
    m = Attention(16, program, heads=4, kv_heads=2).eval()
    x, target = torch.randn(3, 7, 16), torch.randn(3, 7, 16)
    with attnlab.record(m, grads=True) as rec:
        ((m(x, backend=backend) - target) ** 2).sum().backward()
    w = rec.weights(0).requires_grad_()
    v = m._split(m.to_v(x), m.kv_heads).repeat_interleave(2, 1).detach()
    out = m.to_out((w @ v).transpose(1, 2).flatten(2))
    ((out - target) ** 2).sum().backward()
    torch.testing.assert_close(rec.weight_grads(0), w.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(rec.weight_grads(0, rows=[6, 1]), w.grad[:, :, [6, 1]], atol=1e-5,
                               rtol=1e-4)
    m.zero_grad()
    m.head_mask = torch.ones(4, requires_grad=True)
    ((m(x, backend="reference") - target) ** 2).sum().backward()
    torch.testing.assert_close(rec.head_grads(0).sum(0), m.head_mask.grad, atol=1e-4, rtol=1e-4)
    assert rec.head_grads(0).shape == (3, 4)


def test_mixed_groups_record_gradients_in_group_order() -> None:
    torch.manual_seed(0)
    m = MixedAttention(24, [("causal ; softmax", 1), ("causal & window(2) ; sparsemax", 2)]).eval()
    x = torch.randn(2, 9, 24)
    m.head_mask = torch.ones(3, requires_grad=True)
    with attnlab.record(m, grads=True) as rec:
        m(x).pow(2).sum().backward()
    torch.testing.assert_close(rec.head_grads(0).sum(0), m.head_mask.grad, atol=1e-4, rtol=1e-4)
    assert rec.weight_grads(0).shape == (2, 3, 9, 9)


def test_gradients_asked_for_but_not_there_is_one_clear_error() -> None:
    m = Attention(16, "causal", heads=2)
    x = torch.randn(1, 4, 16)
    with attnlab.record(m) as rec:
        m(x)
    with pytest.raises(InputError, match="grads=True"):
        rec.weight_grads(0)
    with attnlab.record(m, grads=True) as rec, torch.no_grad():
        m(x)
    with pytest.raises(InputError, match="backward"):
        rec.head_grads(0)
