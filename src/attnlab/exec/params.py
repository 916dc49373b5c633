"""Initial values for a program's trainable tensors (learned scores, biases, projections)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnlab.lang.program import Program, parse
from attnlab.lang.scores import GraphDistance


def init_params(program: Program | str, heads: int, head_dim: int, *, seed: int = 0,
                device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """Fresh tensors for every learnable part, keyed 'path.name' (e.g. 'score.w_q').

    Initialisations keep a new program close to its fixed cousin: `general` starts as the
    scaled dot product, `cosine` at temperature 10, biases near zero (graph_distance's at zero).
    """
    program = parse(program)
    gen = torch.Generator().manual_seed(seed)
    # graph_distance starts at zero, exactly its fixed cousin: no graph bias until it learns one
    zero = {f"{path}.table" for path, part in program.parts() if isinstance(part, GraphDistance)}
    out = {}
    for key, shape in program.parameter_shapes(heads, head_dim).items():
        name = key.rsplit(".", 1)[1]
        if key in zero:
            value = torch.zeros(shape)
        elif name == "w":  # general: qᵀ W k starts as qᵀ k / √d
            value = torch.eye(head_dim).expand(*shape).clone() / math.sqrt(head_dim)
        elif name == "log_tau":
            value = torch.full(shape, math.log(10.0))
        elif name == "table":
            value = torch.randn(shape, generator=gen) * 0.02
        else:  # w_q, w_k, v of additive; e, f of lowrank: variance 1 / fan-in
            fan_in = shape[-2] if name in ("w_q", "w_k") else shape[-1] if name == "v" else shape[0]
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        out[key] = value.to(device=device, dtype=dtype)
    return out
