"""Backends that run a program: the reference backend and the functional entry point."""

from attnlab.exec.api import BACKENDS, attention
from attnlab.exec.params import init_params
from attnlab.exec.reference import reference_attention

__all__ = ["BACKENDS", "attention", "init_params", "reference_attention"]
