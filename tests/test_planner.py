"""The planner: which backend each kind of call gets, and why the others were refused."""

from __future__ import annotations

import json

import pytest
import torch

import attnlab
from attnlab import InputError
from attnlab.exec import Planner, planner
from attnlab.lang.masks import MaskInputs


@pytest.fixture
def fresh(tmp_path):
    """A Planner of the test's own: nothing remembered, nothing measured."""
    return Planner(tmp_path / "cache", measure=False)


def called(fresh: Planner, program: str, q, k, **kwargs) -> str:
    """What the planner chooses for a call of q over k (which it then remembers)."""
    inp = MaskInputs.build(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    return fresh.choose(attnlab.parse(program), q, k, k, inp, **kwargs)


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
def test_choices(fresh, program, needs_grad, backend) -> None:
    q, k = shapes()
    assert fresh.plan(program, q, k, needs_grad=needs_grad).backend == backend


def test_weights_always_come_from_the_reference(fresh) -> None:
    q, k = shapes()
    p = fresh.plan("causal", q, k, needs_grad=False, return_weights=True)
    assert p.backend == "reference"
    assert "only reference returns weights" in p.refused["sdpa"]


def test_flex_only_for_repeated_calls_with_enough_work(fresh, monkeypatch) -> None:
    q, k = shapes(n=4096)
    program = "causal & window(256)"
    first = fresh.plan(program, q, k, needs_grad=False)
    assert first.backend == "tiled" and "comes back" in first.refused["flex"]
    assert called(fresh, program, q, k) == "tiled"
    assert fresh.plan(program, q, k, needs_grad=False).backend == "flex"
    assert called(fresh, program, q, k) == "flex"
    assert called(fresh, program, q, k) == "flex"  # now the cached choice
    assert fresh.plan(program, q, k, needs_grad=True).backend == "tiled"  # no CPU backward
    monkeypatch.setenv("ATTNLAB_COMPILE", "0")
    assert fresh.plan(program, q, k, needs_grad=False).backend == "tiled"
    monkeypatch.delenv("ATTNLAB_COMPILE")
    small = "causal & window(16)"  # sparse, but ~0.5 GFLOP at N=1024: a compile never pays
    small_q, small_k = shapes(n=1024)
    assert called(fresh, small, small_q, small_k) == "tiled"
    assert called(fresh, small, small_q, small_k) == "tiled"
    assert fresh.plan(small, small_q, small_k, needs_grad=False).backend == "tiled"


def test_seeded_dropout_avoids_sdpa(fresh) -> None:
    q, k = shapes()
    p = fresh.plan("causal ; softmax ; dropout(0.1)", q, k, needs_grad=True, training=True,
                     seeded=True)
    assert p.backend == "tiled" and "global RNG" in p.refused["sdpa"]


def test_explain_reads_well(fresh) -> None:
    q, k = shapes(n=1024, kv_heads=2)
    text = fresh.explain("alibi ; causal & window(64) ; entmax(1.5)", q, k, needs_grad=True)
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
def test_planned_calls_equal_the_reference(fresh, program) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 8, generator=g, requires_grad=True) for _ in range(3))
    params = attnlab.init_params(program, 4, 8)
    planned = attnlab.attention(q, k, v, program, params=params, planner=fresh)
    reference = attnlab.attention(q, k, v, program, params=params, backend="reference")
    torch.testing.assert_close(planned, reference, atol=2e-5, rtol=2e-5)
    grads = torch.autograd.grad(planned.sum(), (q, k, v))
    want = torch.autograd.grad(reference.sum(), (q, k, v))
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=2e-5)


def test_structural_masks_are_counted_once_for_sdpa(fresh) -> None:
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
    assert fresh.plan("window(400)", q, k, needs_grad=False).backend == "sdpa"


# -- measuring --------------------------------------------------------------------------------

FAKE_MS = {"sdpa": 3.0, "tiled": 1.0, "flex": 2.0}


class FakeTimer:
    """Seconds per backend from FAKE_MS, without running anything; remembers whom it timed."""

    def __init__(self) -> None:
        self.timed: list[str] = []

    def __call__(self, name, step) -> float:
        self.timed.append(name)
        return FAKE_MS[name] / 1e3


def measuring(tmp_path, timer) -> Planner:
    return Planner(tmp_path / "cache", measure=True, timer=timer, measure_flops=0)


def test_a_repeated_call_is_measured_once_and_the_fastest_kept_on_disk(tmp_path) -> None:
    timer = FakeTimer()
    first = measuring(tmp_path, timer)
    q, k = shapes(n=256)
    program = "alibi ; window(100)"  # dense enough: the heuristics say sdpa
    assert called(first, program, q, k) == "sdpa" and timer.timed == []  # a one-off call
    assert called(first, program, q, k) == "tiled"  # came back: timed, tiled was fastest
    assert sorted(timer.timed) == ["sdpa", "tiled"]  # flex: not warm, not worth a compile
    assert called(first, program, q, k) == "tiled" and len(timer.timed) == 2
    (file,) = (tmp_path / "cache" / "planner").glob("measured-*.json")
    saved = json.loads(file.read_text())
    assert saved["machine"]["threads"] == torch.get_num_threads()
    assert list(saved["times_ms"].values()) == [{"sdpa": 3.0, "tiled": 1.0}]
    # the next process reads the times and measures nothing
    second = measuring(tmp_path, FakeTimer())
    assert called(second, program, q, k) == "tiled" and second.timer.timed == []
    text = second.explain(program, q, k, needs_grad=False)
    assert "backend   tiled — fastest of 2 backends timed" in text
    assert "measured  tiled 1.00 ms · sdpa 3.00 ms" in text


