"""The attention-program language: parts, mask expressions, parsing, validation, catalogue."""

from attnlab.spec.approximations import Approximation, Favor, Linear, LowRank
from attnlab.spec.base import Part, registry
from attnlab.spec.layout import Layout
from attnlab.spec.masks import (
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
from attnlab.spec.normalizers import (
    Entmax,
    Gumbel,
    Normalizer,
    Relu,
    Sigmoid,
    Softmax,
    Sparsemax,
    TopK,
)
from attnlab.spec.program import Program, parse
from attnlab.spec.scores import (
    Additive,
    Alibi,
    Bias,
    Cosine,
    Dot,
    General,
    RelativeBias,
    ScaledDot,
    Score,
    ScoreMod,
    Softcap,
    Temperature,
)
from attnlab.spec.zoo import zoo

__all__ = [
    "EMPTY", "FULL", "PARTIAL", "Additive", "Alibi", "And", "Approximation", "Bias",
    "BlockSummary", "Causal", "Cosine", "Dilated", "Document", "Dot", "Entmax", "Favor",
    "General", "GlobalTokens", "Graph", "Gumbel", "Layout", "Linear", "LowRank", "Mask",
    "MaskInputs", "Normalizer", "Not", "Or", "Padding", "Part", "Predicate", "Prefix",
    "Program", "RandomBlocks", "RelativeBias", "Relu", "ScaledDot", "Score", "ScoreMod",
    "Sigmoid", "Softcap", "Softmax", "Sparsemax", "Temperature", "TopK", "Window", "parse",
    "registry", "zoo",
]
