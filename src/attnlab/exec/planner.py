"""The planner: for one call, the fastest backend that computes exactly the program — and why.

A `Planner` weighs the program's parts, the mask's block density, the shapes, dtype, device,
whether gradients are needed, and compile cost: FlexAttention is chosen only once its kernel is
warm or the same call has come back (a one-off call never waits for a compile). Where a call
shape repeats with enough work it times the backends that can run it and keeps the fastest,
on disk per machine, so heuristics tuned on one CPU do not lose on another.

The per-call path (`Planner.choose`) is one dict lookup keyed by the program object and the
call's shape facts; refusal and explanation text is built only by `plan` and `explain`.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnlab.exec.backend import Backend, Call
from attnlab.exec.flex import FlexBackend
from attnlab.exec.linear import LinearBackend
from attnlab.exec.reference import ReferenceBackend
from attnlab.exec.sdpa import SdpaBackend, dense_mask_elements, fused_causal
from attnlab.exec.tiled import TiledBackend, runs_on_sdpa
from attnlab.lang.masks import EMPTY, MaskInputs
from attnlab.lang.program import Program, parse
from attnlab.machine import cache_dir, cpu_model

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    ReferenceBackend(), SdpaBackend(), FlexBackend(), TiledBackend(), LinearBackend())}
SPARSE = 0.5  # below this fraction of non-empty blocks, skipping blocks beats dense SDPA
# A cold FlexAttention compile costs seconds; a call must repeat and carry at least this much
# work (FLOPs of its visible blocks, ~10 ms on 2 CPU cores) before one is worth starting.
COMPILE_WORTH_FLOPS = 1e9
# A repeated call with at least this much work (FLOPs of its visible blocks, ~2 ms forward on
# 2 CPU cores) is timed on every backend that can run it. Below it a wrong pick costs less
# than measuring would.
MEASURE_FLOPS = 2e8
MEASURE_RUNS = 3  # timed runs per backend, after one warm-up run (which compiles flex)
MAX_DENSITIES = 256  # block densities of structural masks kept per planner
MAX_CHOICES = 4096  # call shapes whose choice a planner keeps

# (backend name, one run of it) -> seconds that run takes; tests pass a fake one.
Timer = Callable[[str, Callable[[], None]], float]


@dataclass(frozen=True)
class Plan:
    """The chosen backend, the reasons the others were refused, and what the call costs."""

    backend: str
    why: str
    call: Call
    refused: dict[str, str] = field(default_factory=dict)
    block_density: float | None = None  # non-empty blocks / all blocks
    density: float | None = None  # visible pairs / all pairs
    flops: float = 0.0
    peak_bytes: float = 0.0
    measured_ms: dict[str, float] = field(default_factory=dict)  # backend -> ms, when timed

    def __str__(self) -> str:
        return explain_plan(self)


def time_runs(name: str, step: Callable[[], None]) -> float:
    """Median seconds of MEASURE_RUNS runs of `step`, after one warm-up run."""
    del name  # every backend is timed alike
    sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
    step()
    sync()
    runs = []
    for _ in range(MEASURE_RUNS):
        start = time.perf_counter()
        step()
        sync()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


class Planner:
    """Chooses a backend per call and remembers what it learnt.

    It owns: how often each call shape came by (a repeat earns a compile or a measurement),
    the block density of structural masks, the choice made per call shape, and measured times
    (read from and written to `cache_dir/planner/`). `measure=None` follows `$ATTNLAB_MEASURE`
    (on unless "0"); off, the plan follows the heuristics alone and no cache file is read.
    """

    def __init__(self, cache_dir: Path | str | None = None, *, measure: bool | None = None,
                 timer: Timer = time_runs, measure_flops: float = MEASURE_FLOPS) -> None:
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.measure = measure
        self.timer = timer
        self.measure_flops = measure_flops
        self._seen: Counter = Counter()  # call shape -> calls planned so far
        self._choices: dict[tuple, str] = {}  # call shape -> backend, once final
        self._densities: dict[tuple, float] = {}
        self._measured: dict[str, dict[str, dict[str, float]]] = {}  # file -> call -> backend -> ms

    # -- the per-call path ------------------------------------------------------------------
    def choose(self, program: Program, q: Tensor, k: Tensor, v: Tensor, inp: MaskInputs, *,
               bias: Tensor | None = None, params: dict[str, Tensor] | None = None,
               return_weights: bool = False, training: bool = False,
               generator: torch.Generator | None = None) -> str:
        """The backend for this call: cached per program and shape facts after the first calls.

        Masks that read call-time data (padding, document, graph) are planned without their
        block density (it changes with every batch), so their key holds shapes only; measuring
        then decides between the backends on the data of the call that was timed.
        """
        params = params or {}
        needs_grad = torch.is_grad_enabled() and (
            q.requires_grad or k.requires_grad or v.requires_grad
            or any(p.requires_grad for p in params.values()))
        key = (program, q.shape, k.shape, v.shape[-1], q.dtype, q.device, needs_grad,
               return_weights, training, generator is not None, bool(params),
               torch.get_num_threads())
        name = self._choices.get(key)
        if name is None:
            name = self._choose_new(key, program, q, k, v, inp, bias, params, needs_grad,
                                    return_weights, training, generator)
        return name

    def _choose_new(self, key, program, q, k, v, inp, bias, params, needs_grad, return_weights,
                    training, generator) -> str:
        call = Call.of(program, q, k, v, needs_grad=needs_grad, return_weights=return_weights,
                       training=training, params=params, seeded=generator is not None)
        ok = [name for name, b in BACKENDS.items() if b.refuse(call) is None]
        block_density = self.block_density(call)
        repeat = self._seen[key] >= 1
        self._seen[key] += 1
        times = self._known_times(call, ok)
        if not times and repeat and self._should_measure(call, ok, block_density):
            times = self._measure(call, ok, block_density, q, k, v, inp, bias, params, training)
        if times:
            name = _fastest(times, call, repeat)
            if name == min(times, key=times.get):  # else flex waits for the call to come back
                self._remember(key, name)
            return name
        name = self._heuristic(call, ok, block_density, repeat)
        # A first call's choice is final unless a repeat would compile flex or measure.
        if repeat or (name == self._heuristic(call, ok, block_density, True)
                      and not self._should_measure(call, ok, block_density)):
            self._remember(key, name)
        return name

    def _remember(self, key: tuple, name: str) -> None:
        """Keep a final choice; the oldest go first (decoding with a growing cache makes a
        new shape every step)."""
        if len(self._choices) >= MAX_CHOICES:
            oldest = next(iter(self._choices))
            del self._choices[oldest]
            self._seen.pop(oldest, None)
        self._choices[key] = name

    # -- plans with reasons -----------------------------------------------------------------
    def plan(self, program: Program | str, q: Tensor, k: Tensor, v: Tensor | None = None, *,
             needs_grad: bool | None = None, return_weights: bool = False, training: bool = False,
             params: dict[str, Tensor] | None = None, inputs: MaskInputs | None = None,
             seeded: bool = False, detail: bool = False) -> Plan:
        """The plan for attention of q (B, H, N, D) over k (B, H_kv, M, D), with reasons.

        It is the choice `attention` makes for such a call now (measured times included), but
        neither counts the call nor measures. `detail=True` also counts the exact mask density.
        """
        program = parse(program)
        v = k if v is None else v
        call = Call.of(program, q, k, v, needs_grad=needs_grad, return_weights=return_weights,
                       training=training, params=params, seeded=seeded)
        refused = {name: reason for name, b in BACKENDS.items() if (reason := b.refuse(call))}
        ok = [name for name in BACKENDS if name not in refused]
        block_density = self.block_density(call)
        key = (program, q.shape, k.shape, v.shape[-1], q.dtype, q.device, call.needs_grad,
               return_weights, training, seeded, bool(params), torch.get_num_threads())
        times = self._known_times(call, ok)
        if times:
            name = _fastest(times, call, self._seen[key] >= 1)
            why = (f"fastest of {len(times)} backends timed on this machine"
                   if name == min(times, key=times.get) else
                   "fastest timed here but flex, whose kernel this process has yet to compile: "
                   "flex once the call comes back")
        else:
            name = self._heuristic(call, ok, block_density, self._seen[key] >= 1)
            why = _why(name, call)
        if name in refused:  # the last resort cannot run it either
            why = f"no backend can run this call here ({name}: {refused.pop(name)})"
        for other in BACKENDS:
            if other != name and other not in refused:
                refused[other] = self._passed_over(other, name, call, block_density, times)
        if program.mask is not None and program.mask.requires() and inputs is not None:
            # shown, not planned by: the next batch's data may differ
            block_density = _block_density(program.mask, inputs, BACKENDS["tiled"].block)
        flops, peak = estimate_cost(name, call, block_density)
        density = _exact_density(program, call, inputs) if detail else None
        return Plan(name, why, call, refused, block_density, density, flops, peak, times)

    def explain(self, program: Program | str, q: Tensor, k: Tensor, v: Tensor | None = None, *,
                needs_grad: bool | None = None, **kwargs) -> str:
        """`plan(...)` as readable text."""
        return explain_plan(self.plan(program, q, k, v, needs_grad=needs_grad, detail=True,
                                      **kwargs))

    # -- heuristics -------------------------------------------------------------------------
    def _heuristic(self, call: Call, ok: list[str], block_density: float | None,
                   repeat: bool) -> str:
        p = call.program
        if "linear" in ok:
            return "linear"
        if "sdpa" in ok and (p.mask is None or fused_causal(p, call.n, call.m)) and not p.mods:
            return "sdpa"
        sparse = block_density is not None and block_density < SPARSE
        if "flex" in ok and sparse and (BACKENDS["flex"].is_warm(call)
                                        or _worth_compiling(call, block_density, repeat)):
            return "flex"
        if "sdpa" in ok and not sparse:
            return "sdpa"
        return "tiled" if "tiled" in ok else "reference"

    def _passed_over(self, other: str, chosen: str, call: Call, block_density: float | None,
                     times: dict[str, float]) -> str:
        """Why a backend that could run the call was not chosen."""
        if other in times:
            return f"{times[other]:.2f} ms when timed here, {chosen} {times[chosen]:.2f} ms"
        if other == "reference":
            return "materialises every score and weight: kept for checking and for returned weights"
        if other == "flex":
            return ("needs a compile (~10 s cold on CPU); chosen once the same call comes back "
                    "with enough work to repay it" if not BACKENDS["flex"].is_warm(call)
                    else "slower than the chosen backend here")
        if other == "sdpa" and block_density is not None:
            return (f"would compute every block densely; only {block_density:.1%} of blocks "
                    "hold visible keys")
        if other == "tiled":
            return f"{chosen} computes this program in fewer steps"
        return f"{chosen} is faster for this call"

    # -- block density ----------------------------------------------------------------------
    def block_density(self, call: Call) -> float | None:
        """Share of non-empty tiles of the mask; None when it reads call-time data."""
        mask = call.program.mask
        if mask is None:
            return 1.0
        if mask.requires():
            return None
        block = BACKENDS["tiled"].block
        # Structural masks depend only on the shape: each is summarised once.
        key = (mask, call.batch, call.heads, call.n, call.m, block)
        found = self._densities.get(key)
        if found is None:
            if len(self._densities) >= MAX_DENSITIES:
                self._densities.pop(next(iter(self._densities)))
            found = self._densities[key] = _block_density(
                mask, MaskInputs.build(call.batch, call.heads, call.n, call.m), block)
        return found

    # -- measuring --------------------------------------------------------------------------
    def measuring(self) -> bool:
        return self.measure if self.measure is not None else os.environ.get(
            "ATTNLAB_MEASURE", "1") != "0"

    def _candidates(self, call: Call, ok: list[str], block_density: float | None) -> list[str]:
        """Backends worth timing: the fast exact ones; flex, as in the rules, only when warm
        or when its mask is sparse and the call worth a compile (timing compiles it)."""
        fast = [name for name in ok if name != "reference"]
        sparse = block_density is not None and block_density < SPARSE
        if "flex" in fast and not (BACKENDS["flex"].is_warm(call) or (
                sparse and _worth_compiling(call, block_density, True))):
            fast.remove("flex")
        return fast

    def _should_measure(self, call: Call, ok: list[str], block_density: float | None) -> bool:
        # Timing would draw dropout or Gumbel noise, moving the user's random stream.
        if not self.measuring() or call.uses_randomness or torch.compiler.is_compiling():
            return False
        work = _visible_flops(call, block_density)
        return work >= self.measure_flops and len(self._candidates(call, ok, block_density)) > 1

    def _measure(self, call, ok, block_density, q, k, v, inp, bias, params, training,
                 ) -> dict[str, float]:
        """Time every candidate on detached copies of the inputs; keep the times on disk."""
        copies = [t.detach().clone().requires_grad_(call.needs_grad) for t in (q, k, v)]
        pcopies = {n: p.detach().clone().requires_grad_(call.needs_grad and p.requires_grad)
                   for n, p in params.items()}
        leaves = [*copies, *(p for p in pcopies.values() if p.requires_grad)]
        times = {}
        for name in self._candidates(call, ok, block_density):
            def forward(name=name) -> Tensor:
                return BACKENDS[name].run(*copies, call.program, inp, bias=bias, params=pcopies,
                                          training=training, generator=None)

            def step(forward=forward) -> None:
                if call.needs_grad:
                    torch.autograd.grad(forward().sum(), leaves, allow_unused=True)
                else:
                    with torch.no_grad():
                        forward()
            try:
                times[name] = self.timer(name, step) * 1e3
            except RuntimeError:  # out of memory, a failed compile: not a candidate here
                continue
        if times:
            self._store(call, times)
        return times

    # -- the measurement cache on disk ------------------------------------------------------
    def _file(self, call: Call) -> tuple[Path, dict[str, str | int]]:
        """One JSON file per machine: CPU, torch threads, torch version, device (and GPU)."""
        machine = {"cpu": cpu_model(), "threads": torch.get_num_threads(),
                   "torch": torch.__version__, "device": call.device.type}
        if call.device.type == "cuda":
            machine["gpu"] = torch.cuda.get_device_name(call.device)
        digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:16]
        return (self.cache_dir or cache_dir()) / "planner" / f"measured-{digest}.json", machine

    def _known_times(self, call: Call, ok: list[str]) -> dict[str, float]:
        """Measured ms per backend for this call (from memory or disk), limited to `ok`."""
        if not self.measuring():
            return {}
        path, _ = self._file(call)
        table = self._measured.get(str(path))
        if table is None:
            table = self._measured[str(path)] = _read_times(path)
        times = table.get(_call_text(call), {})
        return {name: ms for name, ms in times.items() if name in ok}

    def _store(self, call: Call, times: dict[str, float]) -> None:
        path, machine = self._file(call)
        table = _read_times(path)  # another process may have added calls since we read it
        table[_call_text(call)] = times
        self._measured[str(path)] = table
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp",
                                             delete=False) as tmp:
                json.dump({"machine": machine, "times_ms": table}, tmp, indent=1, sort_keys=True)
            os.replace(tmp.name, path)  # atomic: a reader sees the old file or the new one
        except OSError:
            pass  # a read-only cache: the times still serve this process


def _read_times(path: Path) -> dict[str, dict[str, float]]:
    """The measured times in `path`; an absent, unreadable or malformed file reads as none."""
    try:
        data = json.loads(path.read_text())
        table = data["times_ms"]
        return {str(call): {str(b): float(ms) for b, ms in times.items()}
                for call, times in table.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _call_text(call: Call) -> str:
    """The call as a stable line: the measurement cache's key."""
    return (f"{call.program} | {call.batch}x{call.heads}x{call.kv_heads}x{call.n}x{call.m}"
            f"x{call.head_dim}x{call.value_dim} | {str(call.dtype).removeprefix('torch.')} | "
            f"{call.device} | {'grad' if call.needs_grad else 'inference'}"
            f"{' | training' if call.training else ''}{' | seeded' if call.seeded else ''}")


