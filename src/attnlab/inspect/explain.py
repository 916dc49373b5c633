"""What a program computes, as facts: its layout, mask density and skippable blocks at one size, its
learnable parts, its call-time inputs, and the planner's plan (``attnlab program explain`` prints them)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch

from attnlab.exec import explain
from attnlab.inspect.showcase import mask_inputs
from attnlab.lang import EMPTY, FULL, PARTIAL, Program, parse

# How each call-time need is spelt at the `attnlab.attention` call.
CALL_ARGS = {"segments": "segments=", "key_padding": "key_lengths= or key_padding_mask=",
             "graph": "graph=", "distances": "distances=", "bias": "bias="}


@dataclass(frozen=True)
class BlockCounts:
    """How a mask's block × block tiles split into wholly visible, mixed and wholly hidden ones."""

    full: int
    partial: int
    empty: int
    block: int

    @property
    def total(self) -> int:
        return self.full + self.partial + self.empty

    @property
    def skippable(self) -> float:
        return self.empty / self.total


@dataclass(frozen=True)
class Explanation:
    """Everything known about a program at one size, without running it."""

    program: Program
    heads: int
    kv_heads: int
    head_dim: int
    seq: int
    density: float | None  # None: the mask reads call-time inputs
    blocks: BlockCounts | None  # None: no mask, or it reads call-time inputs
    mask_needs: frozenset[str]
    parameters: dict[str, tuple[int, ...]]  # learnable tensors and their shapes
    needs: frozenset[str]  # call-time inputs (CALL_ARGS says how each is passed)
    training: bool  # whether the plan is for training (gradients needed)
    plan: str  # the planner's explanation of which backend runs the program, and why

    @property
    def head_sharing(self) -> str:
        """'MHA', 'MQA' or 'GQA, groups of G'."""
        group = self.heads // self.kv_heads
        return "MHA" if group == 1 else "MQA" if self.kv_heads == 1 else f"GQA, groups of {group}"

    @property
    def parameter_count(self) -> int:
        return sum(torch.Size(shape).numel() for shape in self.parameters.values())


def explain_program(program: Program | str, *, heads: int | None = None, kv_heads: int | None = None,
                    head_dim: int | None = None, seq: int = 1024, block: int = 128,
                    training: bool = False) -> Explanation:
    """The facts about ``program`` at sequence length ``seq`` (density, ``block``-sized tiles) and the
    plan for one batch row; the layout is the program's, else the one given, else 8 heads of 64."""
    program = parse(program)
    lay = program.layout.resolve(heads=heads, kv_heads=kv_heads, head_dim=head_dim)
    mask = program.mask
    mask_needs = mask.requires() if mask is not None else frozenset()
    density = blocks = None
    if program.components:  # a key counts where any component sees it
        mask_needs = frozenset().union(*(c.mask.requires() for c in program.components
                                         if c.mask is not None))
        if not mask_needs:
            density = program.visible(mask_inputs(lay.heads, seq)).float().mean().item()
    elif mask is None:
        density = 1.0
    elif not mask_needs:
        inp = mask_inputs(lay.heads, seq)
        density = mask.density(inp)
        summary = mask.block_summary(inp, block)
        blocks = BlockCounts(summary.count(FULL), summary.count(PARTIAL), summary.count(EMPTY), block)
    # torch.empty never touches its pages: planning a long sequence costs no memory.
    q = torch.empty(1, lay.heads, seq, lay.head_dim)
    k = torch.empty(1, lay.kv_heads, seq, lay.head_dim)
    return Explanation(program, lay.heads, lay.kv_heads, lay.head_dim, seq, density, blocks, mask_needs,
                       program.parameter_shapes(lay.heads, lay.head_dim), program.requires(), training,
                       explain(program, q, k, needs_grad=training))


def part_doc(part: object) -> str:
    """What a part of a program means: the first line of its class's docstring ('' if it has none)."""
    cls = type(part)
    doc = getattr(part, "doc", None) or inspect.getdoc(cls) or ""  # a named rule has its own
    # dataclasses invent 'Name(field=...)' when a class has no docstring: not worth showing
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    # A trailing '(…)' is a citation or an aside; the meaning reads better without it.
    return re.sub(r"\s+\([^()]*\)\.?$", "", doc.splitlines()[0]).rstrip(".")
