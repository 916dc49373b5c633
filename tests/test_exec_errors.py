"""Bad calls to `attnlab.attention` and `attnlab.nn.Attention` raise attnlab's own errors, with
a message that says what to change — never a raw ZeroDivisionError, IndexError or TypeError."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab import AttnlabError, ConfigError, InputError, attention
from attnlab.nn import Attention


def qkv(n: int = 6, m: int = 6, heads: int = 2, d: int = 4):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, heads, n, d, generator=g), torch.randn(1, heads, m, d, generator=g),
            torch.randn(1, heads, m, d, generator=g))


def zeros(*shape):
    return torch.zeros(*shape)


CALLS = {
    "heads 0": (lambda: attention(zeros(1, 0, 4, 8), zeros(1, 0, 4, 8), zeros(1, 0, 4, 8)),
                "heads 0"),
    "head_dim 0": (lambda: attention(zeros(1, 1, 4, 0), zeros(1, 1, 4, 0), zeros(1, 1, 4, 0)),
                   "head_dim 0"),
    "document, N > M, (B, M) segments": (
        lambda: attention(*qkv(6, 4), "scaled_dot ; document ; softmax",
                          segments=torch.zeros(1, 4, dtype=torch.long)),
        "pass segments=(q_segments"),
    "segments a string": (lambda: attention(*qkv(), "scaled_dot ; document ; softmax",
                                            segments="abc"), "segments= must be a torch.Tensor"),
    "segments a 3-tuple": (lambda: attention(*qkv(), "scaled_dot ; document ; softmax",
                                             segments=(1, 2, 3)), "got 3 items"),
    "segments a 1-tuple": (lambda: attention(*qkv(), "scaled_dot ; document ; softmax",
                                             segments=(torch.zeros(1, 6),)), "got 1 items"),
    "segments pair of lists": (lambda: attention(*qkv(), "scaled_dot ; document ; softmax",
                                                 segments=([0] * 6, [0] * 6)),
                               "segments[0]= must be a torch.Tensor"),
    "bias a list": (lambda: attention(*qkv(), "scaled_dot + bias ; softmax", bias=[[1.0]]),
                    "bias= must be a torch.Tensor"),
    "params value a list": (lambda: attention(*qkv(), "general ; softmax",
                                              params={"score.w": [1, 2]}),
                            "params['score.w'] must be a torch.Tensor"),
    "params value an int": (lambda: attention(*qkv(), params={"x": 3}),
                            "params['x'] must be a torch.Tensor"),
    "params a list": (lambda: attention(*qkv(), "general ; softmax", params=[1]),
                      "params= must be a dict"),
    "key_lengths a string": (lambda: attention(*qkv(), "scaled_dot ; padding ; softmax",
                                               key_lengths="3"), "key_lengths= must be"),
    "graph a list": (lambda: attention(*qkv(), "scaled_dot ; graph ; softmax", graph=[[True]]),
                     "graph= must be a torch.Tensor"),
    "nn: wrong input width": (lambda: Attention(16, heads=2)(torch.randn(2, 3, 12)),
                              "shape (batch, seq, 16)"),
    "nn: wrong context width": (lambda: Attention(16, heads=2, kv_dim=8)(torch.randn(2, 3, 16),
                                                                        torch.randn(2, 4, 9)),
                                "context must have shape (batch, seq, 8)"),
    "nn: x a list": (lambda: Attention(16, heads=2)([1, 2]), "x must be a torch.Tensor"),
    "nn: x 2-d": (lambda: Attention(16, heads=2)(torch.randn(3, 16)), "shape (batch, seq, 16)"),
    "nn: rotary with an odd head_dim": (lambda: Attention(6, heads=2, rotary=True),
                                        "even head_dim"),
    "nn: heads 0": (lambda: Attention(16, heads=0), "heads"),
}


@pytest.mark.parametrize("case", list(CALLS))
def test_bad_calls_raise_one_clear_attnlab_error(case) -> None:
    run, message = CALLS[case]
    with pytest.raises(AttnlabError, match=re.escape(message)) as caught:
        run()
    assert isinstance(caught.value, InputError | ConfigError)
    assert "\n" not in str(caught.value)


def test_key_lengths_as_plain_ints_still_work() -> None:
    q, k, v = qkv()
    want = attention(q, k, v, "scaled_dot ; padding ; softmax", key_lengths=torch.tensor([4]))
    torch.testing.assert_close(attention(q, k, v, "scaled_dot ; padding ; softmax",
                                         key_lengths=[4]), want)


JUNK = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3), st.lists(st.integers(0, 2),
                                                                               max_size=3),
                 st.builds(lambda s: torch.zeros(s), st.lists(st.integers(0, 3), max_size=4)),
                 st.tuples(st.integers(), st.integers()))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["scaled_dot ; document ; softmax", "scaled_dot + bias ; softmax",
                        "scaled_dot ; padding ; softmax", "scaled_dot ; graph ; softmax",
                        "general ; causal ; softmax"]),
       st.sampled_from(["segments", "bias", "key_lengths", "key_padding_mask", "graph", "params"]),
       JUNK, st.integers(1, 7), st.integers(1, 7))
def test_junk_call_inputs_give_attnlab_errors_only(program, arg, junk, n, m) -> None:
    """Whatever lands in a call-time argument, the outcome is a result or attnlab's error."""
    q, k, v = qkv(n, m)
    try:
        attention(q, k, v, program, **{arg: junk})
    except AttnlabError as e:
        assert "\n" not in str(e)


