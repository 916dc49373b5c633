"""The common shape of every program part: a named, immutable, validated piece of data.

A part is a frozen dataclass whose fields are its arguments. Subclasses register
themselves by `name`, so the parser, the dict form and error suggestions share one
table of names.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import types
import typing
from typing import Any, ClassVar

from attnlab.errors import ProgramError, did_you_mean

_REGISTRY: dict[str, type[Part]] = {}

# Sane bounds on arguments, so that every accepted value runs without overflow (int64 index
# arithmetic, float32 scores) or an absurd allocation. Each message names the bound it breaks.
MAX_LENGTH = 2**31 - 1  # positions and counts along a sequence: window, prefix, block, top-k…
MAX_WIDTH = 2**16  # sizes across: heads, head_dim, features, buckets, hidden sizes
MAX_SEED = 2**32 - 1  # as for experiment seeds
# Multipliers of the scores (scale, 1/temperature, …) lie in [1/MAX_FACTOR, MAX_FACTOR] and their
# product over a program stays ≤ MAX_GAIN: scores of ordinary activations then stay far inside
# float32, where an inf would turn every normalizer's output into NaN.
MAX_FACTOR = 1e6
MAX_GAIN = 1e12


def registry(kind: str | None = None) -> dict[str, type[Part]]:
    """Every registered part name (of one kind, if given) mapped to its class."""
    return {n: c for n, c in _REGISTRY.items() if kind is None or c.kind == kind}


def lookup(name: str, kind: str | None = None) -> type[Part]:
    """The part class called `name`; ProgramError with the nearest name when unknown."""
    if not isinstance(name, str):
        raise ProgramError(f"a part's name must be a word, got {show(name)}")
    table = registry(kind)
    if name in table:
        return table[name]
    what = f"{kind} " if kind else ""
    other = _REGISTRY.get(name)
    if other is not None:
        raise ProgramError(f"'{name}' is a {other.kind}, not a {kind}")
    raise ProgramError(f"unknown {what}{show(name)}{did_you_mean(name, table)}")


class Part:
    """Base of all parts. Subclasses are `@dataclass(frozen=True)` with typed fields."""

    kind: ClassVar[str]
    name: ClassVar[str]
    # Leading fields always written positionally in the canonical string, e.g. entmax(1.5).
    shown: ClassVar[int] = 0
    learnable: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__:
            if cls.name in _REGISTRY:
                raise RuntimeError(f"part name {cls.name!r} registered twice")
            _REGISTRY[cls.name] = cls

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = _coerce(self.name, f.name, hints[f.name], getattr(self, f.name))
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Raise ProgramError when the arguments are out of range; subclasses override."""

    @property
    def gain(self) -> float:
        """How much this part multiplies the scores' scale (1 for most parts): the program keeps
        the product of its parts' gains ≤ MAX_GAIN."""
        return 1.0

    # -- the three spellings -------------------------------------------------------------
    def __str__(self) -> str:
        args = []
        for i, f in enumerate(dataclasses.fields(self)):
            value = getattr(self, f.name)
            required = f.default is dataclasses.MISSING
            if i < self.shown or required:
                args.append(format_value(value))
            elif value != f.default:
                args.append(f"{f.name}={format_value(value)}")
        return f"{self.name}({', '.join(args)})" if args else self.name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def build(cls, args: list[Any] = (), kwargs: dict[str, Any] | None = None) -> Part:
        """Bind positional and keyword arguments the way a call would, with teaching errors."""
        kwargs = dict(kwargs or {})
        fields = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(args, list | tuple):
            raise ProgramError(f"{cls.name}: arguments must be a list, got {show(args)}")
        if len(args) > len(fields):
            takes = f"takes at most {len(fields)}" if fields else "takes no"
            raise ProgramError(f"{cls.name} {takes} arguments ({signature(cls)}), got {len(args)}")
        for key in kwargs:
            if not isinstance(key, str):
                raise ProgramError(f"{cls.name}: argument names are words such as "
                                   f"{fields[0] if fields else 'w'!r}, got {show(key)}")
            if key not in fields:
                hint = did_you_mean(key, fields) or f"; it takes {signature(cls)}"
                raise ProgramError(f"{cls.name} has no argument {show(key)}{hint}")
        bound = dict(zip(fields, args, strict=False))
        for key, value in kwargs.items():
            if key in bound:
                raise ProgramError(f"{cls.name}: argument '{key}' given twice")
            bound[key] = value
        missing = [
            f.name for f in dataclasses.fields(cls)
            if f.name not in bound and f.default is dataclasses.MISSING
        ]
        if missing:
            raise ProgramError(f"{cls.name} needs {', '.join(missing)}: write {signature(cls)}")
        return cls(**bound)

    # -- learnable parts -------------------------------------------------------------------
    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        """Shapes of this part's trainable tensors for a layout; empty for fixed parts."""
        return {}


