"""What every backend offers the planner: whether it can run a call (and why not), how much
it would cost, and the run itself. Backends agree with `reference` within fp32 tolerance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from attnlab.lang.masks import MaskInputs
from attnlab.lang.program import Program


@dataclass(frozen=True)
class Call:
    """The facts about one attention call that decide which backend may run it."""

    program: Program
    batch: int
    heads: int
    kv_heads: int
    n: int  # queries
    m: int  # keys
    head_dim: int
    value_dim: int
    dtype: torch.dtype
    device: torch.device
    needs_grad: bool
    return_weights: bool = False
    training: bool = False
    seeded: bool = False  # a torch.Generator was given: random draws must come from it

    @classmethod
    def of(cls, program: Program, q: Tensor, k: Tensor, v: Tensor, *, needs_grad: bool | None = None,
           return_weights: bool = False, training: bool = False, params=None,
           seeded: bool = False) -> Call:
        if needs_grad is None:
            tensors = [q, k, v, *(params or {}).values()]
            needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
        return cls(program, q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3],
                   v.shape[3], q.dtype, q.device, needs_grad, return_weights, training, seeded)

    @property
    def uses_randomness(self) -> bool:
        """Dropout or Gumbel noise is drawn on this call."""
        from attnlab.lang.normalizers import Gumbel

        return self.training and (self.program.dropout > 0
                                  or isinstance(self.program.normalizer, Gumbel))


class Backend:
    """Base of all backends. `refuse` returns None when the backend can run the call."""

    name: ClassVar[str]

    def refuse(self, call: Call) -> str | None:
        raise NotImplementedError

    def run(self, q: Tensor, k: Tensor, v: Tensor, program: Program, inp: MaskInputs, *,
            bias: Tensor | None, params: dict[str, Tensor], training: bool,
            generator: torch.Generator | None) -> Tensor:
        """The output (B, H, N, Dv); q (B, H, N, D), k and v (B, H_kv, M, D)."""
        raise NotImplementedError
