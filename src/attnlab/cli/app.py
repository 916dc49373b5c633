"""The `attnlab` command line: explain and draw programs, browse the zoo, the showcase, the demo, data sets.

attnlab's own errors and mistakes in the command line itself print as one red `error:` message and
exit 2; anything else (a bug) as one `error:` line and exit 1; `--debug` shows the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

import attnlab
from attnlab.cli.bench import bench_app
from attnlab.cli.data import data_app
from attnlab.cli.export import export_command
from attnlab.cli.heads import heads_command
from attnlab.cli.inspect import inspect_app
from attnlab.cli.program import program_app
from attnlab.cli.serve import serve_command
from attnlab.cli.showcase import showcase_command
from attnlab.cli.studio import studio_command
from attnlab.cli.tasks import tasks_command
from attnlab.cli.text import shown
from attnlab.cli.train import (
    COMPARE_SETTINGS,
    compare_command,
    eval_command,
    predict_command,
    runs_command,
    train_command,
)
from attnlab.cli.tune import add_commands as add_tuning_commands
from attnlab.errors import AttnlabError

_DEBUG_KEY = "attnlab.debug"
ERROR_EXIT = 2
BUG_EXIT = 1


def _stdout() -> Console:
    return Console(highlight=False)


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def report_error(err: Exception | str) -> None:
    """`error: <first line>` then the rest (a caret display, say), in red, no traceback. The
    message quotes what the person typed, so it is printed literally."""
    first, *rest = str(err).splitlines() or [type(err).__name__]
    console = _stderr()
    # soft_wrap: a wrapped line would move the caret away from what it points at
    console.print(Text.assemble(("error:", "bold red"), " ", (shown(first), "red")), soft_wrap=True)
    for line in rest:
        console.print(Text(shown(line), style="red"), soft_wrap=True)


def _usage_error(err: Any) -> typer.Exit:
    """A mistake in the command line itself (an unknown option, a value out of range) as one
    `error:` line like any other, with where to find the right usage."""
    ctx = getattr(err, "ctx", None)
    hint = f"\nsee: {ctx.command_path} --help" if ctx is not None else ""
    report_error(err.format_message() + hint)
    return typer.Exit(ERROR_EXIT)


def _failure(ctx: Any, err: Exception) -> typer.Exit:
    """Anything not attnlab's own error is a bug: still one line, never a traceback, unless
    --debug (which re-raises)."""
    if ctx.meta.get(_DEBUG_KEY):
        raise err
    if isinstance(err, AttnlabError):
        report_error(err)
        return typer.Exit(ERROR_EXIT)
    report_error(f"attnlab failed unexpectedly ({type(err).__name__}: {err}); this is a bug: "
                 f"rerun with --debug for the traceback and report it")
    return typer.Exit(BUG_EXIT)


# Ways of ending a command that are not errors (exits, --help, --version, an interrupted
# prompt), and mistakes in the command line; typer ≥ 0.20 carries its own copy of click.
_ENDINGS = (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort)
_COMMAND_LINE_MISTAKES = (click.ClickException, getattr(typer, "TyperException", click.ClickException))


def _is_ending(err: Exception) -> bool:
    # showing the help when no arguments are given is a usage "error" by class only
    return isinstance(err, _ENDINGS) or type(err).__name__ == "NoArgsIsHelpError"


class _Group(TyperGroup):
    """The root command: turns every error into one `error:` line and exit code 2 (1 for a bug),
    unless --debug."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().make_context(*args, **kwargs)
        except _COMMAND_LINE_MISTAKES as err:  # a bad option of the root command itself
            if _is_ending(err):
                raise
            raise _usage_error(err) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:  # the one place every failure is reported
            if _is_ending(err):
                raise
            if isinstance(err, _COMMAND_LINE_MISTAKES):
                raise _usage_error(err) from None
            raise _failure(ctx, err) from None


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="The attention programming workshop.")
app.add_typer(program_app, name="program")
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")
app.command("tasks")(tasks_command)
app.add_typer(inspect_app, name="inspect")
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("predict")(predict_command)
app.command("runs")(runs_command)
app.command("compare", context_settings=COMPARE_SETTINGS)(compare_command)
app.command("heads")(heads_command)
add_tuning_commands(app)  # sweep, tune
app.command("export")(export_command)
app.command("serve")(serve_command)
app.command("studio")(studio_command)


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
