"""Gates: how a layer shares its work between component programs and heads, learned and reported.

`MixGate` and `DiffJoin` join the outputs of a combined program's components; `OutputGating`
and `HeadRouter` scale the heads' outputs. Each reports its allocation: `allocation()` is the
mean over the real tokens seen while the model evaluated (what training logs per epoch), and
`last` the last call's, per token where the gate is (what the recorder keeps).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from attnlab.lang.combinators import Diff, Mix, OutputGate
from attnlab.lang.layout import Route


class Gate(nn.Module):
    """A gate's report: its allocation per call (`last`) and a running mean over evaluation."""

    called: ClassVar[str]  # how reports name this kind of gate

    def __init__(self) -> None:
        super().__init__()
        self.last: Tensor | None = None  # (B, N, …) this call's allocation, detached
        self._total: Tensor | None = None
        self._count = 0

    def report(self, values: Tensor, real: Tensor | None) -> None:
        """Keep `values` (B, N, …) as the last allocation; add its real tokens (`real` (B, N)
        bool, None: all) to the running mean while evaluating."""
        self.last = values.detach()
        if self.training:
            return
        v = self.last.float().expand(*(real.shape if real is not None else self.last.shape[:2]),
                                     *self.last.shape[2:])
        v = v[real] if real is not None else v.flatten(0, 1)
        total = v.sum(0)
        self._total = total if self._total is None else self._total + total
        self._count += v.shape[0]

    def allocation(self) -> Tensor | None:
        """The mean allocation over the real tokens evaluated since `reset()` (None: none yet)."""
        return None if self._total is None else self._total / max(self._count, 1)

    def reset(self) -> None:
        self._total, self._count = None, 0


class MixGate(Gate):
    """`mix`: softmax gate weights (…, H, C) over C components, fixed (`static`), learned per
    head (`layer`) or computed per head from each query's input (`token`); all start equal."""

    called = "mix"

    def __init__(self, dim: int, heads: int, components: int, mix: Mix) -> None:
        super().__init__()
        self.kind, self.heads, self.components = mix.gate, heads, components
        self.logits = nn.Parameter(torch.zeros(heads, components)) if mix.gate == "layer" else None
        self.proj = nn.Linear(dim, heads * components) if mix.gate == "token" else None
        if self.proj is not None:  # equal weights at the start, as the other kinds
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def weights(self, x: Tensor) -> Tensor:
        """(B or 1, N or 1, H, C) gate weights for the queries' inputs x (B, N, dim)."""
        if self.proj is not None:
            return self.proj(x).unflatten(-1, (self.heads, self.components)).softmax(-1)
        if self.logits is not None:
            return self.logits.softmax(-1)[None, None]
        return x.new_full((1, 1, self.heads, self.components), 1 / self.components)

    def forward(self, x: Tensor, outs: list[Tensor], real: Tensor | None) -> tuple[Tensor, Tensor]:
        g = self.weights(x)
        self.report(g, real)
        joined = sum(out * g[..., c].transpose(1, 2)[..., None] for c, out in enumerate(outs))
        return joined, joined

    def weigh(self, gates: Tensor, weights: list[Tensor], rows: Tensor | None) -> Tensor:
        """The layer's weights from its components' (B, H, R, M) and a call's gates."""
        g = gates.transpose(1, 2)  # (B, H, N, C)
        g = g if rows is None or g.shape[2] == 1 else g[:, :, rows]
        return sum(w * g[..., c, None] for c, w in enumerate(weights))


class DiffJoin(Gate):
    """`diff`: (A₁v − λ·A₂v), RMS-normalised per head and scaled by 1 − λ_init (Ye et al., 2024);
    λ = exp(λq₁·λk₁) − exp(λq₂·λk₂) + λ_init, one per layer."""

    called = "diff"

    def __init__(self, head_dim: int, diff: Diff, layer: int) -> None:
        super().__init__()
        self.lambda_init = diff.initial_lambda(layer)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.randn(head_dim) * 0.1) for _ in range(4))
        self.norm = nn.RMSNorm(head_dim, eps=1e-5)

    def lam(self) -> Tensor:
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum())
                - torch.exp((self.lambda_q2 * self.lambda_k2).sum()) + self.lambda_init)

    def forward(self, x: Tensor, outs: list[Tensor], real: Tensor | None) -> tuple[Tensor, Tensor]:
        lam = self.lam()
        self.report(lam.detach().expand(x.shape[0], x.shape[1], 1), real)
        joined = outs[0] - lam * outs[1]
        return joined, self.norm(joined) * (1 - self.lambda_init)

    def weigh(self, gates: Tensor, weights: list[Tensor], rows: Tensor | None) -> Tensor:
        """A₁ − λ·A₂: the differential map Ye et al. draw (the norm scales rows after it)."""
        return weights[0] - gates.flatten()[0] * weights[1]


class OutputGating(Gate):
    """Qiu et al. (2025): each head's output times σ(x·W), per head or per channel."""

    called = "output_gate"

    def __init__(self, dim: int, heads: int, head_dim: int, gate: OutputGate) -> None:
        super().__init__()
        self.heads = heads
        self.proj = nn.Linear(dim, heads if gate.form == "headwise" else heads * head_dim)

    def forward(self, x: Tensor, out: Tensor, real: Tensor | None) -> Tensor:
        g = torch.sigmoid(self.proj(x)).unflatten(-1, (self.heads, -1))  # (B, N, H, 1 or D)
        self.report(g.mean(-1), real)
        return out * g.transpose(1, 2)


