"""One experiment, several attention programs: a table and a bar chart of the main metric
(accuracy; BLEU for translation; NDCG@10 for recommendation)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnlab.lang.program import parse
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
        console.print(f"[bold]({i}/{len(programs)})[/] {escape(canonical)}")
        exp = load_experiment(experiment, [*overrides, f"attention={json.dumps(text)}"])
        metrics = train(exp, out / folder_name(canonical), tracking_uri=tracking_uri)
        rows.append({**metrics, "program": canonical})
    console.print(_table(rows))
    name, label = main_metric(rows[0])
    chart = bar_chart(rows, out / "compare.png", title=f"{exp.name}: {label}", metric=name)
    (out / "compare.json").write_text(json.dumps(rows, indent=2))
    # the paths are the user's: a '[' in them is text, not markup
    console.print(f"wrote {escape(str(chart))} and {escape(str(out / 'compare.json'))}")
    return rows


# What a comparison shows, in this order, when every run reports it; a run's main metric is the one
# its task names (a translation's token accuracy is teacher-forced: BLEU says more).
COLUMNS = {"test_bleu": "BLEU", "test_chrf": "chrF", "test_aer": "AER", "test_copy_bleu": "copy BLEU",
           "test_copy_chrf": "copy chrF", "test_ndcg10": "NDCG@10", "test_hr10": "HR@10",
           "test_popular_ndcg10": "popular NDCG@10", "test_popular_hr10": "popular HR@10",
           "test_accuracy": "test accuracy", "test_f1": "test f1", "test_macro_f1": "macro f1",
           "test_majority_rate": "majority"}
# The score of a trivial predictor beside each main metric: the commonest class, copying the
# source, ranking by popularity.
BASELINES = {"test_accuracy": "test_majority_rate", "test_bleu": "test_copy_bleu",
             "test_chrf": "test_copy_chrf", "test_ndcg10": "test_popular_ndcg10",
             "test_hr10": "test_popular_hr10"}
PERCENT = ("test_bleu", "test_chrf", "test_copy_bleu", "test_copy_chrf")  # sacreBLEU's 0–100 scale


def main_metric(metrics: dict) -> tuple[str, str]:
    """The key of a run's main metric (its task's `main_metric`) and its label."""
    name = metrics.get("main_metric", "test_accuracy")
    return name, COLUMNS.get(name, name)


def _table(rows: list[dict]) -> Table:
    main = main_metric(rows[0])[0]
    shown = [k for k in COLUMNS if all(k in r for r in rows)
             and not (k == "test_accuracy" and main != k)]
    # the attention objectives' test values (`objectives:` in the experiment file)
    shown += [k for k in objective_columns(rows[0]) if all(k in r for r in rows)]
    table = Table(title="comparison", title_justify="left")
    for column in ("program", *(COLUMNS.get(k, k.removeprefix("test_")) for k in shown),
                   "train seconds", "params"):
        table.add_column(column, justify="left" if column == "program" else "right")
    for r in rows:
        table.add_row(r["program"], *(format_metric(k, r[k]) for k in shown),
                      f"{r['train_seconds']:.0f}", f"{r['params']:,}")
    return table


def objective_columns(metrics: dict) -> list[str]:
    """The test values of a run's attention objectives (metrics.json's `objectives`)."""
    return [f"test_{name}" for name in metrics.get("objectives", [])]


def format_metric(name: str, value: float) -> str:
    return f"{value:.2f}" if name in PERCENT else f"{value:.4f}"


def bar_chart(rows: list[dict], path: Path, *, title: str, metric: str = "test_accuracy") -> Path:
    """One metric per program as a horizontal bar chart PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.6 * len(rows) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    labels = [r["program"] for r in rows]
    values = [r[metric] for r in rows]
    bars = ax.barh(range(len(rows)), values, color="#3b6ea5")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.2 + 1 if metric in PERCENT else 1.05)  # room for the labels
    ax.set_xlabel(COLUMNS[metric])
    ax.set_title(title)
    ax.bar_label(bars, fmt="%.2f" if metric in PERCENT else "%.3f", padding=3, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def folder_name(text: str) -> str:
    """A folder name for a program: its words, and when they are cut short, a hash of the whole
    text, so that two long programs never share a folder."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if len(slug) <= 60:
        return slug
    return f"{slug[:52]}-{hashlib.sha1(text.encode()).hexdigest()[:7]}"