def _fastest(times: dict[str, float], call: Call, repeat: bool) -> str:
    """The fastest backend timed, except that a one-off call never waits for a flex compile
    (measured in an earlier process, flex may be fastest and still cold here)."""
    usable = {name: ms for name, ms in times.items()
              if name != "flex" or repeat or BACKENDS["flex"].is_warm(call)}
    pool = usable or times
    return min(pool, key=pool.get)


def _why(name: str, call: Call) -> str:
    p = call.program
    if name == "linear":
        return f"'{p.approximation}' runs in O(N) on kernel features"
    if name == "sdpa":
        if (p.mask is None or fused_causal(p, call.n, call.m)) and not p.mods:
            how = "is_causal" if p.mask is not None else "no mask"
            return f"PyTorch's fused attention ({how}) computes exactly this program"
        return "the mask is dense enough that one fused SDPA call with it is fastest"
    if name == "flex":
        return "a compiled FlexAttention kernel skips the empty blocks"
    if name == "tiled":
        return ("softmax on SDPA over the visible tiles, fused backward" if runs_on_sdpa(p) else
                f"{p.normalizer} over exactly the visible keys of each tile, with "
                f"{', '.join(map(str, p.mods)) or 'no mods'}")
    return "no fast backend computes this program, so the reference materialises it"