class HeadRouter(Gate):
    """MoH (Jin et al., 2024): the first `shared` heads always on, weighted by a softmax over
    them; each token's `top` routed heads weighted by their router probabilities; a learned
    softmax balances the two sets. Weights are scaled by the number of active heads, so that an
    even router leaves each active head at weight 1. `aux_loss` (training only) is the
    load-balancing loss (H − s)·Σᵢ fᵢ·Pᵢ over the routed heads: fᵢ the share of routing choices
    that went to head i, Pᵢ its mean router probability; 1 when routing is even."""

    called = "route"

    def __init__(self, dim: int, heads: int, route: Route) -> None:
        super().__init__()
        self.shared, self.top, self.routed = route.shared, route.top, heads - route.shared
        self.router = nn.Linear(dim, self.routed, bias=False)
        self.shared_router = nn.Linear(dim, self.shared, bias=False) if self.shared else None
        self.split = nn.Linear(dim, 2, bias=False) if self.shared else None
        self.balance = route.balance  # the loss's weight in training
        self.aux_loss: Tensor | None = None

    def forward(self, x: Tensor, out: Tensor, real: Tensor | None) -> Tensor:
        probs = self.router(x).softmax(-1)  # (B, N, H - s)
        chosen = torch.zeros_like(probs).scatter(-1, probs.topk(self.top, -1).indices, 1.0)
        w = probs * chosen
        if self.shared_router is not None:
            a = self.split(x).softmax(-1)
            w = torch.cat([self.shared_router(x).softmax(-1) * a[..., :1], w * a[..., 1:]], -1)
        w = w * (self.shared + self.top)
        self.aux_loss = self._balance_loss(probs, chosen, real) if self.training else None
        self.report(w, real)
        return out * w.transpose(1, 2)[..., None]

    def _balance_loss(self, probs: Tensor, chosen: Tensor, real: Tensor | None) -> Tensor:
        if real is not None:
            probs, chosen = probs[real], chosen[real]
        probs, chosen = probs.reshape(-1, self.routed), chosen.reshape(-1, self.routed)
        f = chosen.mean(0) / self.top
        return self.routed * (f * probs.mean(0)).sum()


def real_queries(n: int, m: int, key_padding_mask: Tensor | None, key_lengths: Tensor | None,
                 device: torch.device) -> Tensor | None:
    """(B, N) bool: which of n queries are real tokens, in self-attention over m keys of a padded
    batch (the queries are the last n keys); None: all of them, or not known from these."""
    if n > m:
        return None
    if key_padding_mask is not None:
        return ~key_padding_mask.bool()[:, m - n:]
    if key_lengths is not None:
        lengths = torch.as_tensor(key_lengths, device=device).reshape(-1, 1)
        return torch.arange(m - n, m, device=device)[None] < lengths
    return None


def join_for(program, dim: int, heads: int, head_dim: int, layer: int) -> nn.Module | None:
    """The module that joins a combined program's components (None for a plain program)."""
    comb = program.combinator
    if isinstance(comb, Mix):
        return MixGate(dim, heads, len(program.components), comb)
    if isinstance(comb, Diff):
        return DiffJoin(head_dim, comb, layer)
    return None


def gates_of(model: nn.Module) -> dict[str, Gate]:
    """Every gate of `model` by module name, in model order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Gate)}


def allocations(model: nn.Module) -> dict[str, dict[str, list]]:
    """{layer: {gate: mean allocation}} over the real tokens each gate evaluated since it was
    reset: `mix` [head][component] weights, `diff` [λ], `output_gate` and `route` [head]."""
    out: dict[str, dict[str, list]] = {}
    for name, gate in gates_of(model).items():
        mean = gate.allocation()
        if mean is not None:
            out.setdefault(name.rpartition(".")[0], {})[gate.called] = mean.tolist()
    return out


def allocation_metrics(model: nn.Module, prefix: str = "") -> dict[str, float]:
    """`allocations` flattened for a tracker: `<prefix>alloc_<gate>/<layer>/<c0|h0|lambda>`,
    a mix's weight of each component averaged over heads, the other gates' per head."""
    flat: dict[str, float] = {}
    for layer, gates in allocations(model).items():
        for called, mean in gates.items():
            key = f"{prefix}alloc_{called}/{layer}"
            if called == "mix":
                per_component = torch.tensor(mean).mean(0).tolist()
                flat.update({f"{key}/c{c}": v for c, v in enumerate(per_component)})
            elif called == "diff":
                flat[f"{key}/lambda"] = mean[0]
            else:
                flat.update({f"{key}/h{h}": v for h, v in enumerate(mean)})
    return flat


def reset_gates(model: nn.Module) -> None:
    for gate in gates_of(model).values():
        gate.reset()


def auxiliary_loss(model: nn.Module) -> Tensor | None:
    """Σ balance · load-balancing loss over the routed layers of the last training forward."""
    losses = [m.aux_loss * m.balance for m in model.modules()
              if isinstance(m, HeadRouter) and m.aux_loss is not None]
    return sum(losses) if losses else None


__all__ = ["DiffJoin", "Gate", "HeadRouter", "MixGate", "OutputGating", "allocation_metrics",
           "allocations", "auxiliary_loss", "gates_of", "join_for", "real_queries", "reset_gates"]