def test_flex_is_timed_only_where_the_rules_would_compile_it(tmp_path) -> None:
    timer = FakeTimer()
    planner_ = Planner(tmp_path / "cache", measure=True, timer=timer)
    for program, n in (("causal & window(256)", 4096), ("causal", 4096)):
        q, k = shapes(n=n)
        called(planner_, program, q, k)
        called(planner_, program, q, k)
    # sparse and worth a compile: timed; dense causal: not (a compile for a likely loss)
    assert timer.timed == ["sdpa", "flex", "tiled", "sdpa", "tiled"]


def test_a_one_off_call_never_waits_for_a_compile_even_when_flex_was_fastest(tmp_path) -> None:
    flex_first = {"sdpa": 3.0, "tiled": 2.0, "flex": 1.0}
    q, k = shapes(n=4096)
    program = "causal & window(256)"
    first = measuring(tmp_path, lambda name, step: flex_first[name] / 1e3)
    called(first, program, q, k)
    assert called(first, program, q, k) == "flex"  # came back: timed, and worth the compile
    second = measuring(tmp_path, FakeTimer())  # a new process: flex is cold here
    assert "yet to compile" in second.plan(program, q, k, needs_grad=False).why
    assert called(second, program, q, k) == "tiled"
    assert called(second, program, q, k) == "flex" and second.timer.timed == []


def test_measuring_off_follows_the_heuristics_and_reads_no_cache(tmp_path, monkeypatch) -> None:
    q, k = shapes(n=256)
    on = measuring(tmp_path, FakeTimer())
    for _ in range(2):  # measured and saved: tiled
        called(on, "alibi ; window(100)", q, k)
    timer = FakeTimer()
    monkeypatch.setenv("ATTNLAB_MEASURE", "0")
    off = Planner(tmp_path / "cache", timer=timer, measure_flops=0)
    for _ in range(3):
        assert called(off, "alibi ; window(100)", q, k) == "sdpa"
    assert timer.timed == []


def test_a_corrupt_cache_file_is_ignored_and_replaced(tmp_path) -> None:
    q, k = shapes(n=256)
    planner = measuring(tmp_path, FakeTimer())
    called(planner, "alibi ; window(100)", q, k)
    called(planner, "alibi ; window(100)", q, k)
    (file,) = (tmp_path / "cache" / "planner").glob("measured-*.json")
    for junk in ("{not json", '{"times_ms": [1, 2]}', '{"times_ms": {"x": {"sdpa": "fast"}}}'):
        file.write_text(junk)
        fresh = measuring(tmp_path, FakeTimer())
        called(fresh, "alibi ; window(100)", q, k)
        assert called(fresh, "alibi ; window(100)", q, k) == "tiled"
        assert json.loads(file.read_text())["times_ms"]  # rewritten whole
    assert [p.name for p in file.parent.iterdir()] == [file.name]  # no temporary files left


def test_measuring_runs_on_copies_and_leaves_the_callers_graph_alone(tmp_path) -> None:
    planner = Planner(tmp_path / "cache", measure=True, measure_flops=0)  # the real timer
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 40, 8, generator=g, requires_grad=True) for _ in range(3))
    program = "alibi ; causal & window(9)"
    for _ in range(2):
        out = attnlab.attention(q, k, v, program, planner=planner)
    assert q.grad is None and out.grad_fn is not None
    want = attnlab.attention(q, k, v, program, backend="reference")
    torch.testing.assert_close(out, want, atol=2e-5, rtol=2e-5)
    times = planner.plan(program, q, k, v).measured_ms
    assert set(times) == {"sdpa", "tiled"} and all(ms > 0 for ms in times.values())


def test_calls_that_draw_noise_are_not_measured(tmp_path) -> None:
    timer = FakeTimer()
    planner = measuring(tmp_path, timer)
    q, k = shapes(n=256)
    for _ in range(3):
        called(planner, "causal & window(64) ; softmax ; dropout(0.1)", q, k, training=True)
    assert timer.timed == []


def test_a_decided_call_is_one_lookup_with_no_reasons_built(fresh, monkeypatch) -> None:
    q, k = shapes(n=64)
    for program in ("causal", "alibi ; causal & window(8) ; entmax(1.5)", "causal & padding"):
        called(fresh, program, q, k)
        for backend in planner.BACKENDS.values():  # a refusal reason would now be an error
            monkeypatch.setattr(backend, "refuse", lambda call: pytest.fail("refuse() called"))
        assert called(fresh, program, q, k) == called(fresh, program, q, k)
        monkeypatch.undo()


def test_the_default_planner_serves_attention_plan_and_explain() -> None:
    q = torch.randn(1, 2, 16, 8)
    assert attnlab.plan("causal", q, q).backend == "sdpa"
    assert "backend   sdpa" in attnlab.explain("causal", q, q)
    assert planner.DEFAULT.plan("causal", q, q).backend == "sdpa"
