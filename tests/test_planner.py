"""The planner: which backend each kind of call gets, and why the others were refused."""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab import InputError
from attnlab.exec import planner


@pytest.fixture(autouse=True)
def fresh_memory(monkeypatch):
    """Each test starts with no remembered calls."""
    monkeypatch.setattr(planner, "_seen", planner.Counter())


def shapes(n=512, heads=8, kv_heads=8, d=64):
    return torch.empty(1, heads, n, d), torch.empty(1, kv_heads, n, d)


@pytest.mark.parametrize("program, needs_grad, backend", [
    ("causal", True, "sdpa"),
    ("scaled_dot ; softmax", False, "sdpa"),
    ("causal & window(64)", True, "tiled"),
    ("causal & window(64)", False, "tiled"),  # first time: no compile for a one-off call
    ("alibi ; causal & window(64) ; entmax(1.5)", True, "tiled"),
    ("document ; sparsemax", True, "tiled"),
    ("linear(elu1) ; causal", True, "linear"),
    ("favor(64) ; padding", False, "linear"),
    ("linear(elu1) ; window(4)", False, "reference"),
    ("additive ; causal", True, "reference"),
    ("alibi ; window(400)", True, "sdpa"),  # dense enough: one fused call with the mask
])
def test_choices(program, needs_grad, backend) -> None:
    q, k = shapes()
    assert attnlab.plan(program, q, k, needs_grad=needs_grad).backend == backend


def test_weights_always_come_from_the_reference() -> None:
    q, k = shapes()
    p = attnlab.plan("causal", q, k, needs_grad=False, return_weights=True)
    assert p.backend == "reference"
    assert "only reference returns weights" in p.refused["sdpa"]


def test_flex_only_for_repeated_calls_with_enough_work(monkeypatch) -> None:
    q, k = shapes(n=4096)
    program = "causal & window(256)"
    first = attnlab.plan(program, q, k, needs_grad=False)
    assert first.backend == "tiled" and "comes back" in first.refused["flex"]
    planner.remember(first.call)
    assert attnlab.plan(program, q, k, needs_grad=False).backend == "flex"
    assert attnlab.plan(program, q, k, needs_grad=True).backend == "tiled"  # no CPU backward
    monkeypatch.setenv("ATTNLAB_COMPILE", "0")
    assert attnlab.plan(program, q, k, needs_grad=False).backend == "tiled"
    monkeypatch.delenv("ATTNLAB_COMPILE")
    small = "causal & window(16)"  # sparse, but ~0.5 GFLOP at N=1024: a compile never pays
    small_q, small_k = shapes(n=1024)
    planner.remember(attnlab.plan(small, small_q, small_k, needs_grad=False).call)
    assert attnlab.plan(small, small_q, small_k, needs_grad=False).backend == "tiled"


def test_seeded_dropout_avoids_sdpa() -> None:
    q, k = shapes()
    p = attnlab.plan("causal ; softmax ; dropout(0.1)", q, k, needs_grad=True, training=True,
                     seeded=True)
    assert p.backend == "tiled" and "global RNG" in p.refused["sdpa"]


def test_explain_reads_well() -> None:
    q, k = shapes(n=1024, kv_heads=2)
    text = attnlab.explain("alibi ; causal & window(64) ; entmax(1.5)", q, k, needs_grad=True)
    assert "backend   tiled" in text
    assert "sdpa: SDPA computes softmax only" in text
    assert "0.0615 of pairs visible" in text and "MFLOP" in text
    assert "(1, 2, 1024, 64)" in text


def test_forced_backend_that_cannot_run_says_why() -> None:
    q = torch.randn(1, 2, 16, 8)
    with pytest.raises(InputError, match="backend 'sdpa' cannot run this call: SDPA computes "
                                         "softmax only"):
        attnlab.attention(q, q, q, "sparsemax", backend="sdpa")
    with pytest.raises(InputError, match="does not support backward on CPU"):
        attnlab.attention(q.requires_grad_(), q, q, "causal & window(2)", backend="flex")


@pytest.mark.parametrize("program", ["causal", "alibi ; causal & window(5)",
                                     "relative_bias ; causal & window(3) ; entmax(1.5)",
                                     "linear(elu1) ; causal", "softcap(5.0) ; window(4) ; softmax"])
def test_planned_calls_equal_the_reference(program) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 8, generator=g, requires_grad=True) for _ in range(3))
    params = attnlab.init_params(program, 4, 8)
    planned = attnlab.attention(q, k, v, program, params=params)
    reference = attnlab.attention(q, k, v, program, params=params, backend="reference")
    torch.testing.assert_close(planned, reference, atol=2e-5, rtol=2e-5)
    grads = torch.autograd.grad(planned.sum(), (q, k, v))
    want = torch.autograd.grad(reference.sum(), (q, k, v))
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_structural_masks_are_counted_once_for_sdpa() -> None:
    """A structural mask broadcasts over batch and heads, so a large batch is no reason to
    refuse SDPA; per-head mods and per-row call-time data do multiply the mask."""
    from attnlab.exec.backend import Call
    from attnlab.exec.sdpa import dense_mask_elements

    def elements(text, batch=64, heads=8):
        return dense_mask_elements(Call(attnlab.parse(text), batch, heads, heads, 1024, 1024, 64,
                                        64, torch.float32, torch.device("cpu"), False))

    assert elements("window(400)") == 1024 * 1024
    assert elements("alibi ; window(400)") == 1024 * 1024 * 8
    assert elements("padding") == 1024 * 1024 * 64
    assert elements("causal") == 0
    q, k = torch.empty(64, 8, 1024, 64), torch.empty(64, 8, 1024, 64)
    assert attnlab.plan("window(400)", q, k, needs_grad=False).backend == "sdpa"
