"""What recorded attention weights say, one measure per function.

Each takes weights (B, H, N, M) as `Recorder.weights` returns them (or a list of them, one per
layer) and returns one number per head, or a map; rows that attend to nothing (every key
hidden: an all-zero row) are left out of per-head means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnlab.errors import InputError


def _check(w: Tensor) -> None:
    if not isinstance(w, Tensor) or w.dim() != 4:
        raise InputError(f"attention weights must be a (batch, heads, queries, keys) tensor, got "
                         f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")


def _per_head_mean(values: Tensor, live: Tensor) -> Tensor:
    """Mean over batch and live query rows of values (B, H, N), per head: (H,)."""
    live = live.to(values.dtype)
    return (values * live).sum((0, 2)) / live.sum((0, 2)).clamp(min=1)


def entropy(w: Tensor) -> Tensor:
    """(H,) mean entropy in nats of each query's weights, -Σ_j w_ij log w_ij (0 log 0 = 0): low
    for a head that looks at few keys. As in Clark et al. 2019, "What Does BERT Look At?", §3."""
    _check(w)
    terms = torch.where(w > 0, -w * w.clamp(min=torch.finfo(w.dtype).tiny).log(), 0)
    return _per_head_mean(terms.sum(-1), w.sum(-1) > 0)


def zero_share(w: Tensor, visible: Tensor | None = None) -> Tensor:
    """(H,) share of exactly-zero weights among the keys each query can see (`visible`, a bool
    tensor broadcastable to w; all keys when None): what sparse normalizers (sparsemax, entmax,
    top-k) buy. Correia et al. 2019, "Adaptively Sparse Transformers", §5."""
    _check(w)
    seen = torch.ones_like(w, dtype=torch.bool) if visible is None else visible.expand_as(w)
    zeros = ((w == 0) & seen).sum((0, 2, 3)).to(w.dtype)
    return zeros / seen.sum((0, 2, 3)).clamp(min=1).to(w.dtype)


def mean_distance(w: Tensor) -> Tensor:
    """(H,) mean attention distance in positions, Σ_j w_ij |pos(i) - j|, averaged over queries:
    the "attention distance" of Dosovitskiy et al. 2021 (ViT), Fig. 7, along the sequence. With
    fewer queries than keys, query i sits at key position i + M - N (as in decoding)."""
    _check(w)
    n, m = w.shape[-2:]
    queries = torch.arange(n, device=w.device) + (m - n if n <= m else 0)
    distance = (queries[:, None] - torch.arange(m, device=w.device)[None, :]).abs().to(w.dtype)
    return _per_head_mean((w * distance).sum(-1), w.sum(-1) > 0)


def rollout(layers: Sequence[Tensor], residual: float = 0.5) -> Tensor:
    """(B, N, N) attention rollout: how much each output position draws on each input token
    through all layers, Π_l (residual·I + (1 - residual)·mean_h W_l), rows renormalised, first
    layer rightmost. Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", §3.
    Self-attention only: every layer's weights must be (B, H, N, N)."""
    if not layers:
        raise InputError("rollout needs the weights of at least one layer")
    result = None
    for w in layers:
        _check(w)
        n, m = w.shape[-2:]
        if n != m or (result is not None and result.shape[-1] != n):
            raise InputError(f"rollout is for self-attention over one sequence: got weights of "
                             f"shape {tuple(w.shape)}")
        a = residual * torch.eye(n, dtype=w.dtype, device=w.device) + (1 - residual) * w.mean(1)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result


__all__ = ["entropy", "mean_distance", "rollout", "zero_share"]
