"""`attnlab.attention`: run a program on (B, H, N, D) tensors, checking that everything fits."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from attnlab.errors import InputError, did_you_mean
from attnlab.exec.backend import Call
from attnlab.exec.planner import BACKENDS, DEFAULT, Planner
from attnlab.exec.reference import reference_attention
from attnlab.lang.masks import MaskInputs
from attnlab.lang.program import Program, parse

# Listeners told (backend, program, mask inputs, call) of every planned call, which return the
# backend to run it on: attnlab.freeze's, which may pin another than the planner's.
RECORDERS: list[Callable[[str, Program, MaskInputs, Call], str]] = []
# call-time argument -> the program part that reads it
_READERS = {"bias": ("bias", "the score mod 'bias'"), "segments": ("segments", "the mask 'document'"),
            "key_lengths": ("key_padding", "the mask 'padding'"),
            "key_padding_mask": ("key_padding", "the mask 'padding'"),
            "graph": ("graph", "the mask 'graph'"),
            "distances": ("distances", "the score mod 'graph_distance' or a rule that reads "
                                       "distances, such as 'rule(within, 2)'")}


def arguments_read(program: Program) -> frozenset[str]:
    """The call-time arguments (`graph`, `distances`, `key_padding_mask`, …) `program` reads."""
    needs = program.requires()
    return frozenset(arg for arg, (need, _) in _READERS.items() if need in needs)


def read_by(read: frozenset[str], given: dict) -> dict:
    """The call-time inputs among `given` whose arguments are in `read` (what one component or
    head group reads, `arguments_read`); None values dropped."""
    return {arg: v for arg, v in given.items() if v is not None and arg in read}


def check_all_read(read: frozenset[str], given: dict, whole: Program | str) -> None:
    """InputError for an input outside `read`, the arguments program `whole` (or all the parts of
    one layer) reads."""
    for arg, value in given.items():
        if value is not None and arg not in read:
            raise InputError(f"{arg}= was given but nothing reads it: add {_READERS[arg][1]} to "
                             f"the program ('{whole}')")


def attention(q: Tensor, k: Tensor, v: Tensor, program: Program | str = "scaled_dot ; softmax", *,
              bias: Tensor | None = None, segments: Tensor | tuple[Tensor, Tensor] | None = None,
              key_lengths: Tensor | None = None, key_padding_mask: Tensor | None = None,
              graph: Tensor | None = None, distances: Tensor | None = None,
              params: dict[str, Tensor] | None = None,
              return_weights: bool = False, backend: str | None = None, training: bool = False,
              generator: torch.Generator | None = None, planner: Planner | None = None,
              ) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of q (B, H, N, D) over k, v (B, H_kv, M, D) as `program` says.

    `program` is a Program or its string. Call-time inputs feed the parts that read them:
    `bias` the `bias` mod; `segments` the `document` mask; `key_lengths` or
    `key_padding_mask` (True = padding) the `padding` mask; `graph` the `graph` mask;
    `distances` (B or 1, N, M) integer shortest-path lengths (−1: unreachable) the
    `graph_distance` mod and rules that read them (`rule(within, 2)`).
    `params` holds the program's trainable tensors (see `attnlab.init_params`).
    `training` turns on dropout and Gumbel noise. Returns the output (B, H, N, Dv), and the
    weights (B, H, N, M) too with `return_weights=True`.

    The planner picks the fastest backend that computes exactly this program
    (`attnlab.explain` says which and why); `backend=` forces one; `planner=` plans with a
    `Planner` of one's own instead of attnlab's default one.
    """
    program = parse(program)
    if program.combinator is not None:
        raise InputError(f"'{program.combinator.name}' learns how to join its programs, so it runs "
                         "in a module: use attnlab.nn.Attention(dim, program), or run each of "
                         "program.components with attnlab.attention")
    params = {} if params is None else params
    inp = check_call(q, k, v, program, bias=bias, segments=segments, key_lengths=key_lengths,
                     key_padding_mask=key_padding_mask, graph=graph, distances=distances,
                     params=params)
    if backend is None:
        name = (planner or DEFAULT).choose(program, q, k, v, inp, bias=bias, params=params,
                                           return_weights=return_weights, training=training,
                                           generator=generator)
        if RECORDERS:  # attnlab.freeze is listening
            name = RECORDERS[-1](name, program, inp, Call.of(
                program, q, k, v, return_weights=return_weights, training=training, params=params,
                seeded=generator is not None))
    else:
        name = _forced(backend, program, q, k, v, return_weights, training, params,
                       generator is not None)
    run = dict(bias=bias, params=params, training=training, generator=generator)
    if name == "reference":
        out, weights = reference_attention(q, k, v, program, inp, **run)
        return (out, weights) if return_weights else out
    return BACKENDS[name].run(q, k, v, program, inp, **run)


def _forced(name, program, q, k, v, return_weights, training, params, seeded) -> str:
    if torch.compiler.is_compiling() and name in BACKENDS:
        # a traced forward (a frozen plan, checked when it was pinned): a refusal check here
        # would only add guards on the shapes (dense-mask sizes) to the compiled graph
        return name
    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}'{did_you_mean(name, BACKENDS)} "
                         f"(available: {', '.join(BACKENDS)})")
    call = Call.of(program, q, k, v, return_weights=return_weights, training=training,
                   params=params, seeded=seeded)
    reason = BACKENDS[name].refuse(call)
    if reason:
        raise InputError(f"backend '{name}' cannot run this call: {reason}")
    return name


