"""Programs made of programs, and the options that act on a layer's output.

A combinator (`mix`, `diff`) holds whole programs, its components, written in braces:
`mix({scaled_dot ; causal ; softmax}, {causal & window(64) ; softmax}, gate=token) ; heads(8)`.
Each component runs on its own fast backend; the combinator says how their outputs meet.
`output_gate` and `route` are options of any program: they act on the heads' outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from attnlab.lang.base import Part, require, show
from attnlab.lang.layout import Option

GATES = ("static", "layer", "token")
MAX_COMPONENTS = 8


class Combinator(Part):
    """How the outputs of a layer's component programs combine."""

    kind = "combinator"
    arity: ClassVar[tuple[int, int]]  # fewest and most components
    own_queries: ClassVar[bool] = False  # each component gets its own queries and keys


@dataclass(frozen=True)
class Mix(Combinator):
    """A learned allocation between programs: out = Σ_c g_c · attention_c(q, k, v), with the gate
    weights g softmax-normalised over the components. `gate`: `static` (fixed, equal),
    `layer` (learned, one vector per head of the layer) or `token` (computed per head from each
    query's input by a linear map: MoA's per-token routing between mechanisms)."""

    name = "mix"
    arity = (2, MAX_COMPONENTS)
    gate: str = "layer"

    def validate(self) -> None:
        require(self.gate in GATES, self.name,
                f"gate must be one of {', '.join(GATES)}, got {show(self.gate)}")


@dataclass(frozen=True)
class Diff(Combinator):
    """Differential attention (Ye et al., 2024): (A₁ − λ·A₂)·v, each head RMS-normalised and
    scaled by 1 − λ_init; the two programs get their own queries and keys. λ = exp(λq₁·λk₁) −
    exp(λq₂·λk₂) + λ_init is learned per layer; with `lambda_init` not given it follows the
    paper's depth schedule 0.8 − 0.6·exp(−0.3·layer)."""

    name = "diff"
    arity = (2, 2)
    own_queries = True
    lambda_init: float | None = None

    def validate(self) -> None:
        require(self.lambda_init is None or 0 <= self.lambda_init < 1, self.name,
                f"lambda_init must lie in [0, 1), got {show(self.lambda_init)}")

    def initial_lambda(self, layer: int) -> float:
        """λ_init of the layer at depth `layer` (0 for the first)."""
        if self.lambda_init is not None:
            return self.lambda_init
        return 0.8 - 0.6 * math.exp(-0.3 * layer)


GATE_FORMS = ("headwise", "elementwise")


@dataclass(frozen=True)
class OutputGate(Option):
    """Qiu et al. (2025): the attention output times σ(x·W) before the output projection, one
    gate per head (`headwise`) or per channel (`elementwise`), computed from the layer's input;
    it makes attention free to attend nowhere, so no sink token is needed."""

    name = "output_gate"
    key = "output_gate"
    shown = 1
    form: str = "elementwise"

    def validate(self) -> None:
        require(self.form in GATE_FORMS, self.name,
                f"form must be {' or '.join(GATE_FORMS)}, got {show(self.form)}")

    @property
    def value(self) -> OutputGate:
        return self
