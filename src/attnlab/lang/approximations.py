"""Approximations: kernelised and low-rank forms that replace score and normalizer for O(N) cost."""

from __future__ import annotations

from dataclasses import dataclass

from attnlab.errors import did_you_mean
from attnlab.lang.base import Part, check_length, check_seed, check_width, require, show

# Numbers in one learned table at most (64 MiB in float32): lowrank's E and F; Linformer at
# 65,536 tokens with k = 256 fits exactly.
MAX_TABLE = 2**24

FEATURE_MAPS = ("elu1", "relu")


class Approximation(Part):
    kind = "approximation"
    # Masks it can honour; None means any (the kernel form is re-normalised per query row).
    allowed_masks: frozenset[str] | None = None


@dataclass(frozen=True)
class Linear(Approximation):
    """φ(q)·φ(k) normalised per row (Katharopoulos et al., 2020); φ = elu+1 or relu."""

    name = "linear"
    shown = 1
    feature_map: str = "elu1"

    def validate(self) -> None:
        require(self.feature_map in FEATURE_MAPS, self.name,
                f"unknown feature map {show(self.feature_map)}"
                f"{did_you_mean(self.feature_map, FEATURE_MAPS)} (choose from {', '.join(FEATURE_MAPS)})")


@dataclass(frozen=True)
class Favor(Approximation):
    """Performer's FAVOR+: m positive random features estimate the softmax kernel."""

    name = "favor"
    shown = 1
    m: int = 256
    orthogonal: bool = True
    seed: int = 0

    def validate(self) -> None:
        check_width(self, "m")
        check_seed(self, "seed")


@dataclass(frozen=True)
class LowRank(Approximation):
    """Linformer: keys and values projected along the sequence to k rows (learnable E, F)."""

    name = "lowrank"
    learnable = True
    allowed_masks = frozenset({"padding"})
    k: int
    max_len: int = 4096

    def validate(self) -> None:
        check_width(self, "k")
        check_length(self, "max_len")
        require(self.max_len >= self.k, self.name,
                f"max_len must be ≥ k ({self.k}), got {self.max_len}")
        require(self.k * self.max_len <= MAX_TABLE, self.name,
                f"k × max_len must be ≤ 2**24 (each of E and F holds that many numbers), "
                f"got {self.k} × {self.max_len}")

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        return {"e": (self.k, self.max_len), "f": (self.k, self.max_len)}
