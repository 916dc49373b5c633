"""The planner: for one call, the fastest backend that computes exactly the program — and why.

It weighs the program's parts, the mask's block density, the shapes, dtype, device, whether
gradients are needed, and compile cost: FlexAttention is chosen only once its kernel is warm
or the same call has come back (a one-off call never waits for a compile).
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field

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

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    ReferenceBackend(), SdpaBackend(), FlexBackend(), TiledBackend(), LinearBackend())}
SPARSE = 0.5  # below this fraction of non-empty blocks, skipping blocks beats dense SDPA
# A cold FlexAttention compile costs seconds; a call must repeat and carry at least this much
# work (FLOPs of its visible blocks, ~10 ms on 2 CPU cores) before one is worth starting.
COMPILE_WORTH_FLOPS = 1e9
_seen: Counter = Counter()  # how often each call shape came by: repeated calls earn a compile


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

    def __str__(self) -> str:
        return explain_plan(self)


def plan(program: Program | str, q: Tensor, k: Tensor, v: Tensor | None = None, *,
         needs_grad: bool | None = None, return_weights: bool = False, training: bool = False,
         params: dict[str, Tensor] | None = None, inputs: MaskInputs | None = None,
         seeded: bool = False, detail: bool = False) -> Plan:
    """Choose the backend for attention of q (B, H, N, D) over k (B, H_kv, M, D).

    `detail=True` also counts the exact mask density (what `explain` prints).
    """
    program = parse(program)
    v = k if v is None else v
    call = Call.of(program, q, k, v, needs_grad=needs_grad, return_weights=return_weights,
                   training=training, params=params, seeded=seeded)
    refused = {name: reason for name, b in BACKENDS.items() if (reason := b.refuse(call))}
    block_density, density = _densities(program, call, inputs, detail)
    name, why = _choose(call, refused, block_density)
    for other in BACKENDS:
        if other != name and other not in refused:
            refused[other] = _passed_over(other, name, call, block_density)
    flops, peak = estimate_cost(name, call, block_density)
    return Plan(name, why, call, refused, block_density, density, flops, peak)


def _choose(call: Call, refused: dict[str, str], block_density: float | None) -> tuple[str, str]:
    ok = [name for name in BACKENDS if name not in refused]
    p = call.program
    if "linear" in ok:
        return "linear", f"'{p.approximation}' runs in O(N) on kernel features"
    if "sdpa" in ok and (p.mask is None or fused_causal(p, call.n, call.m)) and not p.mods:
        how = "is_causal" if p.mask is not None else "no mask"
        return "sdpa", f"PyTorch's fused attention ({how}) computes exactly this program"
    sparse = block_density is not None and block_density < SPARSE
    if "flex" in ok and sparse and (BACKENDS["flex"].is_warm(call) or _worth_compiling(call,
                                                                                       block_density)):
        return "flex", "a compiled FlexAttention kernel skips the empty blocks"
    if "sdpa" in ok and not sparse:
        return "sdpa", "the mask is dense enough that one fused SDPA call with it is fastest"
    if "tiled" in ok:
        what = ("softmax on SDPA over the visible tiles, fused backward" if runs_on_sdpa(p) else
                f"{p.normalizer} over exactly the visible keys of each tile, with "
                f"{', '.join(map(str, p.mods)) or 'no mods'}")
        return "tiled", what
    return "reference", "no fast backend computes this program, so the reference materialises it"


def _worth_compiling(call: Call, block_density: float) -> bool:
    """The same call came back, is big enough, and compiling is allowed (ATTNLAB_COMPILE)."""
    if os.environ.get("ATTNLAB_COMPILE", "1") == "0":
        return False
    work = 4.0 * call.batch * call.heads * call.n * call.m * call.head_dim * block_density
    return _seen[_key(call)] >= 1 and work >= COMPILE_WORTH_FLOPS


def _passed_over(other: str, chosen: str, call: Call, block_density: float | None) -> str:
    """Why a backend that could run the call was not chosen."""
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


def _densities(program: Program, call: Call, inputs: MaskInputs | None, detail: bool,
               ) -> tuple[float | None, float | None]:
    """(share of non-empty blocks, exact share of visible pairs if detail) of the mask."""
    mask = program.mask
    if mask is None:
        return 1.0, 1.0
    if mask.requires() and inputs is None:
        return None, None  # the mask reads data we were not given
    inp = inputs or MaskInputs.build(call.batch, call.heads, call.n, call.m)
    block = BACKENDS["tiled"].block
    if mask.requires():
        block_density = _block_density(mask, inp, block)
    else:
        block_density = _cached_block_density(mask, call.batch, call.heads, call.n, call.m, block)
    density = mask.density(inp, block) if detail and call.n * call.m <= 1 << 26 else None
    return block_density, density


def _block_density(mask, inp: MaskInputs, block: int) -> float:
    state = mask.block_summary(inp, (min(block, inp.n), min(block, inp.m))).state
    return float((state != EMPTY).float().mean())


@functools.lru_cache(maxsize=256)
def _cached_block_density(mask, batch: int, heads: int, n: int, m: int, block: int) -> float:
    """Masks that read no call-time data depend only on the shape: plan them once."""
    return _block_density(mask, MaskInputs.build(batch, heads, n, m), block)


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


def remember(call: Call) -> None:
    _seen[_key(call)] += 1


def _key(call: Call) -> tuple:
    return (str(call.program), call.batch, call.heads, call.kv_heads, call.n, call.m,
            call.head_dim, call.dtype, call.device.type, call.needs_grad)


def explain_plan(p: Plan) -> str:
    """The plan as text a person reads: backend, why, what the others said, costs."""
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
    lines.append(f"cost      ~{_si(p.flops)}FLOP, ~{_si(p.peak_bytes)}B extra memory")
    return "\n".join(lines)


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.1f} {unit}"
    return f"{x:.0f} "


def explain(program: Program | str, q: Tensor, k: Tensor, v: Tensor | None = None, *,
            needs_grad: bool | None = None, **kwargs) -> str:
    """`plan(...)` as readable text."""
    return explain_plan(plan(program, q, k, v, needs_grad=needs_grad, detail=True, **kwargs))
