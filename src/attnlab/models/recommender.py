"""`SequentialRecommender`: SASRec (Kang & McAuley, 2018) — self-attentive next-item prediction.

A user's item history (0 = padding) → item embeddings + learned positions → causal blocks →
scores of every item as the next one, at every position (shared item embeddings score them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from attnlab.ids import PAD_ID
from attnlab.models.base import Model
from attnlab.models.knowledge import build_prior, check_prior_read, prior_inputs
from attnlab.nn.blocks import (
    Block,
    Positions,
    attention_layers,
    with_padding,
)


@dataclass
class SequentialRecommenderConfig:
    num_items: int
    d_model: int = 64
    layers: int = 2
    heads: int = 1
    programs: Any = "causal"  # one program, one per layer, or head groups
    max_len: int = 50
    dropout: float = 0.2
    positions: str = "learned"
    mlp_ratio: int = 1
    prior: dict | None = None  # knowledge made attention inputs (attnlab.models.knowledge)


class SequentialRecommender(Model):
    """Logits (B, L, num_items + 1) for histories (B, L) of item ids in 1..num_items, 0 = padding.

    Every program must be causal (position t predicts item t + 1) and gets `& padding`, so padded
    slots are never attended to; column 0 (padding) is never recommended: its logit is -inf.
    Histories are usually left-padded; a padded slot that sees no keys outputs zeros, not NaN.
    """

    kind, Config = "recommender", SequentialRecommenderConfig

    def __init__(self, config: SequentialRecommenderConfig) -> None:
        super().__init__()
        self.config = c = config
        self.items = nn.Embedding(c.num_items + 1, c.d_model, padding_idx=PAD_ID)
        self.positions = Positions(c.positions, c.d_model, c.max_len)
        self.drop = nn.Dropout(c.dropout)
        attn = attention_layers(
            c.d_model, c.programs, layers=c.layers, heads=c.heads, rotary=self.positions.rotary,
            adapt=with_padding, causal_for="SequentialRecommender", max_len=c.max_len)
        self.blocks = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout) for a in attn)
        self.prior = build_prior(c.prior)
        check_prior_read(self.prior, attn)
        self.norm = nn.LayerNorm(c.d_model)
        self.init_weights()

    def forward(self, items: Tensor) -> Tensor:
        pad = items == PAD_ID
        keep = (~pad).unsqueeze(-1)
        attend, soft = prior_inputs(self.prior, items, pad)
        # As in SASRec: embeddings scaled by √d, and padded slots zeroed after adding positions.
        x = self.positions(self.items(items) * math.sqrt(self.items.embedding_dim), positions=soft)
        x = self.drop(x) * keep
        for block in self.blocks:
            x = block(x, key_padding_mask=pad, **attend) * keep
        logits = self.norm(x) @ self.items.weight.T
        logits[..., PAD_ID] = float("-inf")
        return logits
