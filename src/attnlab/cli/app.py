"""The `attnlab` command line: explain and draw programs, browse the zoo, the showcase, the demo, data sets.

attnlab's own errors print as one red `error:` message and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree
from typer.core import TyperGroup

import attnlab
from attnlab.cli import showcase
from attnlab.cli.bench import bench_app
from attnlab.cli.data import data_app
from attnlab.cli.train import (
    COMPARE_SETTINGS,
    compare_command,
    eval_command,
    predict_command,
    runs_command,
    train_command,
)
from attnlab.errors import AttnlabError, InputError
from attnlab.lang import EMPTY, FULL, PARTIAL, And, Mask, Not, Or, Program

_DEBUG_KEY = "attnlab.debug"
ERROR_EXIT = 2


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def report_error(err: AttnlabError) -> None:
    """`error: <first line>` then the rest (a caret display, say), in red, no traceback."""
    first, *rest = str(err).splitlines() or [type(err).__name__]
    console = _stderr()
    console.print(f"[bold red]error:[/] [red]{escape(first)}[/]", soft_wrap=True)
    for line in rest:
        # soft_wrap: a wrapped line would move the caret away from what it points at
        console.print(f"[red]{escape(line)}[/]", soft_wrap=True)


class _Group(TyperGroup):
    """The root command: turns AttnlabError into a message and exit code 2, unless --debug."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AttnlabError as err:
            if ctx.meta.get(_DEBUG_KEY):
                raise
            report_error(err)
            raise typer.Exit(ERROR_EXIT) from None


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="The attention programming workshop.")
program_app = typer.Typer(no_args_is_help=True, help="Explain and draw one attention program.")
app.add_typer(program_app, name="program")
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("predict")(predict_command)
app.command("runs")(runs_command)
app.command("compare", context_settings=COMPARE_SETTINGS)(compare_command)


