"""The recorder: look inside a model's attention without leaving the fast path.

`with attnlab.record(model) as rec: model(x)` runs the model exactly as usual, on whatever
backends the planner picks; each attention layer keeps only what recomputing its weights needs
(q and k after rotary, the program, the call-time mask inputs, the learnable parameters: never an
N×M tensor). `rec.weights(layer)` then recomputes the weights of that call with the reference
backend, the ground truth every backend is tested against, for as many rows as asked.

`record(model, grads=True)` also keeps each call's output and v, and, once `loss.backward()` has
run inside the block, the gradient reaching that output: `rec.weight_grads(layer)` is then
∂loss/∂weights (= ∂loss/∂out · vᵀ, since out = weights · v) and `rec.head_grads(layer)` is
∂loss/∂(a mask multiplying each head's output), per example: what gradient-weighted attention
(Chefer et al. 2021) and head importance (Michel et al. 2019) read.

`record(model, attached=True)` keeps q, k and the outputs inside autograd's graph, so weights
recomputed from them carry gradients back into the model: what attention objectives
(`attnlab.objectives`) train through, while the forward pass itself stays on the fast backends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import InputError
from attnlab.exec.api import check_call
from attnlab.exec.reference import modded_scores, reference_attention
from attnlab.lang.layout import Layout
from attnlab.lang.program import Program
from attnlab.nn.gates import real_queries


@dataclass
class Call:
    """One attention call of one head group: q (B, H, N, D) and k (B, H_kv, M, D) as the backend
    got them, the program, its call-time inputs and learnable tensors (detached unless the
    recorder is attached). With gradients recorded, or attached: v (B, H_kv, M, Dv), the output
    (B, H, N, Dv) and, after backward, the gradient of the loss with respect to that output."""

    program: Program
    q: Tensor
    k: Tensor
    inputs: dict[str, Tensor | tuple[Tensor, Tensor]]
    params: dict[str, Tensor]
    v: Tensor | None = None
    out: Tensor | None = None
    grad: Tensor | None = None

    def listen(self, out: Tensor, v: Tensor) -> None:
        """Keep out and v, and catch ∂loss/∂out when backward runs (summed over backwards)."""
        self.out, self.v = out.detach(), v.detach()
        if out.requires_grad:
            out.register_hook(self._catch)

    def detach(self) -> None:
        """Cut what this call keeps out of autograd's graph (in place)."""
        self.q, self.k = self.q.detach(), self.k.detach()
        self.inputs = {key: _detached(v) for key, v in self.inputs.items()}
        self.params = {key: p.detach() for key, p in self.params.items()}

    def _catch(self, grad: Tensor) -> None:
        self.grad = grad.detach() if self.grad is None else self.grad + grad.detach()

    def output_grad(self) -> Tensor:
        if self.out is None:
            raise InputError("gradients were not recorded: use attnlab.record(model, grads=True)")
        if self.grad is None:
            raise InputError("no gradient reached this attention call: run loss.backward() inside "
                             "the `with attnlab.record(model, grads=True)` block, with gradients on")
        return self.grad

    def weight_grads(self, rows: Tensor | None = None) -> Tensor:
        """(B, H, N, M) ∂loss/∂weights = ∂loss/∂out · vᵀ (out = weights · v, head by head);
        only the query rows `rows` (R,) when given."""
        grad = self.output_grad()
        grad = grad if rows is None else grad[:, :, rows]
        v = self.v.repeat_interleave(grad.shape[1] // self.v.shape[1], dim=1)  # grouped-query heads
        return grad @ v.transpose(-1, -2).to(grad.dtype)

    def head_grads(self) -> Tensor:
        """(B, H) ∂loss/∂ξ_h where each head's output is multiplied by a mask ξ_h (at ξ = 1),
        per example: Σ_{n,d} ∂loss/∂out · out."""
        return (self.output_grad() * self.out).sum((-2, -1))

    def weights(self, rows: Tensor | None = None, heads: Sequence[int] | None = None) -> Tensor:
        """(B, H, N, M): the weights this call computed, recomputed exactly (eval mode: no
        dropout, no Gumbel noise); with `rows` (R,) query positions, only those rows,
        (B, H, R, M), never the N×M whole (every normalizer and approximation is row by row);
        with `heads`, only those heads (B, len(heads), …), computed alone where the program
        treats every head alike."""
        if heads is not None:
            if not self._heads_alike():
                return self.weights(rows)[:, list(heads)]
            group = self.q.shape[1] // self.k.shape[1]
            alone = Call(self.program.replace(layout=Layout()), self.q[:, list(heads)],
                         self.k[:, [h // group for h in heads]], self.inputs, self.params)
            return alone.weights(rows)
        v = self.k.new_zeros(*self.k.shape[:-1], 1)  # weights never read v
        # The whole call's shapes: masks and mods read absolute query positions.
        inp = check_call(self.q, self.k, v, self.program, params=self.params, **self.inputs)
        q = self.q if rows is None else self.q[:, :, rows]
        return reference_attention(q, self.k, v, self.program, inp, bias=self.inputs.get("bias"),
                                   params=self.params, rows=rows)[1]

    def _heads_alike(self) -> bool:
        """No part of the program tells heads apart (no score mods, learnable tensors, call-time
        bias, predicate or rule), so a head's weights need only its own q and k."""
        p = self.program
        return not (p.mods or self.params or "bias" in self.inputs or p.approximation is not None
                    or (p.mask is not None and any(leaf.python for leaf in p.mask.leaves())))

    def scores(self) -> tuple[Tensor, Tensor | None]:
        """(B, H, N, M) scores before the normalizer (the program's mods applied) and the (B or 1,
        H or 1, N, M) bool mask of keys each query may see (None: every key)."""
        if self.program.approximation is not None:
            raise InputError(f"'{self.program}' approximates its weights without scores: there "
                             "are no logits to read (a z-loss needs exact attention)")
        v = self.k.new_zeros(*self.k.shape[:-1], 1)
        inp = check_call(self.q, self.k, v, self.program, params=self.params, **self.inputs)
        k = self.k.repeat_interleave(self.q.shape[1] // self.k.shape[1], dim=1)
        scores = modded_scores(self.q, k, self.program, inp, bias=self.inputs.get("bias"),
                               params=self.params)
        visible = self.program.mask.dense(inp) if self.program.mask is not None else None
        return scores, visible

    def real_queries(self) -> Tensor | None:
        """(B, N) bool: the query rows that are real tokens, for self-attention over a padded
        batch (a padding position's query is no token); None when every row counts."""
        n, m = self.q.shape[2], self.k.shape[2]
        real = real_queries(n, m, self.inputs.get("key_padding_mask"),
                            self.inputs.get("key_lengths"), self.q.device)
        if real is not None:
            return real
        graph = self.inputs.get("graph")
        if graph is not None and n == m:  # a padding position (HF's masks) does not see itself
            return graph.diagonal(dim1=-2, dim2=-1).reshape(graph.shape[0], n).bool()
        return None


@dataclass
class Pass:
    """One forward pass of one layer: its Calls (head groups side by side, or a combined
    program's components), and for a layer with gates, how they join and what they chose."""

    calls: list[Call]
    join: Any = None  # MixGate or DiffJoin: `weigh` makes the layer's weights from the components'
    joined: Call | None = None  # listens to the joined output, which is the layer's weights · v
    final: Call | None = None  # listens to each head's output as the output projection reads it
    gates: dict[str, Tensor] = field(default_factory=dict)  # gate -> this pass's allocation

    @property
    def heads(self) -> int:
        if self.join is not None:
            return self.calls[0].q.shape[1]
        return sum(c.q.shape[1] for c in self.calls)

    def weights(self, rows: Tensor | None) -> Tensor:
        weights = [c.weights(rows) for c in self.calls]
        if self.join is None:
            return torch.cat(weights, dim=1)
        return self.join.weigh(self.gates[self.join.called], weights, rows)

    def weight_grads(self, rows: Tensor | None) -> Tensor:
        if self.joined is not None:
            return self.joined.weight_grads(rows)
        return torch.cat([c.weight_grads(rows) for c in self.calls], dim=1)

    def head_grads(self) -> Tensor:
        if self.final is not None:
            return self.final.head_grads()
        return torch.cat([c.head_grads() for c in self.calls], dim=1)


@dataclass
class Recorder:
    """What the recorded layers kept, per forward pass: `rec.weights(layer)`, `rec.layers`."""

    names: dict[nn.Module, str]
    heads: int | Sequence[int] | None = None  # what `weights` returns when it is not told
    grads: bool = False  # keep outputs and v, and catch gradients
    attached: bool = False  # keep q, k, v and outputs in autograd's graph
    passes: dict[str, list[Pass]] = field(default_factory=dict)  # layer -> its passes

    @property
    def layers(self) -> list[str]:
        """The recorded attention layers, by module name, in model order."""
        return list(self.names.values())

    def keep(self, module: nn.Module, calls: list[Call], *, joined: tuple[Tensor, Tensor] | None
             = None, final: Tensor | None = None, join: Any = None,
             gates: dict[str, Tensor] | None = None) -> None:
        """Keep one pass of `module`. A layer with gates also gives its `joined` output (with v)
        and its `final` per-head output, to catch their gradients, the `join` of its components
        and the `gates`' allocations."""
        if not self.attached:
            for call in calls:
                call.detach()
        kept_pass = Pass(calls, join, gates=dict(gates or {}))
        if join is not None or gates:
            template = calls[0]
            if join is not None and joined is not None:
                kept_pass.joined = Call(module.program, template.q, template.k, {}, {})
                listening(self, kept_pass.joined, *joined)
            if final is not None:
                kept_pass.final = Call(module.program, template.q, template.k, {}, {})
                listening(self, kept_pass.final, final, joined[1] if joined else final)
        self.passes.setdefault(self.names[module], []).append(kept_pass)

    def allocation(self, layer: str | int, call: int = -1) -> dict[str, Tensor]:
        """What each gate of `layer` chose in its `call`-th pass: `mix` (B|1, N|1, H, C) weights
        over the components, `diff` (B, N, 1) λ, `output_gate` (B, N, H) mean gate per head,
        `route` (B, N, H) router weights (0 where a head was not chosen); {} without gates."""
        return dict(self._pass(layer, call).gates)

    def weights(self, layer: str | int, head: int | Sequence[int] | None = None,
                rows: int | slice | Sequence[int] | None = None, call: int = -1) -> Tensor:
        """(B, H, N, M) weights of `layer` (a name or an index into `layers`) in its `call`-th
        forward pass (the last by default); `head` picks heads (an int drops the head axis;
        default: the recorder's `heads`), `rows` picks query rows (an int drops the row axis)
        and only those are computed, so a page of rows of a long input costs R×M, not N×M.
        Head groups of a MixedAttention come back in group order."""
        kept_pass = self._pass(layer, call)
        index = _row_index(rows, kept_pass.calls[0].q.shape[2])
        return self._pick(kept_pass.weights(index), head, rows)

    def weight_grads(self, layer: str | int, head: int | Sequence[int] | None = None,
                     rows: int | slice | Sequence[int] | None = None, call: int = -1) -> Tensor:
        """(B, H, N, M) ∂loss/∂weights of `layer`, picked as `weights` picks (needs
        `record(..., grads=True)` and a backward pass inside the block)."""
        kept_pass = self._pass(layer, call)
        index = _row_index(rows, kept_pass.calls[0].q.shape[2])
        return self._pick(kept_pass.weight_grads(index), head, rows)

    def head_grads(self, layer: str | int, call: int = -1) -> Tensor:
        """(B, H) ∂loss/∂ξ_h of every head of `layer`, per example, where ξ_h is a mask
        multiplying head h's output (Michel et al. 2019, eq. 2, before the absolute value)."""
        return self._pass(layer, call).head_grads()

    def calls(self, layer: str | int, call: int = -1) -> list[Call]:
        """The head groups' Calls of `layer`'s `call`-th forward pass (one unless the layer is a
        MixedAttention), in head order; InputError for a combined program's layer, whose
        components' Calls are no heads of their own."""
        kept_pass = self._pass(layer, call)
        if kept_pass.join is not None:
            raise InputError(f"layer '{self._name(layer)}' joins the weights of several programs: "
                             "read them with rec.weights, not one program's calls")
        return kept_pass.calls

    def heads_of(self, layer: str | int, call: int = -1) -> int:
        """How many heads `layer` has (its head groups' together)."""
        return self._pass(layer, call).heads

    def _pass(self, layer: str | int, call: int = -1) -> Pass:
        name = self._name(layer)
        passes = self.passes.get(name)
        if not passes:
            raise InputError(f"layer '{name}' was not called while recording: run a forward pass "
                             "inside `with attnlab.record(model) as rec:`")
        if not -len(passes) <= call < len(passes):
            raise InputError(f"layer '{name}' was called {len(passes)} time(s); call={call} is "
                             "out of range")
        return passes[call]

    def _pick(self, w: Tensor, head: int | Sequence[int] | None,
              rows: int | slice | Sequence[int] | None) -> Tensor:
        """Heads out of w (B, H, R, M), whose rows were computed as `rows` asked."""
        w = w[:, :, 0] if isinstance(rows, int) else w
        head = self.heads if head is None else head
        return w if head is None else w[:, head]

    def _name(self, layer: str | int) -> str:
        return layer_name(self.layers, layer, "recorded")


def layer_name(names: Sequence[str], layer: str | int, which: str = "") -> str:
    """The attention layer `layer` names among `names` (`which` ones, for messages): itself, or
    the one at that index."""
    kind = f"{which} attention layer" if which else "attention layer"
    if isinstance(layer, int) and not isinstance(layer, bool):
        if not -len(names) <= layer < len(names):
            raise InputError(f"layer {layer} is out of range: {len(names)} {kind}(s)")
        return names[layer]
    if layer not in names:
        raise InputError(f"no {kind} '{layer}'; there are: {', '.join(names)}")
    return layer


def _row_index(rows: int | slice | Sequence[int] | None, n: int) -> Tensor | None:
    """The query positions `rows` picks out of n, as a (R,) tensor (None: every row)."""
    if rows is None:
        return None
    try:
        picked = rows if isinstance(rows, slice) else torch.as_tensor(
            [rows] if isinstance(rows, int) else rows)
        index = torch.arange(n)[picked]
    except (IndexError, TypeError, RuntimeError, ValueError):
        index = None
    if index is None or index.dim() != 1:
        raise InputError(f"rows={rows!r} does not pick query rows out of {n}: give a slice or "
                         f"a list of row numbers in [-{n}, {n})")
    return index


def recordable(model: nn.Module) -> dict[nn.Module, str]:
    """Every attention module of `model` (Attention, MixedAttention) by name, in model order."""
    return {m: name or type(m).__name__ for name, m in model.named_modules()
            if hasattr(m, "recorder")}


@contextmanager
def record(model: nn.Module, layers: Sequence[str | int] | None = None,
           heads: int | Sequence[int] | None = None, grads: bool = False,
           attached: bool = False) -> Iterator[Recorder]:
    """Record the attention layers of `model` (all, or `layers`: names or indices) while the
    block runs; forward passes inside it run as they always do. `heads` is what `weights`
    returns by default (every head is kept: ALiBi slopes and head groups depend on them all).
    `grads=True` also keeps each call's output and v and catches the gradient that reaches the
    output when `loss.backward()` runs inside the block (see `Recorder.weight_grads`).
    `attached=True` keeps what it records in autograd's graph: weights recomputed from it carry
    gradients into the model (see `attnlab.objectives`)."""
    found = recordable(model)
    if not found:
        raise InputError(f"{type(model).__name__} has no attnlab attention layer to record")
    names = list(found.values())
    chosen = found if layers is None else {m: n for m, n in found.items()
                                           if n in {layer_name(names, x) for x in layers}}
    rec = Recorder(chosen, heads, grads, attached)
    for module in chosen:
        module.recorder = rec
    try:
        yield rec
    finally:
        for module in chosen:
            module.recorder = None


def listening(rec: Recorder | None, call: Call | None, out: Tensor, v: Tensor) -> None:
    """After the fused call: an attached recorder keeps the output and v as they are; one
    recording gradients keeps them detached and catches the output's gradient."""
    if rec is None or call is None:
        return
    if rec.attached:
        call.out, call.v = out, v
    elif rec.grads:
        call.listen(out, v)


def kept(program: Program, q: Tensor, k: Tensor, params: dict[str, Tensor], **inputs) -> Call:
    """A Call of references (no N×M tensor); `Recorder.keep` detaches it unless attached."""
    given = {key: value for key, value in inputs.items() if value is not None}
    return Call(program, q, k, given, dict(params))


def _detached(t: Tensor | tuple[Tensor, Tensor]) -> Tensor | tuple[Tensor, Tensor]:
    return tuple(x.detach() for x in t) if isinstance(t, tuple) else t.detach()


__all__ = ["Call", "Pass", "Recorder", "record", "recordable"]
