"""The `attnlab` command line: explain and draw programs, browse the zoo, the showcase, the demo, data sets.

attnlab's own errors print as one red `error:` message and exit 2; `--debug` shows the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

import attnlab
from attnlab.cli.bench import bench_app
from attnlab.cli.data import data_app
from attnlab.cli.program import program_app
from attnlab.cli.showcase import showcase_command
from attnlab.cli.train import (
    COMPARE_SETTINGS,
    compare_command,
    eval_command,
    predict_command,
    runs_command,
    train_command,
)
from attnlab.errors import AttnlabError

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


# -- zoo, showcase, demo ------------------------------------------------------------------------


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


app.command("showcase")(showcase_command)  # after zoo: --help lists commands as registered


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
