"""Normalizers: what turns a row of scores into attention weights."""

from __future__ import annotations

from dataclasses import dataclass

from attnlab.lang.base import MAX_FACTOR, Part, at_most, check_factor, check_length, require


class Normalizer(Part):
    kind = "normalizer"


@dataclass(frozen=True)
class Softmax(Normalizer):
    name = "softmax"


@dataclass(frozen=True)
class Sparsemax(Normalizer):
    """Euclidean projection onto the simplex: exact zeros (Martins & Astudillo, 2016)."""

    name = "sparsemax"


@dataclass(frozen=True)
class Entmax(Normalizer):
    """α-entmax (Peters et al., 2019): 1 < α; α=1.5 exact by sorting, α=2 is sparsemax."""

    name = "entmax"
    shown = 1
    alpha: float = 1.5

    def validate(self) -> None:
        hint = " (α=1 is softmax: write 'softmax')" if self.alpha == 1 else ""
        require(self.alpha > 1, self.name, f"alpha must be > 1, got {self.alpha}{hint}")
        at_most(self, MAX_FACTOR, "beyond, float32 scores overflow", "alpha")

    @property
    def gain(self) -> float:
        return self.alpha - 1  # entmax works on (alpha - 1) · score


@dataclass(frozen=True)
class TopK(Normalizer):
    """Hard attention: softmax over the k largest scores, straight-through gradient."""

    name = "topk"
    k: int

    def validate(self) -> None:
        check_length(self, "k")


@dataclass(frozen=True)
class Gumbel(Normalizer):
    """Gumbel-softmax at temperature tau (noise only in training); `hard` takes the argmax."""

    name = "gumbel"
    shown = 1
    tau: float = 1.0
    hard: bool = False

    def validate(self) -> None:
        check_factor(self, "tau")

    @property
    def gain(self) -> float:
        return 1 / self.tau


@dataclass(frozen=True)
class Sigmoid(Normalizer):
    """Independent sigmoid(score + bias) per key; bias defaults to −log(keys)."""

    name = "sigmoid"
    bias: float | None = None

    def validate(self) -> None:
        require(self.bias is None or abs(self.bias) <= MAX_FACTOR, self.name,
                f"bias must lie between -{MAX_FACTOR:g} and {MAX_FACTOR:g}, got {self.bias}")


@dataclass(frozen=True)
class Relu(Normalizer):
    """relu(score) divided by the number of visible keys (Wortsman et al., 2023)."""

    name = "relu"
