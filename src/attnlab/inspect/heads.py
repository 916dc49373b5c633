"""Switching heads off: `masked(model, {layer: [heads]})` multiplies the chosen heads' outputs by
zero while the block runs, the head mask ξ of Michel et al. 2019, "Are Sixteen Heads Really Better
than One?", §2. Importance, ablation and the pruning curve are built on it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from attnlab.errors import InputError
from attnlab.nn.recorder import recordable


@contextmanager
def masked(model: nn.Module, heads: Mapping[str | int, Sequence[int]]) -> Iterator[None]:
    """Inside the block, the heads `heads[layer]` of each layer (a name or an index into the
    model's attention layers) give a zero output; the model's weights are untouched."""
    layers = list(recordable(model).items())
    names = {name: module for module, name in layers}
    chosen: dict[nn.Module, list[int]] = {}
    for layer, off in heads.items():
        module = _layer(layers, names, layer)
        bad = [h for h in off if not 0 <= h < module.heads]
        if bad:
            raise InputError(f"layer '{layer}' has heads 0..{module.heads - 1}; got {bad}")
        chosen.setdefault(module, []).extend(off)
    for module, off in chosen.items():
        mask = torch.ones(module.heads)
        mask[off] = 0
        module.head_mask = mask
    try:
        yield
    finally:
        for module in chosen:
            module.head_mask = None


def _layer(layers: list[tuple[nn.Module, str]], names: dict[str, nn.Module],
           layer: str | int) -> nn.Module:
    if isinstance(layer, int) and not isinstance(layer, bool):
        if not -len(layers) <= layer < len(layers):
            raise InputError(f"layer {layer} is out of range: the model has {len(layers)} "
                             "attention layer(s)")
        return layers[layer][0]
    if layer not in names:
        raise InputError(f"no attention layer '{layer}'; the model has: {', '.join(names)}")
    return names[layer]


__all__ = ["masked"]