def part_from_dict(d: Any, kind: str) -> Part:
    """A part of `kind` from its dict form `{"name": ..., arg: value, ...}`."""
    if not isinstance(d, dict) or "name" not in d:
        raise ProgramError(f"a {kind} must be written as a dict with a 'name' key, got {show(d)}")
    if not isinstance(d["name"], str):
        raise ProgramError(f"a {kind}'s name must be a word such as "
                           f"'{next(iter(registry(kind)), kind)}', got {show(d['name'])}")
    args = {k: v for k, v in d.items() if k != "name"}
    return lookup(d["name"], kind).build([], args)


def signature(cls: type[Part]) -> str:
    """`name(a, b=1)`: the call a person should write."""
    parts = []
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            parts.append(f.name)
        else:
            parts.append(f"{f.name}={format_value(f.default)}")
    return f"{cls.name}({', '.join(parts)})" if parts else cls.name


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return repr(value)
    return str(value)


class _ShortRepr(reprlib.Repr):
    """reprlib's short, depth-limited repr, also for integers too long for str()."""

    def repr_int(self, x: int, level: int) -> str:
        return _long_int(x) or super().repr_int(x, level)


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 60, 60, 40


def _long_int(x: int) -> str | None:
    """'a number of about 400 digits' for an integer too long to show (str() refuses past
    4,300 digits), else None."""
    if x.bit_length() <= 200:  # up to 60 digits are shown in full
        return None
    digits = int(x.bit_length() * math.log10(2)) + 1
    return f"a {'negative ' if x < 0 else ''}number of about {digits} digits"


def show(value: Any) -> str:
    """A value as an error message shows it: short, whatever its size or depth."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _long_int(value) or str(value)
    if isinstance(value, bool | float) or value is None:
        return format_value(value)
    try:
        return _SHORT.repr(value)
    except Exception:  # a value whose own repr fails still gets a message
        return f"a {type(value).__name__}"


def _coerce(part: str, field: str, hint: Any, value: Any) -> Any:
    """Check one argument against its annotation, converting ints to floats where meant."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if bool in allowed and isinstance(value, bool):
        return value
    if int in allowed and isinstance(value, int) and not isinstance(value, bool):
        return value
    if float in allowed and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ProgramError(f"{part}: {field} must be a finite number, got {show(value)}")
        return number
    if str in allowed and isinstance(value, str):
        return value
    if typing.Any in allowed or object in allowed:
        return value
    want = " or ".join("none" if t is type(None) else _TYPE_WORDS.get(t, t.__name__)
                       for t in allowed)
    if int in allowed and isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        want += f" (write {int(value)}, not {value})"
    raise ProgramError(f"{part}: {field} must be {want}, got {show(value)}")


_TYPE_WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a name"}


def require(ok: bool, part: str, message: str) -> None:
    """Raise ProgramError('part: message') unless ok: the one-line validation idiom."""
    if not ok:
        raise ProgramError(f"{part}: {message}")


def at_least(part: Part, low: float, *fields: str) -> None:
    """Each named argument (when given) must be ≥ low."""
    for f in fields:
        value = getattr(part, f)
        require(value is None or value >= low, part.name, f"{f} must be ≥ {low}, got {show(value)}")


def at_most(part: Part, high: float, why: str, *fields: str) -> None:
    """Each named argument (when given) must be ≤ high; `why` says what the bound is for."""
    for f in fields:
        value = getattr(part, f)
        require(value is None or value <= high, part.name,
                f"{f} must be ≤ {show(high)} ({why}), got {show(value)}")


def check_length(part: Part, *fields: str, low: int = 1) -> None:
    """Each named argument is a count along a sequence: low ≤ value ≤ MAX_LENGTH."""
    at_least(part, low, *fields)
    at_most(part, MAX_LENGTH, "2**31 - 1; no sequence is longer", *fields)


def check_width(part: Part, *fields: str) -> None:
    """Each named argument is a size across (heads, features, buckets): 1 ≤ value ≤ MAX_WIDTH."""
    at_least(part, 1, *fields)
    at_most(part, MAX_WIDTH, "2**16", *fields)


def check_seed(part: Part, *fields: str) -> None:
    """Each named argument is a seed: 0 ≤ value ≤ MAX_SEED, as for experiment seeds."""
    at_least(part, 0, *fields)
    at_most(part, MAX_SEED, "2**32 - 1", *fields)


def check_factor(part: Part, *fields: str) -> None:
    """Each named argument (when given) multiplies or divides the scores: it lies in
    [1/MAX_FACTOR, MAX_FACTOR], so float32 scores neither overflow nor vanish."""
    for f in fields:
        value = getattr(part, f)
        require(value is None or 1 / MAX_FACTOR <= value <= MAX_FACTOR, part.name,
                f"{f} must lie between {1 / MAX_FACTOR:g} and {MAX_FACTOR:g} (beyond, float32 "
                f"scores overflow or vanish), got {show(value)}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
