"""`Model`: what every attnlab model shares — one config dataclass that rebuilds it, a parameter
count, and saving as (model kind, config, tensors), which loads without running any code."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from attnlab.errors import ConfigError, RunFolderError, did_you_mean
from attnlab.lang.program import Program
from attnlab.nn.gates import auxiliary_loss
from attnlab.runfiles import load_tensors, read_json, reading

MODEL_FILE, WEIGHTS_FILE = "model.json", "model.pt"


class Model(nn.Module):
    """An nn.Module built from one config dataclass (`Config`), nanoGPT-style: `type(model)(model.config)`
    rebuilds it, so a saved model is its kind, its config and its tensors."""

    kind: ClassVar[str]  # the name experiment files use: model.kind
    Config: ClassVar[type]
    config: Any

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Count of parameters; tied weights are counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def init_weights(self) -> None:
        """GPT-2 style start: small normal weights, zero biases (programs' own parts untouched)."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding | nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight.data[m.padding_idx].zero_()

    def config_dict(self) -> dict[str, Any]:
        """The config as plain data (programs as their canonical strings), fit for JSON."""
        return {f.name: _plain(getattr(self.config, f.name)) for f in dataclasses.fields(self.config)}

    def programs(self) -> list[str]:
        """The programs that run, as canonical strings, in module order without repeats: what a
        run logs (the models add `padding` or check `causal`, so this can differ from the file)."""
        from attnlab.nn import Attention, MixedAttention

        seen: dict[str, None] = {}
        for m in self.modules():
            if isinstance(m, Attention):
                seen[str(m.program)] = None
            elif isinstance(m, MixedAttention):
                groups = ", ".join(f"{p} ×{h}" for p, h in zip(m.programs, m.group_heads, strict=True))
                seen[f"[{groups}]"] = None
        return list(seen)

    def saved_state(self) -> dict[str, torch.Tensor]:
        """The tensors a run saves (model.pt, checkpoints): all of them, unless a model rebuilds
        some from elsewhere (a pretrained model's frozen weights come from their package)."""
        return self.state_dict()

    def load_saved(self, state: dict[str, torch.Tensor]) -> None:
        """Put back what `saved_state` gave."""
        self.load_state_dict(state)

    def penalty(self) -> torch.Tensor | float:
        """What the model adds to its training loss: its routed layers' load-balancing losses
        (0 for most)."""
        balance = auxiliary_loss(self)
        return 0.0 if balance is None else balance

    def training_state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the tensors, so a resumed run goes on exactly (an
        adapter's running statistics); empty for most."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Put back what `training_state` gave."""

    def after_step(self, step: int) -> None:
        """Called after each optimiser step, before gradients are zeroed (AdaLoRA reallocates
        its ranks there)."""

    @classmethod
    def tokenizer(cls, settings: Any, max_len: int) -> Any:
        """The tokenizer a model brings with it (a `tokenizers.Tokenizer`), or None when the task
        learns one from its data. `settings` is the experiment's model section."""
        return None

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> Model:
        """The model from whichever of `settings` its config has (others are ignored)."""
        names = {f.name for f in dataclasses.fields(cls.Config)}
        return cls(cls.Config(**{k: v for k, v in settings.items() if k in names}))


def pool(x: torch.Tensor, real: torch.Tensor | None, how: str) -> torch.Tensor:
    """(B, D) from a last layer x (B, L, D): its first row ('cls', 'first'), the last real one
    ('last': the inputs are padded after them), or the mean over the real rows ('mean'); `real`
    (B, L) is True at real positions (None: all are)."""
    if how in ("cls", "first"):
        return x[:, 0]
    if real is None:
        return x[:, -1] if how == "last" else x.mean(1)
    if how == "last":
        return x[torch.arange(len(x), device=x.device), (real.sum(1) - 1).clamp(min=0)]
    weights = real.unsqueeze(-1).to(x.dtype)  # padded positions still have outputs: skip them
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)


def _plain(value: Any) -> Any:
    if isinstance(value, Program):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def save_model(model: Model, folder: str | Path, state: dict[str, torch.Tensor] | None = None) -> None:
    """model.json (kind and config) and model.pt (tensors only) in `folder`."""
    folder = Path(folder)
    (folder / MODEL_FILE).write_text(json.dumps({"model": model.kind, "config": model.config_dict()},
                                                indent=2))
    torch.save(state if state is not None else model.saved_state(), folder / WEIGHTS_FILE)


def load_model(folder: str | Path) -> Model:
    """The model saved in `folder`, in eval mode. Only JSON and tensors are read: no pickled code."""
    from attnlab.models import MODELS, PLUGINS, model_class

    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.exists():
        raise ConfigError(f"{folder} holds no saved model (no {MODEL_FILE})")
    saved = read_json(path)
    kind = saved.get("model") if isinstance(saved, dict) else None
    if not isinstance(kind, str) or kind not in {**MODELS, **PLUGINS}:
        raise RunFolderError(f"{path}: unknown model kind {kind!r}{did_you_mean(str(kind), MODELS)}")
    cls = model_class(kind)
    with reading(path):  # a config that does not build its model is a damaged file
        model = cls(cls.Config(**saved["config"]))
    state = load_tensors(folder / WEIGHTS_FILE)
    with reading(folder / WEIGHTS_FILE):  # tensors of another shape or name: damaged too
        model.load_saved(state)
    return model.eval()
