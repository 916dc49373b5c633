"""Benchmarks: attnlab's planner against the attention a user would otherwise write, each
configuration measured in its own process."""

from attnlab.bench.kernels import DEFAULT, QUICK, Case, Measure, Target, Verdict, select
from attnlab.bench.runner import Report, Settings, run_cases

__all__ = ["DEFAULT", "QUICK", "Case", "Measure", "Report", "Settings", "Target", "Verdict",
           "run_cases", "select"]
