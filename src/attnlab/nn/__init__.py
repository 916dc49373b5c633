"""Torch modules built on attnlab programs."""

from attnlab.nn.attention import Attention, KVCache, ProgramParameters
from attnlab.nn.blocks import MLP, Block, MixedAttention, Positions, attention_layers
from attnlab.nn.recorder import Recorder, record
from attnlab.nn.rotary import Rotary

__all__ = ["MLP", "Attention", "Block", "KVCache", "MixedAttention", "Positions",
           "ProgramParameters", "Recorder", "Rotary", "attention_layers", "record"]
