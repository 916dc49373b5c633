"""A grid of settings, several seeds each: every run trained through `train()`, then the main
metric per setting as mean ± standard deviation, in a table, a plot and sweep.json.

A rerun of the same sweep continues it: finished runs are reused, a half-done one resumes."""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from attnlab.errors import AttnlabError, ConfigError
from attnlab.train.compare import COLUMNS, PERCENT, folder_name, format_metric, main_metric
from attnlab.train.config import Experiment, load_experiment, short, yaml_value

SWEEP_TAG, SETTING_TAG = "attnlab.sweep", "attnlab.setting"
_OPEN, _CLOSE, _QUOTES = "([{", ")]}", "'\""


def split_values(text: str) -> list[str]:
    """`text` cut at its top-level commas: those inside (), [], {} or quotes stay, so
    `mix({a}, {b})` and `rule(within, 2)` are one value each."""
    values, depth, quote, start = [], 0, None, 0
    for i, char in enumerate(text):
        if quote:
            quote = None if char == quote else quote
        elif char in _QUOTES:
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    values.append(text[start:])
    return [v.strip() for v in values]


def parse_grid(items: list[str]) -> dict[str, list]:
    """`--grid KEY=V1,V2,…` items as {key: [values]}, each value read as YAML like `--set`."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid takes KEY=V1,V2,… (e.g. model.heads=2,4,8), got {short(item)}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice: give all its values in one "
                              f"--grid {key}=V1,V2,…")
        if key == "train.seed":
            raise ConfigError("--grid train.seed: give --seeds N instead (seeds train.seed, "
                              "train.seed+1, …)")
        texts = split_values(raw)
        if not all(texts):
            raise ConfigError(f"--grid {key}: an empty value in {short(raw)}; give "
                              f"{key}=V1,V2,… with no empty value")
        grid[key] = [yaml_value(t, f"--grid {key}: the value {short(t)}") for t in texts]
    return grid


def settings(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def label(setting: dict[str, Any], digits: int | None = None) -> str:
    """`model.heads=4 attention=causal`: a setting as a person reads it ('base' for none);
    `digits` shortens floats (a tuner's 0.0036844060823428585 to 0.003684)."""
    return " ".join(f"{k}={_shown(v, digits)}" for k, v in setting.items()) or "base"


def _shown(value: Any, digits: int | None = None) -> str:
    if isinstance(value, float) and digits:
        return f"{value:.{digits}g}"
    return value if isinstance(value, str) else json.dumps(value)


def overrides_of(setting: dict[str, Any]) -> list[str]:
    """A setting as `--set` overrides (JSON is YAML, so each value reads back as it was)."""
    return [f"{k}={json.dumps(v)}" for k, v in setting.items()]


def sweep(experiment: str | Path | dict, grid: dict[str, list], seeds: int = 1,
          out: str | Path | None = None, overrides: list[str] = (), console: Console | None = None,
          tracking_uri: str | None = None, progress: bool = True) -> list[dict]:
    """Train `experiment` for every setting of `grid` with `seeds` seeds each (train.seed, +1,
    …) into OUT/<setting>/seed-<s>; print a table, write OUT/sweep.png and OUT/sweep.json;
    return one row per setting (its runs' metrics, mean and std of the main metric)."""
    from attnlab.train.run import train

    console = console or Console(highlight=False)
    plan = _plan(experiment, grid, seeds, list(overrides))  # every setting checked before training
    name = plan[0]["runs"][0]["experiment"].name
    out = Path(out) if out is not None else Path("runs") / f"sweep-{name}"
    total = sum(len(row["runs"]) for row in plan)
    done = 0
    for row in plan:
        for run in row["runs"]:
            done += 1
            folder = out / row["slug"] / f"seed-{run['seed']}"
            head = f"[bold]({done}/{total})[/] {escape(row['label'])} seed {run['seed']}"
            metrics = _finished(folder, run["experiment"])
            if metrics is not None:
                console.print(f"{head}: finished before, reused")
            else:
                resume = (folder / "experiment.yaml").exists()  # killed half way: continue it
                console.print(head + (": resuming where it stopped" if resume else ""))
                metrics = train(run["experiment"], folder, resume=resume, tracking_uri=tracking_uri,
                                progress=progress,
                                tags={SWEEP_TAG: out.name, SETTING_TAG: row["label"]})
            run.update(folder=str(folder), metrics=metrics)
    rows = [_summary(row) for row in plan]
    metric = rows[0]["main_metric"]
    console.print(_table(rows, list(grid), metric))
    chart = _plot(rows, out / "sweep.png", title=f"{name}: {COLUMNS.get(metric, metric)}",
                  metric=metric)
    (out / "sweep.json").write_text(json.dumps({"sweep": out.name, "experiment": name,
                                                "main_metric": metric, "grid": grid,
                                                "seeds": seeds, "settings": rows}, indent=2))
    console.print(f"wrote {escape(str(chart))} and {escape(str(out / 'sweep.json'))}")
    return rows


def _plan(experiment, grid: dict[str, list], seeds: int, overrides: list[str]) -> list[dict]:
    """Each setting with its runs' experiments, all loaded now: a value the experiment refuses
    in the ninth setting is an error before the first is trained."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"--seeds: give a number of seeds ≥ 1, got {short(seeds)}")
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"--grid {key}: give at least one value")
    plan, slugs, data = [], {}, {}
    for setting in settings(grid):
        text = label(setting)
        try:
            first = load_experiment(experiment, [*overrides, *overrides_of(setting)])
            runs = [{"seed": first.train.seed + i,
                     "experiment": load_experiment(experiment, [
                         *overrides, *overrides_of(setting), f"train.seed={first.train.seed + i}"])}
                    for i in range(seeds)]
        except AttnlabError as err:
            raise type(err)(f"sweep setting {text}: {err}") from None
        check_builds([runs[0]["experiment"]], f"sweep setting {text}", data)
        slug = folder_name(text)
        if slug in slugs:  # two settings whose words match (case, punctuation): keep both apart
            slug = f"{slug[:52]}-{hashlib.sha1(text.encode()).hexdigest()[:7]}"
        slugs[slug] = text
        plan.append({"setting": setting, "label": text, "slug": slug, "runs": runs})
    return plan


_SMALL = 8  # examples per split for the model-building check


def check_builds(experiments: list[Experiment], where: str, prepared: dict | None = None) -> None:
    """Build each experiment's model on a few examples of its task: what only building finds
    (heads that do not divide d_model, a model kind the task refuses) fails before any training.
    Pretrained models and priors are left to training (loading weights is not a quick check)."""
    from attnlab.tasks import task_of

    data = {} if prepared is None else prepared  # one task setting's examples, made once
    for exp in experiments:
        if exp.model.pretrained or exp.model.prior is not None:
            continue
        small = exp.model_copy(update={"task": exp.task.model_copy(update={
            "train_examples": _SMALL, "val_examples": _SMALL, "test_examples": _SMALL})})
        task = task_of(small.task)
        key = json.dumps(small.task.model_dump(mode="json"), sort_keys=True)
        try:
            if key not in data:
                data[key] = task.prepare(small).head(
                    {"train": _SMALL, "validation": _SMALL, "test": _SMALL}).train
            task.build_model(small, data[key])
        except AttnlabError as err:
            raise type(err)(f"{where}: {err}") from None


def _finished(folder: Path, exp: Experiment) -> dict | None:
    """The metrics of a finished run of `exp` in `folder` (its manifest vouching for every
    file), or None when it is still to train or to resume."""
    from attnlab.train.folder import verify
    from attnlab.train.run import differences

    if not (folder / "metrics.json").exists():
        return None
    try:
        verify(folder)
    except AttnlabError:
        return None  # a run killed between its last files: resuming finishes it
    saved = load_experiment(folder / "experiment.yaml")
    changes = differences(saved.model_dump(mode="json"), exp.model_dump(mode="json"))
    if changes:
        raise ConfigError(f"{folder} holds a run of another experiment ({'; '.join(changes[:3])}): "
                          f"rerun the sweep with the same file and options, or give another --out")
    return json.loads((folder / "metrics.json").read_text())


def _summary(row: dict) -> dict:
    metric = main_metric(row["runs"][0]["metrics"])[0]
    values = [run["metrics"][metric] for run in row["runs"]]
    return {"setting": row["setting"], "label": row["label"], "main_metric": metric,
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else None,  # sample std, n − 1
            "n": len(values),
            "train_seconds": statistics.fmean(r["metrics"]["train_seconds"] for r in row["runs"]),
            "runs": [{"seed": r["seed"], "folder": r["folder"], "metrics": r["metrics"]}
                     for r in row["runs"]]}


def _table(rows: list[dict], keys: list[str], metric: str) -> Table:
    table = Table(title="sweep", title_justify="left")
    for key in keys or ["setting"]:
        table.add_column(key, overflow="fold")
    for column in (f"{COLUMNS.get(metric, metric)} (mean ± std)", "n", "train seconds"):
        table.add_column(column, justify="right")
    for r in rows:
        cells = [_shown(r["setting"][k]) for k in keys] or [r["label"]]
        spread = "—" if r["std"] is None else format_metric(metric, r["std"])
        table.add_row(*(Text(c) for c in cells),  # programs and values printed literally
                      f"{format_metric(metric, r['mean'])} ± {spread}", str(r["n"]),
                      f"{r['train_seconds']:.1f}")
    return table


def _plot(rows: list[dict], path: Path, *, title: str, metric: str) -> Path:
    """The main metric per setting: the mean with the std as error bars, each seed a dot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 0.6 * len(rows) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    for i, r in enumerate(rows):
        seeds = [run["metrics"][metric] for run in r["runs"]]
        ax.scatter(seeds, [i] * len(seeds), color="#999999", s=14, zorder=2,
                   label="a seed" if i == 0 else None)
        ax.errorbar(r["mean"], i, xerr=r["std"] or 0, fmt="o", color="#3b6ea5", capsize=4,
                    zorder=3, label="mean ± std" if i == 0 else None)
    ax.set_yticks(range(len(rows)), [r["label"] for r in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first setting on top
    ax.set_xlabel(COLUMNS.get(metric, metric) + (" (0–100)" if metric in PERCENT else ""))
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
