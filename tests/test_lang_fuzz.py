"""Careless and hostile program input: every string, dict or part either builds a program
that runs (finite outputs and gradients on ordinary inputs) or raises one ProgramError, and
within a time bound.

`PYTHONPATH=src python tests/test_lang_fuzz.py [N]` prints the fuzz count: the outcomes of N
random strings, N random dicts, N extreme calls and every argument at every extreme value.
It uses only the public API, so it counts the same cases for any version of attnlab.
"""

from __future__ import annotations

import dataclasses
import math
import random
import re
import signal
import string
import sys
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import attnlab
from attnlab import lang as S
from attnlab.errors import AttnlabError, ConfigError, ProgramError
from attnlab.lang import Program, parse, registry

# -- generators of hostile input (random.Random, so the count and hypothesis share them) ------

PART_NAMES = sorted(registry())
ARG_NAMES = ["scale", "dim", "tau", "buckets", "max_distance", "bidirectional", "c", "t", "w", "n",
             "k", "d", "p", "block", "seed", "alpha", "hard", "bias", "feature_map", "m",
             "orthogonal", "max_len", "fn"]
PROGRAM_KEYS = ["score", "mods", "mask", "normalizer", "approximation", "layout", "dropout",
                "heads", "kv_heads", "head_dim", "cross", "name", "and", "or", "not"]
OPS = ["(", ")", "~", "&", "|", ";", ",", "=", "+", "-"]
EXTREME_FLOATS = [0.0, -0.0, 1e-320, 5e-324, 1e-46, 1e-38, 1e-30, 1e-7, 1e-6, 0.5, 1.0, 1.0000001,
                  1.001, 2.0, 3.7, 1e6, 1e7, 1e30, 1e38, 3.5e38, 1e39, 1e300, 1.7976931348623157e308,
                  -1e-320, -1.0, -1e6, -1e38, -1e308]
EXTREME_INTS = [0, 1, 2, 3, 7, 64, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**63,
                2**64, 10**20, 10**400, -1, -(2**63), -(10**30)]


def number_text(rng: random.Random) -> str:
    """A number as text: small, extreme, or with hundreds or thousands of digits."""
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(0, 100))
    if kind == 1:
        return repr(abs(rng.choice(EXTREME_FLOATS)))
    if kind == 2:
        return str(abs(rng.choice(EXTREME_INTS)) % 10**300)
    if kind == 3:
        return "9" * rng.choice([19, 20, 310, 400, 4301, 6000])
    if kind == 4:
        return "9" * rng.choice([310, 400, 1000]) + ".5"
    return f"{rng.randrange(1, 10)}e{rng.choice([-400, -320, -46, 38, 39, 308, 309, 5000])}"


def _token(rng: random.Random) -> str:
    kind = rng.randrange(10)
    if kind < 4:
        return rng.choice(PART_NAMES)
    if kind < 7:
        return rng.choice(OPS)
    if kind == 7:
        return number_text(rng)
    if kind == 8:
        return rng.choice([*ARG_NAMES, "true", "false", "none", "elu1", "relu", "zoo"])
    return "".join(rng.choice(string.ascii_letters + "_") for _ in range(rng.randrange(1, 6)))


def extreme_call(rng: random.Random) -> str:
    """A well-formed program with one part called on extreme arguments."""
    name = rng.choice(PART_NAMES)
    kind = registry()[name].kind
    args = []
    for _ in range(rng.randrange(0, 4)):
        value = (repr(rng.choice(EXTREME_FLOATS)) if rng.random() < 0.5
                 else str(rng.choice(EXTREME_INTS)))
        if rng.random() < 0.4:
            value = f"{rng.choice(ARG_NAMES)}={value}"
        args.append(value)
    return in_program(f"{name}({', '.join(args)})" if args else name, kind)