def _visible_flops(call: Call, block_density: float | None) -> float:
    frac = 1.0 if block_density is None else block_density
    return 4.0 * call.batch * call.heads * call.n * call.m * call.head_dim * frac


def _worth_compiling(call: Call, block_density: float, repeat: bool) -> bool:
    """The same call came back, is big enough, and compiling is allowed (ATTNLAB_COMPILE)."""
    if os.environ.get("ATTNLAB_COMPILE", "1") == "0":
        return False
    return repeat and _visible_flops(call, block_density) >= COMPILE_WORTH_FLOPS


def _exact_density(program: Program, call: Call, inputs: MaskInputs | None) -> float | None:
    """Exact share of visible pairs, when it can be counted (what explain prints)."""
    mask = program.mask
    if mask is None:
        return 1.0
    if (mask.requires() and inputs is None) or call.n * call.m > 1 << 26:
        return None
    inp = inputs or MaskInputs.build(call.batch, call.heads, call.n, call.m)
    return mask.density(inp, BACKENDS["tiled"].block)


def _block_density(mask, inp: MaskInputs, block: int) -> float:
    state = mask.block_summary(inp, (min(block, inp.n), min(block, inp.m))).state
    return float((state != EMPTY).float().mean())


def estimate_cost(backend: str, call: Call, block_density: float | None) -> tuple[float, float]:
    """(FLOPs, peak extra bytes) of the attention itself, roughly: what explain reports."""
    b, h, n, m, d = call.batch, call.heads, call.n, call.m, call.head_dim
    size = torch.finfo(call.dtype).bits // 8 if call.dtype.is_floating_point else 4
    dense = 4.0 * b * h * n * m * d
    if backend == "linear":
        features = getattr(call.program.approximation, "m", None) or getattr(
            call.program.approximation, "k", None) or d
        return 4.0 * b * h * (n + m) * features * d, size * b * h * (n + m) * features
    if backend == "sdpa":
        work = 0.5 if fused_causal(call.program, n, m) else 1.0
        return dense * work, size * dense_mask_elements(call)
    if backend in ("tiled", "flex"):
        frac = 1.0 if block_density is None else block_density
        tile = min(1 << 23, b * h * n * m * frac)
        return dense * frac, size * (tile if backend == "tiled" else 0)
    return dense, 3.0 * size * b * h * n * m  # scores, weights, mask


