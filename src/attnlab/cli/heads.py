"""`attnlab heads RUN`: which heads of a trained run matter, and how many can go."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from attnlab.cli.text import literal


def heads_command(
    run: Annotated[Path, typer.Argument(help="A run's output folder.")],
    split: Annotated[str, typer.Option(help="test (saved with the run) or validation (re-read "
                                       "from the data set with the run's encoders).")] = "test",
    out: Annotated[Path | None, typer.Option(help="Folder for heads.json and pruning.png "
                                             "(default out/heads/RUN).")] = None,
    examples: Annotated[int | None, typer.Option(min=1, help="Only the first N examples of "
                                                 "the split.")] = None,
) -> None:
    """Head importance (Michel et al. 2019), the main metric with each head masked, and the
    pruning curve: heads removed least important first against the main metric."""
    from attnlab.cli.train import check_writable
    from attnlab.inspect.heads import heads_report, pruning_plot
    from attnlab.train.compare import COLUMNS, PERCENT, format_metric

    out = out or Path("out/heads") / run.name
    check_writable(out)
    console = Console(highlight=False)
    report = heads_report(run, split, examples, progress=True)
    label = COLUMNS.get(report.metric, report.metric).removeprefix("test ")  # either split
    tolerance = 1.0 if report.metric in PERCENT else 0.01  # one point: of 100, or of 100%
    kept = report.removable(tolerance)

    table = Table(title=literal(f"{run.name}: heads on {report.examples} {split} examples ({label} "
                                f"{format_metric(report.metric, report.score)} with every head)"),
                  title_justify="left")
    for column in ("layer", "head", "importance", f"{label} without it", "drop"):
        # a layer's name is folded, never cut: a pretrained model's differ only at their end
        table.add_column(column, **({"overflow": "fold"} if column == "layer" else {"justify": "right"}))
    for h in report.heads:
        table.add_row(literal(h.layer), str(h.head), f"{h.importance:.4f}",
                      format_metric(report.metric, h.without), format_metric(report.metric, h.drop))
    console.print(table)

    (out / "heads.json").write_text(json.dumps(
        {"run": str(run), **report.as_dict(), "tolerance": tolerance, "removable": kept}, indent=2))
    pruning_plot(report, out / "pruning.png", tolerance, label,
                 f"{run.name}: pruning heads least important first ({split})")
    console.print(f"{kept} of {len(report.order)} heads can be removed at ≤ 1 point loss ({label} "
                  f"{format_metric(report.metric, report.score)} → "
                  f"{format_metric(report.metric, report.curve[kept])})")
    console.print(literal(f"wrote {out / 'heads.json'} and {out / 'pruning.png'}"), soft_wrap=True)