def _version(value: bool) -> None:
    if value:
        _stdout().print(f"attnlab {attnlab.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for attnlab errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """The attention programming workshop."""
    ctx.meta[_DEBUG_KEY] = debug


def main() -> None:
    """Entry point of the `attnlab` script."""
    app(prog_name="attnlab")


# -- shared option handling ----------------------------------------------------------------------


def resolve_layout(program: Program, heads: int | None, kv_heads: int | None,
                   head_dim: int | None, *, default_heads: int,
                   default_head_dim: int) -> tuple[int, int, int]:
    """(heads, kv_heads, head_dim): the program's layout, else the options, else defaults."""
    lay = program.layout

    def pick(field: str, option: int | None, fixed: int | None, default: int) -> int:
        if option is not None and fixed is not None and option != fixed:
            raise InputError(f"the program says {field}({fixed}) but --{field.replace('_', '-')} "
                             f"is {option}; drop the option or change the program")
        return fixed or option or default

    h = pick("heads", heads, lay.heads, default_heads)
    kv = pick("kv_heads", kv_heads, lay.kv_heads, h)
    d = pick("head_dim", head_dim, lay.head_dim, default_head_dim)
    if h % kv:
        raise InputError(f"{kv} kv heads do not divide {h} query heads (GQA needs "
                         f"heads % kv_heads == 0)")
    return h, kv, d


# -- program explain --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockCounts:
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
    """Everything `program explain` reports about a program at one size."""

    program: Program
    heads: int
    kv_heads: int
    head_dim: int
    seq: int
    density: float | None  # None: the mask reads call-time inputs
    blocks: BlockCounts | None  # None: no mask, or it reads call-time inputs
    mask_needs: frozenset[str]
    parameters: dict[str, tuple[int, ...]]
    needs: frozenset[str]


def explain_program(program: Program, *, heads: int, kv_heads: int, head_dim: int, seq: int,
                    block: int) -> Explanation:
    """Gather the facts `program explain` shows; rendering is separate (`render_explanation`)."""
    mask = program.mask
    mask_needs = mask.requires() if mask is not None else frozenset()
    density = blocks = None
    if mask is None:
        density = 1.0
    elif not mask_needs:
        inp = showcase.mask_inputs(heads, seq)
        density = mask.density(inp)
        summary = mask.block_summary(inp, block)
        blocks = BlockCounts(summary.count(FULL), summary.count(PARTIAL), summary.count(EMPTY),
                             block)
    return Explanation(program, heads, kv_heads, head_dim, seq, density, blocks, mask_needs,
                       program.parameter_shapes(heads, head_dim), program.requires())


def render_explanation(ex: Explanation, console: Console) -> None:
    console.print(f"[bold]{escape(str(ex.program))}[/]", soft_wrap=True)
    console.print(program_tree(ex.program))
    console.print(facts_table(ex))


def _doc(part: object) -> str:
    """First docstring line of a part's class ('' when it has none of its own)."""
    cls = type(part)
    doc = inspect.getdoc(cls) or ""
    # dataclasses invent 'Name(field=...)' when a class has no docstring: not worth showing
    if not doc or doc.startswith(f"{cls.__name__}("):
        return ""
    # A trailing '(…)' is a citation or an aside; the tree stays readable without it.
    return re.sub(r"\s+\([^()]*\)\.?$", "", doc.splitlines()[0]).rstrip(".")


def _label(role: str, part: object) -> str:
    doc = _doc(part)
    text = f"[bold]{role}[/] {escape(str(part))}" if role else escape(str(part))
    return text + (f"  [dim]{escape(doc)}[/]" if doc else "")


def mask_tree(mask: Mask, node: Tree) -> None:
    """Add the mask expression under `node`: and/or/not nodes, leaves with their meaning."""
    if isinstance(mask, And | Or):
        branch = node.add(f"[magenta]{'and (&)' if isinstance(mask, And) else 'or (|)'}[/]")
        for child in mask.children:
            mask_tree(child, branch)
    elif isinstance(mask, Not):
        mask_tree(mask.child, node.add("[magenta]not (~)[/]"))
    else:
        node.add(_label("", mask))


def program_tree(program: Program) -> Tree:
    tree = Tree("[bold]program[/]")
    if program.approximation is not None:
        tree.add(_label("approximation", program.approximation) + "  [dim](replaces score and "
                 "normalizer)[/]")
    else:
        tree.add(_label("score", program.score))
    for mod in program.mods:
        tree.add(_label("mod", mod))
    if program.mask is None:
        tree.add("[bold]mask[/] none  [dim]every query sees every key[/]")
    else:
        mask_tree(program.mask, tree.add("[bold]mask[/]"))
    if program.approximation is None:
        tree.add(_label("normalizer", program.normalizer))
    options = " + ".join(map(str, program.layout.options())) or "from the tensors"
    tree.add(f"[bold]layout[/] {escape(options)}")
    tree.add(f"[bold]dropout[/] {program.dropout:g}" if program.dropout else "[bold]dropout[/] none")
    return tree


def _needs_text(needs: frozenset[str]) -> str:
    return ", ".join(showcase.CALL_ARGS.get(n, n) for n in sorted(needs))


def facts_table(ex: Explanation) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    group = ex.heads // ex.kv_heads
    kind = "MHA" if group == 1 else "MQA" if ex.kv_heads == 1 else f"GQA, groups of {group}"
    table.add_row("layout", f"{ex.heads} heads · {ex.kv_heads} kv heads ({kind}) · "
                            f"head_dim {ex.head_dim}")
    if ex.density is None:
        density = f"depends on call-time inputs: {_needs_text(ex.mask_needs)}"
    else:
        density = f"{ex.density:.4f}" + (" (no mask)" if ex.program.mask is None else "")
    table.add_row(f"density (seq {ex.seq})", density)
    table.add_row(f"blocks ({ex.blocks.block}×{ex.blocks.block})" if ex.blocks else "blocks",
                  _blocks_text(ex))
    table.add_row("learnable", _params_text(ex.parameters))
    table.add_row("call-time inputs", _needs_text(ex.needs) if ex.needs else "none")
    return table


def _blocks_text(ex: Explanation) -> str:
    if ex.program.mask is None:
        return "no mask: every block is computed"
    b = ex.blocks
    if b is None:
        return f"depends on call-time inputs: {_needs_text(ex.mask_needs)}"
    return (f"{b.empty} empty of {b.total} → {b.skippable:.1%} skippable "
            f"({b.full} full, {b.partial} partial)")


def _params_text(shapes: dict[str, tuple[int, ...]]) -> str:
    if not shapes:
        return "nothing (a fixed program)"
    count = sum(torch.Size(s).numel() for s in shapes.values())
    lines = [f"{name} {tuple(shape)}" for name, shape in shapes.items()]
    return "\n".join(lines) + f"\n{count:,} parameters"


Heads = Annotated[int | None, typer.Option(min=1, help="Query heads (default: the program's, "
                                                      "else 8 for explain, 4 for show).")]
HeadDim = Annotated[int | None, typer.Option(min=1, help="Head size (default: the program's, "
                                                        "else 64 for explain, 16 for show).")]
ProgramArg = Annotated[str, typer.Argument(help="A program string, or zoo:NAME.")]


@program_app.command("explain")
def explain_command(
    program: ProgramArg,
    heads: Heads = None,
    kv_heads: Annotated[int | None, typer.Option(min=1, help="Key/value heads (GQA).")] = None,
    head_dim: HeadDim = None,
    seq: Annotated[int, typer.Option(min=1, help="Sequence length for density.")] = 1024,
    block: Annotated[int, typer.Option(min=1, help="Block size for the block summary.")] = 128,
    train: Annotated[bool, typer.Option("--train", help="Plan for training (gradients needed) "
                                        "rather than inference.")] = False,
) -> None:
    """Parse a program and say what it computes, how sparse it is, what it needs, and which
    backend the planner would run it on."""
    parsed = attnlab.parse(program)
    h, kv, d = resolve_layout(parsed, heads, kv_heads, head_dim, default_heads=8,
                              default_head_dim=64)
    ex = explain_program(parsed, heads=h, kv_heads=kv, head_dim=d, seq=seq, block=block)
    console = _stdout()
    render_explanation(ex, console)
    # torch.empty never touches its pages: planning a long sequence costs no memory.
    q, k = torch.empty(1, h, seq, d), torch.empty(1, kv, seq, d)
    console.print(f"\n[bold]plan ({'training' if train else 'inference'})[/]")
    console.print(escape(attnlab.explain(parsed, q, k, needs_grad=train)), soft_wrap=True)


# -- program show -----------------------------------------------------------------------------------


@program_app.command("show")
def show_command(
    program: ProgramArg,
    seq: Annotated[int, typer.Option(min=1, help="Queries and keys (N = M).")] = 64,
    out: Annotated[Path, typer.Option(help="Where to write the mask PNG.")] = Path("mask.png"),
    weights: Annotated[bool, typer.Option("--weights", help="Also draw attention weights on "
                                          "random q, k, v (<out>-weights.png).")] = False,
    heads: Heads = None,
    head_dim: HeadDim = None,
    seed: Annotated[int, typer.Option(help="Seed for q, k, v and demo inputs.")] = 0,
) -> None:
    """Draw a program's mask, and with --weights its attention weights, as PNGs."""
    from attnlab.inspect.pictures import draw_mask, draw_weights

    parsed = attnlab.parse(program)
    h, kv, d = resolve_layout(parsed, heads, None, head_dim, default_heads=4, default_head_dim=16)
    console = _stdout()
    call_inputs, notes = showcase.demo_call_inputs(parsed, seq, seed)
    for note in notes:
        console.print(f"demo input  {escape(note)}")
    visible = showcase.visible_mask(parsed, showcase.mask_inputs(h, seq, call_inputs))
    written = [draw_mask(visible, out, title=showcase.wrap_program(str(parsed), 60))]
    if weights:
        q, k, v = showcase.random_qkv(h, kv, seq, d, seed)
        params = attnlab.init_params(parsed, h, d, seed=seed)
        with torch.no_grad():
            _, w = attnlab.attention(q, k, v, parsed, params=params, backend="reference",
                                     return_weights=True, **call_inputs)
        panels, titles = showcase.head_group_panels(w[0], kv)
        if kv > len(titles):
            console.print(f"showing the first {len(titles)} of {kv} head groups")
        path = out.with_name(f"{out.stem}-weights.png")
        written.append(draw_weights(panels, path, titles=titles, mask=visible,
                                    suptitle=f"{showcase.wrap_program(str(parsed), 64)}\n"
                                             f"seq {seq}, seed {seed}"))
    for path in written:
        console.print(f"wrote {escape(str(path))}", soft_wrap=True)


# -- zoo and demo --------------------------------------------------------------------------------


@app.command("zoo")
def zoo_command(
    name: Annotated[str | None, typer.Argument(help="One entry to show in full.")] = None,
) -> None:
    """List the catalogue of named programs, or show one of them."""
    console = _stdout()
    if name is None:
        table = Table(title="attnlab zoo: use a name as zoo:NAME anywhere a program goes",
                      title_justify="left")
        table.add_column("name", style="bold cyan", no_wrap=True)
        table.add_column("program")
        table.add_column("description")
        for entry_name in attnlab.zoo:
            entry = attnlab.zoo.entry(entry_name)
            table.add_row(entry_name, escape(entry.text), escape(entry.description))
        console.print(table)
        return
    entry = attnlab.zoo.entry(name)
    console.print(f"[bold cyan]{escape(entry.name)}[/]  {escape(entry.description)}",
                  soft_wrap=True)
    console.print(f"  as written  {escape(entry.text)}", soft_wrap=True)
    console.print(f"  canonical   {escape(str(entry.program))}", soft_wrap=True)


@app.command("showcase")
def showcase_command(
    out: Annotated[Path, typer.Option(help="Folder for the pictures.")] = Path("out/showcase"),
    seq: Annotated[int, typer.Option(min=16, help="Sequence length for masks and the run.")] = 1024,
    seed: Annotated[int, typer.Option(help="Seed for q, k, v.")] = 0,
) -> None:
    """Explain, run and draw three catalogue programs: longformer, bigbird, entmax-local."""
    showcase.run_showcase(out, _stdout(), seq=seq, seed=seed)


@app.command("demo")
def demo_command(
    out: Annotated[Path, typer.Option(help="Folder for the runs and report.html.")] = Path(
        "out/demo"),
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default "
                                                     "sqlite:///runs/mlflow.db).")] = None,
) -> None:
    """Train MQAR with three programs side by side; write OUT/report.html (what `make demo` runs)."""
    from attnlab.train.demo import run_demo

    run_demo(out, _stdout(), tracking_uri=tracking_uri)


if __name__ == "__main__":
    main()
