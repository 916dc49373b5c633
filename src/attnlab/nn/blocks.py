"""Pieces the models share: MLP, pre-norm Block, MixedAttention (a program per group of heads),
absolute positions, and the helper that turns a model's `programs` argument into layers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError, InputError, did_you_mean
from attnlab.exec import attention
from attnlab.exec.api import arguments_read, check_all_read, read_by
from attnlab.lang.masks import Padding
from attnlab.lang.program import Program, parse
from attnlab.nn.attention import Attention, KVCache, ProgramParameters, masked, qkv
from attnlab.nn.causality import Causality, require_causal
from attnlab.nn.recorder import kept, listening
from attnlab.nn.rotary import Rotary

POSITIONS = ("learned", "sinusoidal", "rotary", "none")


class MLP(nn.Module):
    """Linear → GELU → Linear, widening by `ratio` in between."""

    def __init__(self, dim: int, ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, ratio * dim), nn.GELU(),
                                 nn.Linear(ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP; each residual."""

    def __init__(self, dim: int, attention: nn.Module, mlp_ratio: int = 4, dropout: float = 0.0,
                 cross_attention: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(dim), attention
        self.cross_attention = cross_attention
        self.norm_cross = nn.LayerNorm(dim) if cross_attention is not None else None
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, key_padding_mask: Tensor | None = None,
                memory: Tensor | None = None, memory_padding_mask: Tensor | None = None,
                cache: KVCache | None = None, **attend: Tensor) -> Tensor:
        """`attend` holds call-time inputs a model's prior gives every layer (`distances=`,
        `graph=`); the self-attention gets those its programs read."""
        # Only pass what is set, so any attention module with the m(x, context) call works here.
        extra: dict[str, Any] = {"cache": cache} if cache is not None else {}
        reads = getattr(self.attention, "inputs_read", frozenset())
        extra.update((k, v) for k, v in attend.items() if v is not None and k in reads)
        if key_padding_mask is not None:
            extra["key_padding_mask"] = key_padding_mask
        x = x + self.drop(self.attention(self.norm1(x), **extra))
        if self.cross_attention is not None:
            if memory is None:
                raise InputError("this block has cross-attention: pass memory= (the encoder output)")
            extra = {} if memory_padding_mask is None else {"key_padding_mask": memory_padding_mask}
            x = x + self.drop(self.cross_attention(self.norm_cross(x), memory, **extra))
        return x + self.mlp(self.norm2(x))


