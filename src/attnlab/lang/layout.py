"""Layout and options: head counts, head size, self or cross, dropout on the weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from attnlab.errors import ConfigError
from attnlab.lang.base import MAX_WIDTH, Part, check_width, require, show


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
        check_width(self, "n")


@dataclass(frozen=True)
class KvHeads(Option):
    name = "kv_heads"
    key = "kv_heads"
    n: int

    def validate(self) -> None:
        check_width(self, "n")


@dataclass(frozen=True)
class HeadDim(Option):
    name = "head_dim"
    key = "head_dim"
    d: int

    def validate(self) -> None:
        check_width(self, "d")


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
class Route(Option):
    """Mixture-of-head routing (MoH, Jin et al., 2024): the first `shared` heads are always on;
    of the rest, each token uses the `top` its router scores highest, and every head's output
    is weighted by the router. `balance` weighs the load-balancing loss training adds."""

    name = "route"
    key = "route"
    shown = 1
    top: int
    shared: int = 0
    balance: float = 0.01

    def validate(self) -> None:
        check_width(self, "top")
        require(0 <= self.shared <= 2**16, self.name,
                f"shared must be a whole number ≥ 0, got {show(self.shared)}")
        require(0 <= self.balance <= 1e3, self.name,
                f"balance must be a number in [0, 1000], got {show(self.balance)}")

    def check_heads(self, heads: int) -> str | None:
        """Why `heads` heads cannot be routed this way (None: they can)."""
        if self.shared + self.top >= heads:
            return (f"route(top={self.top}, shared={self.shared}) leaves nothing to route among "
                    f"{heads} heads: shared + top must be less than heads")
        return None

    @property
    def value(self) -> Route:
        return self


@dataclass(frozen=True)
class Layout:
    """Head layout. None means 'whatever the tensors or module say'."""

    heads: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    cross: bool | None = None  # None: self or cross; False: self only; True: cross only
    route: Route | None = None  # mixture-of-head routing

    def __post_init__(self) -> None:
        if isinstance(self.route, dict):
            object.__setattr__(self, "route", Route.build([], self.route))
        require(self.route is None or isinstance(self.route, Route), "layout",
                f"route must be route(top, shared=…) or a dict such as {{top: 2, shared: 2}}, "
                f"got {show(self.route)}")
        for field in ("heads", "kv_heads", "head_dim"):
            value = getattr(self, field)
            if value is not None:
                whole = isinstance(value, int) and not isinstance(value, bool)
                require(whole and 1 <= value <= MAX_WIDTH, "layout",
                        f"{field} must be a whole number from 1 to {MAX_WIDTH} (2**16), "
                        f"got {show(value)}")
        require(self.cross is None or isinstance(self.cross, bool), "layout",
                f"cross must be true, false or none, got {show(self.cross)}")
        if self.heads is not None and self.kv_heads is not None:
            require(self.heads % self.kv_heads == 0, "layout",
                    f"kv_heads={self.kv_heads} must divide heads={self.heads} "
                    f"(each key/value head serves heads/kv_heads query heads; "
                    f"try {', '.join(str(d) for d in divisors(self.heads))})")
        if self.heads is not None and self.route is not None:
            problem = self.route.check_heads(self.heads)
            require(problem is None, "layout", str(problem))

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
        if self.route is not None:
            out.append(self.route)
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if self.route is not None:
            out["route"] = {k: v for k, v in self.route.to_dict().items() if k != "name"}
        return out

    def resolve(self, *, heads: int | None = None, kv_heads: int | None = None,
                head_dim: int | None = None, dim: int | None = None, default_heads: int = 8,
                default_head_dim: int = 64) -> Layout:
        """This layout with heads, kv_heads and head_dim all set: the program's value, else the
        one given, else a default (kv_heads: as many as heads; head_dim: ``dim // heads`` when the
        model width ``dim`` is given, else ``default_head_dim``).

        ConfigError when a given value disagrees with the program's, is not a whole number ≥ 1,
        or the heads do not split into kv_heads groups (or ``dim`` into heads).
        """
        h = _pick("heads", heads, self.heads, default_heads)
        kv = _pick("kv_heads", kv_heads, self.kv_heads, h)
        if h % kv:
            raise ConfigError(f"kv_heads={kv} must divide heads={h} (each key/value head serves "
                              f"heads/kv_heads query heads; try {', '.join(map(str, divisors(h)))})")
        if self.head_dim is None and head_dim is None and dim is not None:
            if dim % h:
                raise ConfigError(f"dim={dim} is not divisible by heads={h}: choose heads that "
                                  "divide dim, or give the program a head_dim(…) option")
            default_head_dim = dim // h
        d = _pick("head_dim", head_dim, self.head_dim, default_head_dim)
        problem = None if self.route is None else self.route.check_heads(h)
        if problem:
            raise ConfigError(problem)
        return replace(self, heads=h, kv_heads=kv, head_dim=d)


def _pick(field: str, given: int | None, in_program: int | None, default: int) -> int:
    """The program's value, else the given one, else the default; the given one checked."""
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int) or given < 1:
            raise ConfigError(f"{field} must be a whole number ≥ 1, got {show(given)}")
        if given > MAX_WIDTH:
            raise ConfigError(f"{field} must be ≤ {MAX_WIDTH} (2**16), got {show(given)}")
        if in_program is not None and given != in_program:
            raise ConfigError(f"{field}={given} disagrees with the program, which says "
                              f"{field}({in_program}); leave {field} out or change the program")
    return in_program if in_program is not None else given if given is not None else default


def divisors(n: int) -> list[int]:
    """The divisors of n in order, found up to √n so that a large n is quick."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]
