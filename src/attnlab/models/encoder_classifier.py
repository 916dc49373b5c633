"""`EncoderClassifier`: a BERT-style encoder that labels a whole sequence or every token.

Tokens → embeddings (+ positions) → pre-norm blocks → LayerNorm → pooling → linear head.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.models.base import Model
from attnlab.nn.blocks import Block, Positions, attention_layers, programs_config, with_padding

POOLING = ("mean", "cls", "first")
TASKS = ("sequence", "token")


class EncoderClassifier(Model):
    """Sequence classification (logits (B, C)) or token classification (logits (B, L, C)).

    pooling: 'mean' over real tokens, 'cls' (a learned [CLS] vector prepended to the sequence),
    or 'first' (the output at the first token, when the data brings its own [CLS]).
    With `pad_id`, every program gets `& padding` and tokens equal to pad_id are never attended to.
    """

    def __init__(self, vocab_size: int, num_classes: int, *, d_model: int = 128, layers: int = 2,
                 heads: int = 4, programs: Any = "scaled_dot ; softmax",
                 positions: str = "learned", max_len: int = 512, pooling: str = "mean",
                 task: str = "sequence", pad_id: int | None = None, dropout: float = 0.0,
                 kv_heads: int | None = None, mlp_ratio: int = 4) -> None:
        super().__init__()
        if pooling not in POOLING:
            raise ConfigError(f"pooling='{pooling}' is not one of {', '.join(POOLING)}")
        if task not in TASKS:
            raise ConfigError(f"task='{task}' is not one of {', '.join(TASKS)}")
        self.config = dict(vocab_size=vocab_size, num_classes=num_classes, d_model=d_model,
                           layers=layers, heads=heads, programs=programs_config(programs),
                           positions=positions, max_len=max_len, pooling=pooling, task=task,
                           pad_id=pad_id, dropout=dropout, kv_heads=kv_heads, mlp_ratio=mlp_ratio)
        self.pooling, self.task, self.pad_id = pooling, task, pad_id
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        # [CLS] takes position 0, so the table needs one more row.
        self.positions = Positions(positions, d_model, max_len + (pooling == "cls"))
        self.drop = nn.Dropout(dropout)
        attn = attention_layers(d_model, programs, layers=layers, heads=heads, kv_heads=kv_heads,
                                rotary=self.positions.rotary,
                                adapt=with_padding if pad_id is not None else lambda p: p)
        self.blocks = nn.ModuleList(Block(d_model, a, mlp_ratio, dropout) for a in attn)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, num_classes)
        self.init_weights()

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, L) → logits (B, C) for task='sequence', (B, L, C) for task='token'."""
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
        if self.task == "token":
            return self.head(x[:, 1:] if self.cls is not None else x)
        if self.pooling in ("cls", "first"):
            return self.head(x[:, 0])
        if pad is None:
            return self.head(x.mean(dim=1))
        real = (~pad).unsqueeze(-1).to(x.dtype)  # padded positions still have outputs: skip them
        return self.head((x * real).sum(1) / real.sum(1).clamp(min=1))
