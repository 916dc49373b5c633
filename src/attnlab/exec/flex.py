"""The flex backend: softmax programs with score mods and masks, compiled to FlexAttention.

Kernels and block masks are cached per program and shape, so a new length compiles its own
kernel and leaves the others alone."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from attnlab.exec import hidden
from attnlab.exec.backend import Backend, Call
from attnlab.exec.scores import compose_mods, dot_form
from attnlab.exec.sdpa import SAFE
from attnlab.lang import scores as S
from attnlab.lang.masks import FULL, PARTIAL, Mask, MaskInputs
from attnlab.lang.normalizers import Softmax
from attnlab.lang.program import Program

# Inductor's CPU template takes exactly these (float64 fails at compile time), as does Triton's.
FLEX_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FLEX_DEVICES = ("cpu", "cuda")
PROGRESS_AFTER_S = 1.0  # a compile that runs longer than this says so on stderr
MAX_BLOCK_MASKS = 64  # cached BlockMasks; the least recently used is dropped first
_BLOCK = 128  # FlexAttention's default sparse block size


class KernelKey(NamedTuple):
    """What one compiled kernel is specialised to (dynamic=False: every shape is a constant)."""

    program: Program  # score, mods and mask only: all of a program that reaches the kernel
    shapes: tuple[int, ...]  # B, H, H_kv, N, M, D, Dv
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, program: Program, shapes: tuple[int, ...], dtype: torch.dtype,
           device: torch.device) -> KernelKey:
        kernel_program = Program(score=program.score, mods=program.mods, mask=program.mask)
        return cls(kernel_program, tuple(shapes), dtype, torch.device(device))


class _Kernel(NamedTuple):
    compiled: Callable[..., Tensor]
    program: Program  # the first program seen for the key; its parts are reused every call


class FlexBackend(Backend):
    """Runs softmax programs with `torch.compile(flex_attention)`, one kernel per KernelKey."""

    name = "flex"
    # Per process, like the compiled code they stand for.
    _kernels: ClassVar[dict[KernelKey, _Kernel]] = {}
    _warm: ClassVar[set[KernelKey]] = set()
    _block_masks: ClassVar[OrderedDict[tuple, BlockMask]] = OrderedDict()

    # -- the planner's questions -------------------------------------------------------------
    def refuse(self, call: Call) -> str | None:
        p = call.program
        if p.approximation is not None:
            return f"FlexAttention computes exact attention; '{p.approximation}' is an approximation"
        if not isinstance(p.normalizer, Softmax):
            return f"FlexAttention computes softmax only, not '{p.normalizer}'"
        if isinstance(p.score, S.Additive):
            return ("the 'additive' score is a small network over each (query, key) pair, "
                    "which a FlexAttention score_mod cannot express")
        if call.return_weights:
            return "FlexAttention never materialises the weights, so it cannot return them"
        if call.uses_randomness:
            return "FlexAttention cannot draw random noise on the weights (dropout or gumbel in training)"
        if call.device.type not in FLEX_DEVICES:
            return f"the flex backend runs on CPU and CUDA, not {call.device.type}"
        if call.needs_grad and call.device.type == "cpu":
            return f"FlexAttention does not support backward on CPU (torch {_torch_version()})"
        if call.dtype not in FLEX_DTYPES:
            takes = ", ".join(_dtype_name(d) for d in FLEX_DTYPES)
            return f"FlexAttention takes {takes}, not {_dtype_name(call.dtype)}"
        if call.device.type == "cpu" and not _cpu_has_avx2():
            return "FlexAttention on CPU needs AVX2, which this CPU lacks"
        if not torch._dynamo.is_dynamo_supported():
            return f"torch.compile does not support Python {sys.version.split()[0]}"
        return None

    def is_warm(self, call: Call) -> bool:
        """True when this call's kernel has already been compiled in this process."""
        shapes = (call.batch, call.heads, call.kv_heads, call.n, call.m, call.head_dim,
                  call.value_dim)
        return KernelKey.of(call.program, shapes, call.dtype, call.device) in self._warm

    @classmethod
    def compiled_keys(cls) -> tuple[KernelKey, ...]:
        """Every kernel compiled in this process; str(key.program) reads as a program."""
        return tuple(cls._warm)

    # -- the run -----------------------------------------------------------------------------
    def run(self, q: Tensor, k: Tensor, v: Tensor, program: Program, inp: MaskInputs, *,
            bias: Tensor | None, params: dict[str, Tensor], training: bool,
            generator: torch.Generator | None) -> Tensor:
        if not hidden.all_finite(k, v):
            # the kernel multiplies a hidden NaN by weight 0; tiled keeps it out
            return SAFE.run(q, k, v, program, inp, bias=bias, params=params, training=training,
                            generator=generator)
        shapes = (q.shape[0], q.shape[1], k.shape[1], q.shape[2], k.shape[2], q.shape[3], v.shape[3])
        key = KernelKey.of(program, shapes, q.dtype, q.device)
        kernel = self._kernels.get(key)
        if kernel is None:
            kernel = self._kernels[key] = _Kernel(_compile_flex(), key.program)
        # Closures are made from the key's first program, not the equal one just passed in:
        # dynamo guards on the parts they capture, and the same objects pass those guards.
        program = kernel.program
        params = params or {}
        score_params = {n: p.to(q.dtype) for n, p in params.items() if n.startswith("score.")}
        q, k, scale = dot_form(program.score, q, k, score_params)
        # No fix-up for queries that see no key: FlexAttention already returns 0 for them.
        options = {"score_mod": compose_mods(program.mods, inp, params, bias), "scale": scale,
                   "block_mask": self._block_mask(program, inp), "enable_gqa": k.shape[1] != q.shape[1]}
        if key in self._warm:
            return kernel.compiled(q, k, v, **options)
        with _progress_note(program, inp):
            out = kernel.compiled(q, k, v, **options)
        self._warm.add(key)
        return out

    @classmethod
    def _block_mask(cls, program: Program, inp: MaskInputs) -> BlockMask | None:
        """The program's BlockMask: cached, unless the mask reads call-time data."""
        mask = program.mask
        if mask is None:
            return None
        if mask.requires():  # segment ids, key lengths or a graph: new every call
            return _block_mask(mask, inp)
        # Structured masks ignore b and h, so one BlockMask serves every batch and head count;
        # Python ones (predicates, rules) may read them.
        arbitrary = any(leaf.python for leaf in mask.leaves())  # predicates and rules
        key = (mask, *((inp.batch, inp.heads) if arbitrary else (None, None)), inp.n, inp.m,
               inp.device)
        found = cls._block_masks.get(key)
        if found is None:
            found = cls._block_masks[key] = _block_mask(mask, inp)
            if len(cls._block_masks) > MAX_BLOCK_MASKS:
                cls._block_masks.popitem(last=False)
        cls._block_masks.move_to_end(key)
        return found


