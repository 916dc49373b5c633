"""Backends that run a program — reference, sdpa, flex, tiled, linear — and the planner."""

from attnlab.exec.api import attention
from attnlab.exec.frozen import freeze
from attnlab.exec.params import init_params
from attnlab.exec.planner import BACKENDS, Plan, Planner, explain, plan
from attnlab.exec.reference import reference_attention

__all__ = ["BACKENDS", "Plan", "Planner", "attention", "explain", "freeze", "init_params", "plan",
           "reference_attention"]
