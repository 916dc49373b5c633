"""Hidden keys have no effect: a NaN or inf in k or v at a key a query cannot see must not reach
that query's output or gradients, while a non-finite value a query does see still shows.

Weight 0 times NaN is NaN, so masking the weights is not enough. Backends ask `all_finite`
first (one pass over k and v, no copy): finite inputs take the fast path untouched. Otherwise
they run on `clean` k and v (non-finite entries set to 0) and `poison` the outputs of queries
that see a non-finite key (the whole row, as softmax would) or value (that channel) with NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def all_finite(*tensors: Tensor) -> bool:
    """Every value finite. While torch.compile traces there is no data to look at, and a branch
    on it would break the graph (frozen plans compile with fullgraph=True): a compiled graph
    keeps the fast path and relies on finite k and v (docs/reliability.md says so)."""
    if torch.compiler.is_compiling():
        return True
    # A sum is finite only if every term is (NaN and inf propagate): one pass, no bool copy,
    # ~20x cheaper than isfinite().all(). A finite sum that overflows only takes the safe path.
    total = sum(t.sum(dtype=torch.float32 if t.element_size() < 4 else t.dtype) for t in tensors)
    return bool(torch.isfinite(total))


def clean(t: Tensor) -> Tensor:
    """t with every NaN and ±inf set to 0 (their gradient is 0)."""
    return torch.where(torch.isfinite(t), t, 0)


def bad_keys(k: Tensor, v: Tensor) -> Tensor:
    """(…, M, Dv + 1) float: 1 where v is not finite, and in the last channel where k is not."""
    return torch.cat([~torch.isfinite(v), ~torch.isfinite(k).all(-1, keepdim=True)],
                     dim=-1).to(v.dtype if v.dtype.is_floating_point else torch.float32)


def poison(out: Tensor, hits: Tensor) -> Tensor:
    """out (…, N, Dv) with NaN where hits (…, N, Dv + 1) counts a seen non-finite value, and in
    whole rows that see a non-finite key (hits' last channel)."""
    seen = (hits[..., :-1] > 0) | (hits[..., -1:] > 0)
    return torch.where(seen, math.nan, out)


def seen_bad(visible: Tensor | None, k: Tensor, v: Tensor, n: int) -> Tensor:
    """hits (B, H, N, Dv + 1): how many non-finite keys / values each query sees, for k, v with
    one head per query head and visible (B', H', N, M) bool, or None when every key is seen."""
    bad = bad_keys(k, v)
    if visible is None:
        return bad.sum(-2, keepdim=True).expand(*bad.shape[:-2], n, bad.shape[-1])
    return visible.to(bad.dtype) @ bad
