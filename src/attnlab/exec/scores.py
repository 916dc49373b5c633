"""Scores and score mods as tensors. Mods are FlexAttention-style `score_mod` closures
(score, b, h, q_idx, kv_idx) -> score, so every backend can use the same definitions."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from attnlab.errors import InputError
from attnlab.lang import scores as S
from attnlab.lang.masks import MaskInputs

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def compute_scores(score: S.Score, q: Tensor, k: Tensor, params: dict[str, Tensor]) -> Tensor:
    """(B, H, N, D) × (B, H, M, D) -> (B, H, N, M); k already has one head per query head."""
    d = q.shape[-1]
    if isinstance(score, S.Dot):
        return q @ k.transpose(-1, -2)
    if isinstance(score, S.ScaledDot):
        return (q @ k.transpose(-1, -2)) * (score.scale or d**-0.5)
    if isinstance(score, S.General):
        return (q @ params["score.w"]) @ k.transpose(-1, -2)
    if isinstance(score, S.Additive):
        wq = torch.einsum("bhnd,hda->bhna", q, params["score.w_q"])
        wk = torch.einsum("bhmd,hda->bhma", k, params["score.w_k"])
        return torch.einsum("bhnma,ha->bhnm", torch.tanh(wq[:, :, :, None] + wk[:, :, None]),
                            params["score.v"])
    if isinstance(score, S.Cosine):
        qn, kn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
        tau = score.tau if score.tau is not None else params["score.log_tau"].exp().view(1, -1, 1, 1)
        return (qn @ kn.transpose(-1, -2)) * tau
    raise NotImplementedError(f"score {score} has no implementation")


def alibi_slopes(heads: int) -> list[float]:
    """Press et al.'s geometric slopes; for a head count that is not a power of two, the
    slopes of the next lower power of two, then every other slope of the one above."""
    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    lower = 2 ** math.floor(math.log2(heads))
    if lower == heads:
        return power_of_two(heads)
    return power_of_two(lower) + power_of_two(2 * lower)[0::2][: heads - lower]


def t5_bucket(relative: Tensor, buckets: int, max_distance: int, bidirectional: bool) -> Tensor:
    """T5's bucket of (key position − query position): exact near, log-spaced far."""
    n = -relative
    ret = torch.zeros_like(n)
    if bidirectional:
        buckets //= 2
        ret = ret + (n < 0).long() * buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    exact = buckets // 2
    far = exact + (torch.log(n.clamp(min=1).double() / exact) / math.log(max_distance / exact)
                   * (buckets - exact)).long()
    return ret + torch.where(n < exact, n, far.clamp(max=buckets - 1))


def score_mod(mod: S.ScoreMod, inp: MaskInputs, params: dict[str, Tensor], path: str,
              bias: Tensor | None = None) -> ScoreMod:
    """The closure (score, b, h, q_idx, kv_idx) -> score for one mod, call-time data bound."""
    off = inp.offset
    if isinstance(mod, S.Alibi):
        slopes = torch.tensor(alibi_slopes(inp.heads), device=inp.device)
        return lambda s, b, h, q, kv: s - (slopes[h] * (q + off - kv).abs()).to(s.dtype)
    if isinstance(mod, S.RelativeBias):
        table = params[f"{path}.table"]
        return lambda s, b, h, q, kv: s + table[
            t5_bucket(kv - (q + off), mod.buckets, mod.max_distance, mod.bidirectional), h
        ].to(s.dtype)
    if isinstance(mod, S.Softcap):
        return lambda s, b, h, q, kv: mod.c * torch.tanh(s / mod.c)
    if isinstance(mod, S.Temperature):
        return lambda s, b, h, q, kv: s / mod.t
    if isinstance(mod, S.Bias):
        full = _broadcast_bias(bias, inp)
        return lambda s, b, h, q, kv: s + full[b, h, q, kv].to(s.dtype)
    if isinstance(mod, S.GraphDistance):
        table, dist = params[f"{path}.table"], _distances(inp, mod)
        far = mod.max_distance + 1
        return lambda s, b, h, q, kv: s + table[
            _distance_row(dist[b, q, kv], mod.max_distance, far), h].to(s.dtype)
    raise NotImplementedError(f"score mod {mod} has no implementation")


def _distance_row(d: Tensor, max_distance: int, far: int) -> Tensor:
    """The table row of each distance: itself up to max_distance; farther and unreachable
    (negative) pairs share row max_distance + 1."""
    return torch.where((d < 0) | (d > max_distance), far, d)


def _distances(inp: MaskInputs, mod: S.ScoreMod) -> Tensor:
    if inp.distances is None:
        raise InputError(f"the score mod '{mod}' needs distances= at call time (an integer "
                         f"tensor ({inp.batch}, {inp.n}, {inp.m}) of shortest-path lengths, "
                         "-1 for unreachable)")
    return inp.distances


def _broadcast_bias(bias: Tensor | None, inp: MaskInputs) -> Tensor:
    if bias is None:
        raise InputError("the program's 'bias' mod needs bias= at call time "
                         f"(a tensor broadcastable to ({inp.batch}, {inp.heads}, {inp.n}, {inp.m}))")
    shape = (inp.batch, inp.heads, inp.n, inp.m)
    try:
        return bias.expand(*shape)
    except RuntimeError:
        raise InputError(f"bias of shape {tuple(bias.shape)} does not broadcast to {shape} "
                         "(batch, heads, queries, keys)") from None


DOT_FORM = (S.Dot, S.ScaledDot, S.General, S.Cosine)  # scores some backend can fuse
AFFINE_MODS = (S.Alibi, S.RelativeBias, S.Bias, S.GraphDistance, S.Temperature)  # s -> a·s + g(b, h, q, kv)


def dot_form(score: S.Score, q: Tensor, k: Tensor, params: dict[str, Tensor],
             ) -> tuple[Tensor, Tensor, float]:
    """(q̃, k̃, scale) with score(q, k) == scale · q̃·k̃, so fused kernels can run any dot-form
    score; q (B, H, N, D), k (B, H_kv, M, D)."""
    d = q.shape[-1]
    if isinstance(score, S.Dot):
        return q, k, 1.0
    if isinstance(score, S.ScaledDot):
        return q, k, score.scale or d**-0.5
    if isinstance(score, S.General):
        return torch.einsum("bhnd,hde->bhne", q, params["score.w"]), k, 1.0
    if isinstance(score, S.Cosine):
        tau = score.tau if score.tau is not None else params["score.log_tau"].exp().view(1, -1, 1, 1)
        qn, kn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(k, dim=-1)
        return qn * tau, kn, 1.0
    raise NotImplementedError(f"score {score} has no dot form")


def affine_factor(mods: tuple[S.ScoreMod, ...]) -> float | None:
    """The slope a of mods composed as s -> a·s + g; None when a mod is not affine."""
    slope = 1.0
    for m in mods:  # a loop, not generators: torch.compile(fullgraph=True) traces it
        if not isinstance(m, AFFINE_MODS):
            return None
        if isinstance(m, S.Temperature):
            slope /= m.t
    return slope


def compose_mods(mods: tuple[S.ScoreMod, ...], inp: MaskInputs, params: dict[str, Tensor],
                 bias: Tensor | None) -> ScoreMod | None:
    """All the program's mods as one score_mod closure, in program order (None: no mods)."""
    if not mods:
        return None
    fns = [score_mod(m, inp, params, f"mods.{i}", bias) for i, m in enumerate(mods)]

    def composed(s, b, h, q, kv):
        for fn in fns:
            s = fn(s, b, h, q, kv)
        return s

    return composed
