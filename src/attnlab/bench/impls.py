"""The implementations `bench kernels` compares: attnlab's planner, each attnlab backend forced
(`attnlab:sdpa`, …: what the planner could have chosen), and the attention a user would
otherwise write by hand, each built once into a forward function of (q, k, v)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

import attnlab
from attnlab.exec import BACKENDS
from attnlab.exec.backend import Call
from attnlab.lang import normalizers as N
from attnlab.lang.masks import Causal, MaskInputs
from attnlab.lang.program import Program
from attnlab.lang.scores import ScaledDot

Forward = Callable[[Tensor, Tensor, Tensor], Tensor]
# Far enough below any scaled score that entmax15 gives exact zeros, yet finite, so that even a
# row with every key hidden stays free of NaN.
ENTMAX_HIDDEN = -1e4


def make_inputs(batch: int, heads: int, n: int, head_dim: int, *, dtype: torch.dtype,
                device: str, grad: bool, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded q, k, v of shape (batch, heads, n, head_dim); leaves that need grad when `grad`."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, n, head_dim, generator=gen).to(device, dtype)
                 .requires_grad_(grad) for _ in range(3))


def planned_backend(program: Program, q: Tensor, k: Tensor, needs_grad: bool) -> str:
    """The backend attnlab's planner picks for this call ('reference' before there is a planner)."""
    plan = getattr(attnlab, "plan", None)
    if plan is None:
        return "reference"
    return str(plan(program, q, k, needs_grad=needs_grad).backend)


# -- which implementation can run what ----------------------------------------------------------


def _plain_scaled_dot(program: Program, normalizer: type[N.Normalizer]) -> str | None:
    """Why a hand-written baseline cannot express `program` (None: it can)."""
    if program.approximation is not None or program.score != ScaledDot() or program.mods:
        return "only scaled_dot scores with the default scale and no score mods"
    if not isinstance(program.normalizer, normalizer):
        return f"only {normalizer.__name__.lower()} programs"
    if program.mask is not None and program.mask.requires():
        return "masks that read call-time inputs are not benchmarked"
    return "dropout is not benchmarked" if program.dropout else None


def why_not(impl: str, program: Program, mode: str, device: str, n: int = 1024,
            heads: int = 8, head_dim: int = 64) -> str | None:
    """Why `impl` does not apply to this configuration, or None when it does."""
    if impl not in IMPLS:
        return f"unknown implementation '{impl}'"
    if impl == "attnlab":
        return None
    if impl.startswith(BACKEND_PREFIX):
        cuda = device == "cuda"
        call = Call(program, 1, heads, heads, n, n, head_dim, head_dim,
                    torch.bfloat16 if cuda else torch.float32, torch.device(device),
                    needs_grad=mode == "fwdbwd")
        return BACKENDS[impl.removeprefix(BACKEND_PREFIX)].refuse(call)
    if impl == "entmax15_dense":
        reason = _plain_scaled_dot(program, N.Entmax)
        return reason or (None if program.normalizer.alpha == 1.5 else "only entmax(1.5)")
    reason = _plain_scaled_dot(program, N.Softmax)
    if reason:
        return reason
    if impl == "sdpa_causal" and not isinstance(program.mask, Causal):
        return "is_causal expresses exactly the mask 'causal'"
    if impl in ("sdpa_bool", "sdpa_float") and program.mask is None:
        return "no mask to pass"
    if impl == "flex" and mode == "fwdbwd" and device == "cpu":
        return "FlexAttention's backward is benchmarked on CUDA only"
    return None


# -- the implementations ------------------------------------------------------------------------


def _visible(program: Program, q: Tensor, k: Tensor) -> Tensor | None:
    """The dense bool mask (B', H', N, M), built once outside the timed loop as a user would."""
    if program.mask is None:
        return None
    inp = MaskInputs.build(q.shape[0], q.shape[1], q.shape[2], k.shape[2], q.device)
    return program.mask.dense(inp).contiguous()


