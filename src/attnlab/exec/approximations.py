"""Kernelised and low-rank attention, materialised as (B, H, N, M) effective weights.

For every approximation the output is exactly `weights @ v`, so the reference backend can
return weights and honour any mask: a kernel row is re-normalised over its visible keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import InputError
from attnlab.exec import features
from attnlab.lang import approximations as A
from attnlab.lang.masks import MaskInputs


def approximate_weights(approx: A.Approximation, q: Tensor, k: Tensor, visible: Tensor | None,
                        inp: MaskInputs, params: dict[str, Tensor]) -> Tensor:
    """Weights (B, H, N, M) of `approx` for q (B, H, N, D) and per-query-head k (B, H, M, D)."""
    if isinstance(approx, A.Linear):
        phi = features.elu1 if approx.feature_map == "elu1" else features.relu_features
        return normalise_kernel(phi(q) @ phi(k).transpose(-1, -2), visible)
    if isinstance(approx, A.Favor):
        d = q.shape[-1]
        omega = features.favor_projection(approx.m, d, orthogonal=approx.orthogonal,
                                          seed=approx.seed, device=q.device, dtype=q.dtype)
        scale = d**-0.25  # so that φ(q)·φ(k) estimates exp(q·k / √d)
        phi_q = features.favor_features(q * scale, omega, is_query=True)
        keep = None if inp.key_keep is None else inp.key_keep[:, None, :]
        phi_k = features.favor_features(k * scale, omega, is_query=False, keep=keep)
        return normalise_kernel(phi_q @ phi_k.transpose(-1, -2), visible)
    if isinstance(approx, A.LowRank):
        return lowrank_weights(approx, q, k, inp, params)
    raise NotImplementedError(f"approximation {approx} has no implementation")


def normalise_kernel(kernel: Tensor, visible: Tensor | None) -> Tensor:
    """Row-normalise non-negative kernel values over visible keys; empty rows give zeros."""
    if visible is not None:
        kernel = kernel.masked_fill(~visible, 0)
    total = kernel.sum(dim=-1, keepdim=True)
    ok = total > 0
    return torch.where(ok, kernel / torch.where(ok, total, torch.ones_like(total)), 0)


def lowrank_weights(approx: A.LowRank, q: Tensor, k: Tensor, inp: MaskInputs,
                    params: dict[str, Tensor]) -> Tensor:
    """Linformer: softmax(q (E k)ᵀ/√d) F, with padded keys left out of both projections."""
    m = k.shape[-2]
    if m > approx.max_len:
        raise InputError(f"{approx} was built for at most {approx.max_len} keys, got {m}; "
                         f"raise max_len (lowrank({approx.k}, max_len={m}))")
    e, f = params["approximation.e"][:, :m], params["approximation.f"][:, :m]
    if inp.key_keep is not None:
        keep = inp.key_keep.to(k.dtype)[:, None, None, :]  # (B, 1, 1, M)
        e, f = e * keep, f * keep
    projected = e @ k  # (B, H, k, D): k summaries of the keys
    summary = torch.softmax((q @ projected.transpose(-1, -2)) * q.shape[-1] ** -0.5, dim=-1)
    return summary @ f.expand(*summary.shape[:2], *f.shape[-2:])
