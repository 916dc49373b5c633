"""`attnlab program explain|show`: print what `attnlab.inspect.explain` finds about a program, or
the pictures `attnlab.inspect.showcase.draw_program` draws of it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from attnlab.cli.text import literal
from attnlab.inspect.explain import CALL_ARGS, Explanation, explain_program, part_doc
from attnlab.inspect.showcase import draw_program
from attnlab.lang import And, Mask, Not, Or, Program

program_app = typer.Typer(no_args_is_help=True, help="Explain and draw one attention program.")

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
    ex = explain_program(program, heads=heads, kv_heads=kv_heads, head_dim=head_dim, seq=seq,
                         block=block, training=train)
    console = Console(highlight=False)
    console.print(f"[bold]{escape(str(ex.program))}[/]", soft_wrap=True)
    console.print(program_tree(ex.program))
    console.print(facts_table(ex))
    console.print(f"\n[bold]plan ({'training' if ex.training else 'inference'})[/]")
    console.print(escape(ex.plan), soft_wrap=True)


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
    drawing = draw_program(program, out, seq=seq, weights=weights, heads=heads, head_dim=head_dim,
                           seed=seed)
    console = Console(highlight=False)
    for note in drawing.notes:
        console.print(f"demo input  {escape(note)}")
    if weights and drawing.kv_heads > drawing.groups_drawn:
        console.print(f"showing the first {drawing.groups_drawn} of {drawing.kv_heads} head groups")
    for path in drawing.files:
        console.print(Text("wrote ").append(literal(str(path))), soft_wrap=True)


# -- rendering ------------------------------------------------------------------------------------


def _label(role: str, part: object) -> str:
    doc = part_doc(part)
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
    if program.components:
        tree = Tree("[bold]program[/]")
        node = tree.add(_label("combinator", program.combinator))
        for i, component in enumerate(program.components):
            node.add(_plain_tree(component, f"[bold]component {i}[/]"))
        _options(program, tree)
        return tree
    tree = _plain_tree(program, "[bold]program[/]")
    _options(program, tree)
    return tree


def _options(program: Program, tree: Tree) -> None:
    options = " + ".join(map(str, program.layout.options())) or "from the tensors"
    tree.add(f"[bold]layout[/] {escape(options)}")
    if program.output_gate is not None:
        tree.add(_label("output gate", program.output_gate))
    if program.dropout:
        tree.add(f"[bold]dropout[/] {program.dropout:g}")


def _plain_tree(program: Program, title: str) -> Tree:
    tree = Tree(title)
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
    return tree


def _needs_text(needs: frozenset[str]) -> str:
    return ", ".join(CALL_ARGS.get(n, n) for n in sorted(needs))


def facts_table(ex: Explanation) -> Table:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("layout", f"{ex.heads} heads · {ex.kv_heads} kv heads ({ex.head_sharing}) · "
                            f"head_dim {ex.head_dim}")
    if ex.density is None:
        density = f"depends on call-time inputs: {_needs_text(ex.mask_needs)}"
    else:
        unmasked = ex.program.mask is None and not ex.program.components
        density = f"{ex.density:.4f}" + (" (no mask)" if unmasked else "")
    table.add_row(f"density (seq {ex.seq})", density)
    table.add_row(f"blocks ({ex.blocks.block}×{ex.blocks.block})" if ex.blocks else "blocks",
                  _blocks_text(ex))
    table.add_row("learnable", _params_text(ex))
    table.add_row("call-time inputs", _needs_text(ex.needs) if ex.needs else "none")
    return table


def _blocks_text(ex: Explanation) -> str:
    if ex.program.components:
        return "per component: see the plan"
    if ex.program.mask is None:
        return "no mask: every block is computed"
    b = ex.blocks
    if b is None:
        return f"depends on call-time inputs: {_needs_text(ex.mask_needs)}"
    return (f"{b.empty} empty of {b.total} → {b.skippable:.1%} skippable "
            f"({b.full} full, {b.partial} partial)")


def _params_text(ex: Explanation) -> str:
    if not ex.parameters:
        return "nothing (a fixed program)"
    lines = [f"{name} {tuple(shape)}" for name, shape in ex.parameters.items()]
    return "\n".join(lines) + f"\n{ex.parameter_count:,} parameters"
