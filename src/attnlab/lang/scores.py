"""Scores (how similar one query is to one key) and score mods (what is added on top, in order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from attnlab.lang.base import (
    MAX_WIDTH,
    Part,
    at_least,
    at_most,
    check_factor,
    check_length,
    check_width,
    require,
)


class Score(Part):
    kind = "score"


class ScoreMod(Part):
    """A pure function of (score, b, h, q_idx, kv_idx), applied after the score."""

    kind = "mod"
    needs: ClassVar[frozenset[str]] = frozenset()  # call-time inputs it reads


@dataclass(frozen=True)
class Dot(Score):
    """q · k, unscaled."""

    name = "dot"


@dataclass(frozen=True)
class ScaledDot(Score):
    """q · k times `scale` (1/√head_dim when not given)."""

    name = "scaled_dot"
    scale: float | None = None

    def validate(self) -> None:
        check_factor(self, "scale")

    @property
    def gain(self) -> float:
        return self.scale or 1.0  # the default 1/√head_dim is at most 1


@dataclass(frozen=True)
class Additive(Score):
    """Bahdanau: vᵀ tanh(W_q q + W_k k), learnable; `dim` is the hidden size (head_dim if not given)."""

    name = "additive"
    learnable = True
    dim: int | None = None

    def validate(self) -> None:
        check_width(self, "dim")

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        a = self.dim or head_dim
        return {"w_q": (heads, head_dim, a), "w_k": (heads, head_dim, a), "v": (heads, a)}


@dataclass(frozen=True)
class General(Score):
    """Luong's general score qᵀ W k with a learnable W per head."""

    name = "general"
    learnable = True

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        return {"w": (heads, head_dim, head_dim)}


@dataclass(frozen=True)
class Cosine(Score):
    """cos(q, k) times tau; with tau not given, a per-head tau is learned."""

    name = "cosine"
    shown = 1
    tau: float | None = None

    @property
    def learnable(self) -> bool:  # type: ignore[override]
        return self.tau is None

    def validate(self) -> None:
        check_factor(self, "tau")

    @property
    def gain(self) -> float:
        return self.tau or 1.0  # a learned tau is the training's to keep in range

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        return {"log_tau": (heads,)} if self.tau is None else {}


@dataclass(frozen=True)
class Alibi(ScoreMod):
    """−slope_h·|i − j| with Press et al.'s geometric slopes (any head count)."""

    name = "alibi"


@dataclass(frozen=True)
class RelativeBias(ScoreMod):
    """T5's learnable per-head bias on log-spaced relative-position buckets."""

    name = "relative_bias"
    learnable = True
    buckets: int = 32
    max_distance: int = 128
    bidirectional: bool = True

    def validate(self) -> None:
        check_width(self, "buckets")
        check_length(self, "max_distance")
        half = self.buckets // 2 if self.bidirectional else self.buckets
        require(half >= 2, self.name, f"buckets must leave ≥ 2 per direction, got {self.buckets}")
        require(self.max_distance > half // 2, self.name,
                f"max_distance must exceed {half // 2} (the exact-bucket range), "
                f"got {self.max_distance}")

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        return {"table": (self.buckets, heads)}


@dataclass(frozen=True)
class Softcap(ScoreMod):
    """c · tanh(score / c): scores bounded to (−c, c) (Gemma 2)."""

    name = "softcap"
    c: float

    def validate(self) -> None:
        check_factor(self, "c")


@dataclass(frozen=True)
class Temperature(ScoreMod):
    """score / t."""

    name = "temperature"
    t: float

    def validate(self) -> None:
        check_factor(self, "t")

    @property
    def gain(self) -> float:
        return 1 / self.t


@dataclass(frozen=True)
class Bias(ScoreMod):
    """Adds a tensor given at call time (`bias=`), broadcastable to (B, H, N, M)."""

    name = "bias"
    needs = frozenset({"bias"})


@dataclass(frozen=True)
class GraphDistance(ScoreMod):
    """A learnable per-head bias for each shortest-path distance, read from `distances=` (Graphormer).

    Ying et al. 2021's spatial encoding: distances 0 … max_distance have a table row each;
    longer ones and unreachable pairs (< 0) share the last row."""

    name = "graph_distance"
    shown = 1
    learnable = True
    needs = frozenset({"distances"})
    max_distance: int = 8

    def validate(self) -> None:
        at_least(self, 1, "max_distance")
        # one table row per distance: a size across, like relative_bias's buckets
        at_most(self, MAX_WIDTH, "2**16 rows of the table; farther pairs share the last row",
                "max_distance")

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        return {"table": (self.max_distance + 2, heads)}
