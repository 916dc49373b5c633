"""`Attention`: a multi-head attention module that runs any attnlab program.

Projections, grouped-query heads, optional rotary positions, self- or cross-attention;
the program's learnable parts (learned scores, relative biases, temperatures, low-rank
projections) are parameters of the module, so they train and save with it.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.errors import InputError, SpecError
from attnlab.exec import attention, init_params
from attnlab.nn.rotary import Rotary
from attnlab.spec.program import Program, parse


class Attention(nn.Module):
    """`m(x)` for self-attention, `m(x, context)` for cross-attention; x is (B, N, dim)."""

    def __init__(self, dim: int, program: Program | str = "scaled_dot ; softmax", *,
                 heads: int | None = None, kv_heads: int | None = None, kv_dim: int | None = None,
                 rotary: bool = False, bias: bool = True) -> None:
        super().__init__()
        self.program = parse(program)
        lay = self.program.layout
        self.heads = _agree("heads", heads, lay.heads, default=8)
        self.kv_heads = _agree("kv_heads", kv_heads, lay.kv_heads, default=self.heads)
        if self.heads % self.kv_heads:
            raise SpecError(f"kv_heads={self.kv_heads} must divide heads={self.heads}")
        if lay.head_dim is None and dim % self.heads:
            raise SpecError(f"dim={dim} is not divisible by heads={self.heads}: choose heads that "
                            "divide dim, or give the program a head_dim(…) option")
        self.head_dim = lay.head_dim or dim // self.heads
        inner, kv_inner = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(kv_dim or dim, kv_inner, bias=bias)
        self.to_v = nn.Linear(kv_dim or dim, kv_inner, bias=bias)
        self.to_out = nn.Linear(inner, dim, bias=bias)
        self.rotary = Rotary(self.head_dim) if rotary else None
        # ParameterDict keys may not contain '.', so 'score.w_q' is stored as 'score__w_q'.
        self.program_params = nn.ParameterDict({
            key.replace(".", "__"): nn.Parameter(value)
            for key, value in init_params(self.program, self.heads, self.head_dim).items()
        })

    def forward(self, x: Tensor, context: Tensor | None = None, *,
                key_padding_mask: Tensor | None = None, key_lengths: Tensor | None = None,
                segments: Tensor | tuple[Tensor, Tensor] | None = None,
                graph: Tensor | None = None, bias: Tensor | None = None,
                return_weights: bool = False, backend: str | None = None,
                ) -> Tensor | tuple[Tensor, Tensor]:
        """Attend from x (B, N, dim) to itself or to context (B, M, kv_dim).

        key_padding_mask is (B, M) with True at padding keys, as in nn.MultiheadAttention.
        """
        self._check_kind(context)
        source = x if context is None else context
        q = self._split(self.to_q(x), self.heads)
        k = self._split(self.to_k(source), self.kv_heads)
        v = self._split(self.to_v(source), self.kv_heads)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        params = {key.replace("__", "."): p for key, p in self.program_params.items()}
        out = attention(q, k, v, self.program, bias=bias, segments=segments,
                        key_lengths=key_lengths, key_padding_mask=key_padding_mask, graph=graph,
                        params=params, return_weights=return_weights, backend=backend,
                        training=self.training)
        out, weights = out if return_weights else (out, None)
        out = self.to_out(out.transpose(1, 2).flatten(2))
        return (out, weights) if return_weights else out

    def _split(self, t: Tensor, heads: int) -> Tensor:
        """(B, L, heads·head_dim) -> (B, heads, L, head_dim)."""
        if t.dim() != 3:
            raise InputError(f"Attention takes (batch, seq, dim) inputs, got {tuple(t.shape)}")
        return t.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)

    def _check_kind(self, context: Tensor | None) -> None:
        cross = self.program.layout.cross
        if cross is True and context is None:
            raise InputError(f"program '{self.program}' is cross-attention: call m(x, context)")
        if cross is False and context is not None:
            raise InputError(f"program '{self.program}' is self-attention: call m(x) without context")
        if context is not None and self.rotary is not None:
            raise InputError("rotary=True needs self-attention: queries and keys must share one "
                             "position axis")

    def extra_repr(self) -> str:
        return (f"program='{self.program}', heads={self.heads}, kv_heads={self.kv_heads}, "
                f"head_dim={self.head_dim}, rotary={self.rotary is not None}")


def _agree(name: str, given: int | None, in_program: int | None, default: int) -> int:
    if given is not None and in_program is not None and given != in_program:
        raise SpecError(f"{name}={given} disagrees with the program's {name}({in_program})")
    value = given if given is not None else in_program if in_program is not None else default
    if not isinstance(value, int) or value < 1:
        raise SpecError(f"{name} must be a whole number ≥ 1, got {value!r}")
    return value


__all__ = ["Attention"]
