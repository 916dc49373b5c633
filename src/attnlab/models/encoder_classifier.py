"""`EncoderClassifier`: a BERT-style encoder that labels a whole sequence or every token.

Tokens → embeddings (or feature frames → a linear projection) (+ positions) → pre-norm blocks →
LayerNorm → pooling → linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.models.base import Model, pool
from attnlab.models.knowledge import build_prior, check_prior_read, prior_inputs
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
    prior: dict | None = None  # knowledge made attention inputs (attnlab.models.knowledge)
    kv_heads: int | None = None
    mlp_ratio: int = 4
    features: int | None = None  # inputs are frames (B, L, features) of floats, not token ids


class EncoderClassifier(Model):
    """Sequence classification (logits (B, C)) or token classification (logits (B, L, C)).

    pooling: 'mean' over real tokens, 'cls' (a learned [CLS] vector prepended to the sequence),
    or 'first' (the output at the first token, when the data brings its own [CLS]).
    With `pad_id`, every program gets `& padding` and tokens equal to pad_id are never attended to.
    With `features`, the inputs are frames of that many floats (audio features, say), projected by
    a linear layer in place of the embedding; a frame that is all NaN is padding (no real frame is:
    so a batch says its own lengths, as pad_id tokens do), and every program gets `& padding`.
    """

    kind, Config = "encoder_classifier", EncoderClassifierConfig

    def __init__(self, config: EncoderClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.pooling not in POOLING:
            raise ConfigError(f"pooling='{c.pooling}' is not one of {', '.join(POOLING)}")
        if c.per not in PER:
            raise ConfigError(f"per={c.per!r} is not one of {', '.join(PER)}")
        if c.features is not None and (c.features < 1 or c.pad_id is not None):
            raise ConfigError(f"features={c.features} takes frames of at least one float, padded "
                              "with NaN frames (no pad_id)")
        self.pooling, self.per, self.pad_id, self.features = c.pooling, c.per, c.pad_id, c.features
        self.embed = (nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id) if c.features is None
                      else nn.Linear(c.features, c.d_model))
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        # [CLS] takes position 0, so the table needs one more row.
        self.positions = Positions(c.positions, c.d_model, c.max_len + (c.pooling == "cls"))
        self.drop = nn.Dropout(c.dropout)
        attn = attention_layers(c.d_model, c.programs, layers=c.layers, heads=c.heads,
                                kv_heads=c.kv_heads, rotary=self.positions.rotary,
                                adapt=with_padding if self.padded else lambda p: p)
        self.blocks = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout) for a in attn)
        self.prior = build_prior(c.prior)
        check_prior_read(self.prior, attn)
        if self.prior is not None and self.cls is not None:
            raise ConfigError(f"prior {self.prior.kind}: its inputs cover the tokens, and pooling: "
                              "cls adds a position before them; use pooling: mean")
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)
        self.init_weights()

    @property
    def padded(self) -> bool:
        """Whether inputs may hold padding (pad_id tokens, or NaN frames)."""
        return self.pad_id is not None or self.features is not None

    def padding(self, inputs: Tensor) -> Tensor | None:
        """(B, L) True at the padding of token ids (B, L) or frames (B, L, features); None when the
        model reads no padding."""
        if self.features is not None:
            return inputs.isnan().all(-1)
        return inputs == self.pad_id if self.pad_id is not None else None

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, L), or frames (B, L, features) → logits (B, C) for per="sequence", (B, L, C)
        for per="token"."""
        pad = self.padding(tokens)
        if self.features is not None:  # the projection must not see padding's NaN
            tokens = tokens.masked_fill(pad.unsqueeze(-1), 0.0)
        x = self.embed(tokens)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            if pad is not None:
                pad = torch.cat([pad.new_zeros(pad.shape[0], 1), pad], dim=1)
        attend, soft = prior_inputs(self.prior, tokens, pad)
        x = self.drop(self.positions(x, positions=soft))
        for block in self.blocks:
            x = block(x, key_padding_mask=pad, **attend)
        x = self.norm(x)
        if self.per == "token":
            return self.head(x[:, 1:] if self.cls is not None else x)
        return self.head(pool(x, None if pad is None else ~pad, self.pooling))