class MixedAttention(nn.Module):
    """Heads split into groups, each running its own program: an attention program per group.

    One set of q/k/v projections is split by head; group g takes the next `heads_g` heads, and
    the groups' outputs are concatenated (in group order) before one output projection.
    `causal_for` as in Attention: every group is checked.
    """

    _split = Attention._split
    recorder = None  # set by attnlab.record while it listens
    head_mask = None  # as Attention.head_mask, over all heads in group order

    def __init__(self, dim: int, groups: Sequence[tuple[Program | str, int]], *,
                 kv_dim: int | None = None, rotary: bool = False, bias: bool = True,
                 causal_for: str | None = None) -> None:
        super().__init__()
        if not groups:
            raise ConfigError("MixedAttention needs at least one (program, heads) group")
        self.programs = [parse(p) for p, _ in groups]
        self.group_heads = [h for _, h in groups]
        if any(not isinstance(h, int) or h < 1 for h in self.group_heads):
            raise ConfigError(f"each head group needs a whole number ≥ 1 of heads, got "
                              f"{self.group_heads}")
        self.heads = self.kv_heads = sum(self.group_heads)
        if dim % self.heads:
            raise ConfigError(f"dim={dim} is not divisible by the {self.heads} heads of the groups "
                              f"{self.group_heads}")
        self.head_dim = dim // self.heads
        for i, (program, h) in enumerate(zip(self.programs, self.group_heads, strict=True)):
            try:
                program.layout.resolve(heads=h, kv_heads=h, head_dim=self.head_dim)
            except ConfigError as err:
                raise ConfigError(f"head group {i} ('{program}') has {h} heads of size "
                                  f"{self.head_dim}; its program's layout options disagree ({err}) "
                                  "— remove heads/kv_heads/head_dim from it") from None
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_k = nn.Linear(kv_dim or dim, dim, bias=bias)
        self.to_v = nn.Linear(kv_dim or dim, dim, bias=bias)
        self.to_out = nn.Linear(dim, dim, bias=bias)
        self.rotary = Rotary(self.head_dim) if rotary else None
        self.program_params = nn.ModuleList(
            ProgramParameters(p, h, self.head_dim)
            for p, h in zip(self.programs, self.group_heads, strict=True))
        self.causalities = [None if causal_for is None else Causality(p, causal_for)
                            for p in self.programs]
        self.reads = [arguments_read(p) for p in self.programs]  # per group, as Attention's
        self.inputs_read = frozenset().union(*self.reads)
        self.frozen: tuple[str, ...] | None = None  # one backend per group, pinned by attnlab.freeze

    def forward(self, x: Tensor, context: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, cache: KVCache | None = None,
                positions: Tensor | None = None, backend: str | None = None,
                distances: Tensor | None = None, graph: Tensor | None = None) -> Tensor:
        """As Attention.forward; the recorder gives the weights as (B, all heads, N, M) in
        group order. Each group gets the call-time inputs its program reads."""
        if context is not None and self.rotary is not None:
            raise InputError("rotary=True needs self-attention: queries and keys must share one "
                             "position axis")
        q, k, v = qkv(self, x, context, cache, positions)
        inputs = dict(key_padding_mask=key_padding_mask, distances=distances, graph=graph)
        check_all_read(self.inputs_read, inputs, " | ".join(map(str, self.programs)))
        outs, calls, start = [], [], 0
        for i, (program, h, params, causality) in enumerate(zip(
                self.programs, self.group_heads, self.program_params, self.causalities, strict=True)):
            heads = slice(start, start + h)
            start += h
            if causality is not None:
                causality.check(k.shape[-2])
            call, given = None, read_by(self.reads[i], inputs)
            if self.recorder is not None:
                call = kept(program, q[:, heads], k[:, heads], params.as_params(), **given)
                calls.append(call)
            out = attention(q[:, heads], k[:, heads], v[:, heads], program, **given,
                            params=params.as_params(),
                            training=self.training,
                            backend=backend or (self.frozen[i] if self.frozen else None))
            listening(self.recorder, call, out, v[:, heads])
            outs.append(out)
        if self.recorder is not None:
            self.recorder.keep(self, calls)
        return self.to_out(masked(torch.cat(outs, dim=1), self.head_mask).transpose(1, 2).flatten(2))

    def extra_repr(self) -> str:
        groups = ", ".join(f"('{p}', {h})" for p, h in zip(self.programs, self.group_heads,
                                                           strict=True))
        return f"groups=[{groups}], head_dim={self.head_dim}, rotary={self.rotary is not None}"


