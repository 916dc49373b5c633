"""Normalizers: turn attention scores into attention weights over the last dim, with an optional
visibility mask. Hidden keys get weight 0, and a row with no visible key gets all-zero weights."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _prepare(scores: Tensor, visible: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """(scores with hidden entries set to 0, broadcast mask, row-has-any-visible flag)."""
    if visible is None:
        vis = torch.ones_like(scores, dtype=torch.bool)
    else:
        if visible.dtype != torch.bool:
            raise TypeError(f"visible must be a bool tensor, got {visible.dtype}")
        shape = torch.broadcast_shapes(scores.shape, visible.shape)
        scores, vis = scores.expand(shape), visible.expand(shape)
    # Zeroing with `where` (not a multiply) means a NaN or inf under a hidden key can reach
    # neither the output nor any gradient.
    return torch.where(vis, scores, 0.0), vis, vis.any(dim=-1, keepdim=True)


def _visible_max(z: Tensor, vis: Tensor, any_: Tensor) -> Tensor:
    """Row max over visible keys (0 for rows with none), detached: a shift, not a parameter."""
    if z.shape[-1] == 0:
        return z.new_zeros((*z.shape[:-1], 1))
    m = z.detach().masked_fill(~vis, -math.inf).amax(dim=-1, keepdim=True)
    return torch.where(any_, m, 0.0)


def _sort_visible(z: Tensor, vis: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Visible scores sorted descending with hidden ones (as 0) last, their order, and 1..M."""
    order = z.masked_fill(~vis, -math.inf).argsort(dim=-1, descending=True)
    ranks = torch.arange(1, z.shape[-1] + 1, device=z.device, dtype=z.dtype)
    return z.gather(-1, order), order, ranks


def softmax(scores: Tensor, visible: Tensor | None = None) -> Tensor:
    """Softmax over the visible keys."""
    z, vis, any_ = _prepare(scores, visible)
    # -inf only in rows that keep a visible key: an all -inf row would softmax to NaN.
    z = z.masked_fill(~vis & any_, -math.inf)
    return torch.where(vis, torch.softmax(z, dim=-1), 0.0)


def sparsemax(scores: Tensor, visible: Tensor | None = None) -> Tensor:
    """Sparsemax (Martins & Astudillo 2016): projection onto the simplex, exact by sorting."""
    z, vis, any_ = _prepare(scores, visible)
    z = z - _visible_max(z, vis, any_)
    n_vis = vis.sum(dim=-1, keepdim=True)
    with torch.no_grad():
        zs, order, k = _sort_visible(z, vis)
        in_sorted = (1 + k * zs > zs.cumsum(dim=-1)) & (k <= n_vis)
        supp = torch.zeros_like(vis).scatter(-1, order, in_sorted)
    # The threshold recomputed on the chosen support, with autograd, has the exact Jacobian.
    size = supp.sum(dim=-1, keepdim=True).clamp(min=1)
    tau = (torch.where(supp, z, 0.0).sum(dim=-1, keepdim=True) - 1) / size
    return torch.where(supp, (z - tau).clamp(min=0), 0.0)


def entmax15(scores: Tensor, visible: Tensor | None = None) -> Tensor:
    """1.5-entmax (Peters et al. 2019): p = [z/2 - tau]_+^2 summing to 1, exact by sorting."""
    z, vis, any_ = _prepare(scores, visible)
    z = z / 2
    z = z - _visible_max(z, vis, any_)
    n_vis = vis.sum(dim=-1, keepdim=True)
    with torch.no_grad():
        zs, order, k = _sort_visible(z, vis)
        mean = zs.cumsum(dim=-1) / k
        sum_sq_dev = (zs**2).cumsum(dim=-1) - k * mean**2
        tau_k = mean - ((1 - sum_sq_dev) / k).clamp(min=0).sqrt()
        in_sorted = (tau_k < zs) & (k <= n_vis)
        supp = torch.zeros_like(vis).scatter(-1, order, in_sorted)
    # Solve sum_S (z - tau)^2 = 1 again on the support only, so autograd never touches the
    # clamped sqrt(0) of sizes that were not chosen (its gradient would be inf * 0 = NaN).
    size = supp.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = torch.where(supp, z, 0.0).sum(dim=-1, keepdim=True) / size
    sum_sq_dev = torch.where(supp, (z - mean) ** 2, 0.0).sum(dim=-1, keepdim=True)
    tiny = torch.finfo(z.dtype).tiny
    tau = mean - ((1 - sum_sq_dev) / size).clamp(min=tiny).sqrt()
    return torch.where(supp, (z - tau).clamp(min=0) ** 2, 0.0)


