"""Feature maps for kernelised (linear) attention: elu+1, relu and FAVOR+ positive random features.

A feature map phi turns softmax-like attention into phi(q) (phi(k)^T v), linear in sequence length.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor


def elu1(x: Tensor) -> Tensor:
    """elu(x) + 1, the positive feature map of Katharopoulos et al. (2020)."""
    # Written as exp(x) for x <= 0: elu(x) + 1 rounds to exactly 0 once exp(x) < machine epsilon.
    # The clamp keeps the unused exp branch finite, so its gradient is 0 rather than nan.
    return torch.where(x > 0, x + 1.0, torch.exp(x.clamp(max=0.0)))


def relu_features(x: Tensor) -> Tensor:
    """relu(x); non-negative, but a row may be all zero, so normalisers can vanish."""
    return torch.relu(x)


@functools.lru_cache(maxsize=128)
def _draw_projection(m: int, head_dim: int, orthogonal: bool, seed: int) -> Tensor:
    # Drawn on CPU in float64 so a seed means the same matrix on every device and dtype.
    gen = torch.Generator().manual_seed(seed)
    if not orthogonal:
        return torch.randn(m, head_dim, generator=gen, dtype=torch.float64)
    n_blocks = math.ceil(m / head_dim)
    gauss = torch.randn(n_blocks, head_dim, head_dim, generator=gen, dtype=torch.float64)
    # geqrf + householder_product is linalg.qr spelled out; on some CPU builds linalg.qr of
    # small matrices is orders of magnitude slower than these two calls.
    factors, tau = torch.geqrf(gauss)
    q = torch.linalg.householder_product(factors, tau)
    # Fixing the signs by diag(R) makes Q Haar-distributed rather than biased by the QR routine.
    q = q * torch.sign(torch.diagonal(factors, dim1=-2, dim2=-1)).unsqueeze(-2)
    rows = q.transpose(-2, -1).reshape(n_blocks * head_dim, head_dim)[:m]
    # Orthogonal rows have unit norm; giving them chi-distributed norms keeps each row N(0, I).
    norms = torch.randn(m, head_dim, generator=gen, dtype=torch.float64).norm(dim=1)
    return rows * norms.unsqueeze(1)


def favor_projection(
    m: int,
    head_dim: int,
    *,
    orthogonal: bool = True,
    seed: int = 0,
    device=None,
    dtype=torch.float32,
) -> Tensor:
    """(m, head_dim) random projection for FAVOR+ (Choromanski et al. 2021, Performer).

    Rows are marginally N(0, I). With ``orthogonal`` the rows come in blocks of ``head_dim``
    mutually orthogonal rows (the last block truncated), which lowers the estimator's variance.
    The same (m, head_dim, orthogonal, seed) always gives the same matrix.
    """
    if m < 1 or head_dim < 1:
        raise ValueError(f"favor_projection needs m >= 1 and head_dim >= 1, got {m}, {head_dim}")
    omega = _draw_projection(int(m), int(head_dim), bool(orthogonal), int(seed))
    # copy=True so a caller mutating the result cannot corrupt the cached draw.
    return omega.to(device=device, dtype=dtype, copy=True)


def favor_features(x: Tensor, omega: Tensor, *, is_query: bool,
                   keep: Tensor | None = None) -> Tensor:
    """Positive random features exp(omega x - |x|^2 / 2) / sqrt(m): (..., L, d) -> (..., L, m).

    The caller scales x by d**-0.25 first, so that phi(q) . phi(k) estimates exp(q . k / sqrt(d)).

    Each output is multiplied by a constant to keep exp in range: queries by one per row, keys by
    one per leading index (shared by all keys and features). These constants are NOT the features
    of the paper; they cancel only once attention rows are normalised by their sums, so use these
    features only in normalised attention, never as an unnormalised kernel estimate.

    `keep` (broadcastable to x's (..., L)) marks real keys: the key constant is taken over them
    only, so padding keys can never push real keys' features into underflow.
    """
    omega = omega.to(device=x.device, dtype=x.dtype)
    logits = x @ omega.T - 0.5 * (x * x).sum(dim=-1, keepdim=True)
    # The shift cancels in the normalised output, so its gradient is zero there; detaching it
    # saves work and avoids the subgradient of max.
    if is_query:
        shift = logits.amax(dim=-1, keepdim=True).detach()
    else:
        real = logits if keep is None else logits.masked_fill(~keep[..., None], -math.inf)
        shift = real.amax(dim=(-2, -1), keepdim=True).detach()
        shift = torch.where(torch.isfinite(shift), shift, 0.0)  # no real key at all
    return torch.exp(logits - shift) / math.sqrt(omega.shape[0])