def _scores(q: Tensor, k: Tensor) -> Tensor:
    return (q @ k.transpose(-2, -1)) * (1 / math.sqrt(q.shape[-1]))


def build_attnlab(program: Program, q: Tensor, k: Tensor) -> Forward:
    """attnlab.attention with backend=None: whatever the planner chooses."""
    return lambda q, k, v: attnlab.attention(q, k, v, program)


def build_backend(name: str) -> Callable[[Program, Tensor, Tensor], Forward]:
    """attnlab.attention with backend=name: one backend the planner chooses from, forced."""
    def build(program: Program, q: Tensor, k: Tensor) -> Forward:
        return lambda q, k, v: attnlab.attention(q, k, v, program, backend=name)

    return build


def build_naive(program: Program, q: Tensor, k: Tensor) -> Forward:
    """Eager attention: scores, masked_fill(-inf), softmax, @ v."""
    visible = _visible(program, q, k)
    hidden = None if visible is None else ~visible

    def forward(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scores = _scores(q, k)
        if hidden is not None:
            scores = scores.masked_fill(hidden, -math.inf)
        return torch.softmax(scores, dim=-1) @ v

    return forward


def build_sdpa_causal(program: Program, q: Tensor, k: Tensor) -> Forward:
    """SDPA with is_causal=True (its fused kernels, no mask tensor)."""
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def build_sdpa_bool(program: Program, q: Tensor, k: Tensor) -> Forward:
    """SDPA with the dense boolean mask (True = may attend)."""
    visible = _visible(program, q, k)
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=visible)


def build_sdpa_float(program: Program, q: Tensor, k: Tensor) -> Forward:
    """SDPA with an additive float mask: 0 where visible, -inf where hidden."""
    visible = _visible(program, q, k)
    additive = torch.zeros(visible.shape, dtype=q.dtype, device=q.device).masked_fill(~visible,
                                                                                     -math.inf)
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=additive)


def build_flex(program: Program, q: Tensor, k: Tensor) -> Forward:
    """torch.compile(flex_attention) with a BlockMask from the program's mask_mod."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    b, h, n, m = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    block_mask = None
    if program.mask is not None:
        mask_mod = program.mask.mask_mod(MaskInputs.build(b, h, n, m, q.device))
        block_mask = create_block_mask(mask_mod, b, h, n, m, device=q.device)
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def build_entmax15_dense(program: Program, q: Tensor, k: Tensor) -> Forward:
    """entmax.entmax15 on the dense masked scores, then @ v."""
    try:
        from entmax import entmax15
    except ImportError as err:
        raise RuntimeError("the entmax15_dense baseline needs the entmax package "
                           "(pip install entmax)") from err
    visible = _visible(program, q, k)
    hidden = None if visible is None else ~visible

    def forward(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        scores = _scores(q, k)
        if hidden is not None:
            scores = scores.masked_fill(hidden, ENTMAX_HIDDEN)
        return entmax15(scores, dim=-1) @ v

    return forward


BACKEND_PREFIX = "attnlab:"
# The backends a case forces, each as its own implementation. Left out: reference (dense, kept
# for checking) and linear (approximations, which no case benchmarks).
FORCED = ("sdpa", "tiled", "flex")
FASTEST = "attnlab:fastest"  # in a target: the fastest attnlab:<backend> measured in the case

IMPLS: dict[str, Callable[[Program, Tensor, Tensor], Forward]] = {
    "attnlab": build_attnlab,
    **{BACKEND_PREFIX + name: build_backend(name) for name in FORCED},
    "naive": build_naive,
    "sdpa_causal": build_sdpa_causal,
    "sdpa_bool": build_sdpa_bool,
    "sdpa_float": build_sdpa_float,
    "flex": build_flex,
    "entmax15_dense": build_entmax15_dense,
}
