"""The flex backend against the reference, its refusals, and its kernel cache.

Every distinct (program, shape) compiles a kernel for seconds, so the equality tests share
their compiles: five kernels in all, each checked for several things at once.
"""

from __future__ import annotations

import pytest
import torch

from attnlab import init_params, parse
from attnlab.exec import flex
from attnlab.exec.api import check_call
from attnlab.exec.backend import Call
from attnlab.exec.flex import FlexBackend
from attnlab.exec.reference import reference_attention

ATOL = 2e-5


def tensors(b, h, h_kv, n, m, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=gen), torch.randn(b, h_kv, m, d, generator=gen),
            torch.randn(b, h_kv, m, d, generator=gen))


def learned(program, heads, d=16, seed=0):
    """init_params moved off their initial values, so that every learned entry matters."""
    gen = torch.Generator().manual_seed(seed + 1)
    return {k: p + 0.3 * torch.randn(p.shape, generator=gen)
            for k, p in init_params(program, heads, d).items()}


def flex_and_reference(text, q, k, v, params=None, **given):
    program = parse(text)
    inp = check_call(q, k, v, program, params=params, **given)
    bias = given.get("bias")
    out = FlexBackend().run(q, k, v, program, inp, bias=bias, params=params or {},
                            training=False, generator=None)
    ref, _ = reference_attention(q, k, v, program, inp, bias=bias, params=params)
    return out, ref


def test_alibi_causal_gqa_compiles_once_and_says_so(capfd, monkeypatch) -> None:
    monkeypatch.setattr(flex, "PROGRESS_AFTER_S", 0.0)  # a disk-cached compile may beat 1 s
    text = "scaled_dot + alibi ; causal ; softmax"
    q, k, v = tensors(2, 4, 2, 96, 96)
    call = Call.of(parse(text), q, k, v)
    assert not FlexBackend().is_warm(call)

    out, ref = flex_and_reference(text, q, k, v)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    line = capfd.readouterr().err
    assert f"attnlab: compiling FlexAttention for '{text}' at N=96, M=96" in line
    assert FlexBackend().is_warm(call)
    assert any(str(key.program) == text for key in FlexBackend.compiled_keys())

    # New tensors and a freshly parsed program: the cached kernel runs as it is.
    q, k, v = tensors(2, 4, 2, 96, 96, seed=1)
    with torch.compiler.set_stance("fail_on_recompile"):
        out, ref = flex_and_reference(text, q, k, v)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    assert "compiling" not in capfd.readouterr().err


def test_softcap_relative_bias_window_or_globals_at_a_ragged_length() -> None:
    text = "scaled_dot + softcap(20.0) + relative_bias ; window(8) | global_tokens(2)"
    q, k, v = tensors(1, 2, 2, 150, 150)  # 150: the last 128-block hangs past the end
    out, ref = flex_and_reference(text, q, k, v, params=learned(parse(text), 2))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_document_and_padding_with_a_row_of_padding_only() -> None:
    q, k, v = tensors(3, 2, 2, 130, 130)
    segments = torch.tensor([0] * 40 + [1] * 60 + [2] * 30).expand(3, -1)
    out, ref = flex_and_reference("document & padding", q, k, v, segments=segments,
                                  key_lengths=torch.tensor([130, 70, 0]))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    assert not out.isnan().any()
    assert (out[2] == 0).all()  # no key to attend to: zero output, as in every backend


def test_general_causal_with_fewer_queries_than_keys() -> None:
    text = "general ; causal"
    q, k, v = tensors(2, 2, 2, 64, 100)  # queries aligned bottom-right
    out, ref = flex_and_reference(text, q, k, v, params=learned(parse(text), 2))
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_cosine_with_learned_temperature() -> None:
    text = "cosine ; window(20)"
    q, k, v = tensors(1, 2, 2, 80, 80)
    params = learned(parse(text), 2)
    assert params["score.log_tau"][0] != params["score.log_tau"][1]
    out, ref = flex_and_reference(text, q, k, v, params=params)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_block_masks_are_cached_unless_they_read_call_time_data() -> None:
    q, k, v = tensors(2, 2, 2, 64, 64)
    causal = parse("causal & window(8)")
    inp = check_call(q, k, v, causal, params=None)
    assert FlexBackend._block_mask(causal, inp) is FlexBackend._block_mask(parse(str(causal)), inp)
    padding = parse("padding")
    inp = check_call(q, k, v, padding, params=None, key_lengths=torch.tensor([10, 64]))
    assert FlexBackend._block_mask(padding, inp) is not FlexBackend._block_mask(padding, inp)


def call(text="scaled_dot ; causal", dtype=torch.float32, **facts):
    q, k, v = (torch.zeros(1, 2, 8, 4, dtype=dtype) for _ in range(3))
    return Call.of(parse(text), q, k, v, **facts)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: call("scaled_dot ; sparsemax"), "softmax only, not 'sparsemax'"),
    (lambda: call("linear(elu1)"), "'linear(elu1)' is an approximation"),
    (lambda: call("additive"), "'additive' score"),
    (lambda: call(needs_grad=True), "does not support backward on CPU (torch 2."),
    (lambda: call(return_weights=True), "cannot return them"),
    (lambda: call("scaled_dot ; softmax ; dropout(0.1)", training=True), "dropout"),
    (lambda: call(dtype=torch.float64), "not float64"),
])
def test_refusals_name_the_reason(make, reason) -> None:
    found = FlexBackend().refuse(make())
    assert found is not None and reason in found and "\n" not in found


def test_accepts_what_it_can_run() -> None:
    assert FlexBackend().refuse(call("scaled_dot + alibi ; causal ; softmax ; dropout(0.1)")) is None
    assert FlexBackend().refuse(call(dtype=torch.bfloat16)) is None
