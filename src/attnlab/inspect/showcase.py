"""Programs run and drawn on demo inputs: one program's mask and weights (``draw_program``), and the
showcase, three catalogue programs explained, run and drawn (``Showcase``).

Everything here is seeded, so two runs give the same numbers (timings aside) and the same pictures.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnlab.errors import ConfigError
from attnlab.exec import attention, init_params, memory
from attnlab.lang import MaskInputs, Program, parse, zoo

MAX_PANELS = 8

# -- demo tensors and call-time inputs -----------------------------------------------------------


def random_qkv(heads: int, kv_heads: int, seq: int, head_dim: int, seed: int, *,
               requires_grad: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded standard-normal q (1, heads, seq, d) and k, v (1, kv_heads, seq, d)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, seq, head_dim, generator=gen)
    k, v = (torch.randn(1, kv_heads, seq, head_dim, generator=gen) for _ in range(2))
    return tuple(t.requires_grad_(requires_grad) for t in (q, k, v))


def demo_call_inputs(program: Program, seq: int, seed: int) -> tuple[dict[str, Tensor], list[str]]:
    """Plausible call-time inputs for whatever the program reads, and a note for each."""
    kwargs: dict[str, Tensor] = {}
    notes: list[str] = []
    needs = program.requires()
    if "segments" in needs:
        kwargs["segments"] = (torch.arange(seq) >= seq // 2).long().unsqueeze(0)
        notes.append(f"segments: two documents of {seq // 2} and {seq - seq // 2} tokens")
    if "key_padding" in needs:
        length = max(1, 3 * seq // 4)
        kwargs["key_lengths"] = torch.tensor([length])
        notes.append(f"key_lengths: {length} real keys of {seq} (the rest is padding)")
    if "graph" in needs:
        gen = torch.Generator().manual_seed(seed)
        adjacency = (torch.rand(1, seq, seq, generator=gen) < 0.1) | torch.eye(seq, dtype=torch.bool)
        kwargs["graph"] = adjacency
        notes.append(f"graph: random adjacency (p = 0.1, seed {seed}) with self loops")
    if "distances" in needs:
        positions = torch.arange(seq)
        kwargs["distances"] = (positions[:, None] - positions[None, :]).abs().unsqueeze(0)
        notes.append("distances: a path graph, |i − j| hops from token i to token j")
    if "bias" in needs:
        kwargs["bias"] = torch.zeros(1, 1, seq, seq)
        notes.append("bias: zeros")
    return kwargs, notes


def mask_inputs(heads: int, seq: int, call_inputs: dict[str, Tensor] | None = None) -> MaskInputs:
    """MaskInputs for one batch row of self-attention, with whatever mask data was given."""
    data = {k: v for k, v in (call_inputs or {}).items() if k != "bias"}
    return MaskInputs.build(1, heads, seq, seq, **data)


# Per drawn cell: the bool mask, and the float copies the plotting library makes of it.
PICTURE_BYTES_PER_CELL = 1 + 2 * 4


def require_picture_fits(seq: int, weight_heads: int = 0) -> None:
    """InputError, before anything is built, when a seq × seq picture (with weights of
    `weight_heads` heads on the reference backend) would not fit in memory."""
    need = seq * seq * (PICTURE_BYTES_PER_CELL + weight_heads * PICTURE_BYTES_PER_CELL)
    need += memory.reference_bytes(1, weight_heads, seq, seq, torch.float32)
    memory.require_fit(need, "cpu", f"drawing {seq}×{seq} positions",
                       "use a smaller --seq (a picture shows a few thousand positions at most)")


def visible_mask(program: Program, inp: MaskInputs) -> Tensor:
    """The (N, M) mask of batch row 0, head 0."""
    return program.visible(inp)[0, 0]


def wrap_program(text: str, width: int = 48) -> str:
    """A program string broken between sections so that it fits a figure title."""
    lines: list[str] = []
    for section in text.split(" ; "):
        if lines and len(lines[-1]) + 3 + len(section) <= width:
            lines[-1] += " ; " + section
        else:
            lines.append(section)
    return " ;\n".join(lines)


def head_group_panels(weights: Tensor, kv_heads: int,
                      limit: int = MAX_PANELS) -> tuple[Tensor, list[str]]:
    """Mean weights of each group of query heads sharing a kv head: (G, N, M) and titles.

    Heads are grouped as GQA repeats kv heads (query head i reads kv head i // group), so with
    no GQA every head is its own group. At most `limit` groups, the first ones, are returned.
    """
    heads, n, m = weights.shape
    group = heads // kv_heads
    panels = weights.reshape(kv_heads, group, n, m).mean(dim=1)[:limit]
    titles = [f"head {g}" if group == 1 else f"heads {g * group}–{(g + 1) * group - 1}"
              for g in range(panels.shape[0])]
    return panels, titles


# -- one program ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drawing:
    """What ``draw_program`` wrote, and the demo inputs it made up."""

    files: list[Path]
    notes: list[str]  # one per made-up call-time input
    groups_drawn: int  # head groups in the weights picture (0 without one)
    kv_heads: int  # of which there are this many


def draw_program(program: Program | str, out: Path, *, seq: int = 64, weights: bool = False,
                 heads: int | None = None, head_dim: int | None = None, seed: int = 0) -> Drawing:
    """Draw the program's mask at ``seq`` to ``out`` (PNG), and with ``weights`` its attention weights on
    seeded random q, k, v to ``<out>-weights.png``; call-time inputs are made up (``Drawing.notes``).
    The layout is the program's, else the one given, else 4 heads of 16."""
    from attnlab.inspect.pictures import draw_mask, draw_weights

    program = parse(program)
    out = Path(out)
    lay = program.layout.resolve(heads=heads, head_dim=head_dim, default_heads=4, default_head_dim=16)
    require_picture_fits(seq, lay.heads if weights else 0)
    call_inputs, notes = demo_call_inputs(program, seq, seed)
    visible = visible_mask(program, mask_inputs(lay.heads, seq, call_inputs))
    files = [draw_mask(visible, out, title=wrap_program(str(program), 60))]
    if not weights:
        return Drawing(files, notes, 0, lay.kv_heads)
    q, k, v = random_qkv(lay.heads, lay.kv_heads, seq, lay.head_dim, seed)
    params = init_params(program, lay.heads, lay.head_dim, seed=seed)
    with torch.no_grad():
        _, w = attention(q, k, v, program, params=params, backend="reference", return_weights=True,
                         **call_inputs)
    panels, titles = head_group_panels(w[0], lay.kv_heads)
    files.append(draw_weights(panels, out.with_name(f"{out.stem}-weights.png"), titles=titles,
                              mask=visible, suptitle=f"{wrap_program(str(program), 64)}\n"
                                                     f"seq {seq}, seed {seed}"))
    return Drawing(files, notes, len(titles), lay.kv_heads)


# -- the showcase --------------------------------------------------------------------------------

SHOWCASE_PROGRAMS = ("longformer", "bigbird", "entmax-local")


@dataclass(frozen=True)
class ShowcaseRun:
    """What running one catalogue program told us."""

    name: str  # in the catalogue; also the stem of its pictures' names
    program: Program
    description: str
    density: float
    skippable: float
    out_shape: tuple[int, ...]
    seconds: float
    zero_fraction: float  # of all weights
    zero_inside_mask: float  # of the weights the mask leaves visible: the normalizer's zeros
    max_error: float  # max |out - weights @ v|


@dataclass(frozen=True)
class Showcase:
    """Catalogue programs run forward and backward on the reference backend and drawn, at one size.

    Masks are measured and drawn at ``seq`` in ``block``-sized tiles; weights are drawn at the small
    ``weights_seq``, where a picture still shows single pairs.
    """

    names: tuple[str, ...] = SHOWCASE_PROGRAMS
    seq: int = 1024
    weights_seq: int = 64
    heads: int = 4
    head_dim: int = 32
    block: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        for field in ("seq", "weights_seq", "heads", "head_dim", "block"):
            if getattr(self, field) < 1:
                raise ConfigError(f"Showcase {field} must be ≥ 1, got {getattr(self, field)}")
        require_picture_fits(self.seq, self.heads)  # it runs and draws every mask at seq
        require_picture_fits(self.weights_seq, self.heads)

    def programs(self) -> dict[str, Program]:
        return {name: zoo[name] for name in self.names}

    def run(self, on_run: Callable[[ShowcaseRun], None] | None = None) -> list[ShowcaseRun]:
        """Run each program once, timed; ``on_run`` hears each result as it comes."""
        _warm_up()
        runs = []
        for name, program in self.programs().items():
            runs.append(self._run_one(name, program))
            if on_run is not None:
                on_run(runs[-1])
        return runs

    def draw(self, out_dir: Path) -> list[Path]:
        """``masks.png`` (all masks side by side), then ``<name>-mask.png`` and ``<name>-weights.png``
        for each program; the files written."""
        from attnlab.inspect.pictures import draw_masks

        out_dir = Path(out_dir)
        programs = self.programs()
        inp = mask_inputs(self.heads, self.seq)
        files = [draw_masks([(name, visible_mask(p, inp)) for name, p in programs.items()],
                            out_dir / "masks.png",
                            suptitle=f"{len(programs)} attention programs at seq {self.seq}")]
        for name, program in programs.items():
            files += self._draw_one(name, program, out_dir)
        return files

    def _run_one(self, name: str, program: Program) -> ShowcaseRun:
        """Mask facts, then one timed forward + backward pass."""
        inp = mask_inputs(self.heads, self.seq)
        if program.mask is None:
            density, skippable = 1.0, 0.0
        else:
            density = program.mask.density(inp)
            skippable = program.mask.block_summary(inp, self.block).fraction_skippable
        q, k, v = random_qkv(self.heads, self.heads, self.seq, self.head_dim, self.seed,
                             requires_grad=True)
        params = init_params(program, self.heads, self.head_dim, seed=self.seed)
        start = time.perf_counter()
        out, weights = attention(q, k, v, program, params=params, backend="reference",
                                 return_weights=True)
        out.square().mean().backward()
        seconds = time.perf_counter() - start
        with torch.no_grad():
            zeros = weights == 0
            visible = visible_mask(program, inp).expand_as(weights)
            inside = zeros[visible].float().mean().item() if visible.any() else 0.0
            error = (out - weights @ v).abs().max().item()
        return ShowcaseRun(name, program, zoo.description(name), density, skippable, tuple(out.shape),
                           seconds, zeros.float().mean().item(), inside, error)

    def _draw_one(self, name: str, program: Program, out_dir: Path) -> list[Path]:
        from attnlab.inspect.pictures import draw_mask, draw_weights

        mask_path = draw_mask(visible_mask(program, mask_inputs(self.heads, self.seq)),
                              out_dir / f"{name}-mask.png", title=f"{name} (seq {self.seq})")
        small = mask_inputs(self.heads, self.weights_seq)
        q, k, v = random_qkv(self.heads, self.heads, self.weights_seq, self.head_dim, self.seed)
        params = init_params(program, self.heads, self.head_dim, seed=self.seed)
        with torch.no_grad():
            _, weights = attention(q, k, v, program, params=params, backend="reference",
                                   return_weights=True)
        panels, titles = head_group_panels(weights[0], self.heads)
        weights_path = draw_weights(panels, out_dir / f"{name}-weights.png", titles=titles,
                                    suptitle=f"{name}: weights at seq {self.weights_seq}",
                                    mask=visible_mask(program, small))
        return [mask_path, weights_path]


def _warm_up() -> None:
    # The first autograd pass pays one-time setup; keep it out of the first program's timing.
    q, k, v = random_qkv(1, 1, 8, 8, 0, requires_grad=True)
    attention(q, k, v, "scaled_dot ; causal ; softmax").sum().backward()
