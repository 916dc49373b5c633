"""`attnlab train`: run an experiment file, tracked in MLflow, with resumable checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


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
    metrics = train(exp, out, resume=resume, tracking_uri=tracking_uri, devices=devices)
    Console(highlight=False).print_json(json.dumps(metrics))
