"""The sdpa backend: softmax programs PyTorch's fused scaled_dot_product_attention can express.

No mask or a square causal mask runs fused (`is_causal`); other masks and affine score mods
(ALiBi, relative bias, bias, temperature) go in as one dense additive mask when it is small.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnlab.exec import hidden
from attnlab.exec.backend import Backend, Call
from attnlab.exec.reference import index_grid
from attnlab.exec.scores import DOT_FORM, affine_factor, compose_mods, dot_form
from attnlab.exec.tiled import TiledBackend
from attnlab.lang import normalizers as N
from attnlab.lang.masks import Causal

_CAUSAL = Causal()  # made once: torch.compile cannot trace building a part

SAFE = TiledBackend()  # runs a call whose k or v hold NaN or inf, which SDPA would leak
DENSE_MASK_LIMIT = 1 << 25  # mask elements worth materialising (128 MiB as float32)


class SdpaBackend(Backend):
    name = "sdpa"

    def refuse(self, call: Call) -> str | None:
        p = call.program
        if p.approximation is not None:
            return f"'{p.approximation}' is not exact softmax attention"
        if not isinstance(p.normalizer, N.Softmax):
            return f"SDPA computes softmax only, not '{p.normalizer}'"
        if not isinstance(p.score, DOT_FORM):
            return f"score '{p.score}' is not a dot product"
        if affine_factor(p.mods) is None:
            bad = next(m for m in p.mods if affine_factor((m,)) is None)
            return f"score mod '{bad}' is not additive, so it cannot ride in an attention mask"
        if call.return_weights:
            return "only reference returns weights"
        if call.seeded and call.training and p.dropout > 0:
            return "SDPA draws dropout from the global RNG, not from the generator given"
        elements = dense_mask_elements(call)
        if elements > DENSE_MASK_LIMIT:
            return (f"'{p.mask}' would need a dense {call.n}×{call.m} mask "
                    f"({elements / 2**20:.0f} M elements); tiled skips empty blocks instead")
        return None

    def run(self, q, k, v, program, inp, *, bias, params, training, generator):
        if not hidden.all_finite(k, v):
            # SDPA multiplies a hidden NaN by weight 0, and its CPU kernels may drop a visible
            # one; tiled does neither (attnlab.exec.hidden)
            return SAFE.run(q, k, v, program, inp, bias=bias, params=params, training=training,
                            generator=generator)
        qd, kd, scale = dot_form(program.score, q, k, params)
        scale *= affine_factor(program.mods)
        mask, is_causal = None, fused_causal(program, inp.n, inp.m)
        if not is_causal and program.mask is not None:
            mask = program.mask.dense(inp)
        mods = compose_mods(program.mods, inp, params, bias)
        if mods is not None:  # affine: a·s + g; the slope a is in the scale, g rides as the mask
            g = mods(q.new_zeros(()), *index_grid(inp)).to(q.dtype)
            g = g.expand(torch.broadcast_shapes(g.shape, (1, 1, inp.n, inp.m)))
            mask = g if mask is None else torch.where(mask, g, -math.inf)
            if is_causal:  # the fused causal path takes no additive mask
                mask = torch.where(_CAUSAL.dense(inp), mask, -math.inf)
                is_causal = False
        return F.scaled_dot_product_attention(
            qd, kd, v, attn_mask=mask, is_causal=is_causal, scale=scale,
            dropout_p=program.dropout if training else 0.0, enable_gqa=kd.shape[1] != qd.shape[1])


def fused_causal(program, n: int, m: int) -> bool:
    """SDPA's is_causal aligns top-left, which equals attnlab's causal only when N == M."""
    # bool(): traced with a free length, n == m is a symbolic truth SDPA's is_causal refuses
    return type(program.mask) is Causal and bool(n == m)


def dense_mask_elements(call: Call) -> int:
    """Elements of the dense mask SDPA would need (0 when it needs none)."""
    p = call.program
    if (p.mask is None or fused_causal(p, call.n, call.m)) and not p.mods:
        return 0
    # Structural masks broadcast over batch and heads; mods (ALiBi slopes, per-head tables)
    # vary by head; call-time data (segments, padding, graph, bias) varies by batch row.
    per_batch = bool(p.requires())
    return call.n * call.m * (call.heads if p.mods else 1) * (call.batch if per_batch else 1)
