"""Torch modules built on attnlab programs."""

from attnlab.nn.attention import Attention
from attnlab.nn.rotary import Rotary

__all__ = ["Attention", "Rotary"]
