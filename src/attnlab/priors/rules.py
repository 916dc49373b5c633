"""The built-in library of named rules: small masks that carry prior knowledge, one idea each,
written `rule(name)` or `rule(name, n)` in any program.

Queries are aligned bottom-right as in every mask: query i sits at key position i + M − N.
Rules that read only positions are `positional`: summarised by blocks and proved causal or
not like any structured mask. `@rule("name")` (from here or `attnlab.lang.rules`) registers
one's own.
"""

from __future__ import annotations

from attnlab.lang.rules import RULES, Rule, RuleSpec, block_states, lookup_rule, rule

__all__ = ["RULES", "Rule", "RuleSpec", "block_states", "lookup_rule", "rule"]


@rule("within", reads=("distances",), n="required")
def within(b, h, q, kv, inp, n):
    """Keys at most n hops from the query in the graph of `distances=` (0: itself only)."""
    d = inp.distances[b, q, kv]
    return (d >= 0) & (d <= n)


@rule("hops", reads=("distances",), n="required")
def hops(b, h, q, kv, inp, n):
    """Keys exactly n hops from the query: one ring of the graph, e.g. the direct neighbours."""
    return inp.distances[b, q, kv] == n


@rule("reachable", reads=("distances",))
def reachable(b, h, q, kv, inp, n):
    """Keys connected to the query at all (a distance ≥ 0; −1 marks unreachable)."""
    return inp.distances[b, q, kv] >= 0


@rule("diagonal", positional=True)
def diagonal(b, h, q, kv, inp, n):
    """The key at the query's own position.

    `graph | rule(diagonal)` keeps every token visible to itself whatever the graph says, as
    K-BERT's visible matrix does."""
    return kv == q + inp.offset


@block_states("diagonal")
def _diagonal_blocks(q0, q1, k0, k1, inp, n):
    lo, hi = q0 + inp.offset, q1 + inp.offset  # the block's query positions
    return (lo == hi) & (k0 == k1) & (k0 == lo), (k1 < lo) | (k0 > hi)


@rule("chunk", n="required", least=1, positional=True)
def chunk(b, h, q, kv, inp, n):
    """Keys in the query's chunk of n positions: local attention whose chunks do not slide.

    Unlike window(w), every query of a chunk sees the same keys (chunked attention)."""
    return (q + inp.offset) // n == kv // n


@block_states("chunk")
def _chunk_blocks(q0, q1, k0, k1, inp, n):
    # chunks of the block's first and last query and key: every chunk in between occurs
    qa, qb = (q0 + inp.offset) // n, (q1 + inp.offset) // n
    ka, kb = k0 // n, k1 // n
    return (qa == qb) & (ka == kb) & (qa == ka), (qb < ka) | (qa > kb)


@rule("summary", n="required", least=1, positional=True)
def summary(b, h, q, kv, inp, n):
    """The last key of every chunk of n, seen by every query.

    The Sparse Transformer's fixed pattern (Child et al. 2019) is
    `causal & (rule(chunk, n) | rule(summary, n))`."""
    return kv % n == n - 1


@block_states("summary")
def _summary_blocks(q0, q1, k0, k1, inp, n):
    first = k0 + (n - 1 - k0 % n)  # the first summary key at or after k0
    # two neighbouring keys are both summaries only when n == 1
    full = (k0 == k1) & (first == k0) if n > 1 else k0 >= 0
    rows = q0.shape[0]
    return full.expand(rows, -1), (first > k1).expand(rows, -1)