def in_program(call: str, kind: str) -> str:
    """A whole program around one part of `kind`, written as `call`."""
    if kind == "combinator":  # its programs come first, in braces: mix({…}, {…}, gate=…)
        name, _, args = call.partition("(")
        return f"{name}({{causal ; softmax}}, {{softmax}}{', ' + args[:-1] if args else ')'}" + \
            (")" if args else "")
    return {"score": f"{call} ; softmax", "mod": f"scaled_dot + {call}",
            "mask": f"scaled_dot ; {call} ; softmax", "normalizer": f"scaled_dot ; {call}",
            "approximation": call, "option": f"scaled_dot ; softmax ; {call}"}[kind]


def random_text(rng: random.Random) -> str:
    """Arbitrary characters, a soup of the grammar's tokens, deep nesting, or extreme calls."""
    mode = rng.randrange(5)
    if mode == 0:
        alphabet = string.printable + "λ∞⁰\x00\u202e"
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 60)))
    if mode == 1:
        return " ".join(_token(rng) for _ in range(rng.randrange(1, 40)))
    if mode == 2:
        depth = rng.choice([1, 5, 31, 32, 33, 64, 196, 400, 980, 3000])
        leaf = rng.choice(["causal", "window(4)", "prefix(2) & causal", "~causal"])
        shape = rng.randrange(4)
        if shape == 0:
            return "scaled_dot ; " + "(" * depth + leaf + ")" * depth + " ; softmax"
        if shape == 1:
            return "scaled_dot ; " + "~" * depth + leaf
        if shape == 2:
            return "scaled_dot ; " + "~(" * depth + leaf + ")" * depth
        return "scaled_dot ; " + " & ".join([leaf] * depth)
    return extreme_call(rng)


