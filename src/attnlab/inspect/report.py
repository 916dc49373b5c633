"""One self-contained HTML page for a comparison of attention programs: a table of the runs,
the accuracy chart, each program's mask and, when given, what each trained program attends to.
Images are embedded, so the file can be mailed, attached to a run or opened from anywhere
without the folder beside it."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em;
       color: #1d2430; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.lede { color: #4a5565; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { padding: .3em .8em; border-bottom: 1px solid #dde1e6; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td code { font-size: .95em; }
.best { font-weight: 600; }
img { max-width: 100%; }
.masks { display: flex; flex-wrap: wrap; gap: 1em; }
.masks figure { margin: 0; flex: 1 1 280px; }
figcaption { font-size: .85em; color: #4a5565; }
pre { background: #f5f6f8; padding: .8em; overflow-x: auto; font-size: .85em; }
footer { margin-top: 2em; font-size: .8em; color: #6b7480; }
"""


@dataclass(frozen=True)
class ReportEntry:
    """One program's row: its canonical text, the run's metrics and its mask picture."""

    program: str
    metrics: dict
    mask_png: Path
    density: float  # fraction of (query, key) pairs the mask leaves visible


@dataclass(frozen=True)
class AttentionSection:
    """What the trained programs attend to: a paragraph, a table and one picture per program."""

    text: str
    header: list[str]
    rows: list[list[str]]  # cells as they are shown; the first is the program
    figures: list[tuple[str, Path]]  # (program, PNG)


def write_report(path: str | Path, *, title: str, lede: str, entries: list[ReportEntry],
                 chart_png: Path, experiment_yaml: str, footer: str = "",
                 attention: AttentionSection | None = None) -> Path:
    """Write the report to `path` and return it."""
    best = max(e.metrics["test_accuracy"] for e in entries)
    rows = "\n".join(_row(e, best) for e in entries)
    masks = "\n".join(
        f'<figure><img alt="mask of {html.escape(e.program)}" src="{_data_uri(e.mask_png)}">'
        f"<figcaption><code>{html.escape(e.program)}</code> — density {e.density:.3f}"
        "</figcaption></figure>" for e in entries)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="lede">{html.escape(lede)}</p>
<h2>Results</h2>
<table>
<tr><th>program</th><th>test accuracy</th><th>test loss</th><th>train seconds</th>
<th>params</th><th>mask density</th></tr>
{rows}
</table>
<img alt="test accuracy per program" src="{_data_uri(chart_png)}">
<h2>What each program lets a query see</h2>
<div class="masks">
{masks}
</div>
{_attention(attention) if attention is not None else ""}
<h2>Experiment</h2>
<pre>{html.escape(experiment_yaml)}</pre>
<footer>{html.escape(footer)}</footer>
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def _attention(section: AttentionSection) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in section.header)
    rows = "\n".join("<tr><td><code>" + html.escape(cells[0]) + "</code></td>"
                     + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:]) + "</tr>"
                     for cells in section.rows)
    figures = "\n".join(
        f'<figure><img alt="attention of {html.escape(program)}" src="{_data_uri(png)}">'
        f"<figcaption><code>{html.escape(program)}</code></figcaption></figure>"
        for program, png in section.figures)
    return f"""<h2 id="attention">What each program attends to</h2>
<p>{html.escape(section.text)}</p>
<table>
<tr>{head}</tr>
{rows}
</table>
{figures}"""


def _row(e: ReportEntry, best: float) -> str:
    m = e.metrics
    cls = ' class="best"' if m["test_accuracy"] == best else ""
    return (f"<tr{cls}><td><code>{html.escape(e.program)}</code></td>"
            f"<td>{m['test_accuracy']:.4f}</td><td>{m['test_loss']:.3f}</td>"
            f"<td>{m['train_seconds']:.0f}</td><td>{m['params']:,}</td><td>{e.density:.3f}</td></tr>")


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")
