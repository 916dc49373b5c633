"""Frozen plans: every attention call of a model pinned to one backend, so a forward makes no
data-dependent choice and `torch.compile(fullgraph=True)` and `torch.export` can trace it."""

from __future__ import annotations

from torch import nn

from attnlab.errors import InputError
from attnlab.exec import api
from attnlab.exec.planner import BACKENDS
from attnlab.exec.tiled import TiledBackend
from attnlab.lang.masks import MaskInputs
from attnlab.lang.program import Program


def freeze(model: nn.Module, *args, **kwargs) -> nn.Module:
    """Run `model(*args, **kwargs)` once and pin each attention call to the backend it got.

    Attention modules take part through a `frozen` attribute (attnlab.nn's `Attention` and
    `MixedAttention` have one): the tuple of backends their attention calls run on, in call
    order; None plans every call. The plan fits the example's shapes, dtype, device and grad
    mode; freeze again for others (a pinned backend that cannot run a call says so).

    Frozen, the sdpa and tiled backends compile with fullgraph=True and export with
    torch.export; tiled only for masks that read no call-time data (padding, document and
    graph masks are rebuilt from the data each call, so they trace on sdpa only). FlexAttention
    is compiled already and does not export (nor to ONNX); linear and reference are not tested
    for export. Returns `model`, frozen in place.
    """
    modules = [m for m in model.modules() if hasattr(m, "frozen")]
    if not modules:
        raise InputError(f"{type(model).__name__} has no attnlab attention modules to freeze")
    for m in modules:
        m.frozen = None  # plan afresh
    # module -> the backends of each of its forwards; a module called twice keeps its first
    forwards: dict[nn.Module, list[list[str]]] = {m: [] for m in modules}
    current: list[nn.Module] = []

    def enter(module: nn.Module, _args) -> None:
        current.append(module)
        forwards[module].append([])

    def record(name: str, program: Program, inp: MaskInputs) -> None:
        if current:
            forwards[current[-1]][-1].append(name)
            if name == "tiled":
                _pin_layouts(program, inp)

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
