"""`ViT`: a Vision Transformer (Dosovitskiy et al., 2021) — image patches are the sequence.

Image → Conv2d patch stem (one token per patch) → [CLS] + positions → pre-norm blocks →
LayerNorm → pooling → linear head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError, InputError
from attnlab.models.base import Model
from attnlab.nn.blocks import Block, Positions, attention_layers


@dataclass
class ViTConfig:
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    num_classes: int = 10
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    programs: Any = "scaled_dot ; softmax"  # one program, one per layer, or head groups
    positions: str = "learned"
    pooling: str = "cls"  # cls or mean
    dropout: float = 0.0
    kv_heads: int | None = None
    mlp_ratio: int = 4


class ViT(Model):
    """Image classifier: logits (B, num_classes) for images (B, channels, H, W).

    pooling: 'cls' (a learned [CLS] token's output) or 'mean' (average over patches).
    Masks index the patch sequence row by row, so `window(w)` sees nearby patches of the same
    and neighbouring rows.
    """

    kind, Config = "vit", ViTConfig

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.image_size % c.patch_size:
            raise ConfigError(f"image_size={c.image_size} is not a multiple of "
                              f"patch_size={c.patch_size}")
        if c.pooling not in ("cls", "mean"):
            raise ConfigError(f"pooling='{c.pooling}' is not one of cls, mean")
        self.image_size, self.pooling = c.image_size, c.pooling
        self.num_patches = (c.image_size // c.patch_size) ** 2
        # A convolution with stride = kernel = patch is a linear map of each flattened patch.
        self.patches = nn.Conv2d(c.channels, c.d_model, kernel_size=c.patch_size, stride=c.patch_size)
        self.cls = nn.Parameter(torch.zeros(1, 1, c.d_model)) if c.pooling == "cls" else None
        self.positions = Positions(c.positions, c.d_model, self.num_patches + (c.pooling == "cls"))
        self.drop = nn.Dropout(c.dropout)
        attn = attention_layers(c.d_model, c.programs, layers=c.layers, heads=c.heads,
                                kv_heads=c.kv_heads, rotary=self.positions.rotary)
        self.blocks = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout) for a in attn)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.num_classes)
        self.init_weights()

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or tuple(images.shape[-2:]) != (self.image_size,) * 2:
            raise InputError(f"ViT expects images (B, C, {self.image_size}, {self.image_size}), "
                             f"got {tuple(images.shape)}")
        x = self.patches(images).flatten(2).transpose(1, 2)  # (B, patches, d_model)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        x = self.drop(self.positions(x))
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return self.head(x[:, 0] if self.cls is not None else x.mean(dim=1))
