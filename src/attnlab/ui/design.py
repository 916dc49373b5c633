"""The Design screen's API: parse a program as it is typed (the CLI's caret errors), its tree, its
mask at a length with density and block summary, the planner's choice, parameter controls that
rewrite the program, the zoo, and a micro-benchmark against SDPA run in worker processes."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

import attnlab
from attnlab.bench.impls import planned_backend, why_not
from attnlab.bench.runner import Settings, run_worker
from attnlab.errors import ProgramError
from attnlab.inspect.explain import explain_program, part_doc
from attnlab.inspect.showcase import mask_inputs
from attnlab.lang import And, GlobalTokens, Mask, Not, Or, Program, Window, parse
from attnlab.lang.text import parse_part

router = APIRouter(prefix="/api/design")

MAX_TEXT = 2000
MAX_SEQ = 4096
GRID = 256  # the drawn mask is at most GRID × GRID cells; a cell holds the fraction visible
SDPA_IMPLS = ("sdpa_causal", "sdpa_bool", "sdpa_float")
BENCH_LIMIT_S = 60.0
MAX_JOBS = 32


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProgramText(_Body):
    # Text only: the text language has no code (predicate(fn) exists only in Python).
    text: str = Field(min_length=1, max_length=MAX_TEXT)


class Shape(ProgramText):
    seq: int = Field(64, ge=1, le=MAX_SEQ)
    heads: int | None = Field(None, ge=1, le=128)
    head_dim: int | None = Field(None, ge=1, le=512)
    block: int = Field(128, ge=1, le=MAX_SEQ)
    training: bool = False


class Rewrite(ProgramText):
    window: int | None = Field(None, ge=1, le=2**20)
    global_tokens: int | None = Field(None, ge=1, le=2**20)
    heads: int | None = Field(None, ge=1, le=128)
    normalizer: str | None = Field(None, min_length=1, max_length=100)


class BenchShape(ProgramText):
    seq: int = Field(256, ge=1, le=MAX_SEQ)
    heads: int = Field(8, ge=1, le=64)
    head_dim: int = Field(64, ge=1, le=256)
    training: bool = False


def read_program(text: str) -> Program:
    """The program, or ProgramError (the CLI's message, caret lines and hint)."""
    program = parse(text)
    for p in program.mechanisms() if program.components else (program,):
        if p.mask is not None and any(leaf.python for leaf in p.mask.leaves()):
            raise ProgramError(f"{p.mask} runs Python code; the studio takes text programs only")
    return program


# -- the program's tree and controls ---------------------------------------------------------


def _node(label: str, part: object = None, children: list[dict] | None = None) -> dict[str, Any]:
    return {"label": label, "doc": part_doc(part) if part is not None else "",
            "children": children or []}


def mask_tree(mask: Mask) -> dict[str, Any]:
    if isinstance(mask, And | Or):
        return _node("and (&)" if isinstance(mask, And) else "or (|)",
                     children=[mask_tree(c) for c in mask.children])
    if isinstance(mask, Not):
        return _node("not (~)", children=[mask_tree(mask.child)])
    return _node(str(mask), mask)


def _plain_tree(program: Program, title: str) -> dict[str, Any]:
    kids = []
    if program.approximation is not None:
        kids.append(_node(f"approximation {program.approximation}", program.approximation))
    else:
        kids.append(_node(f"score {program.score}", program.score))
    kids += [_node(f"mod {m}", m) for m in program.mods]
    kids.append(_node("mask none") if program.mask is None
                else _node("mask", children=[mask_tree(program.mask)]))
    if program.approximation is None:
        kids.append(_node(f"normalizer {program.normalizer}", program.normalizer))
    return _node(title, children=kids)


def program_tree(program: Program) -> dict[str, Any]:
    """program → score / mods / mask parts / normalizer / layout, as nested {label, doc, children}."""
    if program.components:
        comb = _node(f"combinator {program.combinator}", program.combinator,
                     [_plain_tree(c, f"component {i}") for i, c in enumerate(program.components)])
        tree = _node("program", children=[comb])
    else:
        tree = _plain_tree(program, "program")
    layout = " + ".join(map(str, program.layout.options())) or "from the tensors"
    tree["children"].append(_node(f"layout {layout}"))
    if program.output_gate is not None:
        tree["children"].append(_node(f"output gate {program.output_gate}", program.output_gate))
    if program.dropout:
        tree["children"].append(_node(f"dropout {program.dropout:g}"))
    return tree


def _leaves(program: Program, cls: type) -> list[Any]:
    return [leaf for leaf in program.mask.leaves() if isinstance(leaf, cls)] if program.mask else []


def controls(program: Program) -> dict[str, Any]:
    """The common parameters as the program states them (None: not in it)."""
    if program.components:
        return {"editable": False}
    window, globals_ = _leaves(program, Window), _leaves(program, GlobalTokens)
    return {"editable": True, "window": window[0].w if window else None,
            "global_tokens": globals_[0].k if globals_ else None, "heads": program.layout.heads,
            "normalizer": None if program.approximation else str(program.normalizer)}


def _swap(mask: Mask, cls: type, change: dict[str, int]) -> Mask:
    """The mask with every `cls` leaf given `change`."""
    if isinstance(mask, And | Or):
        return type(mask)(tuple(_swap(c, cls, change) for c in mask.children))
    if isinstance(mask, Not):
        return Not(_swap(mask.child, cls, change))
    return dataclasses.replace(mask, **change) if isinstance(mask, cls) else mask


def rewrite(program: Program, body: Rewrite) -> Program:
    """The program with the controls' values: present leaves change; an absent window is and-ed
    into the mask, absent global tokens or-ed (they widen what a window hides)."""
    if program.components:
        raise ProgramError("the controls edit a plain program; edit a mix or diff in its text")
    mask = program.mask
    if body.window is not None:
        if _leaves(program, Window):
            mask = _swap(mask, Window, {"w": body.window})
        else:
            mask = Window(body.window) if mask is None else mask & Window(body.window)
    if body.global_tokens is not None:
        if mask is not None and any(isinstance(x, GlobalTokens) for x in mask.leaves()):
            mask = _swap(mask, GlobalTokens, {"k": body.global_tokens})
        elif mask is not None:
            mask = mask | GlobalTokens(body.global_tokens)
    changes: dict[str, Any] = {"mask": mask}
    if body.heads is not None:
        changes["layout"] = dataclasses.replace(program.layout, heads=body.heads)
    if body.normalizer is not None:
        if program.approximation is not None:
            raise ProgramError(f"{program.approximation} replaces the normalizer; drop it first")
        changes["normalizer"] = parse_part(body.normalizer, "normalizer")
    return program.replace(**changes)


# -- the mask as a picture -------------------------------------------------------------------


def mask_picture(program: Program, heads: int, seq: int) -> dict[str, Any] | None:
    """Row-major uint8 cells (base64), each the fraction of visible pairs in its
    ceil(seq/GRID)² patch; None when the mask reads call-time inputs."""
    if program.requires() & {"segments", "key_padding", "graph"}:
        return None
    visible = program.visible(mask_inputs(heads, seq))[0, 0]
    step = -(-seq // GRID)
    side = -(-seq // step)
    pad = side * step - seq
    cells = torch.nn.functional.pad(visible.float(), (0, pad, 0, pad))
    cells = cells.view(side, step, side, step).mean((1, 3))
    data = (cells * 255).round().to(torch.uint8).numpy().tobytes()
    return {"side": side, "step": step, "cells": base64.b64encode(data).decode("ascii")}


@router.post("/program")
def design_program(body: Shape) -> dict[str, Any]:
    """Everything the Design screen draws for one program at one shape."""
    program = read_program(body.text)
    ex = explain_program(program, heads=body.heads, head_dim=body.head_dim, seq=body.seq,
                         block=min(body.block, body.seq), training=body.training)
    q = torch.empty(1, ex.heads, body.seq, ex.head_dim)
    k = torch.empty(1, ex.kv_heads, body.seq, ex.head_dim)
    blocks = None if ex.blocks is None else {
        "block": ex.blocks.block, "full": ex.blocks.full, "partial": ex.blocks.partial,
        "empty": ex.blocks.empty, "total": ex.blocks.total, "skippable": ex.blocks.skippable}
    return {"canonical": str(program), "tree": program_tree(program), "controls": controls(program),
            "layout": {"heads": ex.heads, "kv_heads": ex.kv_heads, "head_dim": ex.head_dim,
                       "sharing": ex.head_sharing},
            "seq": body.seq, "density": ex.density, "blocks": blocks,
            "mask": mask_picture(program, ex.heads, body.seq),
            "parameters": ex.parameter_count, "needs": sorted(ex.needs),
            "plan": {"backend": planned_backend(program, q, k, needs_grad=body.training),
                     "mode": "training" if body.training else "inference", "text": ex.plan}}


@router.post("/rewrite")
def design_rewrite(body: Rewrite) -> dict[str, Any]:
    """The program with the controls applied, as canonical text."""
    program = rewrite(read_program(body.text), body)
    return {"text": str(program), "controls": controls(program)}


@router.get("/zoo")
def design_zoo() -> list[dict[str, str]]:
    return [{"name": name, "text": str(attnlab.zoo[name]),
             "description": attnlab.zoo.description(name)} for name in attnlab.zoo]


# -- the micro-benchmark: worker processes, polled ----------------------------------------------

_jobs: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()
# One benchmark at a time: two would time each other. The work itself runs in subprocesses.
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-bench")


def _bench(job: str, program: Program, body: BenchShape) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    settings = dataclasses.replace(Settings(device=device, threads=2), warmup=1, repeats=3,
                                   heads=body.heads, head_dim=body.head_dim, timeout_s=BENCH_LIMIT_S,
                                   dtype="bfloat16" if device == "cuda" else "float32")
    mode = "fwdbwd" if body.training else "fwd"
    sdpa = next((i for i in SDPA_IMPLS if why_not(i, program, mode, device, body.seq, body.heads,
                                                  body.head_dim) is None), None)
    rows = {}
    for impl in ("attnlab", sdpa):
        if impl is None:
            rows["sdpa"] = {"error": "SDPA cannot express this program (it takes softmax over "
                                     "plain scaled_dot scores only)"}
            continue
        spec = {"impl": impl, "program": str(program), "n": body.seq, "mode": mode,
                **{k: v for k, v in dataclasses.asdict(settings).items() if k != "timeout_s"}}
        out = run_worker(spec, settings)
        rows["attnlab" if impl == "attnlab" else "sdpa"] = {"impl": impl, **{
            k: v for k, v in out.items() if k in ("median_ms", "peak_mb", "backend", "error")}}
    with _lock:
        _jobs[job].update(state="done", results=rows, device=device, finished=time.time())


@router.post("/bench", status_code=202)
def bench_start(body: BenchShape) -> dict[str, str]:
    """Start a micro-benchmark; poll GET /api/design/bench/{job}."""
    program = read_program(body.text)
    if program.requires():
        raise ProgramError(f"'{program}' reads call-time inputs ({', '.join(sorted(program.requires()))}); "
                           "the benchmark runs programs that need none")
    job = uuid.uuid4().hex[:12]
    with _lock:
        if len(_jobs) >= MAX_JOBS:  # forget the oldest finished ones
            for old in sorted((j for j, v in _jobs.items() if v["state"] == "done"),
                              key=lambda j: _jobs[j]["finished"])[:MAX_JOBS // 2]:
                del _jobs[old]
        if len(_jobs) >= MAX_JOBS:
            raise HTTPException(429, "too many benchmarks queued; wait for one to finish")
        _jobs[job] = {"state": "running", "program": str(program), "seq": body.seq}
    _pool.submit(_bench, job, program, body)
    return {"job": job}


@router.get("/bench/{job}")
def bench_poll(job: str) -> dict[str, Any]:
    with _lock:
        if job not in _jobs:
            raise HTTPException(404, f"no benchmark job '{job[:40]}'")
        return {"job": job, **_jobs[job]}
