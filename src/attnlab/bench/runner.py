"""Runs `bench kernels` cases: every (case, implementation) in a fresh worker process, then the
targets judged and everything gathered into one report."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnlab.bench.impls import why_not
from attnlab.bench.kernels import Case, Result, Verdict, evaluate
from attnlab.lang.program import parse
from attnlab.machine import cpu_model

WORKER = (sys.executable, "-m", "attnlab.bench.worker")
Job = tuple[Case, str]


@dataclass(frozen=True)
class Settings:
    """How every configuration is run; each worker receives these with its case."""

    device: str = "cpu"
    threads: int = 2
    # Two, not one: attnlab's flex backend compiles on a shape's second call, and a compile in
    # the timed runs would distort both the median and the peak memory.
    warmup: int = 2
    repeats: int = 7
    batch: int = 1
    heads: int = 8
    head_dim: int = 64
    dtype: str = "float32"
    seed: int = 0
    timeout_s: float = 1800.0

    @classmethod
    def choose(cls, device: str, *, quick: bool, threads: int, repeats: int | None,
               timeout_s: float) -> Settings:
        """fp32 and head_dim 64 on CPU, bf16 and head_dim 128 on CUDA; --quick times 5 runs."""
        cuda = device == "cuda"
        return cls(device, threads, repeats=repeats or (5 if quick else 7),
                   head_dim=128 if cuda else 64, dtype="bfloat16" if cuda else "float32",
                   timeout_s=timeout_s)

    def spec(self, case: Case, impl: str) -> dict[str, Any]:
        """The JSON a worker is started with."""
        return {"impl": impl, "program": case.program, "n": case.n, "mode": case.mode,
                **{k: v for k, v in dataclasses.asdict(self).items() if k != "timeout_s"}}


@dataclass
class Report:
    """Every case run, its results by implementation, and the machine they ran on."""

    settings: Settings
    machine: dict[str, Any]
    cases: tuple[Case, ...]
    results: dict[str, dict[str, Result]]

    def verdicts(self, case: Case) -> list[Verdict]:
        by_name = {c.name: c for c in self.cases}
        return [evaluate(t, case, self.results, by_name) for t in case.targets]

    def all_verdicts(self) -> list[Verdict]:
        return [v for case in self.cases for v in self.verdicts(case)]

    def to_json(self) -> dict[str, Any]:
        return {"machine": self.machine, "settings": dataclasses.asdict(self.settings),
                "cases": [{"name": c.name, "program": c.program, "n": c.n, "mode": c.mode,
                           "results": {i: r.to_dict() for i, r in self.results[c.name].items()},
                           "verdicts": [dataclasses.asdict(v) for v in self.verdicts(c)]}
                          for c in self.cases]}

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def jobs(cases: Sequence[Case], settings: Settings) -> list[Job]:
    """(case, implementation) pairs to run, leaving out those that cannot run the case here."""
    return [(case, impl) for case in cases for impl in case.impls
            if why_not(impl, parse(case.program), case.mode, settings.device, case.n,
                       settings.heads, settings.head_dim) is None]


def run_cases(cases: Sequence[Case], settings: Settings, *,
              on_start: Callable[[int, int, Case, str], None] | None = None,
              on_done: Callable[[Case, Result], None] | None = None,
              worker: Sequence[str] = WORKER) -> Report:
    """Run every job in its own process; a failed job becomes a Result with an error."""
    todo = jobs(cases, settings)
    results: dict[str, dict[str, Result]] = {c.name: {} for c in cases}
    with tempfile.TemporaryDirectory(prefix="attnlab-bench-") as scratch:
        for i, (case, impl) in enumerate(todo):
            if on_start:
                on_start(i, len(todo), case, impl)
            result = run_job(case, impl, settings, Path(scratch), worker)
            results[case.name][impl] = result
            if on_done:
                on_done(case, result)
    return Report(settings, machine_info(settings.device), tuple(cases), results)


def run_job(case: Case, impl: str, settings: Settings, scratch: Path,
            worker: Sequence[str] = WORKER) -> Result:
    """One job; a first-call case runs twice on one fresh compile cache: cold, then warm.

    The planner runs as a user's first process gets it: measuring on, with an empty
    measurement cache of the job's own (a first-call case's warm run reads what its cold run
    measured, as a user's second process would).
    """
    spec = settings.spec(case, impl)
    env = {"ATTNLAB_MEASURE": "1", "ATTNLAB_CACHE": str(scratch / case.name / impl / "attnlab")}
    if case.mode != "first_call":
        return Result.from_worker(impl, run_worker(spec, settings, env, worker=worker))
    env["TORCHINDUCTOR_CACHE_DIR"] = str(scratch / case.name / impl / "inductor")
    cold = Result.from_worker(impl, run_worker(spec, settings, env, worker=worker))
    if cold.error:
        return cold
    warm = Result.from_worker(impl, run_worker(spec, settings, env, worker=worker))
    warm.cold_call_s = cold.first_call_s
    return warm


def run_worker(spec: dict[str, Any], settings: Settings, env: dict[str, str] | None = None, *,
               worker: Sequence[str] = WORKER) -> dict[str, Any]:
    """Start a worker on `spec` and parse its JSON line; a crash or timeout becomes {'error': …}."""
    threads = str(settings.threads)
    # compiled kernels read OpenMP's thread count, not torch's
    full_env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **(env or {})}
    try:
        proc = subprocess.run([*worker, json.dumps(spec)], capture_output=True, text=True,
                              env=full_env, timeout=settings.timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {settings.timeout_s:g} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    return {"error": crash_text(proc.returncode, proc.stderr)}


def crash_text(returncode: int, stderr: str) -> str:
    """One line for a worker that died without its JSON line."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"worker killed by {name}{hint}"
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return f"worker exited with status {returncode}: {last}"[:300]


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers depend on besides the code: versions, CPU and device."""
    cuda = device == "cuda"
    return {"torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "device": device, "device_name": torch.cuda.get_device_name() if cuda else cpu_model(),
            "cuda": torch.version.cuda if cuda else None}
