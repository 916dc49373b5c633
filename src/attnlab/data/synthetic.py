"""Small memory tasks: copying, selective copying (Mamba) and induction heads (H3)."""

from __future__ import annotations

import numpy as np
import torch

from attnlab.data.base import TaskData, check_int, require
from attnlab.ids import IGNORE_INDEX

# Rows per chunk when a (rows, positions) table of random numbers is needed, to bound memory.
_CHUNK_CELLS = 1 << 22


def copy(*, vocab_size: int = 16, seq_len: int = 32, copy_len: int = 16, num_examples: int,
         seed: int) -> TaskData:
    """Copy ``copy_len`` tokens after a separator, as next-token prediction.

    Ids: 0 is blank, 1 the separator, data tokens are uniform in ``[2, vocab_size)``. The full sequence
    is ``data (copy_len) · blanks (seq_len - 2·copy_len) · separator · data``; inputs are all of it but
    the last token and ``labels[t]`` is token ``t + 1``, scored only where that is a copied token, i.e.
    on the last ``copy_len`` positions (the separator predicts the first data token). Blanks add a
    delay between the data and its copy, as in the copying-memory task (Arjovsky et al., 2016).
    """
    check_int("vocab_size", vocab_size, 3)
    check_int("copy_len", copy_len, 1)
    check_int("seq_len", seq_len, 2)
    check_int("num_examples", num_examples, 1)
    require(seq_len >= 2 * copy_len, f"copy needs seq_len >= 2 * copy_len (the data and its copy), "
                                     f"got seq_len={seq_len}, copy_len={copy_len}")
    rng = np.random.default_rng(seed)
    data = rng.integers(2, vocab_size, size=(num_examples, copy_len))
    full = np.zeros((num_examples, seq_len + 1), dtype=np.int64)
    full[:, :copy_len] = data
    full[:, seq_len - copy_len] = 1
    full[:, seq_len - copy_len + 1:] = data
    labels = np.full((num_examples, seq_len), IGNORE_INDEX, dtype=np.int64)
    labels[:, seq_len - copy_len:] = full[:, seq_len - copy_len + 1:]
    # the position that predicts the i-th copied token attends to that token's first place, i
    rows = np.arange(seq_len - copy_len, seq_len)
    keys = np.arange(copy_len)
    return TaskData(torch.from_numpy(full[:, :-1].copy()), torch.from_numpy(labels),
                    vocab_size=vocab_size, alignments=pairs(rows, keys, num_examples))