def _random_key(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind < 5:
        return rng.choice(PROGRAM_KEYS + ARG_NAMES)
    return rng.choice([0, 1.5, None, True, "", "sc0re", ("a", 1)])


def random_data(rng: random.Random, depth: int = 0) -> Any:
    """Arbitrary nested data shaped a bit like a program dict (keys from the language)."""
    kind = rng.randrange(12 if depth < 4 else 7)
    if kind == 0:
        return rng.choice(EXTREME_INTS)
    if kind == 1:
        return rng.choice([*EXTREME_FLOATS, math.inf, -math.inf, math.nan])
    if kind == 2:
        return rng.choice([None, True, False])
    if kind in (3, 4):
        return rng.choice([*PART_NAMES, "", "causal & window(8)", "scaled_dot + alibi", "zoo:bigbird",
                           "(" * 300 + "causal" + ")" * 300, "9" * 5000])
    if kind in (5, 6):
        return random_text(rng)
    if kind == 7:
        return [random_data(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    if kind == 8:  # a deep chain of not / and / or
        node: Any = rng.choice(["causal", {"name": "window", "w": 3}, {"name": []}, 5])
        for _ in range(rng.choice([2, 33, 300, 3000])):
            key = rng.choice(["not", "not", "and", "or"])
            node = {key: node if key == "not" else [node, "causal"]}
        return node
    out: dict[Any, Any] = {}
    if rng.random() < 0.7:
        out["name"] = rng.choice(PART_NAMES) if rng.random() < 0.8 else random_data(rng, depth + 1)
    for _ in range(rng.randrange(0, 5)):
        out[_random_key(rng)] = random_data(rng, depth + 1)
    return out


def random_program_dict(rng: random.Random) -> Any:
    """A program dict with some fields well-formed and others broken."""
    if rng.random() < 0.1:
        return random_data(rng)
    return {rng.choice(PROGRAM_KEYS[:7]) if rng.random() < 0.9 else _random_key(rng):
            random_data(rng, 1) for _ in range(rng.randrange(1, 5))}


def warm_up() -> None:
    """Run attention once, so that lazy first imports (torch pulls in sympy on its first
    broadcast) happen before any time bound: an alarm inside an import breaks the module."""
    q = torch.randn(1, 1, 2, 2)
    attnlab.attention(q, q, q, "scaled_dot ; causal ; softmax", backend="reference")


@pytest.fixture(autouse=True, scope="module")
def _warm() -> None:
    warm_up()


class Hang(Exception):
    """Raised by the alarm when one case runs past its time bound."""


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    def ring(*_):
        raise Hang(f"took over {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def call_inputs(program: Program, seed: int = 0) -> tuple[dict[str, Any], int, int]:
    """Tiny finite q, k, v and every call-time input the program reads; (kwargs, heads, dim)."""
    gen = torch.Generator().manual_seed(seed)
    lay = program.layout
    h, d = lay.heads or 2, lay.head_dim or 4
    hk = lay.kv_heads or h
    n, m = 5, 7 if lay.cross else 5
    kw: dict[str, Any] = {
        "q": (torch.randn(1, h, n, d, generator=gen) * 3).requires_grad_(),
        "k": (torch.randn(1, hk, m, d, generator=gen) * 3).requires_grad_(),
        "v": torch.randn(1, hk, m, d, generator=gen).requires_grad_(),
    }
    needs = program.requires()
    if "bias" in needs:
        kw["bias"] = torch.randn(1, h, n, m, generator=gen)
    if "segments" in needs:
        kw["segments"] = torch.tensor([[0] * (m - 2) + [1, 1]])
    if "key_padding" in needs:
        kw["key_lengths"] = torch.tensor([m - 1])
    if "graph" in needs:
        kw["graph"] = torch.rand(1, n, m, generator=gen) < 0.6
    if "distances" in needs:
        kw["distances"] = torch.randint(-1, 6, (1, n, m), generator=gen)
    if program.learnable:
        kw["params"] = attnlab.init_params(program, heads=h, head_dim=d)
    return kw, h, d


def exercise(program: Program) -> str:
    """What a parsed program does when used: 'ok', 'nan output', 'nan grad' (an exception
    escapes to the caller, who classifies it)."""
    text = str(program)
    if parse(text) != program:
        return "round trip differs"
    if Program.from_dict(program.to_dict()) != program:
        return "dict round trip differs"
    lay = program.layout
    if max(lay.heads or 0, lay.kv_heads or 0, lay.head_dim or 0) > 64:
        return "ok"  # tensors this wide are the caller's to make; the layout itself is checked
    kw, _, _ = call_inputs(program)
    out = attnlab.attention(program=program, backend="reference", **kw)
    if not torch.isfinite(out).all():
        return "nan output"
    out.square().sum().backward()
    grads = [kw[x].grad for x in ("q", "k", "v") if kw[x].grad is not None]
    if any(not torch.isfinite(g).all() for g in grads):
        return "nan grad"
    return "ok"


def outcome(make: Callable[[], Program], seconds: float = 2.0) -> str:
    """One case's outcome: ok / attnlab error / raw <Type> / hang / nan output / ..."""
    try:
        with time_bound(seconds):
            return exercise(make())
    except Hang:
        return "hang"
    except AttnlabError:
        return "attnlab error"
    except Exception as e:  # the point is to count what escapes
        return f"raw {type(e).__name__}"


def extreme_grid() -> list[str]:
    """Every argument of every part, one at a time, at every extreme value of its type (the
    other arguments valid), as program strings."""
    out = []
    for name, cls in sorted(registry().items()):
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name != "fn"]
        for f in fields:
            kinds = typing.get_args(hints[f.name]) or (hints[f.name],)
            values = ([repr(x) for x in EXTREME_FLOATS] if float in kinds else
                      [str(x) for x in EXTREME_INTS] if int in kinds else [])
            for value in values:
                args = [f"{f.name}={value}"]
                for g in fields:
                    if g.default is dataclasses.MISSING and g is not f:
                        args.append(f"{g.name}={ {'p': '0.5'}.get(g.name, '2')}")
                out.append(in_program(f"{name}({', '.join(args)})", cls.kind))
    return out


def count(n: int = 1500, seed: int = 0) -> dict[str, Counter]:
    """Outcomes of n random strings, n random dicts and every extreme call, by family."""
    warm_up()
    rng = random.Random(seed)
    texts = [random_text(rng) for _ in range(n)]
    dicts = [random_program_dict(rng) for _ in range(n)]
    extremes = [extreme_call(rng) for _ in range(n)]
    return {
        "strings -> parse": Counter(outcome(lambda t=t: parse(t)) for t in texts),
        "dicts -> Program.from_dict": Counter(outcome(lambda d=d: Program.from_dict(d))
                                              for d in dicts),
        "extreme arguments -> parse": Counter(outcome(lambda t=t: parse(t)) for t in extremes),
        "every argument at every extreme -> parse": Counter(outcome(lambda t=t: parse(t))
                                                            for t in extreme_grid()),
    }


# -- the findings, one test each -------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "scaled_dot ; topk(" + "9" * 5000 + ")",  # past int()'s 4,300-digit limit
    "scaled_dot + temperature(" + "9" * 400 + ")",  # an int past the float range
    "scaled_dot + temperature(" + "9" * 400 + ".5)",
    "scaled_dot + temperature(1e400)",
    "scaled_dot + temperature(1e-400)",  # nonzero, yet 0.0 as a float
])
def test_numbers_too_long_or_too_large_are_one_error(text: str) -> None:
    with pytest.raises(ProgramError):
        parse(text)


@pytest.mark.parametrize("text", [
    "scaled_dot ; " + "(" * 196 + "causal" + ")" * 196,
    "scaled_dot ; " + "~(" * 400 + "causal" + ")" * 400,
    "scaled_dot ; " + " | ".join(["(causal & window(2))"] * 3) + " & " + "(" * 40 + "prefix(2)" + ")" * 40,
])
def test_deep_brackets_are_one_error(text: str) -> None:
    with pytest.raises(ProgramError, match="nest at most 32 deep"):
        parse(text)


def test_runs_of_tilde_cancel_and_print() -> None:
    assert parse("scaled_dot ; " + "~" * 980 + "causal").mask == S.Causal()
    odd = parse("scaled_dot ; " + "~" * 401 + "causal")
    assert odd.mask == S.Not(S.Causal())
    assert str(odd) == "scaled_dot ; ~causal ; softmax"
    q = torch.randn(1, 1, 4, 8)
    out = attnlab.attention(q, q, q, "scaled_dot ; " + "~" * 400 + "(causal | window(1))",
                            backend="reference")
    assert torch.isfinite(out).all()


def test_double_negation_is_exact_in_every_spelling() -> None:
    c = S.Causal()
    assert ~~c == c  # the operator cancels, as the parser does for ~~
    nested = S.Not(S.Not(c))  # built explicitly it stays, and prints with brackets
    assert str(nested) == "~(~causal)"
    assert parse(f"scaled_dot ; {nested}").mask == nested
    assert Program.from_dict(Program(mask=nested).to_dict()).mask == nested
    inp = S.MaskInputs(1, 1, 9, 9)
    assert torch.equal(nested.dense(inp), c.dense(inp))
    assert torch.equal(nested.block_summary(inp, 4).state, c.block_summary(inp, 4).state)


def test_python_built_masks_nest_at_most_max_depth() -> None:
    mask: S.Mask = S.Causal()
    for _ in range(S.masks.MAX_DEPTH - 1):
        mask = S.Not(mask) if isinstance(mask, S.And) else S.And((mask, S.Window(2)))
    assert mask.depth == S.masks.MAX_DEPTH
    str(mask)  # neither printing nor comparing recurses too deep
    with pytest.raises(ProgramError, match="nest at most 32 deep"):
        S.Not(mask)
    with pytest.raises(ProgramError, match="nest at most 32 deep"):
        S.Or((mask, S.Causal()))
    flat = S.Causal()
    for _ in range(100):  # a & b & c … flattens, so a long chain stays one level
        flat = flat & S.Window(3)
    assert flat.depth == 2


@pytest.mark.parametrize("text, field", [
    ("scaled_dot ; window(99999999999999999999) ; softmax", "w"),
    ("scaled_dot ; window(2147483648) ; softmax", "w"),
    ("scaled_dot ; prefix(99999999999999999999) ; softmax", "n"),
    ("scaled_dot ; global_tokens(18446744073709551616) ; softmax", "k"),
    ("scaled_dot ; dilated(4611686018427387904, 4) ; softmax", "w"),
    ("scaled_dot ; dilated(2, 99999999999999999999) ; softmax", "d"),
    ("scaled_dot ; random_blocks(0.3, block=99999999999999999999) ; softmax", "block"),
    ("scaled_dot ; random_blocks(0.3, seed=4611686018427387904) ; softmax", "seed"),
    ("scaled_dot ; topk(99999999999999999999)", "k"),
    ("favor(2147483647)", "m"),
    ("favor(16, seed=18446744073709551616)", "seed"),
    ("lowrank(2, max_len=2147483648)", "max_len"),
    ("lowrank(256, max_len=65537)", "k × max_len"),
    ("lowrank(100000)", "k"),
    ("scaled_dot + relative_bias(buckets=100000) ; softmax", "buckets"),
    ("additive(100000) ; softmax", "dim"),
    ("scaled_dot ; softmax ; heads(2147483647)", "n"),
    ("scaled_dot ; softmax ; head_dim(100000)", "d"),
])
def test_whole_numbers_beyond_their_range_are_refused_at_build(text: str, field: str) -> None:
    with pytest.raises(ProgramError, match=re.escape(f"{field} must be")):
        parse(text)


@pytest.mark.parametrize("text", [
    "scaled_dot + temperature(1e-320) ; softmax",
    "scaled_dot + softcap(1e308) ; softmax",
    "scaled_dot(scale=1e308) ; softmax",
    "scaled_dot ; gumbel(tau=1e-320)",
    "scaled_dot ; entmax(1e300)",
    "cosine(1e308) ; softmax",
    "scaled_dot ; sigmoid(bias=1e308)",
    "scaled_dot + softcap(1e-320)",
    "scaled_dot + temperature(1e-4) + temperature(1e-4) + temperature(1e-4) + temperature(1e-4)",
])
def test_float_arguments_that_would_give_nan_are_refused(text: str) -> None:
    with pytest.raises(ProgramError):
        parse(text)


def test_every_accepted_extreme_argument_gives_finite_outputs_and_gradients() -> None:
    """Each argument of each part alone at every extreme value: refused, or finite when run."""
    outcomes = Counter(outcome(lambda t=t: parse(t), seconds=5) for t in extreme_grid())
    assert set(outcomes) <= {"ok", "attnlab error"}, outcomes


@pytest.mark.parametrize("text", [
    "scaled_dot(scale=1e6) + temperature(1e-6) ; softmax",  # the largest gain accepted
    "scaled_dot(scale=1e6) + temperature(1e-6) ; causal ; sparsemax",
    "scaled_dot(scale=1e6) + temperature(1e-6) ; entmax(1.5)",
    "scaled_dot(scale=1e6) ; entmax(1000000.0)",
    "scaled_dot(scale=1e-6) ; entmax(1.0000001)",
    "scaled_dot(scale=1e6) + temperature(1e-6) ; topk(2)",
    "scaled_dot(scale=1e6) ; gumbel(1e-6, hard=true)",
    "cosine(1e6) + temperature(1e-6) ; window(1) ; softmax",
    "scaled_dot(scale=1e6) + softcap(1e-6) + temperature(1e-6) ; softmax",
    "scaled_dot(scale=1e6) + softcap(1e6) ; relu",
    "scaled_dot(scale=1e6) ; sigmoid(bias=-1e6)",
    "scaled_dot(scale=1e-6) + temperature(1e6) ; sigmoid(bias=1e6)",
    "scaled_dot + alibi + temperature(1e-6) ; causal ; softmax ; dropout(0.9999999)",
])
@pytest.mark.parametrize("magnitude", [1.0, 30.0])
def test_programs_at_the_accepted_bounds_stay_finite(text: str, magnitude: float) -> None:
    program = parse(text)
    kw, _, _ = call_inputs(program)
    for name in ("q", "k"):
        kw[name] = (kw[name].detach() * magnitude).requires_grad_()
    for training in (False, True):
        out = attnlab.attention(program=program, backend="reference", training=training,
                                generator=torch.Generator().manual_seed(0), **kw)
        assert torch.isfinite(out).all()
        grads = torch.autograd.grad(out.square().sum(), [kw["q"], kw["k"], kw["v"]])
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("d, message", [
    ({1: "softmax"}, "unknown program key 1"),
    ({None: "softmax"}, "unknown program key none"),
    ({"score": {"name": ["scaled_dot"]}}, "program.score: a score's name must be a word"),
    ({"score": {"name": {"x": 1}}}, "program.score: a score's name must be a word"),
    ({"score": {"name": "scaled_dot", 3: 1.0}}, "program.score: scaled_dot: argument names are words"),
    ({"mods": 5}, "program.mods must be a list of score mods"),
    ({"mods": [5]}, "program.mods[0]: expected a score mod"),
    ({"mods": ["alibi", {"name": "softcap", "c": 1e300}]}, "program.mods[1]: softcap: c must lie"),
    ({"mods": [{"name": "softcap", "c": [1]}]}, "program.mods[0]: softcap: c must be a number"),
    ({"mask": {"not": {"and": ["causal", {"name": "window", "w": 0}]}}},
     "program.mask.not.and[1]: window: w must be ≥ 1"),
    ({"mask": {"or": "causal"}}, "program.mask: 'or' takes a list of masks"),
    ({"mask": 7}, "program.mask: a mask must be written as a dict"),
    ({"normalizer": 7}, "program.normalizer must be a normalizer"),
    ({"layout": {"heads": [2]}}, "layout: heads must be a whole number"),
    ({"layout": {"cross": "yes"}}, "layout: cross must be true, false or none"),
    ({"layout": {2: 1}}, "unknown layout key 2"),
    ({"layout": [1]}, "program.layout must be a Layout or a dict"),
    ({"dropout": 10**400}, "dropout: p must be a finite number, got a number of about 401 digits"),
    ({"dropout": [0.1]}, "program.dropout must be a number"),
])
def test_malformed_dicts_name_the_bad_field(d: dict, message: str) -> None:
    with pytest.raises(ProgramError, match=re.escape(message)):
        Program.from_dict(d)


def test_deep_not_in_a_dict_is_one_error() -> None:
    node: Any = "causal"
    for _ in range(3000):
        node = {"not": node}
    with pytest.raises(ProgramError, match=r"program\.mask\.not\.not.*nest at most 32 deep"):
        Program.from_dict({"mask": node})


@pytest.mark.parametrize("text, message", [
    ("[" * 1200, "nested too deeply"),
    ("dropout: " + "9" * 5000, "cannot be read"),
    ("score: 2001-13-45", "cannot be read"),
    ("mask: !!python/object/apply:os.system [echo hi]", "not valid YAML"),
])
def test_odd_yaml_is_one_error(text: str, message: str) -> None:
    with pytest.raises(ProgramError, match=message):
        Program.from_yaml(text)


@pytest.mark.parametrize("text", [
    "scaled_dot ; " + "window(2) & " * 20_000 + "causl",  # a long program, the error at its end
    "x" * 100_000 + " ; softmax",  # one enormous unknown name
    "scaled_dot ; causal \x1b[2J\x1b[31m & window(2)",  # terminal escapes
    "scaled_dot ; causal\n& \x00 window(2)",
])
def test_errors_show_a_short_printable_excerpt(text: str) -> None:
    with pytest.raises(ProgramError) as err:
        parse(text)
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and all(len(line) < 400 for line in lines)
    assert all(c.isprintable() for line in lines for c in line)
    excerpt, carets = lines[1], lines[2]
    assert carets.strip() and set(carets.strip()) == {"^"}
    assert len(carets) <= len(excerpt)  # the carets sit under the excerpt


def test_layout_checks_stay_quick_for_huge_head_counts() -> None:
    with time_bound(2.0), pytest.raises(ConfigError, match="heads must be ≤ 65536"):
        S.Layout(kv_heads=7).resolve(heads=10**12)
    assert S.layout.divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]


