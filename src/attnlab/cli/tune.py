"""`attnlab sweep` (a grid of settings, several seeds each) and `attnlab tune` (an Optuna study)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from attnlab.cli.train import check_writable

TRACKING_HELP = "MLflow tracking URI (default sqlite:///runs/mlflow.db)."


def sweep_command(
    experiment: Annotated[Path, typer.Argument(help="An experiment YAML file.")],
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="KEY=V1,V2,… (repeatable; the sweep is every combination). Values are read "
                       "as YAML and split at top-level commas, so mix({a}, {b}) is one value; "
                       "attention.w=4,8 fills the placeholder $w of the program.")] = None,
    seeds: Annotated[int, typer.Option(help="Runs per setting, with seeds train.seed, +1, ….")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key for every run: "
                                                   "train.lr=3e-4 (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the runs, sweep.png and sweep.json "
                                             "(default runs/sweep-NAME).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Train a grid of settings × seeds; the main metric per setting as mean ± std.

    Prints a table, writes OUT/sweep.png and OUT/sweep.json. Rerun the same command to continue
    a killed sweep: finished runs are reused, a half-done one resumes."""
    from attnlab.train.sweep import parse_grid, sweep

    parsed = parse_grid(grid or [])
    if out is not None:
        check_writable(out)
    sweep(experiment, parsed, seeds=seeds, out=out, overrides=set_ or [],
          console=Console(highlight=False), tracking_uri=tracking_uri)


def tune_command(
    experiment: Annotated[Path, typer.Argument(help="An experiment YAML file.")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="KEY=SPEC (repeatable), SPEC one of int(lo,hi), int(lo,hi,log), "
                        "int(lo,hi,step=k), float(lo,hi), float(lo,hi,log), choice(a,b,c); "
                        "attention.w=… tunes the placeholder $w of the program.")] = None,
    trials: Annotated[int, typer.Option(help="Finished (complete or pruned) trials the study "
                                        "should hold in all: a rerun or another process stops "
                                        "there.")] = 20,
    storage: Annotated[str | None, typer.Option(help="Optuna storage: sqlite:///PATH (default "
                                                "sqlite:///runs/optuna.db) or postgresql://… to "
                                                "share a study between machines.")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default the experiment's "
                                              "name).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a key for every "
                                                   "trial (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for trial-N runs, plots and tune.json "
                                             "(default runs/tune-STUDY).")] = None,
    seed: Annotated[int, typer.Option(help="The sampler's seed; give each process sharing a "
                                      "study its own.")] = 0,
    prune: Annotated[bool, typer.Option("--prune/--no-prune", help="Stop poor trials early "
                                        "(median pruner).")] = True,
    tracking_uri: Annotated[str | None, typer.Option(help=TRACKING_HELP)] = None,
) -> None:
    """Tune parameters with Optuna (TPE, median pruning) on the best validation score.

    Prints the trials and the best parameters, draws the history and the importances. Rerun to
    resume a killed study; several processes on one --storage share it."""
    import optuna

    from attnlab.errors import ConfigError
    from attnlab.train.tune import parse_params, tune

    params = parse_params(param or [])
    if not params:
        raise ConfigError('give the parameters to tune: --param "attention.w=int(4,64,log)"')
    if out is not None:
        check_writable(out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial says it
    tune(experiment, params, trials, storage=storage, study=study, out=out, overrides=set_ or [],
         seed=seed, prune=prune, console=Console(highlight=False), tracking_uri=tracking_uri)


def add_commands(app: typer.Typer) -> None:
    """Register `sweep` and `tune` on the root command."""
    app.command("sweep")(sweep_command)
    app.command("tune")(tune_command)
