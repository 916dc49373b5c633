"""Multi-query associative recall (MQAR), laid out as Zoology lays it out (Arora et al., 2024)."""

from __future__ import annotations

import numpy as np
import torch

from attnlab.data.base import TaskData, check_int, require
from attnlab.ids import IGNORE_INDEX

# Rows per chunk when a (rows, choices) table of random numbers is needed, to bound memory.
_CHUNK_CELLS = 1 << 22


def mqar(*, vocab_size: int = 8192, seq_len: int = 64, num_kv_pairs: int = 4, num_examples: int,
         seed: int, power_a: float = 0.01, random_non_queries: bool = True) -> TaskData:
    """Multi-query associative recall, following Zoology's ``multiquery_ar`` (one pass over the pairs).

    Definition (Arora et al., 2024, "Zoology: Measuring and Improving Recall in Efficient Language
    Models"; HazyResearch/zoology ``zoology/data/multiquery_ar.py``), in our words:

    - Each example holds ``K = num_kv_pairs`` distinct keys drawn uniformly from ``[1, V/2)`` and K
      distinct values from ``[V/2, V)``; the first ``2K`` tokens are ``k1 v1 k2 v2 ...``.
    - The remaining ``L - 2K`` positions are cut into ``(L - 2K) / 2`` even slots. Slot indices are
      drawn without replacement (successive sampling) with weights ``p(i) ∝ a · i^(a-1)`` for
      ``i = 1 … slots`` (slot ``i - 1`` has weight ``p(i)``), so early slots, close to the pairs, are
      far likelier. Key ``j`` is repeated at position ``2K + 2 · slot_j``.
    - Labels are next-token targets: the label *at the query position itself* is the key's value
      (Zoology puts the value one past the query and then shifts labels left by one). Every other
      label is -100, so each example has exactly K scored positions.
    - Alignments (ours): each query position is paired with the position of its key's value.
    - Unused positions hold 0; with ``random_non_queries`` each is replaced by a token drawn uniformly
      from the whole vocabulary ``[0, V)``, as Zoology does (so a filler may by chance equal a key).

    Zoology seeds numpy's global generator; we use ``numpy.random.default_rng(seed)``: the same
    distribution and layout, not the same stream. Successive sampling is done with the equivalent
    Gumbel-top-k trick, keeping draw order, so the first key's slot is distributed exactly as ``p``.
    """
    check_int("vocab_size", vocab_size, 4)
    check_int("seq_len", seq_len, 4)
    check_int("num_kv_pairs", num_kv_pairs, 1)
    check_int("num_examples", num_examples, 1)
    require(seq_len % 2 == 0, f"mqar needs an even seq_len (queries sit at even offsets), got {seq_len}")
    require(vocab_size > seq_len, f"mqar needs vocab_size > seq_len (Zoology asserts it), "
                                  f"got vocab_size={vocab_size}, seq_len={seq_len}")
    require(4 * num_kv_pairs <= seq_len,
            f"mqar needs 4 * num_kv_pairs <= seq_len (room for the pairs and their queries), "
            f"got num_kv_pairs={num_kv_pairs}, seq_len={seq_len}")
    require(float(power_a) > 0, f"power_a must be positive (1.0 is uniform), got {power_a}")

    rng = np.random.default_rng(seed)
    n, k, context = num_examples, num_kv_pairs, 2 * num_kv_pairs
    keys = distinct_rows(rng, n, k, low=1, high=vocab_size // 2)
    values = distinct_rows(rng, n, k, low=vocab_size // 2, high=vocab_size)
    slots = power_law_slots(rng, n, k, num_slots=(seq_len - context) // 2, power_a=float(power_a))

    inputs = np.zeros((n, seq_len), dtype=np.int64)
    inputs[:, 0:context:2] = keys
    inputs[:, 1:context:2] = values
    query_pos = context + 2 * slots
    rows = np.arange(n)[:, None]
    inputs[rows, query_pos] = keys
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    labels[rows, query_pos] = values
    if random_non_queries:
        filler = inputs == 0
        inputs[filler] = rng.integers(0, vocab_size, size=int(filler.sum()))
    # each query attends to its key's value: where the answer is
    alignments = np.stack([query_pos, np.broadcast_to(np.arange(1, context, 2), (n, k))], axis=-1)
    return TaskData(torch.from_numpy(inputs), torch.from_numpy(labels), vocab_size=vocab_size,
                    alignments=torch.from_numpy(alignments.astype(np.int64)))


def distinct_rows(rng: np.random.Generator, rows: int, k: int, *, low: int, high: int) -> np.ndarray:
    """``rows`` uniformly random ordered draws of ``k`` distinct ints from ``[low, high)``.

    Rows drawn with replacement that happen to be distinct are exactly uniform; the others are
    redrawn a few times, then finished one by one without replacement.
    """
    out = rng.integers(low, high, size=(rows, k))
    bad = np.ones(rows, dtype=bool)
    for _ in range(8):
        ordered = np.sort(out[bad], axis=1)
        still = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        bad[np.flatnonzero(bad)[~still]] = False
        if not bad.any():
            return out
        out[bad] = rng.integers(low, high, size=(int(bad.sum()), k))
    for row in np.flatnonzero(bad):
        out[row] = low + rng.choice(high - low, size=k, replace=False)
    return out


def power_law_slots(rng: np.random.Generator, rows: int, k: int, *, num_slots: int,
                    power_a: float) -> np.ndarray:
    """Per row, ``k`` distinct slots in ``[0, num_slots)`` by successive sampling with ``p ∝ i^(a-1)``.

    Adding Gumbel noise to log-weights and taking the top k in descending order gives exactly the
    draw-remove-renormalise sequence (Gumbel-top-k), vectorised over rows.
    """
    log_w = (power_a - 1.0) * np.log(np.arange(1, num_slots + 1, dtype=np.float64))
    out = np.empty((rows, k), dtype=np.int64)
    chunk = max(1, _CHUNK_CELLS // num_slots)
    for start in range(0, rows, chunk):
        scores = log_w + rng.gumbel(size=(min(chunk, rows - start), num_slots))
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[start:start + len(top)] = np.take_along_axis(top, order, axis=1)
    return out
