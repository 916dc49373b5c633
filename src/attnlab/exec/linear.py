"""The linear backend: kernelised (`linear`, `favor`) and low-rank (`lowrank`) programs in time and
memory linear in sequence length, never forming the N×M scores; equal to `reference` up to rounding."""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import InputError
from attnlab.exec import features, hidden
from attnlab.exec.backend import Backend, Call
from attnlab.lang import approximations as A
from attnlab.lang.masks import And, Causal, Mask, MaskInputs, Padding
from attnlab.lang.program import Program


class LinearBackend(Backend):
    """Runs approximations with no mask, `causal`, `padding` or `causal & padding`.

    Kernel forms compute φ(q) (φ(k)ᵀ v) / (φ(q) · Σ φ(k)); causal ones keep running sums and
    process `chunk` queries at a time, so memory grows with N·chunk, not N².
    """

    name = "linear"

    def __init__(self, chunk: int = 64) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be ≥ 1, got {chunk}")
        self.chunk = chunk

    def refuse(self, call: Call) -> str | None:
        program = call.program
        approx = program.approximation
        if approx is None:
            return "exact programs need the score matrix; linear runs linear/favor/lowrank approximations"
        if not isinstance(approx, A.Linear | A.Favor | A.LowRank):
            return f"linear has no kernel for the approximation '{approx}'; the reference backend runs it"
        if not _causal_or_padding(program.mask):
            return (f"linear honours only causal, padding or causal & padding, not the mask "
                    f"'{program.mask}'; the reference backend runs it")
        if call.return_weights:
            return "linear never forms the weights; only reference returns weights"
        if call.training and program.dropout > 0:
            return (f"dropout({program.dropout:g}) on weights needs materialised weights; "
                    "use reference, or training=False")
        return None

    def run(self, q: Tensor, k: Tensor, v: Tensor, program: Program, inp: MaskInputs, *,
            bias: Tensor | None, params: dict[str, Tensor], training: bool,
            generator: torch.Generator | None) -> Tensor:
        in_dtype = q.dtype
        if in_dtype in (torch.float16, torch.bfloat16):  # exp features want fp32 range, as in reference
            q, k, v = q.float(), k.float(), v.float()
        # Padding and causal keys hide from some queries: a NaN or inf there must not leak; one
        # a query sees must show (the empty-row guard in _divide would zero it).
        finite = hidden.all_finite(k, v)
        if not finite:
            hits = _seen_bad(program.mask, inp, k, v, q.shape[2]).repeat_interleave(
                q.shape[1] // k.shape[1], 1)
            k, v = hidden.clean(k), hidden.clean(v)
        heads, kv_heads = q.shape[1], k.shape[1]
        # GQA without copying k, v: query head h reads kv head h // group, so group the query heads.
        q = q.unflatten(1, (kv_heads, heads // kv_heads))  # (B, H_kv, G, N, D)
        approx = program.approximation
        if isinstance(approx, A.LowRank):
            out = _lowrank(approx, q, k, v, inp, params)
        else:
            keep = None if inp.key_keep is None else inp.key_keep[:, None, :]
            phi_q, phi_k = _features(approx, q, k, keep)
            parts = _mask_parts(program.mask)
            if any(isinstance(p, Padding) for p in parts):
                phi_k = phi_k.masked_fill(~inp.key_keep[:, None, :, None], 0)
            if any(isinstance(p, Causal) for p in parts):
                out = _causal(phi_q, phi_k, v, self.chunk)
            else:
                out = _divide(phi_q @ (phi_k.transpose(-1, -2) @ v).unsqueeze(2),
                              phi_q @ phi_k.sum(-2)[:, :, None, :, None])
        out = out.flatten(1, 2)
        return (out if finite else hidden.poison(out, hits)).to(in_dtype)


def _seen_bad(mask: Mask, inp: MaskInputs, k: Tensor, v: Tensor, n: int) -> Tensor:
    """(B, H_kv, N, Dv + 1): non-finite keys / values each query sees through causal and
    padding, counted from running sums (no N×M matrix)."""
    parts = _mask_parts(mask)
    bad = hidden.bad_keys(k, v)  # (B, H_kv, M, Dv + 1)
    if any(isinstance(p, Padding) for p in parts):
        bad = bad * inp.key_keep[:, None, :, None].to(bad.dtype)
    if not any(isinstance(p, Causal) for p in parts):
        return bad.sum(-2, keepdim=True).expand(-1, -1, n, -1)
    last = torch.arange(n, device=k.device) + inp.offset  # the last key each query sees
    seen = bad.cumsum(-2).index_select(-2, last.clamp(min=0, max=inp.m - 1))
    return torch.where((last >= 0)[:, None], seen, 0)


def _mask_parts(mask: Mask | None) -> tuple[Mask, ...]:
    if mask is None:
        return ()
    return mask.children if isinstance(mask, And) else (mask,)


def _causal_or_padding(mask: Mask | None) -> bool:
    """The mask is absent, a causal or padding leaf, or an And of such leaves (And is flat)."""
    return all(isinstance(p, Causal | Padding) for p in _mask_parts(mask))


def _features(approx: A.Approximation, q: Tensor, k: Tensor,
              keep: Tensor | None) -> tuple[Tensor, Tensor]:
    """φ(q) (B, H_kv, G, N, m) and φ(k) (B, H_kv, M, m), exactly as `approximations.py` forms them."""
    if isinstance(approx, A.Linear):
        phi = features.elu1 if approx.feature_map == "elu1" else features.relu_features
        return phi(q), phi(k)
    d = q.shape[-1]
    omega = features.favor_projection(approx.m, d, orthogonal=approx.orthogonal, seed=approx.seed,
                                      device=q.device, dtype=q.dtype)
    scale = d**-0.25
    # The key stabiliser is one constant per (batch, head) over all real keys, as in the
    # reference; computing it per chunk would change which rows underflow.
    return (features.favor_features(q * scale, omega, is_query=True),
            features.favor_features(k * scale, omega, is_query=False, keep=keep))


def _divide(num: Tensor, den: Tensor) -> Tensor:
    """num / den, and exactly 0 (with zero gradients) where den is 0: a row that sees nothing."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, 1.0), 0.0)


def _causal(phi_q: Tensor, phi_k: Tensor, v: Tensor, chunk: int) -> Tensor:
    """Causal kernel attention with bottom-right alignment: query i sees keys j ≤ i + M − N.

    Keys left of a query chunk are summarised in running sums S = Σ φ(k) vᵀ and z = Σ φ(k);
    keys inside the chunk's diagonal band take a small masked chunk × chunk product.
    """
    n, m = phi_q.shape[-2], phi_k.shape[-2]
    offset = m - n
    start = min(max(offset, 0), m)  # keys before query 0's position: every query sees them
    state = phi_k[..., :start, :].transpose(-1, -2) @ v[..., :start, :]  # (B, H_kv, m, Dv)
    total = phi_k[..., :start, :].sum(-2)  # (B, H_kv, m)
    outs = []
    for i0 in range(0, n, chunk):
        i1 = min(i0 + chunk, n)
        lo, hi = min(max(i0 + offset, 0), m), min(max(i1 + offset, 0), m)
        fq, fk, vc = phi_q[..., i0:i1, :], phi_k[..., lo:hi, :], v[..., lo:hi, :]
        hidden = (torch.arange(lo, hi, device=v.device)
                  > torch.arange(i0, i1, device=v.device)[:, None] + offset)
        band = (fq @ fk.transpose(-1, -2).unsqueeze(2)).masked_fill(hidden, 0)  # (B, H_kv, G, c, c')
        num = fq @ state.unsqueeze(2) + band @ vc.unsqueeze(2)
        den = fq @ total[:, :, None, :, None] + band.sum(-1, keepdim=True)
        outs.append(_divide(num, den))
        state = state + fk.transpose(-1, -2) @ vc
        total = total + fk.sum(-2)
    return torch.cat(outs, dim=-2)


def _lowrank(approx: A.LowRank, q: Tensor, k: Tensor, v: Tensor, inp: MaskInputs,
             params: dict[str, Tensor]) -> Tensor:
    """Linformer as softmax(q (E k)ᵀ/√d) (F v): the reference's weights @ v, re-associated, O(N·k)."""
    m = k.shape[-2]
    if m > approx.max_len:
        raise InputError(f"{approx} was built for at most {approx.max_len} keys, got {m}; "
                         f"raise max_len (lowrank({approx.k}, max_len={m}))")
    e = params["approximation.e"][:, :m].to(k.dtype)
    f = params["approximation.f"][:, :m].to(k.dtype)
    # As in the reference, padding keys leave both projections whenever key lengths are given.
    if inp.key_keep is not None:
        keep = inp.key_keep.to(k.dtype)[:, None, None, :]  # (B, 1, 1, M)
        e, f = e * keep, f * keep
    keys, values = e @ k, f @ v  # (B, H_kv, k, D), (B, H_kv, k, Dv): k summaries of the sequence
    scores = (q @ keys.transpose(-1, -2).unsqueeze(2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores, dim=-1) @ values.unsqueeze(2)
