"""`EncoderClassifier`: a BERT-style encoder that labels a whole sequence or every token.

Tokens → embeddings (+ positions) → pre-norm blocks → LayerNorm → pooling → linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.models.base import Model
from attnlab.nn.blocks import Block, Positions, attention_layers, with_padding

POOLING = ("mean", "cls", "first")
PER = ("sequence", "token")


@dataclass
class EncoderClassifierConfig:
    vocab_size: int
    num_classes: int
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    programs: Any = "scaled_dot ; softmax"  # one program, one per layer, or head groups
    positions: str = "learned"
    max_len: int = 512
    pooling: str = "mean"  # mean, cls or first
    per: str = "sequence"  # a label per sequence: logits (B, C); per token: logits (B, L, C)
    pad_id: int | None = None
    dropout: float = 0.0
    kv_heads: int | None = None
    mlp_ratio: int = 4


class EncoderClassifier(Model):
    """Sequence classification (logits (B, C)) or token classification (logits (B, L, C)).

    pooling: 'mean' over real tokens, 'cls' (a learned [CLS] vector prepended to the sequence),
    or 'first' (the output at the first token, when the data brings its own [CLS]).
    With `pad_id`, every program gets `& padding` and tokens equal to pad_id are never attended to.
    """

    kind, Config = "encoder_classifier", EncoderClassifierConfig

    def __init__(self, config: EncoderClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.pooling not in POOLING:
            raise ConfigError(f"pooling='{c.pooling}' is not one of {', '.join(POOLING)}")
        if c.per not in PER:
            raise ConfigError(f"per={c.per!r} is not one of {', '.join(PER)}")
        self.pooling, self.per, self.pad_id = c.pooling, c.per, c.pad_id
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        # [CLS] takes position 0, so the table needs one more row.
        self.positions = Positions(c.positions, c.d_model, c.max_len + (c.pooling == "cls"))
        self.drop = nn.Dropout(c.dropout)
        attn = attention_layers(c.d_model, c.programs, layers=c.layers, heads=c.heads,
                                kv_heads=c.kv_heads, rotary=self.positions.rotary,
                                adapt=with_padding if c.pad_id is not None else lambda p: p)
        self.blocks = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout) for a in attn)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)
        self.init_weights()

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, L) → logits (B, C) for per="sequence", (B, L, C) for per="token"."""
        pad = tokens == self.pad_id if self.pad_id is not None else None
        x = self.embed(tokens)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if pad is not None:
                pad = torch.cat([pad.new_zeros(pad.shape[0], 1), pad], dim=1)
        x = self.drop(self.positions(x))
        for block in self.blocks:
            x = block(x, key_padding_mask=pad)
        x = self.norm(x)
        if self.per == "token":
            return self.head(x[:, 1:] if self.cls is not None else x)
        if self.pooling in ("cls", "first"):
            return self.head(x[:, 0])
        if pad is None:
            return self.head(x.mean(dim=1))
        real = (~pad).unsqueeze(-1).to(x.dtype)  # padded positions still have outputs: skip them
        return self.head((x * real).sum(1) / real.sum(1).clamp(min=1))
