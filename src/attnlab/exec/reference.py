"""The reference backend: scores and weights materialised in plain PyTorch.

It is correct by construction and the ground truth every other backend is tested
against; it is also the backend that can return the weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab.exec import hidden, memory, normalizers
from attnlab.exec.approximations import approximate_weights
from attnlab.exec.backend import Backend, Call
from attnlab.exec.scores import compose_mods, compute_scores
from attnlab.lang import normalizers as N
from attnlab.lang.masks import MaskInputs
from attnlab.lang.program import Program


def reference_attention(q: Tensor, k: Tensor, v: Tensor, program: Program, inp: MaskInputs, *,
                        bias: Tensor | None = None, params: dict[str, Tensor] | None = None,
                        training: bool = False, generator: torch.Generator | None = None,
                        rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(output (B, H, N, Dv), weights (B, H, N, M)) with output == dropout(weights) @ v.

    `rows` (R,) says q holds only those query positions of the inp.n the call has (the
    recorder's pages of rows): masks and score mods read those positions, and every normalizer
    and approximation works row by row, so the R rows equal those of the whole call."""
    params = params or {}
    b, h, n, _ = q.shape
    memory.require_fit(memory.reference_bytes(b, h, n, k.shape[2], q.dtype), q.device,
                       f"the reference backend's {n}×{k.shape[2]} scores and weights "
                       f"(batch {b}, {h} heads)", _ADVICE)
    in_dtype = q.dtype
    if in_dtype in (torch.float16, torch.bfloat16):  # materialised softmax wants fp32 range
        q, k, v = q.float(), k.float(), v.float()
        params = {n: p.float() for n, p in params.items()}
    finite = hidden.all_finite(k, v)  # before the GQA repeat: the same answer on less data
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    visible = program.mask.dense(inp, rows) if program.mask is not None else None
    if not finite:  # keep NaN and inf out of every product; poison what sees them at the end
        raw_k, raw_v, k, v = k, v, hidden.clean(k), hidden.clean(v)

    if program.approximation is not None:
        weights = approximate_weights(program.approximation, q, k, visible, inp, params)
    else:
        scores = modded_scores(q, k, program, inp, bias=bias, params=params, rows=rows)
        weights = normalize(program.normalizer, scores, visible, training, generator)

    used = weights
    if training and program.dropout > 0:
        keep = torch.rand(weights.shape, generator=generator, device=weights.device) >= program.dropout
        used = weights * keep / (1 - program.dropout)
    out = used @ v
    if not finite:
        hits = hidden.seen_bad(visible, raw_k, raw_v, q.shape[2])
        out = hidden.poison(out, hits)
        weights = torch.where(hits[..., -1:] > 0, math.nan, weights)
    return out.to(in_dtype), weights.to(in_dtype)


def modded_scores(q: Tensor, k: Tensor, program: Program, inp: MaskInputs, *,
                  bias: Tensor | None = None, params: dict[str, Tensor] | None = None,
                  rows: Tensor | None = None) -> Tensor:
    """(B, H, N, M) scores with the program's mods applied, before its mask and normalizer; k
    has as many heads as q. What the normalizer turns into weights (and a z-loss reads)."""
    scores = compute_scores(program.score, q, k, params or {})
    mods = compose_mods(program.mods, inp, params or {}, bias)
    return scores if mods is None else mods(scores, *index_grid(inp, rows))


_ADVICE = ("use a shorter sequence or a smaller batch, or backend='tiled' (exact programs with a "
           "dot-product score; memory grows with N·block) or 'linear' (approximations, O(N))")


def normalize(norm: N.Normalizer, scores: Tensor, visible: Tensor | None, training: bool,
              generator: torch.Generator | None) -> Tensor:
    """Weights from scores with the program's normalizer, hidden keys exactly zero."""
    if isinstance(norm, N.Softmax):
        return normalizers.softmax(scores, visible)
    if isinstance(norm, N.Sparsemax):
        return normalizers.sparsemax(scores, visible)
    if isinstance(norm, N.Entmax):
        if norm.alpha == 1.5:
            return normalizers.entmax15(scores, visible)
        if norm.alpha == 2.0:
            return normalizers.sparsemax(scores, visible)
        return normalizers.entmax_bisect(scores, visible, alpha=norm.alpha)
    if isinstance(norm, N.TopK):
        return normalizers.topk(scores, visible, k=norm.k)
    if isinstance(norm, N.Gumbel):
        return normalizers.gumbel(scores, visible, tau=norm.tau, hard=norm.hard, training=training,
                                   generator=generator)
    if isinstance(norm, N.Sigmoid):
        return normalizers.sigmoid(scores, visible, bias=norm.bias)
    if isinstance(norm, N.Relu):
        return normalizers.relu(scores, visible)
    raise NotImplementedError(f"normalizer {norm} has no implementation")


def index_grid(inp: MaskInputs, rows: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Broadcastable (b, h, q_idx, kv_idx) index tensors of shape (B,1,1,1) … (1,1,1,M);
    q_idx holds `rows` (R,) when given, else 0 … N - 1."""
    dev = inp.device
    q = torch.arange(inp.n, device=dev) if rows is None else rows.to(dev)
    return (torch.arange(inp.batch, device=dev).view(-1, 1, 1, 1),
            torch.arange(inp.heads, device=dev).view(1, -1, 1, 1),
            q.view(1, 1, -1, 1),
            torch.arange(inp.m, device=dev).view(1, 1, 1, -1))


class ReferenceBackend(Backend):
    """The ground truth: runs every program, slowly, and is the one that returns weights."""

    name = "reference"

    def refuse(self, call: Call) -> str | None:
        short = memory.shortfall(
            memory.reference_bytes(call.batch, call.heads, call.n, call.m, call.dtype), call.device)
        return None if short is None else f"its {call.n}×{call.m} scores and weights {short}: {_ADVICE}"

    def run(self, q, k, v, program, inp, *, bias, params, training, generator):
        return reference_attention(q, k, v, program, inp, bias=bias, params=params,
                                   training=training, generator=generator)[0]
