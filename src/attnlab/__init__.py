"""attnlab: write an attention mechanism as a small program, run it, train it, look inside it."""

from attnlab import nn
from attnlab.errors import AttnlabError, InputError, SpecError
from attnlab.exec import Plan, attention, explain, init_params, plan
from attnlab.spec import Program, parse, zoo

__version__ = "0.1.0"
__all__ = ["AttnlabError", "InputError", "Plan", "Program", "SpecError", "attention", "explain",
           "init_params", "nn", "parse", "plan", "zoo"]
