"""Named rules: mask predicates kept in a registry by name, so that a rule is plain data
(`rule(within, 2)`, `{name: rule, rule: within, n: 2}`) and round-trips in every spelling,
unlike `predicate(fn)`.

A rule is a function (b, h, q_idx, kv_idx, inp, n) -> bool tensor over broadcastable index
tensors, as a mask's `visible` is; `inp` holds the call-time data it declares it reads.
`attnlab.priors.rules` registers the built-in library; `@rule("name")` adds one's own.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from attnlab.errors import ProgramError, did_you_mean
from attnlab.lang.base import MAX_LENGTH, show
from attnlab.lang.masks import Mask, MaskInputs, _need, _state

RuleFn = Callable[[Tensor, Tensor, Tensor, Tensor, MaskInputs, Any], Tensor]
# (q0, q1, k0, k1, inp, n) -> (all visible, none visible) per block, from the first and last
# query and key index of each block: an exact block summary without the N×M mask.
BlocksFn = Callable[[Tensor, Tensor, Tensor, Tensor, MaskInputs, Any], tuple[Tensor, Tensor]]

# call-time input a rule may read -> (the MaskInputs field holding it, how a caller passes it)
READABLE = {"distances": ("distances", "distances="), "graph": ("graph", "graph="),
            "segments": ("q_segments", "segments="),
            "key_padding": ("key_keep", "key_lengths= or key_padding_mask=")}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {"true", "false", "none", "True", "False", "None"}  # the parser reads these as values


@dataclass(frozen=True)
class RuleSpec:
    """One registered rule: its function, the call-time inputs it reads, and its argument `n`
    (None: takes none; "required"; or a whole number, the default), at least `least`;
    whether it reads only positions; and `blocks`, its exact block summary, when one is cheap."""

    name: str
    fn: RuleFn
    reads: frozenset[str]
    n: int | str | None
    least: int
    positional: bool = False
    blocks: BlocksFn | None = None

    @property
    def usage(self) -> str:
        """How the rule is written: rule(within, n), rule(chunk, n=64), rule(diagonal)."""
        if self.n is None:
            return f"rule({self.name})"
        return f"rule({self.name}, n)" if self.n == "required" else f"rule({self.name}, n={self.n})"


RULES: dict[str, RuleSpec] = {}


def rule(name: str, *, reads: tuple[str, ...] | frozenset[str] = (), n: int | str | None = None,
         least: int = 0, positional: bool = False) -> Callable[[RuleFn], RuleFn]:
    """Register `fn(b, h, q_idx, kv_idx, inp, n) -> bool tensor` as the rule `name`.

    `reads` names the call-time inputs it reads (distances, graph, segments, key_padding), so
    that `attention()` demands them; `n` says whether it takes a whole-number argument: None
    (no), "required", or its default; `least` is the smallest n accepted. `positional=True`
    promises that it reads nothing but the query and key positions (q + inp.offset, kv): never
    the batch row, the head or call-time data. It is then treated as a structured mask (one
    block mask for every batch and head count, proved causal or not by looking); otherwise as
    Python that may read anything, like `predicate(fn)`.
    """
    if not isinstance(name, str) or not _WORD.fullmatch(name) or name in _RESERVED:
        raise ProgramError(f"a rule's name must be a word such as 'within' (letters, digits, _), "
                           f"got {show(name)}")
    if name in RULES:
        raise ProgramError(f"rule '{name}' is registered already; pick another name")
    unknown = sorted(set(reads) - set(READABLE))
    if unknown:
        raise ProgramError(f"rule '{name}' reads {', '.join(unknown)}; a rule may read "
                           f"{', '.join(READABLE)}")
    if positional and reads:
        raise ProgramError(f"rule '{name}' reads {', '.join(sorted(reads))}, so it is not "
                           "positional")
    if not (n is None or n == "required" or (isinstance(n, int) and not isinstance(n, bool))):
        raise ProgramError(f"rule '{name}': n must be None, 'required' or a whole-number "
                           f"default, got {show(n)}")

    def register(fn: RuleFn) -> RuleFn:
        if not callable(fn):
            raise ProgramError(f"rule '{name}' must decorate a function, got {show(fn)}")
        if name in RULES:  # registered between the decorator's call and its application
            raise ProgramError(f"rule '{name}' is registered already; pick another name")
        RULES[name] = RuleSpec(name, fn, frozenset(reads), n, least, positional)
        return fn

    return register


def block_states(name: str) -> Callable[[BlocksFn], BlocksFn]:
    """Give the registered rule `name` an exact block summary `fn(q0, q1, k0, k1, inp, n) ->
    (full, empty)`, so tiled and flex skip its hidden blocks without building the N×M mask."""
    def register(fn: BlocksFn) -> BlocksFn:
        spec = lookup_rule(name)
        RULES[name] = dataclasses.replace(spec, blocks=fn)
        return fn

    return register


def lookup_rule(name: str) -> RuleSpec:
    """The rule called `name`; ProgramError with the nearest name and every known one."""
    spec = RULES.get(name) if isinstance(name, str) else None
    if spec is None:
        known = ", ".join(sorted(RULES)) or "none registered"
        raise ProgramError(f"unknown rule {show(name)}{did_you_mean(str(name), RULES)} "
                           f"(known rules: {known})")
    return spec


@dataclass(frozen=True)
class Rule(Mask):
    """A named mask from the rule registry: rule(within, 2).

    A name, then at most one whole-number argument. The block summary is the rule's own when
    it has one, else reduced from the dense mask."""

    name = "rule"
    rule: str
    n: int | None = None

    def validate(self) -> None:
        spec = lookup_rule(self.rule)
        if spec.n is None:
            if self.n is not None:
                raise ProgramError(f"rule: '{self.rule}' takes no argument, got n={self.n}; "
                                   f"write {spec.usage}")
            return
        if self.n is None:
            if spec.n == "required":
                raise ProgramError(f"rule: '{self.rule}' needs n: write {spec.usage}, "
                                   f"e.g. rule({self.rule}, {max(spec.least, 2)})")
            object.__setattr__(self, "n", spec.n)  # the default, so rule(x) == rule(x, default)
        if not spec.least <= self.n <= MAX_LENGTH:
            raise ProgramError(f"rule: n of '{self.rule}' must lie in [{spec.least}, 2**31 - 1], "
                               f"got {show(self.n)}")

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return lookup_rule(self.rule).reads

    @property
    def python(self) -> bool:  # type: ignore[override]
        """Whether it may read the batch row and head: all but positional rules may."""
        return not lookup_rule(self.rule).positional

    @property
    def doc(self) -> str:
        """What this rule means: the first line of its function's docstring."""
        return (lookup_rule(self.rule).fn.__doc__ or "").strip().split("\n")[0]

    def visible(self, b, h, q, kv, inp):
        spec = lookup_rule(self.rule)
        for need in spec.reads:
            field, arg = READABLE[need]
            _need(getattr(inp, field), self, arg)
        return spec.fn(b, h, q, kv, inp, self.n)

    def _block_state(self, q0, q1, k0, k1, inp):
        spec = lookup_rule(self.rule)
        if spec.blocks is None or spec.reads:
            return None  # reduced from the dense mask
        full, empty = spec.blocks(q0, q1, k0, k1, inp, self.n)
        return _state(full, empty)

    def __str__(self) -> str:
        return f"rule({self.rule})" if self.n is None else f"rule({self.rule}, {self.n})"