# -- properties ------------------------------------------------------------------------------

ALLOWED = {"ok", "attnlab error"}
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(st.text(max_size=80))
def test_any_text_parses_or_raises_one_program_error(text: str) -> None:
    assert outcome(lambda: parse(text)) in ALLOWED


big_numbers = st.one_of(st.integers(-(10**30), 10**30).map(str),
                        st.integers(0, 10**500).map(str),
                        st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(abs(x))),
                        st.integers(1, 6000).map(lambda n: "9" * n))
words = st.sampled_from([*ARG_NAMES, "true", "none", "elu1"])
arguments = st.one_of(big_numbers, st.builds("-{}".format, big_numbers), words,
                      st.builds("{}={}".format, st.sampled_from(ARG_NAMES), big_numbers | words))
calls = st.builds(lambda name, args: f"{name}({', '.join(args)})", st.sampled_from(PART_NAMES),
                  st.lists(arguments, max_size=3))
tokens = st.one_of(st.sampled_from(PART_NAMES), st.sampled_from(OPS), big_numbers, words, calls,
                   calls)


one_call = st.sampled_from(PART_NAMES).flatmap(lambda name: st.lists(arguments, max_size=3).map(
    lambda args: in_program(f"{name}({', '.join(args)})", registry()[name].kind)))


