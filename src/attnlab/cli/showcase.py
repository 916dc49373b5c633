"""`attnlab showcase`: print and list what `attnlab.inspect.showcase.Showcase` runs and draws."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnlab.inspect.showcase import Showcase, ShowcaseRun


def showcase_command(
    out: Annotated[Path, typer.Option(help="Folder for the pictures.")] = Path("out/showcase"),
    seq: Annotated[int, typer.Option(min=16, help="Sequence length for masks and the run.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed for q, k, v.")] = 0,
) -> None:
    """Explain, run and draw three catalogue programs: longformer, bigbird, entmax-local."""
    console = Console(highlight=False)
    showcase = Showcase(seq=seq, seed=seed)
    console.print(f"[bold]attnlab showcase[/]: {len(showcase.names)} programs at seq {seq}, reference "
                  f"backend, B=1 H={showcase.heads} D={showcase.head_dim}, seed {seed}\n", soft_wrap=True)
    runs = showcase.run(on_run=lambda run: _print_brief(console, run, showcase.block))
    console.print(_summary_table(runs, seq))
    files = showcase.draw(out)
    console.print("\n[bold]files written[/]")
    for path in files:
        console.print(f"  {escape(str(path))}", soft_wrap=True)


def _print_brief(console: Console, run: ShowcaseRun, block: int) -> None:
    console.print(f"[bold cyan]{escape(run.name)}[/]  {escape(run.description)}", soft_wrap=True)
    console.print(f"  {escape(str(run.program))}", soft_wrap=True, highlight=False)
    console.print(f"  mask density {run.density:.4f} · {run.skippable:.1%} of {block}×{block} "
                  f"blocks skippable\n")


def _summary_table(runs: list[ShowcaseRun], seq: int) -> Table:
    shape = "×".join(map(str, runs[0].out_shape))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0),
                  title_justify="left", caption_justify="left",
                  title=f"forward + backward at seq {seq}, output {shape}",
                  caption="zeros: weights that are exactly 0; in mask: zeros among the pairs the "
                          "mask leaves visible (the normalizer's own)")
    for header in ("program", "density", "skip", "fwd+bwd", "zeros", "in mask", "|out−w@v|"):
        table.add_column(header, justify="left" if header == "program" else "right",
                         no_wrap=True)
    for run in runs:
        error = "0" if run.max_error == 0 else f"{run.max_error:.1e}"
        table.add_row(escape(run.name), f"{run.density:.3f}", f"{run.skippable:.0%}",
                      f"{run.seconds * 1000:.0f} ms", f"{run.zero_fraction:.1%}",
                      f"{run.zero_inside_mask:.1%}", error)
    return table
