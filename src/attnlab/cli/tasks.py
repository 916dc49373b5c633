"""`attnlab tasks`: every task an experiment can name (generated, real data sets, your own files),
with its kind, options and their defaults (`attnlab.tasks.named_tasks` gathers them; this prints)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from attnlab.cli.bench import table_console


def tasks_command(
    kind: Annotated[str | None, typer.Option("--kind", help="Only tasks of this kind "
                                             "(text-classification, translation, …).")] = None,
) -> None:
    """Every task an experiment's task.name can take: kind, options (task.params) with their
    defaults, and what it is."""
    from attnlab.tasks import named_tasks

    table = Table(title="attnlab tasks: task: {name: NAME, params: {OPTION: VALUE}} in an experiment",
                  title_justify="left")
    table.add_column("name", style="bold cyan", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("options (defaults)")
    table.add_column("summary")
    for task in named_tasks(kind):
        options = [f"{key} (required)" for key in task.required]
        options += [f"{key}={_shown(value)}" for key, value in task.options.items()
                    if key not in task.required]
        table.add_row(task.name, task.kind, task.origin, escape(", ".join(options)), escape(task.summary))
    table_console().print(table)


def _shown(value: Any) -> str:
    """A default as an experiment file writes it: null, true, a number, a bare word."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