@FUZZ
@given(st.lists(tokens, max_size=40).map(" ".join) | one_call)
def test_text_made_of_the_grammar_parses_or_raises_and_what_parses_runs(text: str) -> None:
    assert outcome(lambda: parse(text)) in ALLOWED


@FUZZ
@given(st.sampled_from(["(", "~", "~(", "causal & ("]), st.integers(0, 3000),
       st.sampled_from(["causal", "window(2) | prefix(1)", "~causal"]))
def test_nesting_of_any_depth_parses_or_raises(opener: str, depth: int, leaf: str) -> None:
    closer = ")" * opener.count("(")
    text = "scaled_dot ; " + opener * depth + leaf + closer * depth
    assert outcome(lambda: parse(text)) in ALLOWED


keys = st.one_of(st.sampled_from(PROGRAM_KEYS + ARG_NAMES + PART_NAMES), st.integers(), st.none(),
                 st.booleans(), st.text(max_size=6))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400),
                    st.floats(), st.text(max_size=20), st.sampled_from(PART_NAMES),
                    st.sampled_from(["causal & window(8)", "alibi + softcap(30.0)", "zoo:bigbird"]))
nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(keys, inner, max_size=4), max_leaves=25)


@FUZZ
@given(st.dictionaries(st.sampled_from(PROGRAM_KEYS[:7]) | keys, nested, max_size=5))
def test_any_nested_data_builds_a_program_or_raises_one_program_error(d: dict) -> None:
    assert outcome(lambda: Program.from_dict(d)) in ALLOWED


yaml_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["score:", "mask:", "mods:", "- ", "{", "}", "[", "]", ": ", "\n",
                              "  ", "!!python/object:os.system", "&a", "*a", "? ", "2001-13-45",
                              "9" * 5000, ".inf", "-.nan", "0x1F", "causal", "name: window"]),
             max_size=30).map("".join),
    nested.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
)


@FUZZ
@given(yaml_text)
def test_any_yaml_builds_a_program_or_raises_one_program_error(text: str) -> None:
    assert outcome(lambda: Program.from_yaml(text)) in ALLOWED


@FUZZ
@given(st.randoms(use_true_random=False))
def test_program_shaped_dicts_and_texts_build_or_raise(rng: random.Random) -> None:
    d, text = random_program_dict(rng), random_text(rng)
    assert outcome(lambda: Program.from_dict(d)) in ALLOWED
    assert outcome(lambda: parse(text)) in ALLOWED


if __name__ == "__main__":
    import resource

    # A huge allocation fails at once instead of swapping the machine.
    resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    torch.set_num_threads(1)
    for family, counts in count(int(sys.argv[1]) if len(sys.argv) > 1 else 1500).items():
        print(f"{family}: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
