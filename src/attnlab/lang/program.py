"""`Program`: an attention mechanism as immutable data, with its three spellings.

Python objects, a dict/YAML document and a one-line string round-trip exactly:
`parse(str(p)) == p` and `Program.from_dict(p.to_dict()) == p`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml
from torch import Tensor

from attnlab.errors import ProgramError, did_you_mean
from attnlab.lang.approximations import Approximation
from attnlab.lang.base import MAX_GAIN, Part, lookup, part_from_dict, registry, show
from attnlab.lang.combinators import Combinator, OutputGate
from attnlab.lang.layout import Dropout, Layout
from attnlab.lang.masks import MAX_DEPTH, And, Mask, MaskInputs, Not, Or
from attnlab.lang.normalizers import Normalizer, Softmax
from attnlab.lang.scores import ScaledDot, Score, ScoreMod
from attnlab.lang.text import caret_error, parse_part, parse_sections

_FIELDS = ("score", "mods", "mask", "normalizer", "approximation", "layout", "dropout",
           "output_gate")


@dataclass(frozen=True)
class Program:
    """What attention computes: score, score mods, mask, normalizer, approximation, layout.

    A combined program instead holds `components` (whole programs) and the `combinator` that
    joins their outputs (`mix`, `diff`); its own score, mask and normalizer stay unset.
    """

    score: Score = field(default_factory=ScaledDot)
    mods: tuple[ScoreMod, ...] = ()
    mask: Mask | None = None
    normalizer: Normalizer = field(default_factory=Softmax)
    approximation: Approximation | None = None
    layout: Layout = field(default_factory=Layout)
    dropout: float = 0.0
    output_gate: OutputGate | None = None
    combinator: Combinator | None = None
    components: tuple[Program, ...] = ()

    def __post_init__(self) -> None:
        # Strings are welcome anywhere a part goes: Program(mask="causal & window(8)").
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 — frozen dataclass
        set_("score", _coerce_part(self.score, "score", Score))
        mods: list[Any] = []
        for m in _listed(self.mods, "program.mods"):
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
            raise ProgramError(f"program.layout must be a Layout or a dict such as "
                               f"{{heads: 8}}, got {show(self.layout)}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ProgramError(f"program.dropout must be a number in [0, 1), got {show(self.dropout)}")
        set_("dropout", float(Dropout(self.dropout).p))
        if self.output_gate is not None:
            set_("output_gate", _output_gate(self.output_gate))
        if self.combinator is not None or self.components:
            self._check_combined()
        self._check_approximation()
        self._check_gain()

    def _check_combined(self) -> None:
        """A combinator with the right number of plain components, and nothing of its own that
        belongs inside them."""
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 — frozen dataclass
        comb = self.combinator
        if comb is None:
            raise ProgramError("program.components need a combinator such as 'mix' or 'diff'")
        if isinstance(comb, str):
            comb = lookup(comb, "combinator").build([])
        if not isinstance(comb, Combinator):
            raise ProgramError(f"program.combinator must be one of {', '.join(registry('combinator'))}"
                               f", got {show(comb)}")
        set_("combinator", comb)
        comps = tuple(_component(c, f"program.{comb.name}.programs[{i}]")
                      for i, c in enumerate(_listed(self.components, "program.components")))
        set_("components", comps)
        low, high = comb.arity
        if not low <= len(comps) <= high:
            count = f"{low}" if low == high else f"{low} to {high}"
            raise ProgramError(f"{comb.name} combines {count} programs, got {len(comps)}")
        own = {"score": self.score != ScaledDot(), "mods": bool(self.mods),
               "mask": self.mask is not None, "normalizer": self.normalizer != Softmax(),
               "approximation": self.approximation is not None, "dropout": bool(self.dropout)}
        for name, set_here in own.items():
            if set_here:
                raise ProgramError(f"program.{name}: {comb.name}(…) holds whole programs; put the "
                                   f"{name} inside each component's braces")

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

    def _check_gain(self) -> None:
        """The parts' multipliers of the scores (scale, 1/t, 1/tau, …) together stay ≤ MAX_GAIN,
        so that scores of ordinary activations stay finite in float32."""
        gains = [(part, part.gain) for _, part in self.parts() if part.gain != 1]
        total = math.prod(g for _, g in gains)
        if total > MAX_GAIN:
            raise ProgramError(f"program: {', '.join(str(p) for p, _ in gains)} multiply the scores "
                               f"by {total:.3g} in all; keep that ≤ {MAX_GAIN:g}, or float32 "
                               "scores overflow")

    # -- what the program needs --------------------------------------------------------------
    @property
    def mechanisms(self) -> tuple[Program, ...]:
        """The plain programs a layer runs: the components of a combined program, else itself."""
        return self.components or (self,)

    def each(self, rewrite: Callable[[Program], Program]) -> Program:
        """This program with `rewrite` applied to each plain program it runs (its components,
        else itself): how a model adds `padding` or `causal` to any program."""
        if self.components:
            return self.replace(components=tuple(rewrite(c) for c in self.components))
        return rewrite(self)

    def parts(self) -> list[tuple[str, Part]]:
        """(path, part) for the score, mods, normalizer and approximation, in order; a combined
        program's are its components', under `components.<i>.`."""
        if self.components:
            return [(f"components.{i}.{path}", part) for i, c in enumerate(self.components)
                    for path, part in c.parts()]
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
        if self.components:
            return frozenset().union(*(c.requires() for c in self.components))
        mask_needs = self.mask.requires() if self.mask is not None else frozenset()
        return mask_needs.union(*(m.needs for m in self.mods))

    def visible(self, inp: MaskInputs) -> Tensor:
        """Which keys each query may see, bool (B', H', N, M) with B', H' 1 where it does not
        vary; all True when the program has no mask. A combined program's key is visible where
        any component's is."""
        if self.components:
            seen = [c.visible(inp) for c in self.components]
            return torch.stack(torch.broadcast_tensors(*seen)).any(0)
        if self.mask is None:
            return torch.ones(1, 1, inp.n, inp.m, dtype=torch.bool, device=inp.device)
        return self.mask.dense(inp)

    def replace(self, **changes: Any) -> Program:
        return dataclasses.replace(self, **changes)

    # -- string ------------------------------------------------------------------------------
    def __str__(self) -> str:
        sections = []
        if self.combinator is not None:
            comb = str(self.combinator)
            args = comb[len(self.combinator.name) + 1:-1] if "(" in comb else ""
            inner = ", ".join([*("{" + str(c) + "}" for c in self.components), *([args] if args else [])])
            sections.append(f"{self.combinator.name}({inner})")
        elif self.approximation is not None:
            sections.append(str(self.approximation))
        else:
            sections.append(" + ".join(str(p) for p in (self.score, *self.mods)))
        if self.mask is not None:
            sections.append(str(self.mask))
        if self.approximation is None and self.combinator is None:
            sections.append(str(self.normalizer))
        options = [*self.layout.options(), *([Dropout(self.dropout)] if self.dropout else []),
                   *([self.output_gate] if self.output_gate is not None else [])]
        if options:
            sections.append(" + ".join(map(str, options)))
        return " ; ".join(sections)

    @classmethod
    def from_string(cls, text: str) -> Program:
        return _from_sections(parse_sections(text), text, 0, len(text))

    # -- dict / YAML -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        gate = {} if self.output_gate is None else {"output_gate": self.output_gate.form}
        if self.combinator is not None:
            comb = {k: v for k, v in self.combinator.to_dict().items() if k != "name"}
            return {self.combinator.name: {**comb, "programs": [c.to_dict() for c in self.components]},
                    "layout": self.layout.to_dict(), **gate}
        return {
            "score": self.score.to_dict(),
            "mods": [m.to_dict() for m in self.mods],
            "mask": None if self.mask is None else self.mask.to_dict(),
            "normalizer": self.normalizer.to_dict(),
            "approximation": None if self.approximation is None else self.approximation.to_dict(),
            "layout": self.layout.to_dict(),
            "dropout": self.dropout,
            **gate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Program:
        """Inverse of to_dict; parts may also be written as strings ('causal & window(8)')."""
        if not isinstance(d, dict):
            raise ProgramError(f"a program dict must be a mapping, got {type(d).__name__}")
        keys = (*_FIELDS, *registry("combinator"))
        for key in d:
            if key not in keys:  # any hashable key may come from YAML: 1, null, true
                hint = did_you_mean(key, keys) if isinstance(key, str) else ""
                raise ProgramError(f"unknown program key {show(key)}{hint} "
                                   f"(keys: {', '.join(keys)})")
        combined = [key for key in registry("combinator") if key in d]
        if len(combined) > 1:
            raise ProgramError(f"a program has one combinator, got {', '.join(combined)}")
        if combined:
            return _combined_from_dict(cls, combined[0], d)
        with _at("program.score"):
            score = _part_or_default(d.get("score"), "score", ScaledDot())
        mods = _mods_from(d.get("mods"))
        mask = None if d.get("mask") is None else mask_from_dict(d["mask"], "program.mask")
        with _at("program.normalizer"):
            normalizer = _part_or_default(d.get("normalizer"), "normalizer", Softmax())
        with _at("program.approximation"):
            approximation = _part_or_default(d.get("approximation"), "approximation", None)
        layout = d.get("layout")
        return cls(score=score, mods=mods, mask=mask, normalizer=normalizer,
                   approximation=approximation, layout=Layout() if layout is None else layout,
                   dropout=d.get("dropout", 0.0), output_gate=d.get("output_gate"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Program:
        if not isinstance(text, str | bytes):
            raise ProgramError(f"a program's YAML is text, got {type(text).__name__}")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ProgramError(f"not valid YAML: {' '.join(str(e).split())}") from None
        except RecursionError:
            raise ProgramError("YAML nested too deeply to read") from None
        except ValueError as e:  # a 5,000-digit integer, a 13th month
            raise ProgramError(f"YAML with a value that cannot be read: {str(e)[:200]}") from None
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


def mask_from_dict(d: Any, path: str = "mask", depth: int = 1) -> Mask:
    """A mask from {'and': [...]}, {'or': [...]}, {'not': ...}, a leaf dict or a string;
    errors name the path to the bad entry (program.mask.and[1].not)."""
    if isinstance(d, Mask):
        return d
    if depth > MAX_DEPTH:
        raise ProgramError(f"{path}: mask expressions nest at most {MAX_DEPTH} deep "
                           "(a & (b & c) is a & b & c, ~~a is a)")
    with _at(path):
        if isinstance(d, str):
            return parse_part(d, "mask")
        if isinstance(d, dict) and len(d) == 1 and next(iter(d)) in ("and", "or", "not"):
            key, value = next(iter(d.items()))
            if key == "not":
                return Not(mask_from_dict(value, f"{path}.not", depth + 1))
            if not isinstance(value, list | tuple):
                raise ProgramError(f"'{key}' takes a list of masks, got {show(value)}")
            return (And if key == "and" else Or)(tuple(
                mask_from_dict(v, f"{path}.{key}[{i}]", depth + 1) for i, v in enumerate(value)))
        return part_from_dict(d, "mask")


@contextmanager
def _at(path: str) -> Iterator[None]:
    """Prefix a ProgramError raised inside with `path: ` (once: the innermost path wins)."""
    try:
        yield
    except ProgramError as e:
        if getattr(e, "path", None) is not None:
            raise
        located = ProgramError(f"{path}: {e}")
        located.path = path
        raise located from None


def _listed(value: Any, path: str) -> list[Any]:
    """Score mods as a list: a string ('alibi + softcap(30.0)'), one part, or a list of them."""
    if value is None:
        return []
    if isinstance(value, str | Part | dict):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise ProgramError(f"{path} must be a list of score mods or a string such as "
                       f"'alibi + softcap(30.0)', got {show(value)}")


def _mods_from(value: Any) -> tuple[Part, ...]:
    """The mods entry of a program dict, each item checked where it stands (program.mods[2])."""
    mods: list[Part] = []
    if isinstance(value, str | list | tuple) and not value:  # '' and [] are no mods
        value = None
    for i, m in enumerate(_listed(value, "program.mods")):
        with _at(f"program.mods[{i}]"):
            if isinstance(m, str):
                mods.extend(parse_part(m, "mod"))
            elif isinstance(m, dict):
                mods.append(part_from_dict(m, "mod"))
            elif isinstance(m, ScoreMod):
                mods.append(m)
            else:
                raise ProgramError(f"expected a score mod such as 'alibi' or {{name: softcap, "
                                   f"c: 30.0}}, got {show(m)}")
    return tuple(mods)


def _part_or_default(value: Any, kind: str, default: Any) -> Any:
    """A part of a program dict: None for the default, a dict, a string, or a part already."""
    if value is None:
        return default
    if isinstance(value, str):
        return parse_part(value, kind)
    return part_from_dict(value, kind) if isinstance(value, dict) else value


def _coerce_part(value: Any, where: str, cls: type) -> Any:
    if isinstance(value, str):
        value = parse_part(value, cls.kind)
    if not isinstance(value, cls):
        got = f"the {value.kind} '{value}'" if isinstance(value, Part) else show(value)
        raise ProgramError(f"program.{where} must be a {cls.kind}, got {got}")
    return value


def _layout_from_dict(d: dict[str, Any]) -> Layout:
    fields = ("heads", "kv_heads", "head_dim", "cross", "route")
    for key in d:
        if key not in fields:
            hint = did_you_mean(key, fields) if isinstance(key, str) else ""
            raise ProgramError(f"unknown layout key {show(key)}{hint} (keys: {', '.join(fields)})")
    return Layout(**d)


def _fold_options(options: list[Part], text: str) -> tuple[Layout, float, OutputGate | None]:
    """heads(8) + kv_heads(2) + cross + dropout(0.1) + output_gate -> Layout(...), 0.1, gate."""
    values: dict[str, Any] = {}
    for opt in options:
        if opt.key in values:
            raise caret_error(f"'{opt.key}' is given twice", text, 0, len(text))
        values[opt.key] = opt.value
    dropout, gate = values.pop("dropout", 0.0), values.pop("output_gate", None)
    try:
        return Layout(**values), dropout, gate
    except ProgramError as e:
        raise caret_error(str(e), text, 0, len(text)) from None


def _from_sections(found: dict[str, Any], text: str, start: int, end: int) -> Program:
    """The program whose sections were found in text[start:end] (a component's braces, or the
    whole text); errors put the caret under that span."""
    combinator, components = None, ()
    if "combinator" in found:
        combinator, spans = found["combinator"]
        components = []
        for i, (f, a, b) in enumerate(spans):
            try:
                components.append(_component(_from_sections(f, text, a, b),
                                             f"program.{combinator.name}.programs[{i}]"))
            except ProgramError as e:
                if "\n" in str(e):  # a caret error already
                    raise
                raise caret_error(str(e), text, a, b) from None
        others = [k for k in found if k not in ("combinator", "options")]
        if others:
            raise caret_error(f"{combinator.name}(…) holds whole programs; put the {others[0]} "
                              "inside each component's braces", text, start, end)
    score, mods = found.get("score", (None, []))
    layout, dropout, gate = _fold_options(found.get("options", []), text)
    try:
        return Program(score=score or ScaledDot(), mods=tuple(mods), mask=found.get("mask"),
                       normalizer=found.get("normalizer", Softmax()),
                       approximation=found.get("approximation"), layout=layout, dropout=dropout,
                       output_gate=gate, combinator=combinator, components=tuple(components))
    except ProgramError as e:
        raise caret_error(str(e), text, start, end) from None


def _output_gate(value: Any) -> OutputGate:
    """An output gate from its form ('elementwise'), its dict or itself."""
    if isinstance(value, OutputGate):
        return value
    if isinstance(value, str):
        return OutputGate(value)
    if isinstance(value, dict):
        return part_from_dict({"name": "output_gate", **value}, "option")
    raise ProgramError(f"program.output_gate must be headwise or elementwise, got {show(value)}")


def _component(value: Any, path: str) -> Program:
    """One component of a combined program: a plain Program, its string or its dict, with no
    options of its own (they belong to the combined program)."""
    with _at(path):
        program = (parse(value) if isinstance(value, str) else
                   Program.from_dict(value) if isinstance(value, dict) else value)
        if not isinstance(program, Program):
            raise ProgramError(f"expected a program, got {show(value)}")
        if program.combinator is not None:
            raise ProgramError(f"a component is a plain program; '{program.combinator.name}' "
                               "cannot nest inside another combinator")
        if program.layout != Layout() or program.output_gate is not None:
            options = " + ".join(map(str, [*program.layout.options(),
                                           *([program.output_gate] if program.output_gate else [])]))
            raise ProgramError(f"'{options}' applies to the whole layer: put it after the "
                               "combinator, outside the braces")
    return program


def _combined_from_dict(cls: type[Program], name: str, d: dict[str, Any]) -> Program:
    """{mix: {gate: token, programs: [...]}, layout: {...}, output_gate: ...}."""
    others = [k for k in _FIELDS if k not in ("layout", "output_gate", "dropout")
              and d.get(k) not in (None, [], ())]
    if others:
        raise ProgramError(f"program.{others[0]}: {name} holds whole programs; put the "
                           f"{others[0]} inside each of {name}.programs")
    body = d[name]
    if not isinstance(body, dict) or not isinstance(body.get("programs"), list | tuple):
        raise ProgramError(f"program.{name} must be a mapping with a list of programs, e.g. "
                           f"{{{name}: {{programs: ['causal ; softmax', 'window(8) ; softmax']}}}}")
    with _at(f"program.{name}"):
        comb = lookup(name, "combinator").build([], {k: v for k, v in body.items() if k != "programs"})
    layout = d.get("layout")
    return cls(combinator=comb, components=tuple(body["programs"]),
               layout=Layout() if layout is None else layout, dropout=d.get("dropout", 0.0),
               output_gate=d.get("output_gate"))
