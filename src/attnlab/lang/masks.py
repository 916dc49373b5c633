"""Masks: boolean predicates over (b, h, q_idx, kv_idx), combined with &, | and ~.

Every mask evaluates densely on demand and also reports an exact block summary —
for each (query block, key block): all visible, all hidden or partial. Structured
masks answer from index ranges without building the N×M matrix; combinations refine
only the blocks their children leave undecided.

When N ≠ M, queries are aligned bottom-right: query i sits at position i + M − N.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from attnlab.errors import InputError, ProgramError
from attnlab.lang.base import Part, check_length, check_seed, require, show

EMPTY, PARTIAL, FULL = 0, 1, 2
# Mask expressions nest at most this deep: printing, evaluating and comparing them recurse, and
# a deeper one is never needed (a & (b & c) is a & b & c, ~~a is a).
MAX_DEPTH = 32
_REFINE_CHUNK = 4096  # undecided blocks evaluated per batch during refinement


# -- call-time inputs ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MaskInputs:
    """Shapes plus the call-time data that `document`, `padding`, `graph` and the
    distance-reading parts (`graph_distance`, rules such as `within`) read."""

    batch: int
    heads: int
    n: int
    m: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    q_segments: Tensor | None = None  # (B, N)
    kv_segments: Tensor | None = None  # (B, M)
    key_keep: Tensor | None = None  # (B, M) bool, True = a real key
    graph: Tensor | None = None  # (B, N, M) bool
    distances: Tensor | None = None  # (B, N, M) int64 shortest-path lengths, < 0 = unreachable

    @property
    def offset(self) -> int:
        """Position of query 0 on the key axis (bottom-right alignment)."""
        return self.m - self.n

    @classmethod
    def build(cls, batch: int, heads: int, n: int, m: int, device: torch.device | str = "cpu", *,
              segments: Tensor | tuple[Tensor, Tensor] | None = None,
              key_lengths: Tensor | None = None, key_padding_mask: Tensor | None = None,
              graph: Tensor | None = None, distances: Tensor | None = None) -> MaskInputs:
        """Check and normalise the call-time mask data; InputError says what does not fit."""
        device = torch.device(device)
        q_seg = kv_seg = keep = adj = dist = None
        if segments is not None:
            if isinstance(segments, tuple | list):
                q_seg, kv_seg = (_batched("segments[0]", segments[0], batch, (n,), device),
                                 _batched("segments[1]", segments[1], batch, (m,), device))
            else:
                kv_seg = _batched("segments", segments, batch, (m,), device,
                                  hint=" (one segment id per key; queries are aligned to the "
                                       "last N keys — pass (q_segments, kv_segments) otherwise)")
                q_seg = kv_seg[:, m - n:]
        if key_lengths is not None and key_padding_mask is not None:
            raise InputError("give key_lengths or key_padding_mask, not both")
        if key_lengths is not None:
            lengths = torch.as_tensor(key_lengths, device=device).reshape(-1)
            if lengths.dtype.is_floating_point or lengths.numel() not in (1, batch):
                raise InputError(f"key_lengths must be {batch} whole numbers (one per batch row), "
                                 f"got {tuple(lengths.shape)} {lengths.dtype}")
            if ((lengths < 0) | (lengths > m)).any():
                raise InputError(f"key_lengths must lie in [0, {m}], got {lengths.tolist()}")
            keep = torch.arange(m, device=device) < lengths.expand(batch)[:, None]
        if key_padding_mask is not None:
            kpm = _batched("key_padding_mask", key_padding_mask, batch, (m,), device,
                           hint=" (True marks a padding key, as in torch.nn.MultiheadAttention)")
            if kpm.dtype != torch.bool:
                raise InputError(f"key_padding_mask must be bool (True = padding), got {kpm.dtype}")
            keep = ~kpm
        if graph is not None:
            adj = _batched("graph", graph, batch, (n, m), device)
            if adj.dtype != torch.bool:
                raise InputError(f"graph must be a bool adjacency, got {adj.dtype}")
        if distances is not None:
            dist = _batched("distances", distances, batch, (n, m), device,
                            hint=" (the shortest-path length from each query to each key)")
            if dist.dtype == torch.bool or dist.dtype.is_floating_point or dist.dtype.is_complex:
                raise InputError(f"distances must hold whole numbers (an integer tensor, -1 for "
                                 f"unreachable), got {dist.dtype}")
            dist = dist.long()  # uint8 and int8 would index as masks, not as rows
        return cls(batch, heads, n, m, device, q_seg, kv_seg, keep, adj, dist)


def _batched(name: str, t: Tensor, batch: int, shape: tuple[int, ...], device: torch.device,
             hint: str = "") -> Tensor:
    t = torch.as_tensor(t, device=device)
    if t.dim() == len(shape):
        t = t.unsqueeze(0)
    if tuple(t.shape[1:]) != shape or t.shape[0] not in (1, batch):
        want = ", ".join(str(s) for s in shape)
        raise InputError(f"{name} must have shape ({batch} or 1, {want}), got {tuple(t.shape)}{hint}")
    return t.expand(batch, *shape)


# -- block summaries -------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BlockSummary:
    """Per (batch, head, query block, key block): EMPTY (0), PARTIAL (1) or FULL (2).

    Batch and head dims are 1 when the mask does not depend on them.
    """

    state: Tensor  # int8 (B', H', QB, KB)
    block: tuple[int, int]
    n: int
    m: int

    def count(self, which: int) -> int:
        return int((self.state == which).sum())

    @property
    def fraction_skippable(self) -> float:
        """Share of blocks a kernel never has to touch."""
        return self.count(EMPTY) / self.state.numel()


def _state(full: Tensor, empty: Tensor) -> Tensor:
    return torch.where(full, FULL, torch.where(empty, EMPTY, PARTIAL)).to(torch.int8)


def _as4d(t: Tensor) -> Tensor:
    while t.dim() < 4:
        t = t.unsqueeze(0)
    return t


def _reduce_dense(dense: Tensor, bq: int, bk: int) -> Tensor:
    """Exact block states from a dense (B', H', N, M) boolean."""
    b, h, n, m = dense.shape
    qb, kb = -(-n // bq), -(-m // bk)
    pad = (0, kb * bk - m, 0, qb * bq - n)
    # Padding cells must not decide anything: True for the all-test, False for the any-test.
    alls = torch.nn.functional.pad(dense, pad, value=True).view(b, h, qb, bq, kb, bk)
    anys = torch.nn.functional.pad(dense, pad, value=False).view(b, h, qb, bq, kb, bk)
    return _state(alls.all(dim=(3, 5)), ~anys.any(dim=(3, 5)))


# -- the mask expression ---------------------------------------------------------------------


class Mask(Part):
    """A predicate (b, h, q_idx, kv_idx) -> bool over broadcastable index tensors."""

    kind = "mask"
    needs: ClassVar[frozenset[str]] = frozenset()  # call-time inputs a leaf reads
    depth: ClassVar[int] = 1  # levels of nesting; combinations set their own
    # Runs a Python function (predicate, named rule) that may read the batch row and head: never
    # assumed alike across them, nor causal without looking.
    python: ClassVar[bool] = False

    def visible(self, b: Tensor, h: Tensor, q: Tensor, kv: Tensor, inp: MaskInputs) -> Tensor:
        raise NotImplementedError

    def _block_state(self, q0: Tensor, q1: Tensor, k0: Tensor, k1: Tensor,
                     inp: MaskInputs) -> Tensor | None:
        """Exact states from index ranges, or None to reduce the dense mask instead."""
        return None

    # -- combinators: & | ~ build flat expressions ---------------------------------------------
    def __and__(self, other: Mask) -> Mask:
        return And((self, _mask_operand(other, "&")))

    def __or__(self, other: Mask) -> Mask:
        return Or((self, _mask_operand(other, "|")))

    def __invert__(self) -> Mask:
        return Not(self)

    def leaves(self) -> Iterator[Mask]:
        yield self

    def requires(self) -> frozenset[str]:
        """Call-time inputs the whole expression reads."""
        return frozenset().union(*(leaf.needs for leaf in self.leaves()))

    # -- evaluation ------------------------------------------------------------------------
    def mask_mod(self, inp: MaskInputs) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        """The FlexAttention / HF signature (b, h, q_idx, kv_idx) -> bool, inputs bound."""
        return lambda b, h, q, kv: self.visible(b, h, q, kv, inp)

    def dense(self, inp: MaskInputs, rows: Tensor | None = None) -> Tensor:
        """The whole mask as a bool tensor (B', H', N, M); B', H' are 1 where it does not vary.
        `rows` (R,) query positions in [0, N) give just those rows, (B', H', R, M)."""
        dev = inp.device
        b = torch.arange(inp.batch, device=dev).view(-1, 1, 1, 1)
        h = torch.arange(inp.heads, device=dev).view(1, -1, 1, 1)
        q = (torch.arange(inp.n, device=dev) if rows is None else rows.to(dev)).view(1, 1, -1, 1)
        kv = torch.arange(inp.m, device=dev).view(1, 1, 1, -1)
        out = _as4d(torch.as_tensor(self.visible(b, h, q, kv, inp), device=dev))
        if out.dtype != torch.bool:
            raise ProgramError(f"mask {self} returned {out.dtype}; a mask must return booleans")
        return out.expand(out.shape[0], out.shape[1], q.shape[2], inp.m)

    def block_summary(self, inp: MaskInputs, block: int | tuple[int, int] = 64) -> BlockSummary:
        """Exact EMPTY / PARTIAL / FULL state of every (query block, key block)."""
        bq, bk = (block, block) if isinstance(block, int) else block
        if bq < 1 or bk < 1:
            raise ProgramError(f"block sizes must be ≥ 1, got {(bq, bk)}")
        return BlockSummary(self._summary(inp, bq, bk), (bq, bk), inp.n, inp.m)

    def _summary(self, inp: MaskInputs, bq: int, bk: int) -> Tensor:
        q0 = torch.arange(0, inp.n, bq, device=inp.device).view(-1, 1)
        k0 = torch.arange(0, inp.m, bk, device=inp.device).view(1, -1)
        q1, k1 = (q0 + bq).clamp(max=inp.n) - 1, (k0 + bk).clamp(max=inp.m) - 1
        state = self._block_state(q0, q1, k0, k1, inp)
        if state is None:
            return _reduce_dense(self.dense(inp), bq, bk)
        return _as4d(state).to(torch.int8)

    def density(self, inp: MaskInputs, block: int = 128) -> float:
        """Fraction of visible (query, key) pairs, counted without an N×M matrix."""
        state = self._summary(inp, block, block)
        b, h = state.shape[:2]
        rows = (torch.arange(state.shape[2]) * block).clamp(max=inp.n)
        cols = (torch.arange(state.shape[3]) * block).clamp(max=inp.m)
        area = ((rows + block).clamp(max=inp.n) - rows)[:, None] * \
               ((cols + block).clamp(max=inp.m) - cols)[None, :]
        visible = float((area * (state.cpu() == FULL)).sum())
        partial = (state == PARTIAL).nonzero()
        for chunk in partial.split(_REFINE_CHUNK):
            visible += float(evaluate_blocks(self, chunk, inp, block, block)[0].sum())
        return visible / (b * h * inp.n * inp.m)


def _mask_operand(other: object, op: str) -> Mask:
    if not isinstance(other, Mask):
        raise ProgramError(f"'{op}' combines masks, got {type(other).__name__} {show(other)}")
    return other


def _nest(node: Mask, children: tuple[Mask, ...]) -> None:
    """Record node's depth, one more than its deepest child's; ProgramError past MAX_DEPTH."""
    depth = 1 + max(c.depth for c in children)
    if depth > MAX_DEPTH:
        raise ProgramError(f"mask expressions nest at most {MAX_DEPTH} deep, this one is {depth}: "
                           "flatten it (a & (b & c) is a & b & c, ~~a is a)")
    object.__setattr__(node, "depth", depth)


def evaluate_blocks(mask: Mask, idx: Tensor, inp: MaskInputs, bq: int,
                     bk: int) -> tuple[Tensor, Tensor]:
    """The mask inside the blocks idx (n, 4) = (b, h, qb, kb) as (visible, in range), each
    (n, bq, bk). Indices past N or M are clamped for evaluation and reported out of range."""
    dev = inp.device
    idx = idx.to(dev)
    rows = idx[:, 2:3] * bq + torch.arange(bq, device=dev)
    cols = idx[:, 3:4] * bk + torch.arange(bk, device=dev)
    b, h = idx[:, 0].view(-1, 1, 1), idx[:, 1].view(-1, 1, 1)
    q, kv = rows.clamp(max=inp.n - 1).unsqueeze(2), cols.clamp(max=inp.m - 1).unsqueeze(1)
    vis = torch.as_tensor(mask.visible(b, h, q, kv, inp), device=dev)
    inside = (rows < inp.n).unsqueeze(2) & (cols < inp.m).unsqueeze(1)
    return vis.expand(idx.shape[0], bq, bk) & inside, inside


def _refine(mask: Mask, state: Tensor, undecided: Tensor, inp: MaskInputs,
            bq: int, bk: int) -> Tensor:
    """Settle undecided blocks by evaluating the mask inside just those blocks."""
    idx = undecided.nonzero()
    if idx.numel() == 0:
        return state
    state = state.clone()
    for chunk in idx.split(_REFINE_CHUNK):
        vis, inside = evaluate_blocks(mask, chunk, inp, bq, bk)
        full = (vis == inside).all(dim=(1, 2))
        empty = ~vis.any(dim=(1, 2))
        state[tuple(chunk.t().to(state.device))] = _state(full, empty)
    return state


@dataclass(frozen=True)
class _Junction(Mask):
    """n-ary & or |, flattened so that (a & b) & c == a & (b & c) == parse('a & b & c')."""

    children: tuple[Mask, ...]
    symbol: ClassVar[str]

    def __post_init__(self) -> None:
        flat: list[Mask] = []
        for c in self.children:
            _mask_operand(c, self.symbol)
            flat.extend(c.children if type(c) is type(self) else (c,))
        require(len(flat) >= 2, self.symbol, "needs at least two masks")
        object.__setattr__(self, "children", tuple(flat))
        _nest(self, self.children)

    def leaves(self) -> Iterator[Mask]:
        for c in self.children:
            yield from c.leaves()

    def visible(self, b, h, q, kv, inp):
        return functools.reduce(self.op, (c.visible(b, h, q, kv, inp) for c in self.children))

    def to_dict(self) -> dict:
        return {self.key: [c.to_dict() for c in self.children]}

    def _summary(self, inp: MaskInputs, bq: int, bk: int) -> Tensor:
        states = torch.broadcast_tensors(*(c._summary(inp, bq, bk) for c in self.children))
        stack = torch.stack(states)
        n_partial = (stack == PARTIAL).sum(0)
        state, settled = self._combine(stack)
        return _refine(self, state, ~settled & (n_partial >= 2), inp, bq, bk)


@dataclass(frozen=True)
class And(_Junction):
    symbol = "&"
    key = "and"
    op = staticmethod(operator.and_)

    def _combine(self, stack: Tensor) -> tuple[Tensor, Tensor]:
        empty, full = (stack == EMPTY).any(0), (stack == FULL).all(0)
        return _state(full, empty), empty | full

    def __str__(self) -> str:
        return " & ".join(f"({c})" if isinstance(c, Or) else str(c) for c in self.children)


@dataclass(frozen=True)
class Or(_Junction):
    symbol = "|"
    key = "or"
    op = staticmethod(operator.or_)

    def _combine(self, stack: Tensor) -> tuple[Tensor, Tensor]:
        full, empty = (stack == FULL).any(0), (stack == EMPTY).all(0)
        return _state(full, empty), empty | full

    def __str__(self) -> str:
        return " | ".join(str(c) for c in self.children)


@dataclass(frozen=True)
class Not(Mask):
    child: Mask

    def __post_init__(self) -> None:
        _mask_operand(self.child, "~")
        _nest(self, (self.child,))

    def __invert__(self) -> Mask:
        return self.child  # ~~a is a, exactly: dense masks and block states alike

    def visible(self, b, h, q, kv, inp):
        return ~self.child.visible(b, h, q, kv, inp)

    def leaves(self) -> Iterator[Mask]:
        yield from self.child.leaves()

    def _summary(self, inp: MaskInputs, bq: int, bk: int) -> Tensor:
        return (FULL - self.child._summary(inp, bq, bk)).to(torch.int8)

    def to_dict(self) -> dict:
        return {"not": self.child.to_dict()}

    def __str__(self) -> str:
        # ~(~a) keeps its brackets: the parser reads ~~a as a.
        return f"~({self.child})" if isinstance(self.child, _Junction | Not) else f"~{self.child}"


# -- structured masks: exact block states from index ranges ----------------------------------


@dataclass(frozen=True)
class Causal(Mask):
    """Key position ≤ query position."""

    name = "causal"

    def visible(self, b, h, q, kv, inp):
        return kv <= q + inp.offset

    def _block_state(self, q0, q1, k0, k1, inp):
        return _state(k1 <= q0 + inp.offset, k0 > q1 + inp.offset)


@dataclass(frozen=True)
class Window(Mask):
    """|query position − key position| ≤ w (both sides; combine with causal for one side)."""

    name = "window"
    w: int

    def validate(self) -> None:
        require(self.w >= 1, self.name, f"w must be ≥ 1, got {self.w} "
                "(window(0) would let a query see only itself)")
        check_length(self, "w")

    def visible(self, b, h, q, kv, inp):
        return (q + inp.offset - kv).abs() <= self.w

    def _block_state(self, q0, q1, k0, k1, inp):
        lo, hi = q0 + inp.offset - k1, q1 + inp.offset - k0
        return _state((lo >= -self.w) & (hi <= self.w), (lo > self.w) | (hi < -self.w))


@dataclass(frozen=True)
class Prefix(Mask):
    """The first n keys (a prefix every query may read; `causal | prefix(n)` is a prefix LM)."""

    name = "prefix"
    n: int

    def validate(self) -> None:
        check_length(self, "n")

    def visible(self, b, h, q, kv, inp):
        return kv < self.n

    def _block_state(self, q0, q1, k0, k1, inp):
        return _state((k1 < self.n).expand(q0.shape[0], -1), (k0 >= self.n).expand(q0.shape[0], -1))


@dataclass(frozen=True)
class GlobalTokens(Mask):
    """The first k positions see everything and are seen by everyone (Longformer's globals)."""

    name = "global_tokens"
    k: int

    def validate(self) -> None:
        check_length(self, "k")

    def visible(self, b, h, q, kv, inp):
        return (q + inp.offset < self.k) | (kv < self.k)

    def _block_state(self, q0, q1, k0, k1, inp):
        off = inp.offset
        return _state((q1 + off < self.k) | (k1 < self.k), (q0 + off >= self.k) & (k0 >= self.k))


@dataclass(frozen=True)
class Dilated(Mask):
    """|i − j| ≤ w·d and i − j divisible by d: a window of w steps of stride d."""

    name = "dilated"
    w: int
    d: int

    def validate(self) -> None:
        check_length(self, "w", "d")  # so w·d and every offset fit in int64

    def visible(self, b, h, q, kv, inp):
        diff = q + inp.offset - kv
        return (diff.abs() <= self.w * self.d) & (diff % self.d == 0)

    def _block_state(self, q0, q1, k0, k1, inp):
        reach = self.w * self.d
        dmin, dmax = q0 + inp.offset - k1, q1 + inp.offset - k0  # every diff in between occurs
        lo, hi = dmin.clamp(min=-reach), dmax.clamp(max=reach)
        first = -torch.div(-lo, self.d, rounding_mode="floor") * self.d  # smallest multiple ≥ lo
        empty = (lo > hi) | (first > hi)
        inside = (dmin >= -reach) & (dmax <= reach)
        full = inside & ((dmin == dmax) & (dmin % self.d == 0) if self.d > 1 else inside)
        return _state(full, empty)


@dataclass(frozen=True)
class RandomBlocks(Mask):
    """Each (block × block) tile visible with probability p, from a seeded hash (BigBird).

    The pattern depends only on (seed, tile row, tile column), never on the sequence length.
    """

    name = "random_blocks"
    shown = 1
    p: float
    block: int = 64
    seed: int = 0

    def validate(self) -> None:
        require(0 <= self.p <= 1, self.name, f"p must be in [0, 1], got {self.p}")
        check_length(self, "block")
        check_seed(self, "seed")  # so the hash's int64 arithmetic never overflows

    def tile_visible(self, row: Tensor, col: Tensor) -> Tensor:
        return _uniform_hash(self.seed, row, col) < self.p

    def visible(self, b, h, q, kv, inp):
        # Look each pair's tile up rather than hash every pair: at N = 1024 that is 256 hashes,
        # not a million. Indices past the edge (tiles that hang over N or M) are clamped.
        first, tiles = self._tiles(inp)
        row = ((q + inp.offset) // self.block - first).clamp(0, tiles.shape[0] - 1)
        return tiles[row, (kv // self.block).clamp(0, tiles.shape[1] - 1)]

    def _tiles(self, inp: MaskInputs) -> tuple[int, Tensor]:
        """(first tile row, the visible tiles (rows, columns)) over the whole (N, M) mask."""
        # With more queries than keys (N > M) the first queries sit at negative positions, so
        # tile rows start below 0: index the table from the first row, never wrap around.
        first = inp.offset // self.block
        rows = torch.arange(first, (inp.n - 1 + inp.offset) // self.block + 1, device=inp.device)
        cols = torch.arange((inp.m - 1) // self.block + 1, device=inp.device)
        return first, self.tile_visible(rows[:, None], cols[None, :])

    def _block_state(self, q0, q1, k0, k1, inp):
        off = inp.offset
        first, tiles = self._tiles(inp)
        tiles = tiles.long()
        sums = torch.nn.functional.pad(tiles.cumsum(0).cumsum(1), (1, 0, 1, 0))
        r0, r1 = (q0 + off) // self.block - first, (q1 + off) // self.block - first
        c0, c1 = k0 // self.block, k1 // self.block
        count = sums[r1 + 1, c1 + 1] - sums[r0, c1 + 1] - sums[r1 + 1, c0] + sums[r0, c0]
        return _state(count == (r1 - r0 + 1) * (c1 - c0 + 1), count == 0)


def _uniform_hash(seed: int, row: Tensor, col: Tensor) -> Tensor:
    """A deterministic uniform [0, 1) per (seed, row, col); int64 arithmetic never overflows."""
    mask31 = 0x7FFFFFFF
    x = (row * 0x27D4EB2F + col * 0x165667B1 + seed * 0x3C6EF372 + 0x1B873593) & mask31
    for mult in (0x2C1B3C6D, 0x297A2D39, 0x1B873593):
        x = (((x >> 15) ^ x) * mult) & mask31
    return ((x >> 13) ^ x).to(torch.float64) / 2**31


# -- masks that read call-time data ----------------------------------------------------------


@dataclass(frozen=True)
class Document(Mask):
    """Same segment only (packed sequences); reads `segments` at call time."""

    name = "document"
    needs = frozenset({"segments"})

    def visible(self, b, h, q, kv, inp):
        _need(inp.q_segments, self, "segments=")
        return inp.q_segments[b, q] == inp.kv_segments[b, kv]


@dataclass(frozen=True)
class Padding(Mask):
    """Real keys only; reads `key_lengths` or `key_padding_mask` at call time."""

    name = "padding"
    needs = frozenset({"key_padding"})

    def visible(self, b, h, q, kv, inp):
        _need(inp.key_keep, self, "key_lengths= or key_padding_mask=")
        return inp.key_keep[b, kv]

    def _summary(self, inp, bq, bk):
        _need(inp.key_keep, self, "key_lengths= or key_padding_mask=")
        keep = inp.key_keep.view(inp.batch, 1, 1, inp.m)
        return _reduce_dense(keep, 1, bk).expand(-1, -1, -(-inp.n // bq), -1)


@dataclass(frozen=True)
class Graph(Mask):
    """Edges of a (B, N, M) boolean adjacency given at call time (`graph=`)."""

    name = "graph"
    needs = frozenset({"graph"})

    def visible(self, b, h, q, kv, inp):
        _need(inp.graph, self, "graph=")
        return inp.graph[b, q, kv]


@dataclass(frozen=True)
class Predicate(Mask):
    """Any Python function (b, h, q_idx, kv_idx) -> bool tensor, written with broadcasting
    torch ops (as for FlexAttention's mask_mod). Round-trips only in Python."""

    name = "predicate"
    python = True
    fn: object

    def validate(self) -> None:
        require(callable(self.fn), self.name, f"fn must be callable, got {self.fn!r}")

    def visible(self, b, h, q, kv, inp):
        return self.fn(b, h, q, kv)

    def __str__(self) -> str:
        return f"predicate({getattr(self.fn, '__name__', 'fn')})"

    def to_dict(self) -> dict:
        raise ProgramError(f"{self} is a Python function: it has no dict or text form; "
                           "build this program in Python")


def _need(value: Tensor | None, mask: Mask, arg: str) -> None:
    if value is None:
        raise InputError(f"mask '{mask}' needs {arg} at call time")
