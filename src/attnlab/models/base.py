"""`Model`: what every attnlab model shares — its constructor arguments and a parameter count."""

from __future__ import annotations

from typing import Any

from torch import nn


class Model(nn.Module):
    """An nn.Module that keeps `config`, the constructor arguments that rebuild it
    (`type(model)(**model.config)`), so a checkpoint can carry the architecture with the weights."""

    config: dict[str, Any]

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
