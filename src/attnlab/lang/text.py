"""The one-line spelling of a program: `score + mods ; mask ; normalizer ; options`.

Sections are separated by `;` and recognised by the kind of their first name, so any
may be left out. Errors show the text with a caret under the offending part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnlab.errors import ProgramError, did_you_mean
from attnlab.lang.base import Part, registry, show
from attnlab.lang.masks import MAX_DEPTH, And, Mask, Not, Or

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<num>(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>[;+&|~(),=\-{}])
""", re.VERBOSE)

_SECTION_OF_KIND = {"score": "score", "mod": "score", "mask": "mask", "normalizer": "normalizer",
                    "approximation": "approximation", "option": "options",
                    "combinator": "combinator"}
_WORDS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}
# Longer numbers are refused before conversion: int() stops at 4,300 digits, and no argument
# takes a number anywhere near this long.
MAX_NUMBER_CHARS = 100
CARET_WIDTH = 100  # characters of the program an error shows around the offending part


@dataclass(frozen=True)
class Token:
    kind: str  # num, name, op, end
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + max(len(self.text), 1)


def tokenize(text: str) -> list[Token]:
    if not isinstance(text, str):
        raise ProgramError(f"a program is written as a string, got {type(text).__name__}")
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise caret_error(f"unexpected character {text[pos]!r}", text, pos, pos + 1)
        if m.lastgroup != "space":
            tokens.append(Token(m.lastgroup, m.group(), pos))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def caret_error(message: str, text: str, start: int, end: int) -> ProgramError:
    """A ProgramError that shows `text` with ^^^ under [start, end): at most CARET_WIDTH
    characters of it around the start, control characters shown as '·' (never sent raw to a
    terminal, and one character each so the carets stay aligned)."""
    end = max(end, start + 1)
    lo = max(0, min(start - CARET_WIDTH // 4, len(text) - CARET_WIDTH))
    hi = min(len(text), lo + CARET_WIDTH)
    shown = "".join(c if c.isprintable() else "·" for c in text[lo:hi])
    before, after = ("…" if lo > 0 else ""), ("…" if hi < len(text) else "")
    marks = " " * (len(before) + start - lo) + "^" * max(min(end, hi) - start, 1)
    return ProgramError(f"{message}\n  {before}{shown}{after}\n  {marks}")


class Parser:
    """Recursive descent over the token list; each section kind has one method."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.open_brackets = 0  # around the mask being read; capped so recursion stays shallow

    # -- token helpers -----------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def at(self, *texts: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in texts

    def expect(self, text: str, why: str) -> Token:
        if not self.at(text):
            self.fail(f"expected '{text}' {why}", self.tok)
        return self.take()

    def fail(self, message: str, first: Token, last: Token | None = None) -> None:
        raise caret_error(message, self.text, first.start, (last or first).end)

    # -- sections ----------------------------------------------------------------------------
    def sections(self, inside: Token | None = None) -> dict[str, Any]:
        """{section: value} for the whole text, or for one component program up to its '}'
        (`inside` is the '{' that opened it); duplicates and stray tokens are errors."""
        found: dict[str, Any] = {}
        while True:
            start = self.tok
            if start.kind == "end" or self.at(";", "}"):
                self.fail("empty section: write a part between the ';'" if inside is None or
                          self.at(";") else "empty program: write one between '{' and '}'", start)
            section = self.section_kind(start)
            if section == "combinator" and inside is not None:
                self.fail(f"a component is a plain program; '{start.text}' cannot nest inside "
                          "another combinator", start)
            if section in found:
                hint = {"mask": "; combine masks with & and | in one section",
                        "score": "; chain score mods with + in one section"}.get(section, "")
                self.fail(f"a second {section} section{hint}", start)
            found[section] = getattr(self, f"parse_{section}")()
            if self.tok.kind == "end" and inside is not None:
                self.fail("this '{' is never closed", inside, self.tok)
            if self.tok.kind == "end" or (inside is not None and self.at("}")):
                return found
            self.expect(";", "between sections (or the end of the program)")

    def section_kind(self, t: Token) -> str:
        if self.at("(", "~"):
            return "mask"
        if t.kind != "name":
            self.fail("a section starts with a name such as 'causal' or 'softmax'", t)
        return _SECTION_OF_KIND[self.part_class(t).kind]

    def part_class(self, t: Token, kind: str | None = None) -> type[Part]:
        table = registry()
        if t.text not in table:
            choices = registry(kind) if kind else table
            what = f"{kind} " if kind else "name "
            self.fail(f"unknown {what}{show(t.text)}{did_you_mean(t.text, choices)}", t)
        cls = table[t.text]
        if kind is not None and cls.kind != kind:
            self.fail(f"'{t.text}' is a {cls.kind}, not a {kind}; "
                      f"put it in its own section after ';'", t)
        return cls

    def parse_score(self) -> tuple[Part | None, list[Part]]:
        first = self.tok
        head = self.term(self.part_class(first).kind)
        score, mods = (head, []) if head.kind == "score" else (None, [head])
        while self.at("+"):
            self.take()
            t = self.tok
            if t.kind == "name" and t.text in registry("score"):
                self.fail(f"the score comes first: '{t.text}' must open this section", t)
            mods.append(self.term("mod"))
        return score, mods

    def parse_mask(self) -> Mask:
        mask = self.mask_or()
        if self.at("+"):
            self.fail("masks combine with & (and) or | (or), not +", self.tok)
        return mask

    def parse_combinator(self) -> tuple[Part, list[tuple[dict[str, Any], int, int]]]:
        """`mix({program}, {program}, gate=token)`: the combinator part, and each component's
        sections with its span in the text (for carets)."""
        first = self.tok
        cls = self.part_class(first, "combinator")
        self.take()
        self.expect("(", f"after '{first.text}': it takes programs in braces, "
                         f"e.g. {first.text}({{causal ; softmax}}, {{window(64) ; softmax}})")
        components: list[tuple[dict[str, Any], int, int]] = []
        kwargs: dict[str, Any] = {}
        while not self.at(")"):
            if self.tok.kind == "end":
                self.fail(f"'{first.text}(' is never closed", first, self.tok)
            if self.at("{"):
                if kwargs:
                    self.fail("programs come before keyword arguments", self.tok)
                opener = self.take()
                found = self.sections(inside=opener)
                close = self.expect("}", "to close this component program")
                components.append((found, opener.start, close.end))
            elif self.tok.kind == "name" and self.tokens[self.i + 1].text == "=":
                key = self.take().text
                self.take()
                kwargs[key] = self.value()
            else:
                self.fail(f"{first.text} takes component programs in braces, {{…}}, then keyword "
                          "arguments", self.tok)
            if not self.at(")"):
                self.expect(",", "between arguments")
        last = self.take()
        try:
            part = cls.build([], kwargs)
        except ProgramError as e:
            self.fail(str(e), first, last)
        low, high = cls.arity
        if not low <= len(components) <= high:
            count = f"{low}" if low == high else f"{low} to {high}"
            self.fail(f"{first.text} combines {count} programs, got {len(components)}", first, last)
        return part, components

    def parse_normalizer(self) -> Part:
        return self.single("normalizer", "a program has one normalizer")

    def parse_approximation(self) -> Part:
        if self.tokens[self.i + 1:] and self.at_after_term("+"):
            self.fail(f"approximation '{self.tok.text}' replaces the score, so score mods cannot "
                      "be added with '+'", self.tok)
        return self.single("approximation", "a program has one approximation")

    def at_after_term(self, text: str) -> bool:
        """Whether the token after the current term (name or name(...)) is `text`."""
        j, depth = self.i + 1, 0
        while self.tokens[j].kind != "end":
            t = self.tokens[j]
            if t.text == "(":
                depth += 1
            elif t.text == ")":
                depth -= 1
            elif depth == 0:
                return t.kind == "op" and t.text == text
            j += 1
        return False

    def parse_options(self) -> list[Part]:
        options = [self.term("option")]
        while self.at("+"):
            self.take()
            options.append(self.term("option"))
        return options

    def single(self, kind: str, why: str) -> Part:
        part = self.term(kind)
        if self.at("+", "&", "|"):
            self.fail(f"{why}; sections are separated by ';'", self.tok)
        return part

    # -- masks: | binds loosest, then &, then ~ ----------------------------------------------
    def mask_or(self) -> Mask:
        return self.junction("|", Or, self.mask_and)

    def mask_and(self) -> Mask:
        return self.junction("&", And, self.mask_not)

    def junction(self, symbol: str, cls: type[Mask], operand: Callable[[], Mask]) -> Mask:
        first = self.tok
        parts = [operand()]
        while self.at(symbol):
            self.take()
            parts.append(operand())
        if len(parts) == 1:
            return parts[0]
        try:
            return cls(tuple(parts))
        except ProgramError as e:  # nested too deep
            self.fail(str(e), first, self.tokens[self.i - 1])
            raise  # unreachable: fail raises

    def mask_not(self) -> Mask:
        first, tildes = self.tok, 0
        while self.at("~"):  # a run of ~ is read in a loop, and ~~a is a
            self.take()
            tildes += 1
        if self.at("("):
            opener = self.take()
            self.open_brackets += 1
            if self.open_brackets > MAX_DEPTH:
                self.fail(f"brackets nest at most {MAX_DEPTH} deep here", opener)
            inner = self.mask_or()
            if not self.at(")"):
                self.fail("this '(' is never closed", opener, self.tok)
            self.take()
            self.open_brackets -= 1
        else:
            inner = self.term("mask")
        if tildes % 2 == 0:
            return inner
        try:
            return Not(inner)
        except ProgramError as e:  # nested too deep
            self.fail(str(e), first, self.tokens[self.i - 1])
            raise  # unreachable: fail raises

    # -- one term: name or name(args) --------------------------------------------------------
    def term(self, kind: str) -> Part:
        first = self.tok
        if first.kind != "name":
            self.fail(f"expected a {kind} name here", first)
        cls = self.part_class(first, kind)
        self.take()
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        if self.at("("):
            self.take()
            while not self.at(")"):
                if self.tok.kind == "end":
                    self.fail(f"'{first.text}(' is never closed", first, self.tok)
                if self.tok.kind == "name" and self.tokens[self.i + 1].text == "=":
                    key = self.take().text
                    self.take()
                    kwargs[key] = self.value()
                elif kwargs:
                    self.fail("positional arguments come before keyword arguments", self.tok)
                else:
                    args.append(self.value())
                if not self.at(")"):
                    self.expect(",", "between arguments")
            last = self.take()
        else:
            last = first
        try:
            return cls.build(args, kwargs)
        except ProgramError as e:
            self.fail(str(e), first, last)
            raise  # unreachable: fail raises

    def value(self) -> Any:
        t = self.take()
        if t.kind == "op" and t.text == "-" and self.tok.kind == "num":
            return -self.number(self.take())
        if t.kind == "num":
            return self.number(t)
        if t.kind == "name":
            return _WORDS.get(t.text, t.text)
        self.fail("expected a number or a name as an argument", t)


    def number(self, t: Token) -> int | float:
        """The value of a number token; caret errors for one too long, too large or too small."""
        if len(t.text) > MAX_NUMBER_CHARS:
            self.fail(f"a number of {len(t.text):,} characters; numbers here have at most "
                      f"{MAX_NUMBER_CHARS}", t)
        if not any(c in t.text for c in ".eE"):
            return int(t.text)
        value = float(t.text)
        mantissa = t.text.split("e")[0].split("E")[0]
        if math.isinf(value) or (value == 0 and mantissa.strip("0.")):
            self.fail(f"{t.text} is {'too large' if value else 'too small'} for a floating-point "
                      "number", t)
        return value


def parse_sections(text: str) -> dict[str, Any]:
    """The sections of a program string, as parts (no cross-section validation)."""
    return Parser(text).sections()


def parse_part(text: str, kind: str) -> Any:
    """One section of `kind` from its text: a mask expression, a score, a normalizer, a list of
    score mods ('alibi + softcap(30.0)'), a list of options."""
    parser = Parser(text)
    start = parser.tok
    section = _SECTION_OF_KIND[kind]
    value = getattr(parser, f"parse_{section}")()
    if parser.tok.kind != "end":
        parser.fail(f"unexpected text after the {kind}", parser.tok)
    if kind == "score":
        score, mods = value
        if mods or score is None:
            parser.fail("expected just a score here (mods have their own field)", start)
        return score
    if kind == "mod":
        score, mods = value
        if score is not None:
            parser.fail("expected score mods here; the score has its own field", start)
        return mods
    return value
