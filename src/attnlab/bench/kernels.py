"""The `bench kernels` matrix as data: cases, the implementations each one compares, and the
targets as ratios with bounds, judged on the measured numbers."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnlab.bench.impls import BACKEND_PREFIX, FASTEST, FORCED
from attnlab.errors import InputError

# metric -> the Result field that holds it
METRICS = {"ms": "median_ms", "mb": "peak_mb", "s": "first_call_s"}
UNITS = {"ms": " ms", "mb": " MB", "s": " s"}


@dataclass
class Result:
    """What one (case, implementation) measured, or the error that stopped it."""

    impl: str
    median_ms: float | None = None
    runs_ms: list[float] = field(default_factory=list)
    peak_mb: float | None = None
    peak_method: str | None = None
    first_call_s: float | None = None  # in a fresh process with a warm compile cache
    second_call_s: float | None = None  # the call after it, same process
    cold_call_s: float | None = None  # the first call with the cache still empty
    backend: str | None = None  # what attnlab's planner chose
    error: str | None = None

    @classmethod
    def from_worker(cls, impl: str, data: Mapping[str, Any]) -> Result:
        known = {f.name for f in dataclasses.fields(cls)} - {"impl"}
        return cls(impl, **{key: value for key, value in data.items() if key in known})

    @property
    def noisy(self) -> bool:
        """The slowest timed run took over twice the fastest: a busy machine, or a late compile."""
        return bool(self.runs_ms) and max(self.runs_ms) > 2 * min(self.runs_ms)

    def value(self, metric: str) -> float | None:
        return None if self.error else getattr(self, METRICS[metric])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Measure:
    """One number of one implementation: median time (ms), peak memory (mb) or first call (s)."""

    impl: str
    metric: str = "ms"
    case: str | None = None  # another case's result; None: the case the target belongs to

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got '{self.metric}'")


@dataclass(frozen=True)
class Verdict:
    """A target judged: the ratio (or value) measured, its bound, and whether it was met."""

    label: str
    expr: str  # e.g. "attnlab / sdpa_causal"
    value: float | None  # None: a number it needs is missing
    bound: str  # e.g. "≤ 1.1×"
    met: bool | None
    unit: str = "×"  # "×" for a ratio, else the unit of the value

    @property
    def text(self) -> str:
        return f"{self.expr} = {'n/a' if self.value is None else f'{self.value:.2f}{self.unit}'}"


@dataclass(frozen=True)
class Target:
    """num / den (or num alone when den is None) must be at most or at least a bound."""

    label: str
    num: Measure
    den: Measure | None = None
    at_most: float | None = None
    at_least: float | None = None

    def __post_init__(self) -> None:
        if (self.at_most is None) == (self.at_least is None):
            raise ValueError(f"target '{self.label}': give exactly one of at_most, at_least")

    @property
    def unit(self) -> str:
        return "×" if self.den else UNITS[self.num.metric]

    @property
    def bound(self) -> str:
        op, limit = ("≤", self.at_most) if self.at_most is not None else ("≥", self.at_least)
        return f"{op} {limit:g}{self.unit}"

    def passes(self, value: float) -> bool:
        return value <= self.at_most if self.at_most is not None else value >= self.at_least

    def cases(self) -> set[str]:
        """Other cases this target reads."""
        return {m.case for m in (self.num, self.den) if m is not None and m.case is not None}


@dataclass(frozen=True)
class Case:
    """One program at one length and mode, the implementations to compare, and its targets."""

    name: str
    program: str
    n: int
    mode: str  # "fwd", "fwdbwd" or "first_call"
    impls: tuple[str, ...]
    targets: tuple[Target, ...] = ()

    def depends_on(self) -> set[str]:
        return set().union(*(t.cases() for t in self.targets))


Results = Mapping[str, Mapping[str, Result]]  # case name -> implementation -> result


def evaluate(target: Target, case: Case, results: Results, cases: Mapping[str, Case]) -> Verdict:
    """Judge `target` of `case` on the measured results (cases: every case by name, for N)."""
    num = _value(target.num, case, results)
    if target.den is None:
        value = num
    else:
        den = _value(target.den, case, results)
        # a zero or negative peak (growth below page noise) has no meaningful ratio
        value = num / den if num is not None and den is not None and den > 0 else None
    met = None if value is None else target.passes(value)
    return Verdict(target.label, _expr(target, case, cases, results), value, target.bound, met,
                   target.unit)


def _value(measure: Measure, case: Case, results: Results) -> float | None:
    impl = fastest_backend(measure, case, results)
    result = results.get(measure.case or case.name, {}).get(impl)
    return None if result is None else result.value(measure.metric)


def fastest_backend(measure: Measure, case: Case, results: Results) -> str:
    """The implementation a measure reads: for FASTEST, the attnlab:<backend> with the least
    value measured in the case (FASTEST itself when none ran)."""
    if measure.impl != FASTEST:
        return measure.impl
    ran = {impl: r.value(measure.metric)
           for impl, r in results.get(measure.case or case.name, {}).items()
           if impl.startswith(BACKEND_PREFIX) and r.value(measure.metric) is not None}
    return min(ran, key=ran.get) if ran else FASTEST


def _expr(target: Target, case: Case, cases: Mapping[str, Case], results: Results) -> str:
    sides = [m for m in (target.num, target.den) if m is not None]
    across = any(m.case for m in sides)  # name N on both sides when they are different cases

    def name(m: Measure) -> str:
        other = cases.get(m.case or case.name)
        impl = fastest_backend(m, case, results)
        return f"{impl}@{other.n if other else m.case}" if across else impl

    prefix = {"ms": "", "mb": "peak ", "s": "first call "}[target.num.metric]
    return prefix + " / ".join(name(m) for m in sides)


# -- the matrices ---------------------------------------------------------------------------------

FORCED_IMPLS = tuple(BACKEND_PREFIX + name for name in FORCED)
SOFTMAX_IMPLS = ("attnlab", *FORCED_IMPLS, "naive", "sdpa_causal", "sdpa_bool", "sdpa_float", "flex")
# The planner's choice against the best it could have made, measured in the same run.
DEFAULT_VS_FASTEST = Target("attnlab ≤ 1.1× its fastest backend", Measure("attnlab"),
                            Measure(FASTEST), at_most=1.1)


def matrix(*, n: int, n_long: int, n_longest: int, window: int) -> tuple[Case, ...]:
    """The cases behind the targets: dense causal and causal & window softmax, windowed
    entmax(1.5), memory growth from n_long to n_longest, and a first call on a warm cache.
    Every timed case also runs each attnlab backend that can run it, forced, and compares the
    planner's choice with the fastest of them."""
    causal = "scaled_dot ; causal ; softmax"
    local = f"scaled_dot ; causal & window({window}) ; softmax"
    local_entmax = f"scaled_dot ; causal & window({window}) ; entmax(1.5)"
    w = f"window{window}"
    long_bwd = f"{w}-softmax-{n_long}-fwdbwd"
    attn, sdpa_bool = Measure("attnlab"), Measure("sdpa_bool")
    return (
        Case(f"causal-softmax-{n}-fwd", causal, n, "fwd", SOFTMAX_IMPLS, (
            Target("attnlab ≤ 1.1× SDPA is_causal", attn, Measure("sdpa_causal"), at_most=1.1),
            DEFAULT_VS_FASTEST)),
        Case(f"causal-softmax-{n}-fwdbwd", causal, n, "fwdbwd", SOFTMAX_IMPLS, (
            Target("attnlab ≤ 1.2× SDPA is_causal", attn, Measure("sdpa_causal"), at_most=1.2),
            DEFAULT_VS_FASTEST)),
        Case(f"{w}-softmax-{n_long}-fwd", local, n_long, "fwd", SOFTMAX_IMPLS, (
            Target("≥ 10× faster than SDPA with a bool mask", sdpa_bool, attn, at_least=10),
            Target("attnlab ≤ 1.2× FlexAttention compiled", attn, Measure("flex"), at_most=1.2),
            DEFAULT_VS_FASTEST)),
        Case(f"{w}-softmax-{n}-fwdbwd", local, n, "fwdbwd", SOFTMAX_IMPLS, (
            Target("≥ 5× faster than SDPA with a bool mask", sdpa_bool, attn, at_least=5),
            DEFAULT_VS_FASTEST)),
        Case(f"{w}-entmax15-{n}-fwdbwd", local_entmax, n, "fwdbwd",
             ("attnlab", *FORCED_IMPLS, "entmax15_dense"), (
            Target("≥ 5× faster than dense entmax15", Measure("entmax15_dense"), attn, at_least=5),
            Target("≥ 5× less peak memory than dense entmax15", Measure("entmax15_dense", "mb"),
                   Measure("attnlab", "mb"), at_least=5), DEFAULT_VS_FASTEST)),
        Case(long_bwd, local, n_long, "fwdbwd", ("attnlab", *FORCED_IMPLS), (DEFAULT_VS_FASTEST,)),
        Case(f"{w}-softmax-{n_longest}-fwdbwd", local, n_longest, "fwdbwd", ("attnlab", *FORCED_IMPLS), (
            Target(f"peak memory N={n_longest} ≤ 2.5× N={n_long}", Measure("attnlab", "mb"),
                   Measure("attnlab", "mb", case=long_bwd), at_most=2.5), DEFAULT_VS_FASTEST)),
        Case(f"first-call-{w}-softmax-{n}", local, n, "first_call", ("attnlab",), (
            Target("first call ≤ 3 s on a warm compile cache", Measure("attnlab", "s"),
                   at_most=3.0),)),
    )


DEFAULT = matrix(n=4096, n_long=8192, n_longest=16384, window=256)
QUICK = matrix(n=256, n_long=512, n_longest=1024, window=64)


def select(cases: tuple[Case, ...], only: str | None) -> tuple[Case, ...]:
    """The cases whose name contains `only`, plus the cases their targets compare against."""
    if not only:
        return cases
    chosen = {c.name for c in cases if only in c.name}
    if not chosen:
        raise InputError(f"--only '{only}' matches no case; the cases are: "
                         f"{', '.join(c.name for c in cases)}")
    chosen |= set().union(*(c.depends_on() for c in cases if c.name in chosen))
    return tuple(c for c in cases if c.name in chosen)