def check_call(q: Tensor, k: Tensor, v: Tensor, program: Program, *, params, **given) -> MaskInputs:
    """Validate shapes, layout, call-time inputs and parameters; return the mask inputs."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise InputError(f"{name} must be a 4-d tensor (batch, heads, seq, head_dim), got {shape}")
    (b, h, n, d), (bk, hk, m, dk) = q.shape, k.shape
    for what, size in (("batch", b), ("heads", h), ("kv heads", hk), ("head_dim", d),
                       ("value head_dim", v.shape[3])):
        if size == 0:
            raise InputError(f"q, k, v have {what} 0 (q {tuple(q.shape)}, k {tuple(k.shape)}, "
                             f"v {tuple(v.shape)}): every dimension must be at least 1")
    if bk != b or v.shape[0] != b:
        raise InputError(f"q, k, v batch sizes differ: {b}, {bk}, {v.shape[0]}")
    if dk != d:
        raise InputError(f"q and k head_dim differ: {d} vs {dk}")
    if v.shape[1:3] != k.shape[1:3]:
        raise InputError(f"v must match k in heads and length: k {tuple(k.shape)}, v {tuple(v.shape)}")
    if h % hk:
        raise InputError(f"k/v have {hk} heads, which does not divide q's {h} heads (GQA needs "
                         "heads % kv_heads == 0)")
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise InputError(f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if n == 0 or m == 0:
        raise InputError(f"empty sequence: {n} queries, {m} keys")
    lay = program.layout
    for field, want, got in (("heads", lay.heads, h), ("kv_heads", lay.kv_heads, hk),
                             ("head_dim", lay.head_dim, d)):
        if want is not None and want != got:
            raise InputError(f"the program says {field}({want}) but the tensors have {got}")
    _check_inputs(program, given)
    _check_call_data(given, n, m)
    _check_params(program, params, h, d)
    return MaskInputs.build(b, h, n, m, q.device, **{k_: v_ for k_, v_ in given.items()
                                                      if k_ != "bias"})


def _check_inputs(program: Program, given: dict) -> None:
    needs = program.requires()
    check_all_read(arguments_read(program), given, program)
    for need in sorted(needs):
        args = [a for a, (n, _) in _READERS.items() if n == need]
        if all(given.get(a) is None for a in args):
            raise InputError(f"{_reader(program, need)} needs {' or '.join(a + '=' for a in args)} "
                             "at call time")


def _reader(program: Program, need: str) -> str:
    """The first part of the program that reads `need`: "the score mod 'bias'"."""
    for mod in program.mods:
        if need in mod.needs:
            return f"the score mod '{mod}'"
    leaves = program.mask.leaves() if program.mask is not None else ()
    return next(f"the mask '{leaf}'" for leaf in leaves if need in leaf.needs)


def _check_call_data(given: dict, n: int, m: int) -> None:
    """Call-time data must be tensors (a pair of them for per-query and per-key segments)."""
    segments = given.get("segments")
    if isinstance(segments, tuple | list):
        if len(segments) != 2:
            raise InputError(f"segments= as a pair must be (q_segments (batch, {n}), kv_segments "
                             f"(batch, {m})), got {len(segments)} items")
        parts = {"segments[0]": segments[0], "segments[1]": segments[1]}
    else:
        parts = {"segments": segments}
        if isinstance(segments, Tensor) and n > m:
            raise InputError(f"{n} queries but {m} keys: segments (batch, {m}) gives no segment to "
                             f"the first {n - m} queries; pass segments=(q_segments (batch, {n}), "
                             f"kv_segments (batch, {m}))")
    parts.update((name, given.get(name)) for name in ("key_lengths", "key_padding_mask", "graph",
                                                      "distances", "bias"))
    for name, value in parts.items():
        if value is not None and not isinstance(value, Tensor):
            if name == "key_lengths" and _whole_numbers(value):
                continue  # an int or a list of ints is as clear as a tensor of them
            raise InputError(f"{name}= must be a torch.Tensor, got {type(value).__name__} "
                             f"{_short(value)}")


def _whole_numbers(value) -> bool:
    items = value if isinstance(value, list | tuple) else [value]
    return all(isinstance(x, int) and not isinstance(x, bool) for x in items)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_params(program: Program, params: dict[str, Tensor] | None, heads: int, d: int) -> None:
    shapes = program.parameter_shapes(heads, d)
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise InputError(f"params= must be a dict of tensors, got {type(params).__name__}")
    for key, value in params.items():
        if not isinstance(value, Tensor):
            raise InputError(f"params['{key}'] must be a torch.Tensor, got {type(value).__name__} "
                             f"{_short(value)}")
    missing = [k for k in shapes if k not in params]
    if missing:
        raise InputError(f"program '{program}' has learnable parts; params= lacks "
                         f"{', '.join(missing)}. Make them with attnlab.init_params(program, "
                         f"heads={heads}, head_dim={d}) or use attnlab.nn.Attention")
    for key, shape in shapes.items():
        if tuple(params[key].shape) != shape:
            raise InputError(f"params['{key}'] must have shape {shape}, got "
                             f"{tuple(params[key].shape)}")
