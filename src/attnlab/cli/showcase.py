"""`attnlab showcase` (three catalogue programs run and drawn), and the demo tensors and
inputs the CLI feeds programs.

Everything here is seeded, so two runs print the same numbers (timings aside) and draw the
same pictures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import Tensor

import attnlab
from attnlab.lang import MaskInputs, Program

MAX_PANELS = 8
# How each call-time need is spelt at the `attnlab.attention` call.
CALL_ARGS = {"segments": "segments=", "key_padding": "key_lengths= or key_padding_mask=",
             "graph": "graph=", "bias": "bias="}


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
    if "bias" in needs:
        kwargs["bias"] = torch.zeros(1, 1, seq, seq)
        notes.append("bias: zeros")
    return kwargs, notes


def mask_inputs(heads: int, seq: int, call_inputs: dict[str, Tensor] | None = None) -> MaskInputs:
    """MaskInputs for one batch row of self-attention, with whatever mask data was given."""
    data = {k: v for k, v in (call_inputs or {}).items() if k != "bias"}
    return MaskInputs.build(1, heads, seq, seq, **data)


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


# -- the showcase --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShowcaseProgram:
    stem: str  # file names
    title: str
    program: Program
    description: str


@dataclass(frozen=True)
class ShowcaseRun:
    """What running one program told us."""

    density: float
    skippable: float
    out_shape: tuple[int, ...]
    seconds: float
    zero_fraction: float  # of all weights
    zero_inside_mask: float  # of the weights the mask leaves visible: the normalizer's zeros
    max_error: float  # max |out - weights @ v|


SHOWCASE_PROGRAMS = ("longformer", "bigbird", "entmax-local")


def showcase_programs() -> list[ShowcaseProgram]:
    return [ShowcaseProgram(name, name, attnlab.zoo[name], attnlab.zoo.description(name))
            for name in SHOWCASE_PROGRAMS]


def run_program(program: Program, *, seq: int, heads: int, head_dim: int, block: int,
                seed: int) -> ShowcaseRun:
    """Mask facts, then one timed forward + backward pass on the reference backend."""
    inp = mask_inputs(heads, seq)
    if program.mask is None:
        density, skippable = 1.0, 0.0
    else:
        density = program.mask.density(inp)
        skippable = program.mask.block_summary(inp, block).fraction_skippable
    q, k, v = random_qkv(heads, heads, seq, head_dim, seed, requires_grad=True)
    params = attnlab.init_params(program, heads, head_dim, seed=seed)
    start = time.perf_counter()
    out, weights = attnlab.attention(q, k, v, program, params=params, backend="reference",
                                     return_weights=True)
    out.square().mean().backward()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        zeros = weights == 0
        visible = visible_mask(program, inp).expand_as(weights)
        inside = zeros[visible].float().mean().item() if visible.any() else 0.0
        error = (out - weights @ v).abs().max().item()
    return ShowcaseRun(density, skippable, tuple(out.shape), seconds, zeros.float().mean().item(),
                   inside, error)


def draw_program(item: ShowcaseProgram, out_dir: Path, *, seq: int, weights_seq: int, heads: int,
                 head_dim: int, seed: int) -> list[Path]:
    """`<stem>-mask.png` at seq and `<stem>-weights.png` at the small weights_seq."""
    from attnlab.inspect.pictures import draw_mask, draw_weights

    program = item.program
    mask_path = draw_mask(visible_mask(program, mask_inputs(heads, seq)),
                          out_dir / f"{item.stem}-mask.png", title=f"{item.title} (seq {seq})")
    small = mask_inputs(heads, weights_seq)
    q, k, v = random_qkv(heads, heads, weights_seq, head_dim, seed)
    params = attnlab.init_params(program, heads, head_dim, seed=seed)
    with torch.no_grad():
        _, weights = attnlab.attention(q, k, v, program, params=params, backend="reference",
                                       return_weights=True)
    panels, titles = head_group_panels(weights[0], heads)
    weights_path = draw_weights(panels, out_dir / f"{item.stem}-weights.png", titles=titles,
                                suptitle=f"{item.title}: weights at seq {weights_seq}",
                                mask=visible_mask(program, small))
    return [mask_path, weights_path]


def run_showcase(out_dir: Path, console: Console, *, seq: int = 1024, weights_seq: int = 64,
             heads: int = 4, head_dim: int = 32, block: int = 32, seed: int = 0) -> list[Path]:
    """Explain, run and draw the three showcase programs; return the files written."""
    from attnlab.inspect.pictures import draw_masks

    items = showcase_programs()
    console.print(f"[bold]attnlab showcase[/]: {len(items)} programs at seq {seq}, reference backend, "
                  f"B=1 H={heads} D={head_dim}, seed {seed}\n", soft_wrap=True)
    _warm_up()
    runs = []
    for item in items:
        run = run_program(item.program, seq=seq, heads=heads, head_dim=head_dim, block=block,
                          seed=seed)
        runs.append(run)
        _print_brief(console, item, run, block)

    console.print(_summary_table(items, runs, seq))
    out_dir = Path(out_dir)
    files = [draw_masks([(f"{i.title}", visible_mask(i.program, mask_inputs(heads, seq)))
                         for i in items], out_dir / "masks.png",
                        suptitle=f"three attention programs at seq {seq}")]
    for item in items:
        files += draw_program(item, out_dir, seq=seq, weights_seq=weights_seq, heads=heads,
                              head_dim=head_dim, seed=seed)
    console.print("\n[bold]files written[/]")
    for path in files:
        console.print(f"  {escape(str(path))}", soft_wrap=True)
    return files


def _warm_up() -> None:
    # The first autograd pass pays one-time setup; keep it out of the first program's timing.
    q, k, v = random_qkv(1, 1, 8, 8, 0, requires_grad=True)
    attnlab.attention(q, k, v, "scaled_dot ; causal ; softmax").sum().backward()


def _print_brief(console: Console, item: ShowcaseProgram, run: ShowcaseRun, block: int) -> None:
    console.print(f"[bold cyan]{escape(item.title)}[/]  {escape(item.description)}", soft_wrap=True)
    console.print(f"  {escape(str(item.program))}", soft_wrap=True, highlight=False)
    console.print(f"  mask density {run.density:.4f} · {run.skippable:.1%} of {block}×{block} "
                  f"blocks skippable\n")


def _summary_table(items: list[ShowcaseProgram], runs: list[ShowcaseRun], seq: int) -> Table:
    shape = "×".join(map(str, runs[0].out_shape))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0),
                  title_justify="left", caption_justify="left",
                  title=f"forward + backward at seq {seq}, output {shape}",
                  caption="zeros: weights that are exactly 0; in mask: zeros among the pairs the "
                          "mask leaves visible (the normalizer's own)")
    for header in ("program", "density", "skip", "fwd+bwd", "zeros", "in mask", "|out−w@v|"):
        table.add_column(header, justify="left" if header == "program" else "right",
                         no_wrap=True)
    for item, run in zip(items, runs, strict=True):
        error = "0" if run.max_error == 0 else f"{run.max_error:.1e}"
        table.add_row(escape(item.title), f"{run.density:.3f}", f"{run.skippable:.0%}",
                      f"{run.seconds * 1000:.0f} ms", f"{run.zero_fraction:.1%}",
                      f"{run.zero_inside_mask:.1%}", error)
    return table
