"""The tiled backend: attnlab's block-sparse kernel in PyTorch, for any normalizer and for training.

Queries are cut into blocks; the mask's exact block summary says which key blocks each query
block can see. Query blocks that see the same number of key blocks are gathered into one
batched call. Softmax with affine score mods runs on SDPA over the tiles, so its fused CPU
backward does the work; every other normalizer sees exactly the visible keys of each row,
so sparsemax and entmax thresholds are exact. Memory grows with the visible pairs, not N².
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from attnlab.exec import hidden, normalizers
from attnlab.exec.backend import Backend, Call
from attnlab.exec.reference import normalize, reference_attention
from attnlab.exec.scores import DOT_FORM, affine_factor, compose_mods, dot_form
from attnlab.lang import normalizers as N
from attnlab.lang.masks import EMPTY, FULL, MaskInputs
from attnlab.lang.program import Program

# Elements per batched call, which bounds peak memory. Sorting normalizers keep several
# tensors per element (values, int64 order, cumulative sums), so their calls are smaller.
# Fused SDPA calls run fastest forward in cache-sized batches, backward in few large ones
# (measured on 2 CPU cores).
TILE_ELEMENTS = {"fused": 1 << 20, "fused_backward": 1 << 22, "explicit": 1 << 21}


@dataclass
class _Rows:
    """Query-block rows of one group: pattern index, query block, and c visible key blocks."""

    pattern: Tensor  # (g,)
    qblock: Tensor  # (g,)
    kblocks: Tensor  # (g, c)


@dataclass
class _Part:
    """One batched call: its rows, their query and key positions, and the tile mask."""

    rows: _Rows
    q_idx: Tensor  # (g, bq)
    kv_idx: Tensor  # (g, S)
    visible: Tensor | None  # (g, 1, bq, S); None when every block is full and in range
    order: Tensor  # (g,) row number pattern · QB + query block


@dataclass
class _Layout:
    """Which tiles a call computes: everything that depends on the mask, not on q, k, v."""

    state: Tensor  # (B', H', QB, KB) block states
    parts: list[_Part]
    rest: int  # (batch, head) rows sharing each mask pattern
    # Where each computed row, then each row that sees no key, goes back: fixed by the mask,
    # so the run itself has no data-dependent sizes (torch.export traces it).
    position: Tensor | None = None  # (rows,)
    unseen: int = 0  # rows that see no key


class TiledBackend(Backend):
    name = "tiled"
    CACHE = 32  # layouts kept: a training loop reuses one per shape

    def __init__(self, block: int = 128) -> None:
        self.block = block
        self._layouts: OrderedDict[tuple, _Layout] = OrderedDict()
        self._pinned: dict[tuple, _Layout] = {}  # layouts of frozen plans: never dropped

    def refuse(self, call: Call) -> str | None:
        p = call.program
        if p.approximation is not None:
            return f"'{p.approximation}' has no score matrix to tile (linear runs it in O(N))"
        if not isinstance(p.score, DOT_FORM):
            return f"score '{p.score}' is not a dot product, so tiles cannot batch it"
        if call.return_weights:
            return "only reference returns weights"
        return None

    def run(self, q, k, v, program, inp, *, bias, params, training, generator):
        b, h, n, _ = q.shape
        if q.dtype in (torch.float16, torch.bfloat16) and not isinstance(program.normalizer,
                                                                           N.Softmax):
            # sorting normalizers and their thresholds want fp32 range and precision
            params = {name: p.float() for name, p in params.items()}
            out = self.run(q.float(), k.float(), v.float(), program, inp, bias=bias,
                           params=params, training=training, generator=generator)
            return out.to(q.dtype)
        if (torch.compiler.is_compiling() and q.device.type == "cpu" and not runs_on_sdpa(program)
                and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))):
            # Inductor's CPU code for the backward of these tiles corrupted the heap and took
            # the process down ("double free or corruption", exit 134) with sorting
            # normalizers; the reference compiles safely, at the cost of N×M memory.
            _warn_compile_fallback(program)
            return reference_attention(q, k, v, program, inp, bias=bias, params=params,
                                       training=training, generator=generator)[0]
        qd, kd, scale = dot_form(program.score, q, k, params)
        group = h // k.shape[1]
        if group > 1:  # GQA: one kv row per query head keeps the tile gathers uniform
            kd, v = kd.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        # A NaN or inf must not leak out of the keys that hide it, and fused SDPA tiles may
        # drop one a query sees (attnlab.exec.hidden): such calls take the explicit path.
        finite = hidden.all_finite(kd, v)
        raw = None if finite else (kd, v)
        if raw is not None:
            kd, v = hidden.clean(kd), hidden.clean(v)
        bq, bk = min(self.block, n), min(self.block, inp.m)
        grad = torch.is_grad_enabled() and any(
            t.requires_grad for t in (q, k, v, *params.values()))
        layout = self.layout(program, inp, bq, bk, grad)
        if not layout.parts:  # every key hidden from every query
            # zeros that stay in the graph, so backward() sees every input (with zero grads)
            anchor = sum(t.sum() for t in (q, kd, v, *params.values())) * 0
            return q.new_zeros(b, h, n, v.shape[-1]) + anchor
        patterns, rest = b * h // layout.rest, layout.rest
        # One pattern per distinct mask layout, R (batch·head) rows sharing it.
        qr, kr, vr = (_by_pattern(t, patterns, rest, blk) for t, blk in ((qd, bq), (kd, bk), (v, bk)))
        run = _Run(program, inp, bias, params, training, generator, scale, (bq, bk), rest)
        raw_r = None if raw is None else tuple(_by_pattern(t, patterns, rest, bk) for t in raw)
        outputs = [run.tiles(part, qr, kr, vr, raw_r) for part in layout.parts]
        return _assemble(outputs, layout, rest, bq, v.shape[-1], q, n)

    def layout(self, program: Program, inp: MaskInputs, bq: int, bk: int,
               grad: bool = False, *, pin: bool = False) -> _Layout:
        """The tiles to compute; cached when the mask reads no call-time data, and kept for
        good with `pin` (a frozen plan's, which a traced forward finds ready)."""
        cacheable = program.mask is None or not program.mask.requires()
        fused = runs_on_sdpa(program)
        budget = TILE_ELEMENTS[("fused_backward" if grad else "fused") if fused else "explicit"]
        key = (program.mask, inp.batch, inp.heads, inp.n, inp.m, bq, bk, str(inp.device),
               budget, bool(program.mods))
        if cacheable and key in self._pinned:
            return self._pinned[key]
        if cacheable and key in self._layouts:
            self._layouts.move_to_end(key)
            if pin:
                self._pinned[key] = self._layouts[key]
            return self._layouts[key]
        state = self.summary(program, inp, bq, bk)
        rest = inp.batch * inp.heads // (state.shape[0] * state.shape[1])
        parts = []
        # fused SDPA materialises only the tile mask: per row, not per (batch, head), unless
        # mods make it a float mask per head
        per_row = bq * bk * (rest if program.mods or not fused else 1)
        for rows in _groups(state):
            step = max(1, budget // (per_row * rows.kblocks.shape[1]))
            for i in range(0, rows.pattern.shape[0], step):
                chunk = _Rows(rows.pattern[i:i + step], rows.qblock[i:i + step],
                              rows.kblocks[i:i + step])
                parts.append(_part(chunk, program, inp, state, bq, bk))
        result = _placed(_Layout(state, parts, rest))
        if pin and cacheable:
            self._pinned[key] = result
        if cacheable:
            self._layouts[key] = result
            if len(self._layouts) > self.CACHE:
                self._layouts.popitem(last=False)
        return result

    def summary(self, program: Program, inp: MaskInputs, bq: int, bk: int) -> Tensor:
        """Block states (B', H', QB, KB); with no mask every block is full."""
        if program.mask is None:
            return torch.full((1, 1, -(-inp.n // bq), -(-inp.m // bk)), FULL, dtype=torch.int8,
                              device=inp.device)
        state = program.mask.block_summary(inp, (bq, bk)).state
        if state.shape[0] == 1 and state.shape[1] > 1 and inp.batch > 1:
            state = state.expand(inp.batch, -1, -1, -1)  # patterns must follow (batch, head) order
        return state


def _warn_compile_fallback(program: Program) -> None:
    _compile_note(f"attnlab: under torch.compile with gradients, '{program}' runs on the "
                  "reference backend (tiled's compiled backward is unsafe on CPU); memory grows "
                  "with N×M")


def _compile_note(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=2)


# Dynamo cannot trace warnings.warn; a logging function it may reorder runs after the graph,
# so the note costs no graph break (frozen plans compile with fullgraph=True).
torch._dynamo.config.reorderable_logging_functions.add(_compile_note)


def _by_pattern(t: Tensor, patterns: int, rest: int, block: int) -> Tensor:
    """(B, H, L, D) padded to whole blocks, as (P, R, blocks, block, D) — a view when possible."""
    if t.shape[2] % block:
        t = F.pad(t, (0, 0, 0, -t.shape[2] % block))
    return t.reshape(patterns, rest, -1, block, t.shape[3])


def _take(blocks: Tensor, pattern: Tensor, index: Tensor) -> Tensor:
    """blocks[pattern, :, index] for (P, R, NB, blk, D) blocks, as (*index.shape, R, blk, D).

    Whole blocks through index_select: its backward is one index_add_, far cheaper on CPU
    than the index_put_ of advanced indexing. With one mask pattern (the usual case) no
    full copy of q, k or v is made.
    """
    p, r, nb, blk, d = blocks.shape
    if p == 1:
        picked = blocks[0].index_select(1, index.flatten()).view(r, *index.shape, blk, d)
        return picked.movedim(0, index.dim())
    flat = blocks.transpose(1, 2).reshape(p * nb, r, blk, d)
    return flat.index_select(0, (pattern * nb + index).flatten()).view(*index.shape, r, blk, d)


PAD_WASTE = 1.25  # rows may be padded with hidden blocks if it adds at most this much work


def _groups(state: Tensor):
    """Rows (pattern, query block) grouped by their number of visible key blocks.

    Groups with fewer blocks join a larger one, padded with hidden blocks (index −1), while
    the padding costs under PAD_WASTE: one gather and one call beat several small ones.
    """
    visible = (state != EMPTY).flatten(0, 1)  # (P, QB, KB)
    counts = visible.sum(-1)
    sizes = sorted((c, int((counts == c).sum())) for c in counts.unique().tolist() if c > 0)
    while sizes:
        width, members, work, rows = sizes[-1][0], [], 0, 0
        while sizes and (rows + sizes[-1][1]) * width <= PAD_WASTE * (work + sizes[-1][0] *
                                                                      sizes[-1][1]):
            c, count = sizes.pop()
            members.append(c)
            work, rows = work + c * count, rows + count
        pattern, qblock = torch.isin(counts, torch.tensor(members, device=counts.device)).nonzero(
            as_tuple=True)
        # stable sort keeps each row's visible key blocks first and in ascending order
        ordered = visible[pattern, qblock].to(torch.int8).sort(dim=-1, descending=True, stable=True)
        kblocks = torch.where(ordered.values[:, :width] > 0, ordered.indices[:, :width], -1)
        yield _Rows(pattern, qblock, kblocks)


def runs_on_sdpa(program: Program) -> bool:
    """Softmax with affine mods: SDPA runs the tiles."""
    return isinstance(program.normalizer, N.Softmax) and affine_factor(program.mods) is not None


def _part(rows: _Rows, program: Program, inp: MaskInputs, state: Tensor, bq: int,
          bk: int) -> _Part:
    """Positions and tile mask of one batch of rows (mask=None when all full and in range)."""
    dev = state.device
    real = (rows.kblocks >= 0)[:, :, None].expand(-1, -1, bk).flatten(1)  # padding blocks: −1
    kblocks = rows.kblocks.clamp(min=0)
    q_idx = rows.qblock[:, None] * bq + torch.arange(bq, device=dev)  # (g, bq)
    kv_idx = (kblocks[:, :, None] * bk + torch.arange(bk, device=dev)).flatten(1)
    order = rows.pattern * state.shape[2] + rows.qblock
    inside = (q_idx < inp.n)[:, :, None] & ((kv_idx < inp.m) & real)[:, None, :]
    b_, h_ = state.shape[:2]
    states = state.flatten(0, 1)[rows.pattern[:, None], rows.qblock[:, None], kblocks]
    states = torch.where(rows.kblocks >= 0, states, EMPTY)
    if bool((states == FULL).all()):
        visible = None if bool(inside.all()) else inside[:, None]
        return _Part(rows, q_idx, kv_idx, visible, order)
    b = (rows.pattern // h_ if b_ > 1 else torch.zeros_like(rows.pattern)).view(-1, 1, 1)
    h = (rows.pattern % h_ if h_ > 1 else torch.zeros_like(rows.pattern)).view(-1, 1, 1)
    q = q_idx.clamp(max=inp.n - 1)[:, :, None]
    kv = kv_idx.clamp(max=inp.m - 1)[:, None, :]
    visible = program.mask.visible(b, h, q, kv, inp) & inside
    return _Part(rows, q_idx, kv_idx, visible[:, None], order)


@dataclass
class _Run:
    """One call's fixed facts, and how to compute a batch of tiles."""

    program: Program
    inp: MaskInputs
    bias: Tensor | None
    params: dict[str, Tensor]
    training: bool
    generator: torch.Generator | None
    scale: float
    block: tuple[int, int]
    rest: int

    def tiles(self, part: _Part, qr: Tensor, kr: Tensor, vr: Tensor,
              raw: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Outputs (g, R, bq, Dv) for one part's rows; `raw` holds k and v as given when they
        were cleaned of non-finite values (which then poison only the rows that see them)."""
        bq, _ = self.block
        rows, q_idx, kv_idx, visible = part.rows, part.q_idx, part.kv_idx, part.visible
        kblocks = rows.kblocks.clamp(min=0)  # padding blocks are hidden by the tile mask
        qt = _take(qr, rows.pattern, rows.qblock)  # (g, R, bq, D)
        kt = _take(kr, rows.pattern[:, None], kblocks).transpose(1, 2).flatten(2, 3)  # (g, R, S, D)
        vt = _take(vr, rows.pattern[:, None], kblocks).transpose(1, 2).flatten(2, 3)
        b, h = self.batch_head(rows)
        # padding positions past N or M are hidden; clamped, they index mods safely
        qpos = q_idx.clamp(max=self.inp.n - 1)[:, None, :, None]
        kpos = kv_idx.clamp(max=self.inp.m - 1)[:, None, None, :]
        mods = compose_mods(self.program.mods, self.inp, self.params, self.bias)
        dropout = self.program.dropout if self.training else 0.0
        seeded_dropout = dropout > 0 and self.generator is not None  # SDPA ignores our generator
        if raw is not None:
            bad = hidden.bad_keys(*(_take(t, rows.pattern[:, None], kblocks).transpose(1, 2)
                                    .flatten(2, 3) for t in raw))
            seen = bad.sum(-2, keepdim=True) if visible is None else visible.to(bad.dtype) @ bad
        if runs_on_sdpa(self.program) and not seeded_dropout and raw is None:
            mask = visible
            if mods is not None:  # affine mods: a·s + g, with a folded into the scale
                g = mods(qt.new_zeros(()), b, h, qpos, kpos)
                g = g.expand(torch.broadcast_shapes(g.shape, (qt.shape[0], 1, bq, kt.shape[2])))
                mask = g if visible is None else torch.where(visible, g, -math.inf)
            scale = self.scale * affine_factor(self.program.mods)
            return F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask, scale=scale,
                                                  dropout_p=dropout)
        explicit = _Explicit(self, mods, (b, h, qpos, kpos), visible, dropout)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (qt, kt, vt)):
            # Recompute scores in backward instead of keeping them: memory stays with the tiles.
            out = checkpoint(explicit, qt, kt, vt, use_reentrant=False)
        else:
            out = explicit(qt, kt, vt)
        return out if raw is None else hidden.poison(out, seen)

    def batch_head(self, rows: _Rows) -> tuple[Tensor, Tensor]:
        """(batch, head) index of every (row, R) pair, shaped (g, R, 1, 1)."""
        flat = rows.pattern[:, None] * self.rest + torch.arange(self.rest, device=rows.pattern.device)
        heads = self.inp.heads
        return (flat // heads)[:, :, None, None], (flat % heads)[:, :, None, None]


class _Explicit:
    """Scores, mods and any normalizer over one batch of tiles (checkpointable)."""

    def __init__(self, run: _Run, mods, index, visible, dropout: float) -> None:
        self.run, self.mods, self.index, self.visible, self.dropout = run, mods, index, visible, dropout

    def __call__(self, qt: Tensor, kt: Tensor, vt: Tensor) -> Tensor:
        run = self.run
        scores = (qt @ kt.transpose(-1, -2)) * run.scale
        if self.mods is not None:
            scores = self.mods(scores, *self.index)
        norm = run.program.normalizer
        if isinstance(norm, N.Sigmoid) and norm.bias is None:  # −log(keys) of the whole row
            # called directly: a new Sigmoid part would be built (and validated) inside a
            # traced forward, which torch.compile(fullgraph=True) cannot follow
            weights = normalizers.sigmoid(scores, self.visible, bias=-math.log(run.inp.m))
        else:
            weights = normalize(norm, scores, self.visible, run.training, run.generator)
        if self.dropout:
            keep = torch.rand(weights.shape, generator=run.generator, device=weights.device)
            weights = weights * (keep >= self.dropout) / (1 - self.dropout)
        return weights @ vt


def _placed(layout: _Layout) -> _Layout:
    """The layout with the order that puts computed rows, then unseen rows, back in place."""
    rows = layout.state.shape[0] * layout.state.shape[1] * layout.state.shape[2]
    device = layout.state.device
    order = [part.order for part in layout.parts]
    done = torch.cat(order) if order else torch.zeros(0, dtype=torch.long, device=device)
    missing = torch.ones(rows, dtype=torch.bool, device=device)
    missing[done] = False
    position = torch.cat([done, missing.nonzero(as_tuple=True)[0]]).argsort()
    return dataclasses.replace(layout, position=position, unseen=int(missing.sum()))


def _assemble(outputs: list[Tensor], layout: _Layout, rest: int, bq: int, dv: int, q: Tensor,
              n: int) -> Tensor:
    """Put every row's (R, bq, Dv) tile back in place; rows that see nothing are zeros."""
    b, h = q.shape[:2]
    zeros = q.new_zeros(layout.unseen, rest, bq, dv)
    stacked = torch.cat([*outputs, zeros]).to(q.dtype)
    tiles = stacked.index_select(0, layout.position)  # (P·QB, R, bq, Dv) in row order
    rows = layout.position.shape[0]
    qblocks = rows // (b * h // rest)
    out = tiles.view(-1, qblocks, rest, bq, dv).permute(0, 2, 1, 3, 4)
    return out.reshape(b, h, qblocks * bq, dv)[:, :, :n]
