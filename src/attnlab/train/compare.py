"""One experiment, several attention programs: a table and a bar chart of the main metric."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.console import Console
from rich.table import Table

from attnlab.spec.program import parse
from attnlab.train.config import load_experiment
from attnlab.train.run import train


def compare(experiment: str | Path | dict, programs: list[str], out: str | Path, *,
            overrides: list[str] = (), console: Console | None = None,
            tracking_uri: str | None = None) -> list[dict]:
    """Train `experiment` (a YAML file or its dict) once per program, each run under
    OUT/<slug>; print a table, write OUT/compare.png and OUT/compare.json; return the rows."""
    console = console or Console(highlight=False)
    out = Path(out)
    rows = []
    for i, text in enumerate(programs, 1):
        canonical = str(parse(text))
        console.print(f"[bold]({i}/{len(programs)})[/] {canonical}")
        exp = load_experiment(experiment, [*overrides, f"attention={json.dumps(text)}"])
        metrics = train(exp, out / _slug(canonical), tracking_uri=tracking_uri)
        rows.append({"program": canonical, **metrics})
    console.print(_table(rows))
    chart = bar_chart(rows, out / "compare.png", title=f"{exp.name}: test accuracy")
    (out / "compare.json").write_text(json.dumps(rows, indent=2))
    console.print(f"wrote {chart} and {out / 'compare.json'}")
    return rows


OPTIONAL = {"test_f1": "test f1", "test_macro_f1": "macro f1"}  # shown when the runs report them


def _table(rows: list[dict]) -> Table:
    extra = [k for k in OPTIONAL if all(k in r for r in rows)]
    table = Table(title="comparison", title_justify="left")
    for column in ("program", "test accuracy", *(OPTIONAL[k] for k in extra), "train seconds",
                   "params"):
        table.add_column(column, justify="left" if column == "program" else "right")
    for r in rows:
        table.add_row(r["program"], f"{r['test_accuracy']:.4f}", *(f"{r[k]:.4f}" for k in extra),
                      f"{r['train_seconds']:.0f}", f"{r['params']:,}")
    return table


def bar_chart(rows: list[dict], path: Path, *, title: str) -> Path:
    """Test accuracy per program as a horizontal bar chart PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.6 * len(rows) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    labels = [r["program"] for r in rows]
    values = [r["test_accuracy"] for r in rows]
    bars = ax.barh(range(len(rows)), values, color="#3b6ea5")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("test accuracy")
    ax.set_title(title)
    ax.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]
