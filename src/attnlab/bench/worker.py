"""One benchmark configuration in a process of its own, so its peak memory is its own:
`python -m attnlab.bench.worker '<json spec>'` prints one JSON line of timings and memory."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

import attnlab
from attnlab.bench.impls import IMPLS, Forward, make_inputs, planned_backend, why_not

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_step(forward: Forward, q: Tensor, k: Tensor, v: Tensor, grad: bool) -> Callable[[], None]:
    """One iteration: the forward, or the forward and the gradients of out.sum() w.r.t. q, k, v."""
    if grad:
        def step() -> None:
            # autograd.grad rather than backward(): nothing accumulates into .grad between runs
            torch.autograd.grad(forward(q, k, v).sum(), (q, k, v))
    else:
        def step() -> None:
            with torch.no_grad():
                forward(q, k, v)
    return step


def timed(step: Callable[[], None], sync: Callable[[], None]) -> float:
    """Seconds one call of `step` takes, device work included."""
    start = time.perf_counter()
    step()
    sync()
    return time.perf_counter() - start


# -- peak memory --------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    """A `VmRSS:`-style field of /proc/self/status, in kB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _trim_heap() -> None:
    """Give freed heap pages back to the OS, so the timed region has to fault in what it uses."""
    # Not glibc: nothing to trim, and RSS may then hide freed memory the runs reuse.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where that is not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory growth over a region: CUDA's allocator peak, or on CPU the RSS high-water mark
    minus the RSS when the region starts."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.base = 0
        self.method = ""

    def start(self) -> None:
        gc.collect()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self.base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.method = "cuda max_memory_allocated"
            return
        _trim_heap()
        self.base = _status_kb("VmRSS") * 1024
        # Without the reset the mark dates from process start (imports, compiles): an upper bound.
        self.method = "VmHWM after clear_refs" if _reset_hwm() else "VmHWM since process start"

    def stop(self) -> float:
        """Peak growth in MiB since start()."""
        cuda = self.device == "cuda"
        peak = torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024
        return (peak - self.base) / 2**20


# -- one configuration --------------------------------------------------------------------------


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Build, warm up, time and measure the configuration `spec` describes."""
    impl, mode, device = spec["impl"], spec["mode"], spec["device"]
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    program = attnlab.parse(spec["program"])
    reason = why_not(impl, program, mode, device, spec["n"], spec["heads"], spec["head_dim"])
    if reason:
        raise ValueError(f"{impl} does not apply to '{program}': {reason}")
    grad = mode == "fwdbwd"
    q, k, v = make_inputs(spec["batch"], spec["heads"], spec["n"], spec["head_dim"],
                          dtype=DTYPES[spec["dtype"]], device=device, grad=grad, seed=spec["seed"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step = make_step(IMPLS[impl](program, q, k), q, k, v, grad)
    if mode == "first_call":
        # A backend may defer compiling to a shape's second call, so that one is reported too.
        first = timed(step, sync)
        result: dict[str, Any] = {"first_call_s": first, "second_call_s": timed(step, sync)}
    else:
        result = measure(step, sync, device, spec["warmup"], spec["repeats"])
    if impl == "attnlab":  # asked after the runs, so planning cannot warm a cache they use
        result["backend"] = planned_backend(program, q, k, needs_grad=grad)
    return result


def measure(step: Callable[[], None], sync: Callable[[], None], device: str, warmup: int,
            repeats: int) -> dict[str, Any]:
    """Warm-up runs (compiles included), then `repeats` timed runs and the peak memory growth."""
    for _ in range(warmup):
        step()
        sync()
    memory = PeakMemory(device)
    memory.start()
    runs = [timed(step, sync) for _ in range(repeats)]
    peak_mb = memory.stop()
    return {"median_ms": statistics.median(runs) * 1e3, "runs_ms": [r * 1e3 for r in runs],
            "peak_mb": peak_mb, "peak_method": memory.method}


def describe(err: BaseException) -> str:
    """One line: the exception's type and the first line of its message."""
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}"[:300]


def main(argv: list[str] | None = None) -> int:
    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    try:
        result = run(spec)
    except Exception as err:  # a failed configuration is a row in the table, not a crash
        result = {"error": describe(err)}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
