"""Training: experiment files, the Lightning module, runs tracked with MLflow."""

from attnlab.train.config import Experiment, load_experiment

__all__ = ["Experiment", "load", "load_experiment", "train"]


def __getattr__(name: str):
    # Lightning and MLflow load only when training is asked for, not with the language.
    if name in ("train", "load"):
        from attnlab.train import run

        return getattr(run, name)
    raise AttributeError(name)
