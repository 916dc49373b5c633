"""Causality for next-token models: no query may see a key after its own position.

Decided exactly from block summaries: blocks wholly after the diagonal must be EMPTY, and only
the blocks on the diagonal (and any PARTIAL one after it) are looked at element by element, so a
length N costs about N·block mask evaluations, not N².

What is decided when:

- At build time, for every length up to the model's max_len and every KV-cache offset: the
  N×N square of positions is checked, and a cached call (query i at key position i + past) reads
  rows of that square, because structured masks read positions, never call shapes.
- Leaves that read call-time data (`padding`, `document`, `graph`) or run Python (`predicate`
  and named rules, which may read the batch row and head and see raw query indices that a KV
  cache shifts) are taken at their most permissive value: the mask must be causal whatever they hold. So
  `causal & padding` passes and `causal | document` is refused at build time: it sees the
  future whenever two positions share a document. Nothing is lost by that: where the data does
  keep a mask causal, `causal & mask` computes exactly the same.
- At call time, only what the build could not see: a sequence longer than the proven length (a
  model with rotary or no positions has no length limit). A call costs one comparison; a longer
  one proves ahead (doubling), so a growing KV cache is not re-proved at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnlab.errors import ProgramError
from attnlab.lang.masks import (
    EMPTY,
    FULL,
    And,
    Causal,
    Mask,
    MaskInputs,
    Not,
    Or,
    evaluate_blocks,
)
from attnlab.lang.program import Program

BLOCK = 32
_CHUNK = 256  # blocks evaluated at once: small, so that a leaking mask stops early


@dataclass(frozen=True)
class Leak:
    """Query position `query` sees the later key position `key`."""

    query: int
    key: int


def require_causal(program: Program, model: str, max_len: int) -> Program:
    """`program`, unless its mask lets a position see a later one in some sequence of up to
    `max_len` tokens, whatever its call-time data: then ProgramError naming the program, the
    first such (query, key) pair and the fix. A next-token model would learn to copy. A
    combined program must be causal in every component."""
    for mechanism in program.mechanisms:
        Causality(mechanism, model).check(max_len)
    return program


class Causality:
    """The causality check of one program in a module that must not see the future;
    `check(length)` is the whole per-call cost once `length` is proven."""

    def __init__(self, program: Program, model: str) -> None:
        self.program, self.model = program, model
        self.bound = True if program.mask is None else _most_permissive(program.mask)
        self.proven = 1  # the bound is causal for every length up to this
        self.leak: Leak | None = None  # the leak with the smallest key found so far

    def check(self, length: int) -> None:
        """ProgramError if some query sees a later key among `length` positions."""
        if isinstance(length, torch.SymInt):
            # a free length being traced (torch.export): the model proved its programs causal
            # up to its max_len when built (require_causal), and an export's length stops there
            return
        while length > self.proven:
            if self.leak is not None and length > self.leak.key:
                raise self._error(length)
            # Prove ahead, but not as far as a known leak: lengths up to its key may still hold.
            ahead = 2 * self.proven if self.leak is None else min(2 * self.proven, self.leak.key)
            target = max(length, ahead)
            leak = _first_leak(self.bound, target)
            if leak is None:
                self.proven = target
            else:
                self.leak = leak

    def _error(self, length: int) -> ProgramError:
        mask, leak = self.program.mask, self.leak
        fixed = self.program.replace(mask=Causal() if mask is None else Causal() & mask)
        if mask is None:
            why = "; it has no mask at all"
        elif not any(isinstance(leaf, Causal) for leaf in mask.leaves()):
            why = "; its mask has no 'causal'"
        else:
            why = ""
        opaque = sorted({leaf.name for leaf in mask.leaves() if _opaque(leaf)}) if mask else []
        if opaque:
            why += (f" ({', '.join(opaque)}: call-time data and Python predicates are taken at "
                    "their most permissive, so the mask must be causal whatever they hold)")
        return ProgramError(
            f"{self.model} predicts each position from the ones before it, so its attention "
            f"must not see the future, but program '{self.program}' lets a position see later "
            f"ones in a sequence of {length}: query "
            f"{leak.query} sees key {leak.key}{why}. AND its mask with causal, e.g. '{fixed}'")


def _opaque(leaf: Mask) -> bool:
    """A leaf whose values are unknown before the call: call-time data, or Python."""
    return bool(leaf.needs) or leaf.python


def _most_permissive(mask: Mask, positive: bool = True) -> Mask | bool:
    """`mask` with every opaque leaf at its most permissive value (True, or False under an odd
    number of ~), simplified; True / False when nothing else is left."""
    if isinstance(mask, Not):
        inner = _most_permissive(mask.child, not positive)
        return (not inner) if isinstance(inner, bool) else Not(inner)
    if isinstance(mask, And | Or):
        absorbing = isinstance(mask, Or)  # True absorbs an Or, False an And
        kept = []
        for child in mask.children:
            bound = _most_permissive(child, positive)
            if bound is absorbing:
                return absorbing
            if not isinstance(bound, bool):
                kept.append(bound)
        if not kept:
            return not absorbing
        return kept[0] if len(kept) == 1 else type(mask)(tuple(kept))
    return positive if _opaque(mask) else mask


def _first_leak(mask: Mask | bool, length: int) -> Leak | None:
    """The earliest query (then key) that sees a later key among `length` positions."""
    if isinstance(mask, bool):
        return Leak(0, 1) if mask and length > 1 else None
    state = mask.block_summary(MaskInputs(1, 1, length, length), BLOCK).state[0, 0]
    first = torch.arange(state.shape[0]) * BLOCK
    last = (first + BLOCK).clamp(max=length) - 1
    # Every pair of a FULL block after the diagonal is visible: its corner is its first leak.
    full_after = (state == FULL) & (first[None, :] > last[:, None])
    candidates = (state != EMPTY) & ~full_after & (last[None, :] > first[:, None])
    known = None
    if full_after.any():
        row, col = full_after.nonzero()[0].tolist()
        known = Leak(row * BLOCK, col * BLOCK)
        candidates[row + 1:] = False  # later block rows hold only later queries
    blocks = candidates.nonzero()  # ordered by query block, then key block
    for chunk in blocks.split(_CHUNK):
        leak = _leak_in(mask, chunk, length)
        if leak is not None:
            # A later chunk may hold earlier queries of the same block row: settle that row.
            leak = _leak_in(mask, blocks[blocks[:, 0] == leak.query // BLOCK], length)
            return leak if known is None else min(leak, known, key=lambda x: (x.query, x.key))
    return known


def _leak_in(mask: Mask, blocks: torch.Tensor, length: int) -> Leak | None:
    """The earliest leak inside `blocks` (n, 2) of (query block, key block), if any."""
    idx = torch.cat([torch.zeros_like(blocks), blocks], dim=1)  # batch row 0, head 0
    visible, _ = evaluate_blocks(mask, idx, MaskInputs(1, 1, length, length), BLOCK, BLOCK)
    rows = blocks[:, :1] * BLOCK + torch.arange(BLOCK)
    cols = blocks[:, 1:] * BLOCK + torch.arange(BLOCK)
    found = (visible & (cols[:, None, :] > rows[:, :, None])).nonzero()
    if found.numel() == 0:
        return None
    block, i, j = found.unbind(1)
    query, key = rows[block, i], cols[block, j]
    first = torch.argmin(query * length + key)
    return Leak(int(query[first]), int(key[first]))