def _block_mask(mask: Mask, inp: MaskInputs) -> BlockMask:
    """A BlockMask from the mask's exact block summary.

    `create_block_mask` would evaluate the mask on all N·M pairs (0.5–1.7 s at N=M=4096 on
    two cores); structured masks answer from index ranges instead (under 15 ms). The summary
    keeps batch and head dims at 1 where the mask does not vary with them, and FlexAttention
    broadcasts those, as with create_block_mask(B=None, H=None).
    """
    state = mask.block_summary(inp, _BLOCK).state.to(inp.device)
    # Tiles that hang past N or M stay partial, as create_block_mask (which pads with False)
    # leaves them: the mask is then evaluated there and never trusted beyond the edge.
    ragged = torch.zeros(state.shape[-2:], dtype=torch.bool, device=state.device)
    ragged[-1, :] |= inp.n % _BLOCK != 0
    ragged[:, -1] |= inp.m % _BLOCK != 0
    state = torch.where(ragged & (state == FULL), PARTIAL, state)
    partial, full = _ordered(state == PARTIAL), _ordered(state == FULL)
    return BlockMask.from_kv_blocks(*partial, *full, BLOCK_SIZE=_BLOCK,
                                    mask_mod=mask.mask_mod(inp), seq_lengths=(inp.n, inp.m))


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """(number of chosen key tiles per query tile, their indices first) as int32."""
    tiles = tiles.to(torch.int32)
    indices = torch.argsort(tiles, dim=-1, descending=True, stable=True)
    return tiles.sum(-1).to(torch.int32).contiguous(), indices.to(torch.int32).contiguous()


def _compile_flex() -> Callable[..., Tensor]:
    try:  # its own recompile region: other shapes' kernels neither evict it nor use up its limit
        return torch.compile(flex_attention, dynamic=False, fullgraph=True, isolate_recompiles=True)
    except TypeError:  # torch before isolate_recompiles: one region shared by every kernel
        return torch.compile(flex_attention, dynamic=False, fullgraph=True)


@contextmanager
def _progress_note(program: Program, inp: MaskInputs) -> Iterator[None]:
    """One line on stderr if the block takes longer than PROGRESS_AFTER_S (a cold compile)."""
    line = (f"attnlab: compiling FlexAttention for '{program}' at N={inp.n}, M={inp.m} "
            "(once per shape; cached after)")
    timer = threading.Timer(PROGRESS_AFTER_S, lambda: print(line, file=sys.stderr, flush=True))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _cpu_has_avx2() -> bool:
    check = getattr(torch.cpu, "_is_avx2_supported", None)  # private; assume yes if it moves
    return True if check is None else bool(check())


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _torch_version() -> str:
    return torch.__version__.split("+")[0]
