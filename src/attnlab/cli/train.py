"""`attnlab train`: run an experiment file, tracked in MLflow, with resumable checkpoints."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from attnlab.cli.text import literal
from attnlab.errors import ConfigError


def train_command(
    experiment: Annotated[Path, typer.Argument(help="An experiment YAML file.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key: "
                                                   "train.lr=3e-4 (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/NAME).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.ckpt.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default "
                                                     "sqlite:///runs/mlflow.db).")] = None,
    devices: Annotated[int | None, typer.Option(min=1, help="Processes for DDP (gloo on CPU).")]
    = None,
) -> None:
    """Train one experiment; writes OUT/metrics.json and the best checkpoint."""
    from attnlab.train import load_experiment, train

    exp = load_experiment(experiment, set_ or [])
    out = out or Path("runs") / exp.name
    check_writable(out)
    metrics = train(exp, out, resume=resume, tracking_uri=tracking_uri, devices=devices)
    Console(highlight=False).print_json(json.dumps(metrics))


def eval_command(
    out: Annotated[Path, typer.Argument(help="A run's output folder.")],
    task: Annotated[str | None, typer.Option(help="Evaluate on another task's test split "
                                             "(same parameters).")] = None,
    measure: Annotated[list[str] | None, typer.Option(
        help="An attention objective to measure on the test split, over every layer and head: "
             "entropy, sparsity, head_diversity, z_loss, supervise (repeatable).")] = None,
) -> None:
    """Test scores of a trained run on its test split (or another task's): accuracy, and F1,
    BLEU or HR@10 where the task reports them; with --measure, attention statistics."""
    from attnlab.train.run import evaluate

    Console(highlight=False).print_json(json.dumps(evaluate(out, task=task, measure=measure or [])))


def predict_command(
    out: Annotated[Path, typer.Argument(help="A run's output folder (trained on a real data set).")],
    inputs: Annotated[list[str], typer.Argument(
        help="Texts to classify or translate; image files (PNG, JPEG) for an image run; .npy "
             "frame files for a frames run; for a recommender, a user's item ids, oldest first.")],
    k: Annotated[int, typer.Option(min=1, help="Recommendations to list.")] = 10,
) -> None:
    """Run a trained model on new input: each text's (image's, utterance's) label and its
    probability, each text's translation, or the items to recommend after a history."""
    from attnlab.tasks import task_of
    from attnlab.train.config import load_experiment
    from attnlab.train.run import load

    model = load(out)
    console = Console(highlight=False)
    exp = load_experiment(out / "experiment.yaml")
    # the inputs, labels and titles are the user's and the data's: printed as written
    task_of(exp.task).print_predictions(
        model, inputs, exp, lambda text: console.print(literal(text), soft_wrap=True), k=k)


def runs_command(
    experiment: Annotated[str | None, typer.Option(help="Only runs of this experiment.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (default "
                                                     "sqlite:///runs/mlflow.db).")] = None,
    ui: Annotated[bool, typer.Option("--ui", help="Open MLflow's web UI on the store instead "
                                     "(needs pip install 'attnlab[ui]').")] = False,
    port: Annotated[int, typer.Option(min=1, max=65535, help="The web UI's port.")] = 5000,
) -> None:
    """The tracked runs: status, program, what differs between them (the settings that are not
    the same in every listed run), main metric, time and folder. A run whose process is gone
    without finishing is marked killed."""
    from rich.table import Table
    from rich.text import Text

    from attnlab.train.tracking import list_runs

    if ui:
        return _web_ui(tracking_uri, port)
    rows = list_runs(experiment, tracking_uri)
    columns = ["experiment", "run", "status", "program",
               *(["differs"] if any(r.get("differs") for r in rows) else []),
               "score", "test_accuracy",
               *(["objectives"] if any(r.get("objectives") for r in rows) else []),
               "train_seconds", "params", "started", "folder"]
    if csv:
        print(",".join(columns))
        for r in rows:
            print(",".join(_csv_cell(r.get(c)) for c in columns))
        return
    table = Table(title=f"{len(rows)} runs", title_justify="left")
    headers = {"score": "main metric", "test_accuracy": "accuracy", "train_seconds": "seconds"}
    for c in columns:
        if c in ("program", "objectives", "differs", "folder"):  # folds, never loses its end
            table.add_column(c, overflow="fold", ratio=1, min_width=16 if c == "folder" else 24)
        else:
            table.add_column(headers.get(c, c), no_wrap=True, justify="right" if c in (
                "test_accuracy", "train_seconds", "params") else "left")
    for r in rows:
        # finished, running, killed (its process is gone) or failed
        cells = {**r, "status": r["status"].lower(), "started": r["started"][5:],  # month-day h:m
                 "folder": _near(r.get("folder"))}
        table.add_row(*(Text(_fmt(cells.get(c))) for c in columns))  # names and programs literally
    # piped output is not squeezed to rich's 80-column default
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)


def _web_ui(tracking_uri: str | None, port: int) -> None:
    from attnlab.train.tracking import web_ui

    process, url = web_ui(tracking_uri, port=port)
    Console(highlight=False, stderr=True).print(f"MLflow UI on {url} (Ctrl-C stops it)")
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=30)


def _near(folder: str | None) -> str | None:
    """A run's folder relative to here when it is below here: short enough to read in a table."""
    if folder is None:
        return None
    try:
        return str(Path(folder).relative_to(Path.cwd()))
    except ValueError:
        return folder


COMPARE_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def compare_command(
    ctx: typer.Context,
    experiment: Annotated[Path, typer.Argument(help="An experiment YAML file.")],
    programs: Annotated[bool, typer.Option("--programs", help='Followed by the programs: '
                                           '--programs "causal" "causal & window(8)" …')] = False,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for runs, table and chart.")] = Path(
        "out/compare"),
) -> None:
    """Train one experiment once per program; print a table and write a bar chart PNG."""
    from attnlab.errors import InputError
    from attnlab.train.compare import compare

    # click options take a fixed number of values; the programs are the words after --programs
    texts = list(ctx.args)
    if not programs or not texts:
        raise InputError('give the programs to compare: --programs "causal" "causal & window(8)"')
    check_writable(out)
    compare(experiment, texts, out, overrides=set_ or [], console=Console(highlight=False))


def check_writable(folder: Path) -> None:
    """Make `folder` and write a file in it now, so that a bad --out is one line before any
    data is read or a minute is trained."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ConfigError(f"--out {folder}: cannot write there ({getattr(e, 'strerror', None) or e}); "
                          "give a folder you can write") from None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:.1f}"
    return "" if value is None else str(value)


def _csv_cell(value) -> str:
    text = _fmt(value)
    return f'"{text}"' if "," in text or ";" in text else text
