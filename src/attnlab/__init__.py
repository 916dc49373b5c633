"""attnlab: write an attention mechanism as a small program, run it, train it, look inside it."""

from attnlab import nn
from attnlab.errors import AttnlabError, InputError, SpecError
from attnlab.exec import attention, init_params
from attnlab.spec import Program, parse, zoo

__version__ = "0.1.0"
__all__ = ["AttnlabError", "InputError", "Program", "SpecError", "attention", "init_params",
           "nn", "parse", "zoo"]
