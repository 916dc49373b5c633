"""The attention-program language: parts, mask expressions, parsing, validation, catalogue."""

from attnlab.lang.approximations import Approximation, Favor, Linear, LowRank
from attnlab.lang.base import Part, registry
from attnlab.lang.layout import Layout
from attnlab.lang.masks import (
    EMPTY,
    FULL,
    PARTIAL,
    And,
    BlockSummary,
    Causal,
    Dilated,
    Document,
    GlobalTokens,
    Graph,
    Mask,
    MaskInputs,
    Not,
    Or,
    Padding,
    Predicate,
    Prefix,
    RandomBlocks,
    Window,
)
from attnlab.lang.normalizers import (
    Entmax,
    Gumbel,
    Normalizer,
    Relu,
    Sigmoid,
    Softmax,
    Sparsemax,
    TopK,
)
from attnlab.lang.program import Program, parse
from attnlab.lang.rules import Rule
from attnlab.lang.scores import (
    Additive,
    Alibi,
    Bias,
    Cosine,
    Dot,
    General,
    GraphDistance,
    RelativeBias,
    ScaledDot,
    Score,
    ScoreMod,
    Softcap,
    Temperature,
)
from attnlab.lang.zoo import zoo

__all__ = [
    "EMPTY", "FULL", "PARTIAL", "Additive", "Alibi", "And", "Approximation", "Bias",
    "BlockSummary", "Causal", "Cosine", "Dilated", "Document", "Dot", "Entmax", "Favor",
    "General", "GlobalTokens", "Graph", "GraphDistance", "Gumbel", "Layout", "Linear", "LowRank", "Mask",
    "MaskInputs", "Normalizer", "Not", "Or", "Padding", "Part", "Predicate", "Prefix",
    "Program", "RandomBlocks", "RelativeBias", "Relu", "Rule", "ScaledDot", "Score", "ScoreMod",
    "Sigmoid", "Softcap", "Softmax", "Sparsemax", "Temperature", "TopK", "Window", "parse",
    "registry", "zoo",
]