# -- torch.compile never takes the process down ------------------------------------------------

COMPILE_SCRIPT = """
import warnings, torch
from attnlab.nn import Attention
warnings.simplefilter("ignore")
for program in ("causal ; entmax(1.5)", "causal ; sparsemax", "topk(3)"):
    torch.manual_seed(0)
    m = Attention(16, program, heads=2)
    x = torch.randn(2, 12, 16)
    want = torch.autograd.grad(m(x).sum(), m.to_q.weight)[0]
    torch._dynamo.reset()
    out = torch.compile(m)(x)
    got = torch.autograd.grad(out.sum(), m.to_q.weight)[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    print("ok", program, flush=True)
"""


def test_compiled_sorting_normalizers_train_without_crashing() -> None:
    """entmax, sparsemax and topk compiled forward and backward: in a subprocess, so the old
    abort ("double free or corruption", exit 134) fails this test instead of killing pytest."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.count("ok ") == 3


# -- memory: estimated before anything N×M is built ---------------------------------------------


@pytest.fixture
def one_gb_free(monkeypatch):
    """Pretend 1 GB is free, so the checks decide the same on every machine."""
    from attnlab.exec import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": 1 << 30)


def long_qkv(n: int = 200_000):
    return (torch.zeros(1, 1, n, 4) for _ in range(3))


def test_reference_at_200k_says_what_it_needs_and_what_to_do(one_gb_free) -> None:
    import attnlab

    for backend in ("reference", None):  # forced, and as the planner's last resort
        with pytest.raises(InputError, match=r"needs? ~\d+\.\d GB.*1\.0 GB free.*backend='tiled'"):
            attention(*long_qkv(), "additive ; causal ; softmax", backend=backend,
                      params=attnlab.init_params("additive ; causal ; softmax", 1, 4))


def test_planner_never_picks_a_reference_that_does_not_fit(one_gb_free) -> None:
    import attnlab

    q, k, v = long_qkv()
    assert attnlab.plan("scaled_dot ; causal ; sparsemax", q, k, v).backend == "tiled"
    plan = attnlab.plan("additive ; causal ; softmax", q, k, v)
    assert "no backend can run this call here" in plan.why


def test_pictures_at_a_huge_seq_say_to_use_a_smaller_one(one_gb_free, tmp_path) -> None:
    from attnlab.inspect.showcase import Showcase, draw_program

    with pytest.raises(InputError, match="use a smaller --seq"):
        draw_program("causal", tmp_path / "x.png", seq=200_000)
    with pytest.raises(InputError, match="use a smaller --seq"):
        Showcase(seq=200_000)