def explain_plan(p: Plan) -> str:
    """The plan as text a person reads: backend, why, what the others said, times, costs."""
    c = p.call
    grad = "with gradients" if c.needs_grad else "inference"
    lines = [
        f"program   {c.program}",
        f"call      q ({c.batch}, {c.heads}, {c.n}, {c.head_dim}) · k/v ({c.batch}, {c.kv_heads}, "
        f"{c.m}, {c.head_dim}) · {str(c.dtype).removeprefix('torch.')} · {c.device.type} · {grad}",
    ]
    if c.program.mask is not None:
        if p.block_density is None:
            lines.append("mask      density depends on call-time inputs")
        else:
            exact = f"{p.density:.4f} of pairs visible, " if p.density is not None else ""
            lines.append(f"mask      {exact}{p.block_density:.1%} of "
                         f"{BACKENDS['tiled'].block}-blocks hold visible keys")
    lines.append(f"backend   {p.backend} — {p.why}")
    for i, (name, reason) in enumerate(p.refused.items()):
        lines.append(f"{'not' if i == 0 else '':9} {name}: {reason}")
    if p.measured_ms:
        lines.append("measured  " + " · ".join(f"{name} {ms:.2f} ms" for name, ms in
                                                sorted(p.measured_ms.items(), key=lambda x: x[1])))
    lines.append(f"cost      ~{_si(p.flops)}FLOP, ~{_si(p.peak_bytes)}B extra memory")
    return "\n".join(lines)


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f} "


DEFAULT = Planner()  # what attnlab.attention, attnlab.plan and attnlab.explain use


def plan(program: Program | str, q: Tensor, k: Tensor, v: Tensor | None = None, *,
         planner: Planner | None = None, **kwargs) -> Plan:
    """The default planner's (or `planner`'s) plan for this call; see `Planner.plan`."""
    return (planner or DEFAULT).plan(program, q, k, v, **kwargs)


def explain(program: Program | str, q: Tensor, k: Tensor, v: Tensor | None = None, *,
            planner: Planner | None = None, **kwargs) -> str:
    """The plan for this call as readable text: backend, why, measured times, costs; for a
    combined program, each component's plan in turn (each runs on its own backend)."""
    program = parse(program)
    if program.components:
        return "\n\n".join(f"component {i}: {{{c}}}\n" + (planner or DEFAULT).explain(c, q, k, v, **kwargs)
                             for i, c in enumerate(program.components))
    return (planner or DEFAULT).explain(program, q, k, v, **kwargs)