class Positions(nn.Module):
    """Absolute positions added to token embeddings ('learned', 'sinusoidal'); 'rotary' and
    'none' add nothing here (rotary lives in the attention modules; 'none' suits ALiBi)."""

    def __init__(self, kind: str, dim: int, max_len: int) -> None:
        super().__init__()
        check_positions(kind)
        self.kind, self.max_len = kind, max_len
        if kind == "learned":
            self.table = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        elif kind == "sinusoidal":
            # Derived, so not saved: rebuilt from (max_len, dim) when the model is rebuilt.
            self.register_buffer("table", sinusoids(max_len, dim), persistent=False)
        else:
            self.table = None

    @property
    def rotary(self) -> bool:
        return self.kind == "rotary"

    def forward(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """x (B, L, dim) whose first token sits at position `offset`, or whose tokens sit at
        `positions` (B, L) (K-BERT's soft positions: a branch continues from its entity)."""
        if self.table is None:
            return x
        if positions is not None:
            if int(positions.max()) >= self.max_len:
                raise InputError(f"position {int(positions.max())} is past max_len={self.max_len} "
                                 f"of the {self.kind} position table")
            return x + self.table[positions.clamp(min=0)].to(x.dtype)
        end = offset + x.shape[1]
        if end > self.max_len:
            raise InputError(f"position {end - 1} is past max_len={self.max_len} of the "
                             f"{self.kind} position table: build the model with a larger max_len")
        return x + self.table[offset:end].to(x.dtype)


def sinusoids(length: int, dim: int) -> Tensor:
    """The fixed sine/cosine table of Vaswani et al. (2017), (length, dim)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table.float()


def check_positions(kind: str) -> None:
    if kind not in POSITIONS:
        raise ConfigError(f"positions='{kind}' is not one of {', '.join(POSITIONS)}"
                          f"{did_you_mean(str(kind), POSITIONS)}")


# -- programs → layers -------------------------------------------------------------------------

ProgramsArg = Any  # str | Program | list of those, or of [(program, heads), ...] head groups


def attention_layers(dim: int, programs: ProgramsArg, *, layers: int, heads: int,
                     kv_heads: int | None = None, kv_dim: int | None = None,
                     rotary: bool = False, adapt: Callable[[Program], Program] = lambda p: p,
                     causal_for: str | None = None, max_len: int | None = None,
                     name: str = "programs") -> list[nn.Module]:
    """One attention module per layer.

    `programs` is one program (string or Program) for every layer, a list with one per layer,
    or head groups `[(program, heads), ...]`, for every layer or as one layer's entry
    (→ MixedAttention). `adapt` rewrites each program (e.g. adds `padding`). With `causal_for`
    (the model's name), every adapted program must be causal up to `max_len` tokens
    (`require_causal`), and the modules check any longer call when it comes.
    """
    if causal_for is not None and max_len is None:
        raise ConfigError(f"{causal_for}: causal attention layers need max_len, the longest "
                          "sequence their programs are checked for")

    def program(p: Program | str) -> Program:
        p = adapt(parse(p))
        return p if causal_for is None else require_causal(p, causal_for, max_len)

    modules: list[nn.Module] = []
    for i, entry in enumerate(per_layer(programs, layers, name)):
        if _is_groups(entry):
            groups = [(program(p), h) for p, h in entry]
            total = sum(h for _, h in groups)
            if total != heads:
                raise ConfigError(f"{name}: layer {i}'s head groups have {total} heads in all, but "
                                  f"the model has heads={heads}")
            modules.append(MixedAttention(dim, groups, kv_dim=kv_dim, rotary=rotary,
                                          causal_for=causal_for))
        else:
            modules.append(Attention(dim, program(entry), heads=heads, kv_heads=kv_heads,
                                     kv_dim=kv_dim, rotary=rotary, causal_for=causal_for, layer=i))
    return modules


def per_layer(programs: ProgramsArg, layers: int, name: str = "programs") -> list[Any]:
    """The `programs` argument as exactly one entry per layer."""
    if isinstance(programs, str | Program) or _is_groups(programs):
        return [programs] * layers
    if not isinstance(programs, list | tuple):
        raise ConfigError(f"{name} must be a program, a list of one program per layer, or head "
                          f"groups [(program, heads), ...]; got {type(programs).__name__}")
    if len(programs) != layers:
        raise ConfigError(f"{name} lists {len(programs)} programs but the model has "
                          f"layers={layers}: give exactly {layers} (one per layer), or a single "
                          "program for every layer")
    return list(programs)


def programs_config(programs: ProgramsArg) -> Any:
    """`programs` as plain strings and lists, fit for a checkpoint's config (YAML/JSON)."""
    if isinstance(programs, Program):
        return str(programs)
    if isinstance(programs, list | tuple):
        return [programs_config(p) if not isinstance(p, int) else p for p in programs]
    return programs


def _is_pair(x: Any) -> bool:
    return (isinstance(x, list | tuple) and len(x) == 2 and isinstance(x[0], str | Program)
            and isinstance(x[1], int) and not isinstance(x[1], bool))


def _is_groups(x: Any) -> bool:
    return isinstance(x, list | tuple) and len(x) > 0 and all(_is_pair(g) for g in x)


# -- program rewrites the models use -----------------------------------------------------------


def with_padding(program: Program) -> Program:
    """`program` with `& padding` on its mask (or `padding` alone), unless it has one already;
    each component's, for a combined program."""
    if program.components:
        return program.each(with_padding)
    mask = program.mask
    if mask is not None and any(isinstance(leaf, Padding) for leaf in mask.leaves()):
        return program
    return program.replace(mask=Padding() if mask is None else mask & Padding())