def selective_copy(*, vocab_size: int = 16, seq_len: int = 256, num_tokens: int = 16, num_examples: int,
                   seed: int) -> TaskData:
    """Mamba's selective copying: recall scattered data tokens, in order, at the marker positions.

    Definition (Gu & Dao, 2023, "Mamba", §3.1 / Fig. 2; generator ``torch_copying_data(variable=True)``
    in state-spaces/s4 ``src/dataloaders/datasets/copying.py``), in our words: ids 0 is noise/blank,
    ``vocab_size - 1`` the marker, data tokens uniform in ``[1, vocab_size - 1)``. The first
    ``seq_len - num_tokens`` positions are blanks except ``num_tokens`` positions chosen uniformly
    without replacement, which hold the data tokens in position order; the last ``num_tokens``
    positions are markers. The label at the i-th marker is the i-th data token (the output there is
    the recall, not a shifted next token); all other labels are -100.
    """
    check_int("vocab_size", vocab_size, 3)
    check_int("num_tokens", num_tokens, 1)
    check_int("seq_len", seq_len, 2)
    check_int("num_examples", num_examples, 1)
    require(seq_len >= 2 * num_tokens, f"selective_copy needs seq_len >= 2 * num_tokens (room for the tokens "
                                       f"and a marker each), got seq_len={seq_len}, num_tokens={num_tokens}")
    rng = np.random.default_rng(seed)
    n, region = num_examples, seq_len - num_tokens
    data = rng.integers(1, vocab_size - 1, size=(n, num_tokens))
    positions = np.empty((n, num_tokens), dtype=np.int64)
    chunk = max(1, _CHUNK_CELLS // region)
    for start in range(0, n, chunk):
        # the k smallest of iid uniforms sit at a uniformly random k-subset of positions
        draws = rng.random((min(chunk, n - start), region))
        chosen = np.argpartition(draws, num_tokens - 1, axis=1)[:, :num_tokens]
        positions[start:start + len(draws)] = np.sort(chosen, axis=1)
    inputs = np.zeros((n, seq_len), dtype=np.int64)
    np.put_along_axis(inputs, positions, data, axis=1)
    inputs[:, region:] = vocab_size - 1
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    labels[:, region:] = data
    # the i-th marker attends to where the i-th data token is
    return TaskData(torch.from_numpy(inputs), torch.from_numpy(labels), vocab_size=vocab_size,
                    alignments=pairs(np.arange(region, seq_len), positions, n))


def induction_head(*, vocab_size: int = 20, seq_len: int = 32, induction_len: int = 1, num_triggers: int = 1,
                   num_examples: int, seed: int) -> TaskData:
    """H3's induction-head task: after the trigger reappears at the end, reproduce what followed it.

    Definition (Fu et al., 2023, "Hungry Hungry Hippos", synthetic language tasks, after Olsson et al.,
    2022; HazyResearch/safari ``src/dataloaders/synthetics.py``), in our words: ids
    ``[0, vocab_size - 1)`` are content, ``vocab_size - 1`` is the trigger. A random content sequence of
    ``R = seq_len - induction_len`` tokens gets the trigger at a position drawn uniformly from
    ``[0, R - 1 - induction_len)``, followed by ``induction_len`` target tokens (the content already
    there). With ``num_triggers > 1``, half the examples still use one trigger, the others draw that
    many positions (with replacement, sorted), drop any within ``induction_len`` of the previous kept
    one, and repeat trigger and targets at each. Then come the trigger and the targets again; inputs
    are all but the last token and the last ``induction_len`` labels are the targets (next-token),
    others -100 (H3 scores only these at test time). Unlike H3 we do not reserve an unused no-op id.
    """
    check_int("vocab_size", vocab_size, 2)
    check_int("induction_len", induction_len, 1)
    check_int("num_triggers", num_triggers, 1)
    check_int("seq_len", seq_len, 1)
    check_int("num_examples", num_examples, 1)
    require(seq_len >= 2 * induction_len + 2, f"induction_head needs seq_len >= 2 * induction_len + 2, "
                                              f"got seq_len={seq_len}, induction_len={induction_len}")
    rng = np.random.default_rng(seed)
    n, k, trigger = num_examples, induction_len, vocab_size - 1
    region = seq_len - k
    full = np.empty((n, seq_len + 1), dtype=np.int64)
    full[:, :region] = rng.integers(0, vocab_size - 1, size=(n, region))
    first = np.empty(n, dtype=np.int64)  # each example's first trigger
    for index, row in enumerate(full):
        count = num_triggers if num_triggers > 1 and rng.random() >= 0.5 else 1
        kept: list[int] = []
        for pos in sorted(rng.integers(0, region - 1 - k, size=count).tolist()):
            if not kept or pos - kept[-1] > k:  # triggers must not overlap the previous targets
                kept.append(pos)
        first[index] = kept[0]
        targets = row[kept[0] + 1:kept[0] + 1 + k].copy()
        for pos in kept:
            row[pos] = trigger
            row[pos + 1:pos + 1 + k] = targets
        row[region] = trigger
        row[region + 1:] = targets
    labels = np.full((n, seq_len), IGNORE_INDEX, dtype=np.int64)
    labels[:, seq_len - k:] = full[:, seq_len - k + 1:]
    # the position predicting target i attends to target i after the trigger's first place
    return TaskData(torch.from_numpy(full[:, :-1].copy()), torch.from_numpy(labels),
                    vocab_size=vocab_size,
                    alignments=pairs(np.arange(region, seq_len), first[:, None] + 1 + np.arange(k), n))


def pairs(rows: np.ndarray, keys: np.ndarray, n: int) -> torch.Tensor:
    """(n, P, 2) alignment pairs (query row, key) from P rows (shared by every example) and keys
    (P,) shared, or (n, P) per example."""
    keys = np.broadcast_to(keys, (n, len(rows)))
    out = np.stack([np.broadcast_to(rows, (n, len(rows))), keys], axis=-1)
    return torch.from_numpy(out.astype(np.int64))
