"""`attnlab bench kernels`: workers in their own processes, errors as rows, targets judged, and
baselines that compute what attnlab computes."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import attnlab
from attnlab.bench import QUICK, Case, Measure, Settings, Target, run_cases, select
from attnlab.bench.impls import IMPLS, make_inputs, why_not
from attnlab.bench.kernels import DEFAULT_VS_FASTEST, Result, evaluate
from attnlab.bench.worker import PeakMemory
from attnlab.cli.app import app
from attnlab.cli.bench import results_table
from attnlab.errors import InputError

runner = CliRunner()
SMALL_CASE = "causal-softmax-256-fwdbwd"
KILLED_WORKER = (sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")


def test_quick_case_runs_end_to_end_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "kernels", "--quick", "--only", SMALL_CASE,
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert SMALL_CASE in result.output and "targets met:" in result.output
    data = json.loads(out.read_text())
    assert {"torch", "cpu", "device_name"} <= data["machine"].keys()
    assert data["settings"]["threads"] == 2 and data["settings"]["repeats"] == 5
    (case,) = data["cases"]
    assert case["name"] == SMALL_CASE
    # flex is forward-only on CPU, so it is left out of a forward+backward case
    assert set(case["results"]) == {"attnlab", "attnlab:sdpa", "attnlab:tiled", "naive",
                                    "sdpa_causal", "sdpa_bool", "sdpa_float"}
    for impl, res in case["results"].items():
        assert res["error"] is None, (impl, res["error"])
        assert res["median_ms"] > 0 and len(res["runs_ms"]) == 5
        assert res["peak_mb"] is not None and res["peak_method"]
    assert isinstance(case["results"]["attnlab"]["backend"], str)
    verdict, default_vs_fastest = case["verdicts"]
    assert verdict["expr"] == "attnlab / sdpa_causal" and verdict["bound"] == "≤ 1.2×"
    assert verdict["met"] in (True, False) and verdict["value"] > 0
    fastest = min(("attnlab:sdpa", "attnlab:tiled"),
                  key=lambda impl: case["results"][impl]["median_ms"])
    assert default_vs_fastest["expr"] == f"attnlab / {fastest}"
    assert default_vs_fastest["value"] == pytest.approx(
        case["results"]["attnlab"]["median_ms"] / case["results"][fastest]["median_ms"])


def test_a_failing_worker_is_a_row_not_a_crash():
    case = Case("wrong-heads", "scaled_dot ; causal ; softmax ; heads(4)", 32, "fwd",
                ("attnlab", "naive"), (Target("t", Measure("attnlab"), Measure("naive"), at_most=1),))
    report = run_cases([case], Settings(repeats=5, warmup=1))
    results = report.results["wrong-heads"]
    assert "heads(4)" in results["attnlab"].error  # attnlab's own message, from the worker
    assert results["naive"].error is None and results["naive"].median_ms > 0
    (verdict,) = report.verdicts(case)
    assert verdict.met is None and verdict.value is None
    console = Console(record=True, width=200)
    console.print(results_table(report))
    assert "error" in console.export_text()


def test_a_killed_worker_is_reported_with_its_signal():
    case = Case("killed", "scaled_dot ; causal ; softmax", 32, "fwd", ("naive",))
    report = run_cases([case], Settings(), worker=KILLED_WORKER)
    assert "SIGKILL" in report.results["killed"]["naive"].error


# -- targets on synthetic numbers ---------------------------------------------------------------

FAST = Case("fast", "p", 8, "fwd", ("attnlab", "base"), (
    Target("time", Measure("attnlab"), Measure("base"), at_most=1.1),
    Target("speedup", Measure("base"), Measure("attnlab"), at_least=10),
    Target("memory", Measure("base", "mb"), Measure("attnlab", "mb"), at_least=5)))
LONGER = Case("longer", "p", 16, "fwd", ("attnlab",), (
    Target("growth", Measure("attnlab", "mb"), Measure("attnlab", "mb", case="fast"), at_most=2.5),))
FIRST = Case("first", "p", 8, "first_call", ("attnlab",), (
    Target("first call", Measure("attnlab", "s"), at_most=3.0),))
CASES = {c.name: c for c in (FAST, LONGER, FIRST)}


def judge(case: Case, results) -> list:
    return [evaluate(t, case, results, CASES) for t in case.targets]


def test_targets_met():
    results = {"fast": {"attnlab": Result("attnlab", median_ms=10, peak_mb=10),
                        "base": Result("base", median_ms=200, peak_mb=60)},
               "longer": {"attnlab": Result("attnlab", median_ms=20, peak_mb=20)},
               "first": {"attnlab": Result("attnlab", first_call_s=2.0)}}
    verdicts = judge(FAST, results) + judge(LONGER, results) + judge(FIRST, results)
    assert [v.value for v in verdicts] == pytest.approx([0.05, 20, 6, 2, 2.0])
    assert all(v.met for v in verdicts)
    assert verdicts[0].text == "attnlab / base = 0.05×"
    assert verdicts[3].text == "peak attnlab@16 / attnlab@8 = 2.00×"
    assert verdicts[4].text == "first call attnlab = 2.00 s" and verdicts[4].bound == "≤ 3 s"


def test_targets_not_met_and_missing():
    results = {"fast": {"attnlab": Result("attnlab", median_ms=120, peak_mb=20),
                        "base": Result("base", median_ms=100, peak_mb=60)},
               "longer": {"attnlab": Result("attnlab", error="worker killed by SIGKILL")},
               "first": {"attnlab": Result("attnlab", first_call_s=3.5)}}
    verdicts = judge(FAST, results) + judge(LONGER, results) + judge(FIRST, results)
    assert [v.met for v in verdicts] == [False, False, False, None, False]
    assert verdicts[3].text.endswith("= n/a")


def test_the_default_path_is_judged_against_the_fastest_backend_that_ran():
    case = Case("c", "p", 8, "fwd", ("attnlab", "attnlab:sdpa", "attnlab:tiled", "attnlab:flex"),
                (DEFAULT_VS_FASTEST,))
    results = {"c": {"attnlab": Result("attnlab", median_ms=10.5),
                     "attnlab:sdpa": Result("attnlab:sdpa", median_ms=12),
                     "attnlab:tiled": Result("attnlab:tiled", median_ms=10),
                     "attnlab:flex": Result("attnlab:flex", error="worker killed by SIGKILL")}}
    (verdict,) = judge(case, results)
    assert verdict.text == "attnlab / attnlab:tiled = 1.05×" and verdict.met
    (missing,) = judge(case, {"c": {"attnlab": Result("attnlab", median_ms=1)}})
    assert missing.met is None and missing.text == "attnlab / attnlab:fastest = n/a"


def test_forced_backends_apply_where_the_backend_runs_the_case():
    window = attnlab.parse("scaled_dot ; causal & window(256) ; softmax")
    assert why_not("attnlab:tiled", window, "fwdbwd", "cpu", 16384) is None
    assert "backward on CPU" in why_not("attnlab:flex", window, "fwdbwd", "cpu", 4096)
    assert why_not("attnlab:sdpa", window, "fwd", "cpu", 4096) is None
    assert "dense" in why_not("attnlab:sdpa", window, "fwd", "cpu", 8192)  # 64 M-element mask
    entmax = attnlab.parse("scaled_dot ; causal & window(256) ; entmax(1.5)")
    assert "softmax only" in why_not("attnlab:sdpa", entmax, "fwd", "cpu", 4096)


def test_every_timed_case_compares_the_default_with_its_backends():
    for case in QUICK:
        if case.mode != "first_call":
            assert DEFAULT_VS_FASTEST in case.targets and "attnlab:tiled" in case.impls, case.name


def test_select_keeps_the_cases_a_target_compares_with():
    names = [c.name for c in select(QUICK, "softmax-1024")]
    assert names == ["window64-softmax-512-fwdbwd", "window64-softmax-1024-fwdbwd"]
    with pytest.raises(InputError, match="matches no case"):
        select(QUICK, "no-such-case")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_one_line_error():
    result = runner.invoke(app, ["bench", "kernels", "--device", "cuda", "--quick"])
    assert result.exit_code == 2
    assert "needs a CUDA GPU" in result.output and "Traceback" not in result.output


# -- the baselines compute what attnlab computes ------------------------------------------------


@pytest.mark.parametrize("program", ["scaled_dot ; causal ; softmax",
                                     "scaled_dot ; causal & window(8) ; softmax",
                                     "scaled_dot ; causal & window(8) ; entmax(1.5)"])
def test_baselines_agree_with_the_reference_backend(program):
    parsed = attnlab.parse(program)
    q, k, v = make_inputs(1, 2, 40, 16, dtype=torch.float32, device="cpu", grad=True, seed=3)
    want = attnlab.attention(q, k, v, parsed, backend="reference")
    want_grads = torch.autograd.grad(want.sum(), (q, k, v))
    impls = [i for i in IMPLS if not i.startswith("attnlab") and i != "flex"
             and not why_not(i, parsed, "fwdbwd", "cpu")]
    assert ("naive" in impls and "sdpa_bool" in impls) or impls == ["entmax15_dense"]
    for impl in impls:
        got = IMPLS[impl](parsed, q, k)(q, k, v)
        torch.testing.assert_close(got, want, msg=impl)
        for g, w in zip(torch.autograd.grad(got.sum(), (q, k, v)), want_grads, strict=True):
            torch.testing.assert_close(g, w, msg=impl)


def test_peak_memory_sees_an_allocation():
    memory = PeakMemory("cpu")
    memory.start()
    block = torch.ones(64, 2**20 // 4)  # 64 MiB, written so that its pages are resident
    peak = memory.stop()
    del block
    assert 60 < peak < 200


def test_a_spread_over_twice_the_fastest_run_is_noisy():
    assert Result("a", runs_ms=[10, 11, 25]).noisy
    assert not Result("a", runs_ms=[10, 11, 19]).noisy and not Result("a").noisy


def test_train_bench_compares_equal_sized_models():
    from attnlab.bench.train import TrainBench, run

    result = run(TrainBench(seq=16, batch=2, d_model=32, layers=1, heads=2, repeats=1, warmup=1))
    assert result["params"]["attnlab"] == result["params"]["torch"]
    assert result["ratio"] > 0 and set(result["tokens_per_s"]) == {"attnlab", "torch"}


def test_the_objective_bench_times_both_steps_and_the_cli_writes_json(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from attnlab.bench import train
    from attnlab.cli.app import app

    small = train.ObjectiveBench(seq=16, batch=2, d_model=16, layers=1, heads=2, vocab=20,
                                 repeats=1, warmup=0)
    result = train.objective_run(small)
    assert set(result["median_step_s"]) == {"with", "without"}
    assert result["ratio"] == result["median_step_s"]["with"] / result["median_step_s"]["without"]
    # the command as a user runs it, at that small size
    monkeypatch.setattr(train, "ObjectiveBench", lambda seq, batch: small)
    out = CliRunner().invoke(app, ["bench", "objectives", "--json", str(tmp_path / "o.json")])
    assert out.exit_code == 0, out.output
    assert "with / without = " in out.output and (tmp_path / "o.json").exists()
