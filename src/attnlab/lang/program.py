"""`Program`: an attention mechanism as immutable data, with its three spellings.

Python objects, a dict/YAML document and a one-line string round-trip exactly:
`parse(str(p)) == p` and `Program.from_dict(p.to_dict()) == p`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from torch import Tensor

from attnlab.errors import ProgramError, did_you_mean
from attnlab.lang.approximations import Approximation
from attnlab.lang.base import Part, part_from_dict
from attnlab.lang.layout import Dropout, Layout
from attnlab.lang.masks import And, Mask, MaskInputs, Not, Or
from attnlab.lang.normalizers import Normalizer, Softmax
from attnlab.lang.scores import ScaledDot, Score, ScoreMod
from attnlab.lang.text import caret_error, parse_part, parse_sections

_FIELDS = ("score", "mods", "mask", "normalizer", "approximation", "layout", "dropout")


@dataclass(frozen=True)
class Program:
    """What attention computes: score, score mods, mask, normalizer, approximation, layout."""

    score: Score = field(default_factory=ScaledDot)
    mods: tuple[ScoreMod, ...] = ()
    mask: Mask | None = None
    normalizer: Normalizer = field(default_factory=Softmax)
    approximation: Approximation | None = None
    layout: Layout = field(default_factory=Layout)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        # Strings are welcome anywhere a part goes: Program(mask="causal & window(8)").
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 — frozen dataclass
        set_("score", _coerce_part(self.score, "score", Score))
        mods: list[Any] = []
        for m in [self.mods] if isinstance(self.mods, str) else self.mods:
            mods.extend(parse_part(m, "mod") if isinstance(m, str) else [m])  # 'a + b' is two
        set_("mods", tuple(_coerce_part(m, f"mods[{i}]", ScoreMod) for i, m in enumerate(mods)))
        if self.mask is not None:
            set_("mask", _coerce_part(self.mask, "mask", Mask))
        set_("normalizer", _coerce_part(self.normalizer, "normalizer", Normalizer))
        if self.approximation is not None:
            set_("approximation", _coerce_part(self.approximation, "approximation", Approximation))
        if isinstance(self.layout, dict):
            set_("layout", _layout_from_dict(self.layout))
        if not isinstance(self.layout, Layout):
            raise ProgramError(f"program.layout must be a Layout, got {self.layout!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ProgramError(f"program.dropout must be a number in [0, 1), got {self.dropout!r}")
        set_("dropout", float(Dropout(self.dropout).p))
        self._check_approximation()

    def _check_approximation(self) -> None:
        a = self.approximation
        if a is None:
            return
        if self.score != ScaledDot():
            raise ProgramError(f"program.score: approximation '{a}' replaces the score; "
                               f"remove '{self.score}'")
        if self.mods:
            raise ProgramError(f"program.mods: approximation '{a}' replaces the score, so score mods "
                               f"({', '.join(map(str, self.mods))}) cannot apply; remove them")
        if self.normalizer != Softmax():
            raise ProgramError(f"program.normalizer: approximation '{a}' replaces the normalizer; "
                               f"remove '{self.normalizer}'")
        if a.allowed_masks is not None and self.mask is not None:
            bad = sorted({leaf.name for leaf in self.mask.leaves()} - a.allowed_masks)
            if bad:
                raise ProgramError(f"program.mask: '{a}' mixes all keys into {a.name} summaries, so "
                                   f"only {', '.join(sorted(a.allowed_masks))} can apply; "
                                   f"remove {', '.join(repr(b) for b in bad)}")

    # -- what the program needs --------------------------------------------------------------
    def parts(self) -> list[tuple[str, Part]]:
        """(path, part) for the score, mods, normalizer and approximation, in order."""
        out: list[tuple[str, Part]] = [] if self.approximation else [("score", self.score)]
        out += [(f"mods.{i}", m) for i, m in enumerate(self.mods)]
        if self.approximation:
            out.append(("approximation", self.approximation))
        else:
            out.append(("normalizer", self.normalizer))
        return out

    def parameter_shapes(self, heads: int, head_dim: int) -> dict[str, tuple[int, ...]]:
        """Every trainable tensor the program owns, as 'path.name' -> shape."""
        return {f"{path}.{name}": shape
                for path, part in self.parts()
                for name, shape in part.parameter_shapes(heads, head_dim).items()}

    @property
    def learnable(self) -> bool:
        return any(part.learnable for _, part in self.parts())

    def requires(self) -> frozenset[str]:
        """Call-time inputs the program reads: bias, segments, key_padding, graph."""
        mask_needs = self.mask.requires() if self.mask is not None else frozenset()
        return mask_needs.union(*(m.needs for m in self.mods))

    def visible(self, inp: MaskInputs) -> Tensor:
        """Which keys each query may see, bool (B', H', N, M) with B', H' 1 where it does not
        vary; all True when the program has no mask."""
        if self.mask is None:
            return torch.ones(1, 1, inp.n, inp.m, dtype=torch.bool, device=inp.device)
        return self.mask.dense(inp)

    def replace(self, **changes: Any) -> Program:
        return dataclasses.replace(self, **changes)

    # -- string ------------------------------------------------------------------------------
    def __str__(self) -> str:
        sections = []
        if self.approximation is not None:
            sections.append(str(self.approximation))
        else:
            sections.append(" + ".join(str(p) for p in (self.score, *self.mods)))
        if self.mask is not None:
            sections.append(str(self.mask))
        if self.approximation is None:
            sections.append(str(self.normalizer))
        options = [*self.layout.options(), *([Dropout(self.dropout)] if self.dropout else [])]
        if options:
            sections.append(" + ".join(map(str, options)))
        return " ; ".join(sections)

    @classmethod
    def from_string(cls, text: str) -> Program:
        found = parse_sections(text)
        score, mods = found.get("score", (None, []))
        layout, dropout = _fold_options(found.get("options", []), text)
        try:
            return cls(score=score or ScaledDot(), mods=tuple(mods), mask=found.get("mask"),
                       normalizer=found.get("normalizer", Softmax()),
                       approximation=found.get("approximation"), layout=layout, dropout=dropout)
        except ProgramError as e:
            raise caret_error(str(e), text, 0, len(text)) from None

    # -- dict / YAML -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score.to_dict(),
            "mods": [m.to_dict() for m in self.mods],
            "mask": None if self.mask is None else self.mask.to_dict(),
            "normalizer": self.normalizer.to_dict(),
            "approximation": None if self.approximation is None else self.approximation.to_dict(),
            "layout": self.layout.to_dict(),
            "dropout": self.dropout,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Program:
        """Inverse of to_dict; parts may also be written as strings ('causal & window(8)')."""
        if not isinstance(d, dict):
            raise ProgramError(f"a program dict must be a mapping, got {type(d).__name__}")
        for key in d:
            if key not in _FIELDS:
                raise ProgramError(f"unknown program key '{key}'{did_you_mean(key, _FIELDS)} "
                                   f"(keys: {', '.join(_FIELDS)})")
        mods = d.get("mods") or []
        if isinstance(mods, dict):
            mods = [mods]
        return cls(
            score=_part_or_default(d.get("score"), "score", ScaledDot()),
            mods=mods if isinstance(mods, str) else tuple(
                part_from_dict(m, "mod") if isinstance(m, dict) else m for m in mods),
            mask=None if d.get("mask") is None else mask_from_dict(d["mask"]),
            normalizer=_part_or_default(d.get("normalizer"), "normalizer", Softmax()),
            approximation=_part_or_default(d.get("approximation"), "approximation", None),
            layout=d.get("layout") or Layout(),
            dropout=d.get("dropout", 0.0),
        )

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Program:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ProgramError(f"not valid YAML: {e}") from None
        return cls.from_dict(data)


def parse(text: str | Program) -> Program:
    """A program from its one-line string, or `zoo:NAME` for a catalogue entry.

    Strings are parsed once per process (an LRU cache): Programs are immutable, so every caller
    of one string shares one object.
    """
    if isinstance(text, Program):
        return text
    if not isinstance(text, str):
        raise ProgramError(f"expected a program string, got {type(text).__name__}")
    return _parse_text(text)


@functools.lru_cache(maxsize=1024)
def _parse_text(text: str) -> Program:
    stripped = text.strip()
    if stripped.startswith("zoo:"):
        from attnlab.lang.zoo import zoo

        return zoo[stripped[4:].strip()]
    if not stripped:
        return Program()
    return Program.from_string(stripped)


def mask_from_dict(d: Any) -> Mask:
    """A mask from {'and': [...]}, {'or': [...]}, {'not': ...}, a leaf dict or a string."""
    if isinstance(d, Mask):
        return d
    if isinstance(d, str):
        return parse_part(d, "mask")
    if isinstance(d, dict) and len(d) == 1 and next(iter(d)) in ("and", "or", "not"):
        key, value = next(iter(d.items()))
        if key == "not":
            return Not(mask_from_dict(value))
        if not isinstance(value, list):
            raise ProgramError(f"mask '{key}' takes a list of masks, got {value!r}")
        return (And if key == "and" else Or)(tuple(mask_from_dict(v) for v in value))
    return part_from_dict(d, "mask")


def _part_or_default(value: Any, kind: str, default: Any) -> Any:
    if value is None:
        return default
    return part_from_dict(value, kind) if isinstance(value, dict) else value


def _coerce_part(value: Any, where: str, cls: type) -> Any:
    if isinstance(value, str):
        value = parse_part(value, cls.kind)
    if not isinstance(value, cls):
        got = f"the {value.kind} '{value}'" if isinstance(value, Part) else repr(value)
        raise ProgramError(f"program.{where} must be a {cls.kind}, got {got}")
    return value


def _layout_from_dict(d: dict[str, Any]) -> Layout:
    fields = ("heads", "kv_heads", "head_dim", "cross")
    for key in d:
        if key not in fields:
            raise ProgramError(f"unknown layout key '{key}'{did_you_mean(key, fields)}")
    return Layout(**d)


def _fold_options(options: list[Part], text: str) -> tuple[Layout, float]:
    """heads(8) + kv_heads(2) + cross + dropout(0.1) -> Layout(...), 0.1."""
    values: dict[str, Any] = {}
    for opt in options:
        if opt.key in values:
            raise caret_error(f"'{opt.key}' is given twice", text, 0, len(text))
        values[opt.key] = opt.value
    dropout = values.pop("dropout", 0.0)
    try:
        return Layout(**values), dropout
    except ProgramError as e:
        raise caret_error(str(e), text, 0, len(text)) from None
