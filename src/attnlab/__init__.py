"""attnlab: write an attention mechanism as a small program, run it, train it, look inside it."""

from attnlab import nn
from attnlab.errors import (
    AttnlabError,
    ConfigError,
    DataError,
    InputError,
    ProgramError,
    RunFolderError,
)
from attnlab.exec import Plan, Planner, attention, explain, freeze, init_params, plan
from attnlab.lang import Program, parse, zoo
from attnlab.nn.recorder import record
from attnlab.priors import rules as _rules  # noqa: F401  registers the built-in named rules

__version__ = "0.1.0"
__all__ = ["AttnlabError", "ConfigError", "DataError", "InputError", "Plan", "Planner", "Program",
           "ProgramError", "RunFolderError", "attention", "data", "explain", "freeze", "init_params",
           "load", "models", "nn", "parse", "plan", "record", "tasks", "zoo"]


def __getattr__(name: str):
    # Models, tasks and training load on first use: `import attnlab` stays light (no Lightning).
    if name in ("models", "data", "tasks", "train"):
        import importlib

        return importlib.import_module(f"attnlab.{name}")
    if name == "load":
        from attnlab.train.run import load

        return load
    raise AttributeError(f"module 'attnlab' has no attribute '{name}'")
