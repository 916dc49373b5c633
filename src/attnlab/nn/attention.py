"""`Attention`: a multi-head attention module that runs any attnlab program.

Projections, grouped-query heads, optional rotary positions, self- or cross-attention, and a
`KVCache` for step-by-step decoding; the program's learnable parts (learned scores, relative
biases, temperatures, low-rank projections) are parameters of the module, so they train and
save with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.errors import InputError
from attnlab.exec import attention, init_params
from attnlab.exec.api import arguments_read, check_all_read, read_by
from attnlab.lang.program import Program, parse
from attnlab.nn.causality import Causality
from attnlab.nn.gates import HeadRouter, OutputGating, join_for, real_queries
from attnlab.nn.recorder import kept, listening
from attnlab.nn.rotary import Rotary


@dataclass
class KVCache:
    """Keys and values one self-attention layer has seen so far, for step-by-step decoding.

    Each call appends the new keys and values; the new queries then attend over past + new keys,
    and attnlab aligns them bottom-right (query i sits at key position i + past), so `causal`,
    `window` and `alibi` mean the same as when the whole sequence is recomputed. Keys are stored
    after rotary, so a cached key keeps the position it had when it was computed.
    """

    k: Tensor | None = None  # (B, H_kv, past, head_dim)
    v: Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append k, v (B, H_kv, N, head_dim); return all keys and values so far."""
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=-2), torch.cat([self.v, v], dim=-2)
        self.k, self.v = k, v
        return k, v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (in that order), as beam search does when beams are re-ranked."""
        if self.k is not None:
            self.k, self.v = self.k[index], self.v[index]


class ProgramParameters(nn.ParameterDict):
    """The learnable tensors of one program (learned scores, relative biases, temperatures,
    low-rank projections) as parameters of a module; `as_params()` hands them to
    `attnlab.attention` as its `params=`.

    ParameterDict keys may not contain '.', so the program's 'score.w_q' is stored under
    'score__w_q' (and so named in state_dicts).
    """

    def __init__(self, program: Program, heads: int, head_dim: int) -> None:
        super().__init__({key.replace(".", "__"): nn.Parameter(value)
                          for key, value in init_params(program, heads, head_dim).items()})

    def as_params(self) -> dict[str, Tensor]:
        """The tensors keyed as the program names them ('score.w_q')."""
        return {key.replace("__", "."): p for key, p in self.items()}


class Attention(nn.Module):
    """`m(x)` for self-attention, `m(x, context)` for cross-attention; x is (B, N, dim).

    `causal_for` names a model that needs this attention never to see a later position: the
    program is then checked (`attnlab.nn.causality`) for each call's length, which costs one
    comparison once that length is proven.

    A combined program runs each component on its own backend over the same keys and values and
    joins them with its gate (`mix`) or difference (`diff`, whose components get their own
    queries and keys; `layer` is the depth its λ schedule reads). `output_gate` and `route`
    scale the heads' outputs. Gates are modules of `attnlab.nn.gates`: they report allocations.
    """

    recorder = None  # set by attnlab.record while it listens
    head_mask = None  # (heads,) multiplying each head's output, set by attnlab.inspect.heads.masked

    def __init__(self, dim: int, program: Program | str = "scaled_dot ; softmax", *,
                 heads: int | None = None, kv_heads: int | None = None, kv_dim: int | None = None,
                 rotary: bool = False, bias: bool = True, causal_for: str | None = None,
                 layer: int = 0) -> None:
        super().__init__()
        self.program = parse(program)
        self.causalities = [None if causal_for is None else Causality(p, causal_for)
                            for p in self.program.mechanisms]
        # the call-time arguments each plain program reads, and the layer as a whole
        self.reads = [arguments_read(p) for p in self.program.mechanisms]
        self.inputs_read = frozenset().union(*self.reads)
        lay = self.program.layout.resolve(heads=heads, kv_heads=kv_heads, dim=dim)
        self.heads, self.kv_heads, self.head_dim = lay.heads, lay.kv_heads, lay.head_dim
        comb = self.program.combinator
        self.qk_sets = len(self.program.components) if comb and comb.own_queries else 1
        inner, kv_inner = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.to_q = nn.Linear(dim, inner * self.qk_sets, bias=bias)
        self.to_k = nn.Linear(kv_dim or dim, kv_inner * self.qk_sets, bias=bias)
        self.to_v = nn.Linear(kv_dim or dim, kv_inner, bias=bias)
        self.to_out = nn.Linear(inner, dim, bias=bias)
        self.rotary = Rotary(self.head_dim) if rotary else None
        self.program_params = ProgramParameters(self.program, self.heads, self.head_dim)
        self.join = join_for(self.program, dim, self.heads, self.head_dim, layer)
        gate, route = self.program.output_gate, lay.route
        self.output_gate = None if gate is None else OutputGating(dim, self.heads, self.head_dim, gate)
        self.router = None if route is None else HeadRouter(dim, self.heads, route)
        self.frozen: tuple[str, ...] | None = None  # the backends attnlab.freeze pinned, per call

    def forward(self, x: Tensor, context: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, key_lengths: Tensor | None = None,
                segments: Tensor | tuple[Tensor, Tensor] | None = None,
                graph: Tensor | None = None, distances: Tensor | None = None,
                bias: Tensor | None = None,
                backend: str | None = None, cache: KVCache | None = None,
                positions: Tensor | None = None) -> Tensor:
        """Attend from x (B, N, dim) to itself or to context (B, M, kv_dim).

        key_padding_mask is (B, M) with True at padding keys, as in nn.MultiheadAttention.
        With `cache`, x holds only the new tokens: their keys and values are appended to the
        cache, the queries attend over all of them, and key_padding_mask (if any) must cover
        past + new keys. `positions` (N,) or (B, N) are the rotary positions of x; they default
        to 0 .. N - 1, or to past .. past + N - 1 with a cache. `distances` (B, N, M) are the
        shortest-path lengths `graph_distance` and distance rules read. The weights are never
        built here: `attnlab.record(m)` recomputes them on demand.
        """
        self._check_kind(context)
        q, k, v = qkv(self, x, context, cache, positions)
        inputs = dict(bias=bias, segments=segments, key_lengths=key_lengths,
                      key_padding_mask=key_padding_mask, graph=graph, distances=distances)
        outs, calls = self._run(q, k, v, inputs, backend)
        real = None  # the gates tally real tokens only; a cross-attention's queries are not known
        gated = self.join is not None or self.output_gate is not None or self.router is not None
        if gated and context is None:
            real = real_queries(x.shape[1], k.shape[-2], key_padding_mask, key_lengths, x.device)
        out = joined = outs[0]
        if self.join is not None:
            joined, out = self.join(x, outs, real)
        if self.output_gate is not None:
            out = self.output_gate(x, out, real)
        if self.router is not None:
            out = self.router(x, out, real)
        out = masked(out, self.head_mask)
        if self.recorder is not None:
            self.recorder.keep(self, calls, joined=(joined, v), final=out, join=self.join,
                               gates=self.gate_reports())
        return self.to_out(out.transpose(1, 2).flatten(2))

    def _run(self, q: Tensor, k: Tensor, v: Tensor, inputs: dict, backend: str | None
             ) -> tuple[list[Tensor], list]:
        """Each plain program of the layer on its backend: outputs (B, H, N, Dv) and the
        recorder's calls, in component order."""
        params = self.program_params.as_params()
        outs, calls = [], []
        if self.program.components:  # each component gets what it reads; every input is read
            check_all_read(self.inputs_read, inputs, self.program)
        for i, program in enumerate(self.program.mechanisms):
            if self.causalities[i] is not None:
                self.causalities[i].check(k.shape[-2])
            qi, ki = (q, k) if self.qk_sets == 1 else (q.chunk(self.qk_sets, 1)[i],
                                                       k.chunk(self.qk_sets, 1)[i])
            pi, given = params, inputs
            if self.program.components:
                pi, given = component_params(params, i), read_by(self.reads[i], inputs)
            call = None if self.recorder is None else kept(program, qi, ki, pi, **given)
            out = attention(qi, ki, v, program, **given, params=pi, training=self.training,
                            backend=backend or (self.frozen[i] if self.frozen else None))
            listening(self.recorder, call, out, v)
            outs.append(out)
            calls.append(call)
        return outs, calls

    def gate_reports(self) -> dict[str, Tensor]:
        """The last call's allocation of each gate: mix (B|1, N|1, H, C), diff λ (B, N, 1),
        output_gate and route (B, N, H)."""
        gates = (self.join, self.output_gate, self.router)
        return {g.called: g.last for g in gates if g is not None and g.last is not None}

    def _split(self, t: Tensor, heads: int) -> Tensor:
        """(B, L, heads·head_dim) -> (B, heads, L, head_dim)."""
        if t.dim() != 3:
            raise InputError(f"Attention takes (batch, seq, dim) inputs, got {tuple(t.shape)}")
        return t.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)

    def _check_kind(self, context: Tensor | None) -> None:
        cross = self.program.layout.cross
        if cross is True and context is None:
            raise InputError(f"program '{self.program}' is cross-attention: call m(x, context)")
        if cross is False and context is not None:
            raise InputError(f"program '{self.program}' is self-attention: call m(x) without context")
        if context is not None and self.rotary is not None:
            raise InputError("rotary=True needs self-attention: queries and keys must share one "
                             "position axis")

    def extra_repr(self) -> str:
        return (f"program='{self.program}', heads={self.heads}, kv_heads={self.kv_heads}, "
                f"head_dim={self.head_dim}, rotary={self.rotary is not None}")


