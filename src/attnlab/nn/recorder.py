"""The recorder: look inside a model's attention without leaving the fast path.

`with attnlab.record(model) as rec: model(x)` runs the model exactly as usual, on whatever
backends the planner picks; each attention layer keeps only what recomputing its weights needs
(q and k after rotary, the program, the call-time mask inputs, the learnable parameters: never an
N×M tensor). `rec.weights(layer)` then recomputes the weights of that call with the reference
backend, the ground truth every backend is tested against, for as many rows as asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnlab.errors import InputError
from attnlab.exec import attention
from attnlab.lang.program import Program

CALL_INPUTS = ("bias", "segments", "key_lengths", "key_padding_mask", "graph")


@dataclass(frozen=True)
class Call:
    """One attention call of one head group: q (B, H, N, D) and k (B, H_kv, M, D) as the backend
    got them, the program, its call-time inputs and learnable tensors, all detached."""

    program: Program
    q: Tensor
    k: Tensor
    inputs: dict[str, Tensor | tuple[Tensor, Tensor]]
    params: dict[str, Tensor]

    def weights(self) -> Tensor:
        """(B, H, N, M): the weights this call computed, recomputed exactly (eval mode: no
        dropout, no Gumbel noise)."""
        v = self.k.new_zeros(*self.k.shape[:-1], 1)  # weights never read v
        _, w = attention(self.q, self.k, v, self.program, params=self.params, backend="reference",
                         return_weights=True, training=False, **self.inputs)
        return w


@dataclass
class Recorder:
    """What the recorded layers kept, per forward pass: `rec.weights(layer)`, `rec.layers`."""

    names: dict[nn.Module, str]
    heads: int | Sequence[int] | None = None  # what `weights` returns when it is not told
    passes: dict[str, list[list[Call]]] = field(default_factory=dict)  # layer -> passes -> groups

    @property
    def layers(self) -> list[str]:
        """The recorded attention layers, by module name, in model order."""
        return list(self.names.values())

    def keep(self, module: nn.Module, calls: list[Call]) -> None:
        self.passes.setdefault(self.names[module], []).append(calls)

    def weights(self, layer: str | int, head: int | Sequence[int] | None = None,
                rows: slice | Sequence[int] | None = None, call: int = -1) -> Tensor:
        """(B, H, N, M) weights of `layer` (a name or an index into `layers`) in its `call`-th
        forward pass (the last by default); `head` picks heads (an int drops the head axis;
        default: the recorder's `heads`), `rows` picks query rows. Head groups of a
        MixedAttention come back in group order."""
        name = self._name(layer)
        passes = self.passes.get(name)
        if not passes:
            raise InputError(f"layer '{name}' was not called while recording: run a forward pass "
                             "inside `with attnlab.record(model) as rec:`")
        if not -len(passes) <= call < len(passes):
            raise InputError(f"layer '{name}' was called {len(passes)} time(s); call={call} is "
                             "out of range")
        w = torch.cat([c.weights() for c in passes[call]], dim=1)
        if rows is not None:
            w = w[:, :, rows]
        head = self.heads if head is None else head
        if head is not None:
            w = w[:, head]
        return w

    def _name(self, layer: str | int) -> str:
        names = self.layers
        if isinstance(layer, int) and not isinstance(layer, bool):
            if not -len(names) <= layer < len(names):
                raise InputError(f"layer {layer} is out of range: {len(names)} layer(s) recorded")
            return names[layer]
        if layer not in names:
            raise InputError(f"no recorded attention layer '{layer}'; recorded: {', '.join(names)}")
        return layer


def recordable(model: nn.Module) -> dict[nn.Module, str]:
    """Every attention module of `model` (Attention, MixedAttention) by name, in model order."""
    return {m: name or type(m).__name__ for name, m in model.named_modules()
            if hasattr(m, "recorder")}


@contextmanager
def record(model: nn.Module, layers: Sequence[str | int] | None = None,
           heads: int | Sequence[int] | None = None) -> Iterator[Recorder]:
    """Record the attention layers of `model` (all, or `layers`: names or indices) while the
    block runs; forward passes inside it run as they always do. `heads` is what `weights`
    returns by default (every head is kept: ALiBi slopes and head groups depend on them all)."""
    found = recordable(model)
    if not found:
        raise InputError(f"{type(model).__name__} has no attnlab attention layer to record")
    everyone = Recorder(found)
    chosen = found if layers is None else {m: n for m, n in found.items()
                                           if n in {everyone._name(x) for x in layers}}
    rec = Recorder(chosen, heads)
    for module in chosen:
        module.recorder = rec
    try:
        yield rec
    finally:
        for module in chosen:
            module.recorder = None


def kept(program: Program, q: Tensor, k: Tensor, params: dict[str, Tensor], **inputs) -> Call:
    """A Call of detached copies-by-reference (no N×M tensor, no autograd graph)."""
    given = {key: value for key, value in inputs.items() if value is not None}
    return Call(program, q.detach(), k.detach(), {key: _detached(v) for key, v in given.items()},
                {key: p.detach() for key, p in params.items()})


def _detached(t: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    return tuple(x.detach() for x in t) if isinstance(t, tuple) else t.detach()


__all__ = ["Call", "Recorder", "record", "recordable"]
