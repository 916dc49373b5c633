"""`attnlab inspect`: look inside a trained run. `attnlab inspect RUN …` writes the view of one
input (the `view` command); other inspect commands register on `inspect_app` by name, e.g.
`inspect_app.command("faithfulness")(faithfulness_command)`, and a first word that names one
of them runs it instead."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

DEFAULT = "view"  # what `attnlab inspect RUN …` runs


class _ViewUnlessNamed(TyperGroup):
    """Routes `inspect RUN …` to the view command, unless its first word is a registered
    subcommand (or help)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [DEFAULT, *args]
        return super().parse_args(ctx, args)


inspect_app = typer.Typer(cls=_ViewUnlessNamed, no_args_is_help=True, add_completion=False,
                          help="Look inside a trained run. `attnlab inspect RUN \"text\"` is "
                               "`attnlab inspect view RUN \"text\"`.")


@inspect_app.command(DEFAULT)
def view_command(
    run: Annotated[Path, typer.Argument(help="A trained run's folder.")],
    text: Annotated[str | None, typer.Argument(help="The input to look at (text, token ids, or "
                                               "item ids, as the run's task reads).")] = None,
    example: Annotated[int | None, typer.Option(help="Look at test example N instead.")] = None,
    image: Annotated[Path | None, typer.Option(help="Image runs: a .png or .jpg file (made as the "
                                               "run's training images were: size, colour, pixel "
                                               "scale; shown in grey) or .npy (raw pixels, as the "
                                               "data set has them).")] = None,
    layer: Annotated[int | None, typer.Option(help="The attention layer to open on and draw in the "
                                              "PNG, 0 = the model's first (default: the last "
                                              "cross-attention, else the last).")] = None,
    head: Annotated[int | None, typer.Option(help="The head to open on (the PNG draws only it).")] = None,
    out: Annotated[Path, typer.Option(help="The view: .html, or .png for the matplotlib picture "
                                      "only.")] = Path("view.html"),
    png: Annotated[bool, typer.Option("--png", help="Also write the PNG beside the HTML.")] = False,
    top: Annotated[int, typer.Option(min=1, help="Weights kept per query row.")] = 24,
) -> None:
    """Write one self-contained HTML view (no network) of what each head attends to."""
    from attnlab.inspect.views import inspect_run, write_html, write_png

    console = Console(highlight=False)
    started = time.perf_counter()
    view = inspect_run(run, text=text, example=example, image=image, top=top)
    written = []
    if out.suffix.lower() != ".png":
        path, said = write_html(view, out, layer, head)
        written.append(f"wrote {escape(str(path))} ({said})")
    if png or out.suffix.lower() == ".png":
        picture = write_png(view, out.with_suffix(".png"), layer, head)
        written.append(f"wrote {escape(str(picture))}")
    console.print(escape(view.inspection.title), soft_wrap=True)
    for line in written:
        console.print(line, soft_wrap=True)
    console.print(f"in {time.perf_counter() - started:.1f} s")



from attnlab.cli.faithfulness import faithfulness_command  # noqa: E402  (registers after the view)

inspect_app.command("faithfulness")(faithfulness_command)
