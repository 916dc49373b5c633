"""Layout and options: head counts, head size, self or cross, dropout on the weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from attnlab.lang.base import Part, at_least, require


class Option(Part):
    """A term of the options section; the program folds them into Layout and dropout."""

    kind = "option"
    key: ClassVar[str]  # the Layout field (or 'dropout') this option sets

    @property
    def value(self) -> Any:
        return next(iter(self.__dict__.values()))


@dataclass(frozen=True)
class Heads(Option):
    name = "heads"
    key = "heads"
    n: int

    def validate(self) -> None:
        at_least(self, 1, "n")


@dataclass(frozen=True)
class KvHeads(Option):
    name = "kv_heads"
    key = "kv_heads"
    n: int

    def validate(self) -> None:
        at_least(self, 1, "n")


@dataclass(frozen=True)
class HeadDim(Option):
    name = "head_dim"
    key = "head_dim"
    d: int

    def validate(self) -> None:
        at_least(self, 1, "d")


@dataclass(frozen=True)
class SelfAttention(Option):
    name = "self"
    key = "cross"
    value = False


@dataclass(frozen=True)
class CrossAttention(Option):
    name = "cross"
    key = "cross"
    value = True


@dataclass(frozen=True)
class Dropout(Option):
    name = "dropout"
    key = "dropout"
    p: float

    def validate(self) -> None:
        require(0 <= self.p < 1, self.name, f"p must be in [0, 1), got {self.p}")


@dataclass(frozen=True)
class Layout:
    """Head layout. None means 'whatever the tensors or module say'."""

    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    cross: bool | None = None  # None: self or cross; False: self only; True: cross only

    def __post_init__(self) -> None:
        for field in ("heads", "kv_heads", "head_dim"):
            value = getattr(self, field)
            if value is not None:
                whole = isinstance(value, int) and not isinstance(value, bool)
                require(whole and value >= 1, "layout",
                        f"{field} must be a whole number ≥ 1, got {value}")
        if self.heads is not None and self.kv_heads is not None:
            require(self.heads % self.kv_heads == 0, "layout",
                    f"kv_heads={self.kv_heads} must divide heads={self.heads} "
                    f"(each key/value head serves heads/kv_heads query heads; "
                    f"try {', '.join(str(d) for d in divisors(self.heads))})")

    def options(self) -> list[Option]:
        out: list[Option] = []
        if self.heads is not None:
            out.append(Heads(self.heads))
        if self.kv_heads is not None:
            out.append(KvHeads(self.kv_heads))
        if self.head_dim is not None:
            out.append(HeadDim(self.head_dim))
        if self.cross is not None:
            out.append(CrossAttention() if self.cross else SelfAttention())
        return out

    def to_dict(self) -> dict[str, int | bool]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
