"""`attnlab inspect faithfulness RUN`: how far a classifier's attention maps can be trusted, by
erasing what they rank highest (ERASER comprehensiveness and sufficiency), beside random."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnlab.errors import ConfigError

MARKS = {"better than random": "✓", "no better than random": "~", "no better than random (worse)": "✗"}


def faithfulness_command(
    run: Annotated[Path, typer.Argument(help="A trained text or image classification run.")],
    examples: Annotated[int | None, typer.Option(min=1, help="Only the first N test examples "
                                                 "(default: the whole test split).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random rankings and the bootstrap.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the results here as JSON.")] = None,
) -> None:
    """Erase each test example's top 1, 5, 10, 20% of tokens or patches by raw attention,
    rollout, gradient × attention and random; print comprehensiveness and sufficiency (ERASER)
    and which importances do no better than random."""
    from attnlab.inspect.faithfulness import faithfulness

    console = Console(highlight=False)
    found = faithfulness(run, examples=examples, seed=seed, progress=True)
    console.print(table(found))
    console.print("✓ better than random · ~ no better than random · ✗ worse than random (paired "
                  "with random example by example, 95% bootstrap CI); sufficiency: lower is better")
    for entry in found["importances"].values():
        if "verdict" in entry:
            console.print(f"• {escape(entry['verdict'])}", soft_wrap=True)
    console.print(f"erasing: {found['erasing']}; gradient {found['gradient']}; random: mean of "
                  f"{found['random_draws']} seeded draws; {found['seconds']} s", soft_wrap=True)
    if out is not None:
        try:
            out.write_text(json.dumps(found, indent=2, ensure_ascii=False))
        except OSError as e:
            raise ConfigError(f"cannot write {out}: {e.strerror}") from None
        console.print(f"wrote {escape(str(out))}", soft_wrap=True)


def table(found: dict) -> Table:
    """Rows: importances; columns: comprehensiveness then sufficiency at each k and AOPC, each
    non-random cell marked by how it compares with random."""
    columns = [str(k) for k in found["ks"]] + ["aopc"]
    skipped = f", {found['skipped']} without a unit skipped" if found["skipped"] else ""
    result = Table(title=f"faithfulness of {escape(found['run'])}: {found['examples']} test "
                         f"examples{skipped}", title_justify="left")
    result.add_column("importance", style="bold")
    for measure in ("comp", "suff"):
        for column in columns:
            result.add_column(f"{measure} {column if column == 'aopc' else column + '%'}",
                              justify="right")
    for entry in found["importances"].values():
        cells = []
        for measure in ("comprehensiveness", "sufficiency"):
            for column in columns:
                compared = entry.get(f"{measure}_vs_random", {}).get(column)
                mark = f" {MARKS[compared['verdict']]}" if compared else "  "
                cells.append(f"{entry[measure][column]:.3f}{mark}")
        result.add_row(entry["label"], *cells)
    return result
