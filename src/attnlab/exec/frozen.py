"""Frozen plans: every attention call of a model pinned to one backend, so a forward makes no
data-dependent choice and `torch.compile(fullgraph=True)` and `torch.export` can trace it."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from attnlab.errors import InputError, did_you_mean
from attnlab.exec import api
from attnlab.exec.backend import Call
from attnlab.exec.planner import BACKENDS
from attnlab.exec.tiled import TiledBackend
from attnlab.lang.masks import MaskInputs
from attnlab.lang.program import Program

# Where a call goes when the planner's backend is not allowed or does not trace, best first.
FALLBACK = ("sdpa", "tiled", "reference")


def freeze(model: nn.Module, *args, backends: Sequence[str] | None = None, **kwargs) -> nn.Module:
    """Run `model(*args, **kwargs)` once and pin each attention call to the backend it got.

    Attention modules take part through a `frozen` attribute (attnlab.nn's `Attention` and
    `MixedAttention` have one): the tuple of backends their attention calls run on, in call
    order; None plans every call. The plan fits the example's shapes, dtype, device and grad
    mode; freeze again for others (a pinned backend that cannot run a call says so).

    Frozen, the sdpa, tiled and reference backends compile with fullgraph=True and export with
    torch.export; tiled only for masks that read no call-time data (padding, document and
    graph masks are rebuilt from the data each call): such a call is pinned to sdpa, or to
    reference where sdpa cannot run it (another normalizer). Tiled's tiles are planned per
    shape, so a model exported with a dynamic sequence length must not use it.
    FlexAttention is compiled already and does not export (nor to ONNX).

    `backends` (names, e.g. ("sdpa", "reference")) limits what may be pinned: a call the
    planner gave another backend goes to the first of sdpa, tiled, reference among them
    that runs it; an InputError names the call and each refusal when none does.
    Returns `model`, frozen in place.
    """
    modules = [m for m in model.modules() if hasattr(m, "frozen")]
    if not modules:
        raise InputError(f"{type(model).__name__} has no attnlab attention modules to freeze")
    allowed = tuple(BACKENDS) if backends is None else tuple(backends)
    for name in allowed:
        if name not in BACKENDS:
            raise InputError(f"freeze: unknown backend '{name}'{did_you_mean(name, BACKENDS)} "
                             f"(backends are {', '.join(BACKENDS)})")
    for m in modules:
        m.frozen = None  # plan afresh
    # module -> the backends of each of its forwards; a module called twice keeps its first
    forwards: dict[nn.Module, list[list[str]]] = {m: [] for m in modules}
    current: list[nn.Module] = []

    def enter(module: nn.Module, _args) -> None:
        current.append(module)
        forwards[module].append([])

    def record(name: str, program: Program, inp: MaskInputs, call: Call) -> str:
        name = _traceable(name, program, call, allowed)
        if current:
            forwards[current[-1]][-1].append(name)
        if name == "tiled":
            _pin_layouts(program, inp)
        return name

    def leave(*_) -> None:  # None: a forward hook's return value would replace the output
        current.pop()

    hooks = [m.register_forward_pre_hook(enter) for m in modules]
    hooks += [m.register_forward_hook(leave) for m in modules]
    api.RECORDERS.append(record)
    try:
        model(*args, **kwargs)
    finally:
        api.RECORDERS.remove(record)
        for hook in hooks:
            hook.remove()
    for m in modules:
        m.frozen = tuple(forwards[m][0]) if forwards[m] else None
    return model


def _traceable(name: str, program: Program, call: Call, allowed: tuple[str, ...]) -> str:
    """The backend to pin for a call the planner gave `name`: it, when allowed and traceable."""
    if name in allowed and not _untraced(name, program):
        return name
    refused = {}
    for other in (n for n in FALLBACK if n in allowed):
        reason = ("rebuilds its tiles from the mask's call-time data on every call, which a "
                  "traced forward cannot" if _untraced(other, program) else BACKENDS[other].refuse(call))
        if reason is None:
            return other
        refused[other] = reason
    why = "; ".join(f"{n}: {r}" for n, r in refused.items()) or f"none of {', '.join(FALLBACK)} allowed"
    raise InputError(f"freeze: no backend allowed ({', '.join(allowed)}) runs '{program}' in a "
                     f"traced forward (the planner chose {name}; {why})")


def _untraced(name: str, program: Program) -> bool:
    return name == "tiled" and program.mask is not None and bool(program.mask.requires())


def _pin_layouts(program: Program, inp: MaskInputs) -> None:
    """Keep tiled's layouts for this call ready, with and without gradients: a traced forward
    must find them, not compute them (their sizes depend on the mask's contents)."""
    tiled = BACKENDS["tiled"]
    assert isinstance(tiled, TiledBackend)
    if program.mask is not None and program.mask.requires():
        return  # rebuilt from the data each call
    bq, bk = min(tiled.block, inp.n), min(tiled.block, inp.m)
    for grad in (False, True):
        tiled.layout(program, inp, bq, bk, grad, pin=True)