class _EntmaxBisect(torch.autograd.Function):
    """alpha-entmax by bisection on tau, with the analytic Jacobian as backward."""

    @staticmethod
    def forward(ctx, z: Tensor, vis: Tensor, any_: Tensor, alpha: float, n_iter: int) -> Tensor:
        x = (alpha - 1) * (z - _visible_max(z, vis, any_))
        x = x.masked_fill(~vis, -math.inf)
        power = 1 / (alpha - 1)

        def unnormalised(tau: Tensor) -> Tensor:
            return (x - tau).clamp(min=0) ** power

        # The largest visible x is 0 after the shift. tau = -1 gives that key p = 1 (sum >= 1);
        # tau = -(1/n)^(alpha-1) caps every p at 1/n (sum <= 1), with n the visible count.
        n = vis.sum(dim=-1, keepdim=True).clamp(min=1).to(z.dtype)
        lo = torch.full_like(n, -1.0)
        hi = -(n ** (1 - alpha))
        for _ in range(n_iter):
            mid = (lo + hi) / 2
            big = unnormalised(mid).sum(dim=-1, keepdim=True) >= 1
            lo = torch.where(big, mid, lo)
            hi = torch.where(big, hi, mid)
        # lo always keeps sum >= 1, so dividing by the sum is safe in rows with a visible key.
        p = unnormalised(lo)
        total = p.sum(dim=-1, keepdim=True)
        p = torch.where(any_, p / torch.where(total > 0, total, 1.0), 0.0)
        ctx.save_for_backward(p)
        ctx.alpha = alpha
        return p

    @staticmethod
    def backward(ctx, grad_p: Tensor):
        (p,) = ctx.saved_tensors
        support = p > 0
        g = torch.where(support, torch.where(support, p, 1.0) ** (2 - ctx.alpha), 0.0)
        g_sum = g.sum(dim=-1, keepdim=True)
        mean = (g * grad_p).sum(dim=-1, keepdim=True) / torch.where(g_sum > 0, g_sum, 1.0)
        return g * (grad_p - mean), None, None, None, None


def entmax_bisect(
    scores: Tensor, visible: Tensor | None = None, alpha: float = 1.5, n_iter: int = 60
) -> Tensor:
    """alpha-entmax for any alpha > 1: p = [(alpha-1) z - tau]_+^(1/(alpha-1)), tau by bisection."""
    if not alpha > 1:
        raise ValueError(f"entmax_bisect needs alpha > 1, got {alpha}")
    z, vis, any_ = _prepare(scores, visible)
    return _EntmaxBisect.apply(z, vis, any_, float(alpha), int(n_iter))


def topk(scores: Tensor, visible: Tensor | None = None, k: int = 8) -> Tensor:
    """Softmax over the k largest visible scores, straight-through the plain masked softmax."""
    if k < 1:
        raise ValueError(f"topk needs k >= 1, got {k}")
    z, vis, _ = _prepare(scores, visible)
    with torch.no_grad():
        keys = z.masked_fill(~vis, -math.inf)
        m, chosen_k = z.shape[-1], k
        if isinstance(m, torch.SymInt):
            # a traced length (torch.export) would guard on min(k, M): k hidden columns after
            # the keys instead, so topk(k) never asks for more keys than a row has
            keys = torch.cat([keys, keys.new_full((*keys.shape[:-1], k), -math.inf)], dim=-1)
        else:
            chosen_k = min(k, m)  # k may be far larger than any row (2**31 - 1 is accepted)
        chosen = keys.topk(chosen_k, dim=-1).indices
        # A row with fewer than k visible keys also "chooses" hidden ones; drop them again.
        picked = torch.zeros_like(keys, dtype=torch.bool).scatter(-1, chosen, True)
        keep = picked[..., :m] & vis
    soft = softmax(z, vis)
    hard = softmax(z, keep)
    return soft + (hard - soft).detach()


def _gumbel_noise(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gumbel(0, 1) samples shaped like `like`, drawn on its device with `generator`."""
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    info = torch.finfo(like.dtype)
    u = u.clamp(min=info.tiny, max=1 - info.eps)
    return -torch.log(-torch.log(u))


def gumbel(
    scores: Tensor,
    visible: Tensor | None = None,
    tau: float = 1.0,
    hard: bool = False,
    training: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gumbel-softmax at temperature tau (noise only when training); hard=True is straight-through
    one-hot of the argmax."""
    if not tau > 0:
        raise ValueError(f"gumbel needs tau > 0, got {tau}")
    z, vis, any_ = _prepare(scores, visible)
    if training:
        z = z + _gumbel_noise(z, generator)
    z = z / tau
    soft = softmax(z, vis)
    if not hard or z.shape[-1] == 0:
        return soft
    with torch.no_grad():
        best = z.masked_fill(~vis, -math.inf).argmax(dim=-1, keepdim=True)
        one_hot = torch.zeros_like(soft).scatter(-1, best, 1.0)
        one_hot = torch.where(any_, one_hot, 0.0)
    return soft + (one_hot - soft).detach()


def sigmoid(scores: Tensor, visible: Tensor | None = None, bias: float | None = None) -> Tensor:
    """sigmoid(scores + bias) per key, bias = -log(M) by default (Ramapuram et al. 2024)."""
    z, vis, _ = _prepare(scores, visible)
    if bias is not None:
        b = bias
    elif isinstance(z.shape[-1], torch.SymInt):  # a traced key count has no value to take a log of
        b = -z.new_ones(z.shape[-1]).sum().clamp(min=1).log()
    else:
        b = -math.log(max(z.shape[-1], 1))
    return torch.where(vis, torch.sigmoid(z + b), 0.0)


def relu(scores: Tensor, visible: Tensor | None = None) -> Tensor:
    """relu(scores) divided by the row's visible-key count (Wortsman et al. 2023)."""
    z, vis, _ = _prepare(scores, visible)
    n_vis = vis.sum(dim=-1, keepdim=True).clamp(min=1)
    return torch.where(vis, torch.relu(z) / n_vis, 0.0)