def qkv(m: nn.Module, x: Tensor, context: Tensor | None, cache: KVCache | None,
        positions: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Project, split into heads, rotate and cache: the part Attention and MixedAttention share."""
    if cache is not None and context is not None:
        raise InputError("cache= is for self-attention decoding; cross-attention keys come from "
                         "the context, which does not grow")
    if positions is not None and m.rotary is None:
        raise InputError("positions= is read by rotary positions only: build the module with "
                         "rotary=True, or add positions to the inputs instead")
    source = x if context is None else context
    _check_width("x", x, m.to_q.in_features)
    if context is not None:
        _check_width("context", context, m.to_k.in_features)
    sets = getattr(m, "qk_sets", 1)  # diff: a set of queries and keys per program
    q = m._split(m.to_q(x), m.heads * sets)
    k = m._split(m.to_k(source), m.kv_heads * sets)
    v = m._split(m.to_v(source), m.kv_heads)
    if m.rotary is not None:
        if positions is None and cache is not None and cache.length:
            positions = torch.arange(cache.length, cache.length + x.shape[1], device=x.device)
        q, k = m.rotary(q, positions), m.rotary(k, positions)
    if cache is not None:
        k, v = cache.update(k, v)
    return q, k, v


def component_params(params: dict[str, Tensor], i: int) -> dict[str, Tensor]:
    """The learnable tensors of component i of a combined program, keyed as it names them."""
    prefix = f"components.{i}."
    return {key[len(prefix):]: p for key, p in params.items() if key.startswith(prefix)}


def masked(out: Tensor, head_mask: Tensor | None) -> Tensor:
    """out (B, H, N, D) with each head's output multiplied by head_mask (H,), if any."""
    return out if head_mask is None else out * head_mask.to(out)[:, None, None]


def _check_width(name: str, t: Tensor, width: int) -> None:
    """A (batch, seq, width) tensor, or an InputError that names the width the module was built for."""
    if not isinstance(t, Tensor):
        raise InputError(f"{name} must be a torch.Tensor (batch, seq, {width}), got {type(t).__name__}")
    if t.dim() != 3 or t.shape[-1] != width:
        raise InputError(f"{name} must have shape (batch, seq, {width}), got {tuple(t.shape)}: the "
                         f"module was built for inputs of width {width}")


__all__ = ["Attention", "KVCache", "ProgramParameters"]
