"""ListOps, generated as the Long Range Arena generator does (Tay et al., 2021; Nangia & Bowman, 2018)."""

from __future__ import annotations

import random

import numpy as np
import torch

from attnlab.data.base import TaskData, check_int, require
from attnlab.ids import PAD_ID

# Fixed vocabulary; id 0 is padding. LRA's tokens after it strips the parentheses of its strings.
LISTOPS_TOKENS = ("<pad>", *(str(d) for d in range(10)), "[MIN", "[MAX", "[MED", "[SM", "]")
DIGIT_0 = 1
OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END_ID = LISTOPS_TOKENS.index("]")
_OP_IDS = tuple(LISTOPS_TOKENS.index(op) for op in OPERATORS)
VALUE_P = 0.25  # chance that a node above the depth limit is an operator (LRA's VALUE_P)


class _TooLong(Exception):
    """Raised inside a draw the moment it can no longer fit under max_length."""


def listops(*, num_examples: int, seed: int, max_depth: int = 10, max_args: int = 10, min_length: int = 500,
            max_length: int = 2000) -> TaskData:
    """ListOps expressions with their value (0–9) as the class, padded with 0 to ``max_length``.

    Sampling (LRA ``lra_benchmarks/data/listops.py``, in our words): a node at depth ``< max_depth``
    (the root has depth 1) is an operator with probability 0.25, else a digit uniform in 0–9; nodes
    at ``max_depth`` are digits. An operator has a uniform number of arguments in ``[2, max_args]``,
    each an independent subtree, and an operator uniform over MIN, MAX, MED (median of the arguments,
    floored when their count is even, as ``int(np.median(...))``) and SM (sum modulo 10). Tokens are
    the operator (``[MIN`` …), the arguments, then ``]``. A tree is kept when
    ``min_length < tokens < max_length`` (strict) and it has not been kept before (LRA keeps a set).

    To avoid LRA's slow rejection loop we reject early, which leaves the kept distribution unchanged:
    a draw is abandoned once its tokens so far plus its still-open ``]`` reach ``max_length`` (it could
    only grow), and when ``min_length >= 1`` the root is drawn as an operator directly, since a lone
    digit (length 1) is always rejected. Uniqueness holds within one call; across splits identical
    trees are possible in principle but vanishingly unlikely at these lengths.
    """
    check_int("num_examples", num_examples, 1)
    check_int("max_depth", max_depth, 1)
    check_int("max_args", max_args, 2)
    check_int("min_length", min_length, 0)
    check_int("max_length", max_length, 2)
    require(min_length + 1 < max_length,
            f"listops keeps lengths strictly between min_length and max_length; none lie between "
            f"{min_length} and {max_length}")
    longest = _longest_tree(max_depth, max_args)
    require(longest > min_length, f"with max_depth={max_depth} and max_args={max_args} no tree is longer "
                                  f"than {longest} tokens, so min_length={min_length} can never be met")

    rng = random.Random(seed)
    force_root_op = min_length >= 1
    seen: set[tuple[int, ...]] = set()
    rows = np.zeros((num_examples, max_length), dtype=np.int64)
    labels = np.zeros(num_examples, dtype=np.int64)
    attempts, budget = 0, 1000 * num_examples + 100_000
    while len(seen) < num_examples:
        attempts += 1
        require(attempts <= budget, f"listops gave up after {budget} draws with only {len(seen)} unique "
                                    f"trees of length in ({min_length}, {max_length}); widen the window")
        tokens: list[int] = []
        try:
            value = _draw(rng, 1, max_depth, max_args, max_length, tokens, force_root_op)
        except _TooLong:
            continue
        key = tuple(tokens)
        if not min_length < len(tokens) < max_length or key in seen:
            continue
        rows[len(seen), :len(tokens)] = tokens
        labels[len(seen)] = value
        seen.add(key)
    return TaskData(torch.from_numpy(rows), torch.from_numpy(labels),
                    vocab_size=len(LISTOPS_TOKENS), num_classes=10, pad_id=PAD_ID)


def _draw(rng: random.Random, depth: int, max_depth: int, max_args: int, max_length: int,
          out: list[int], force_op: bool = False) -> int:
    """Append one subtree's tokens to ``out`` and return its value."""
    if not force_op and (depth >= max_depth or rng.random() > VALUE_P):
        digit = rng.randrange(10)
        out.append(DIGIT_0 + digit)
        return digit
    num_args = rng.randint(2, max_args)
    op_at = len(out)
    out.append(PAD_ID)  # the operator is drawn after its arguments, as LRA does
    args = []
    for _ in range(num_args):
        args.append(_draw(rng, depth + 1, max_depth, max_args, max_length, out))
        if len(out) + depth >= max_length:  # `depth` closing brackets are still to come
            raise _TooLong
    op = rng.choice(_OP_IDS)
    out[op_at] = op
    out.append(END_ID)
    return apply_op(LISTOPS_TOKENS[op], args)


def apply_op(op: str, args: list[int]) -> int:
    """Value of one ListOps operator on its argument values."""
    if op == "[MIN":
        return min(args)
    if op == "[MAX":
        return max(args)
    if op == "[SM":
        return sum(args) % 10
    ordered = sorted(args)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) // 2


def _longest_tree(max_depth: int, max_args: int) -> int:
    """Tokens in the largest tree the sampler can produce."""
    length = 1
    for _ in range(max_depth - 1):
        length = 2 + max_args * length
    return length


def decode(ids: torch.Tensor | list[int]) -> str:
    """One example's ids as LRA-style text, padding dropped."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return " ".join(LISTOPS_TOKENS[i] for i in ids if i != PAD_ID)
