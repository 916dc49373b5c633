"""`PretrainedClassifier`: a pretrained transformers model whose attention runs attnlab programs,
with a new linear head on its pooled last layer; fine-tuned whole or through a peft adapter.

It is the model kind experiment files get with `model: {pretrained: all-minilm-l6-v2}`. A run
saves only what training changed (the whole model, or the adapter, the programs' parameters and
the head); the frozen weights come back from their package when the run is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError, RunFolderError
from attnlab.hf import attention_modules, pretrained_model, running, tokenizer_of, use
from attnlab.hf.adapters import NAME, Adapter, attach
from attnlab.models import MODELS
from attnlab.models.base import Model, pool

POOLING = ("mean", "first", "last")


@dataclass
class PretrainedClassifierConfig:
    pretrained: str  # a name in attnlab.hf.PRETRAINED
    num_classes: int
    programs: Any = "scaled_dot ; softmax"  # one program or one per layer, ANDed with the model's mask
    pooling: str = "mean"  # mean over real tokens, the first token ([CLS]) or the last real one
    pad_id: int = 0
    max_len: int = 512
    dropout: float = 0.0  # before the head
    adapter: dict[str, Any] | None = None  # peft: method, r, alpha, dropout, targets (None: fine-tune all)
    steps: int = 0  # optimiser steps of the run (AdaLoRA plans its rank budget over them)
    seed: int = 0  # the head's initial weights


class PretrainedClassifier(Model):
    """Sequence classification (logits (B, C)) on a pretrained model: token ids (B, L), padded
    with `pad_id` after the text, → the model's last hidden states → pooling → linear head."""

    kind, Config = "pretrained_classifier", PretrainedClassifierConfig

    def __init__(self, config: PretrainedClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.pooling not in POOLING:
            raise ConfigError(f"model.pooling '{c.pooling}' does not fit a pretrained model, which "
                              f"brings its own [CLS]; use one of {', '.join(POOLING)}")
        self.pooling, self.pad_id = c.pooling, c.pad_id
        self.backbone = pretrained_model(c.pretrained).base_model  # without a language-model head
        limit = getattr(self.backbone.config, "max_position_embeddings", None)
        if limit is not None and c.max_len > limit:
            raise ConfigError(f"task.params.max_len {c.max_len} is longer than {c.pretrained} reads "
                              f"({limit} positions)")
        layers = len(attention_modules(self.backbone))
        programs = c.programs
        if isinstance(programs, list | tuple):
            if len(programs) != layers or any(isinstance(p, list | tuple) for p in programs):
                raise ConfigError(f"attention: {c.pretrained} has {layers} attention layers: give one "
                                  f"program, or a list of {layers} (head groups are not supported)")
            programs = dict(enumerate(programs))
        use(self.backbone, programs)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(self.backbone.config.hidden_size, c.num_classes)
        gen = torch.Generator().manual_seed(c.seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=gen) * 0.02)
            self.head.bias.zero_()
        self.backbone.train()  # `pretrained` gives it in eval mode; training starts in train mode
        # without an adapter the whole model trains, and Adapter's defaults do nothing besides
        self._adapter = attach(self.backbone, c.adapter, c.steps) if c.adapter else Adapter(None)
        self._saved = {name for name, p in self.named_parameters() if p.requires_grad}
        if c.adapter:  # peft's own tensors that do not train (AdaLoRA's ranknum)
            self._saved |= {name for name in self.state_dict() if f".{NAME}" in name}

    def forward(self, ids: Tensor) -> Tensor:
        real = ids != self.pad_id
        # padding after every row's last token changes nothing (positions count from the start,
        # padding is masked and pooled out): the model runs without it, about twice as fast
        used = int(real.any(0).nonzero().max()) + 1 if real.any() else 1
        ids, real = ids[:, :used], real[:, :used]
        hidden = self.backbone(input_ids=ids, attention_mask=real.long()).last_hidden_state
        return self.head(self.drop(pool(hidden, real, self.pooling)))

    def programs(self) -> list[str]:
        return list(dict.fromkeys(map(str, running(self.backbone))))

    def after_step(self, step: int) -> None:
        self._adapter.after_step(step)

    def training_state(self) -> dict[str, Any]:
        return self._adapter.state()

    def load_training_state(self, state: dict[str, Any]) -> None:
        self._adapter.load_state(state)

    def penalty(self) -> Tensor | float:
        return self._adapter.penalty()

    def saved_state(self) -> dict[str, Tensor]:
        """What training changed: every tensor when the whole model trains, else the adapter,
        the programs' parameters and the head."""
        return {k: v for k, v in self.state_dict().items() if k in self._saved}

    def load_saved(self, state: dict[str, Tensor]) -> None:
        if set(state) != self._saved:
            missing, extra = sorted(self._saved - set(state)), sorted(set(state) - self._saved)
            raise RunFolderError(f"the saved tensors do not fit this {self.config.pretrained} model "
                                 f"(missing {missing[:3]}, unexpected {extra[:3]}): retrain the run")
        self.load_state_dict(state, strict=False)

    @classmethod
    def tokenizer(cls, settings: Any, max_len: int) -> Any:
        tokenizer = tokenizer_of(settings.pretrained)
        tokenizer.enable_truncation(max_len)  # keeps the special tokens, [SEP] included
        return tokenizer


MODELS[PretrainedClassifier.kind] = PretrainedClassifier

__all__ = ["PretrainedClassifier", "PretrainedClassifierConfig"]
