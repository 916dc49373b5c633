"""Parse trees as structure for attention: each ListOps token's parent, then, for a batch of parent
pointers, tree distances (for a distance bias) and tree neighbours (for a mask), all vectorised.

The compact form is one parent index per token, (B, L); ``tree_distances`` and ``tree_neighbours``
expand a batch to (B, L, L) when attention needs it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from attnlab.data.listops import END_ID, LISTOPS_TOKENS, OPERATORS
from attnlab.errors import InputError
from attnlab.ids import PAD_ID

UNREACHABLE = -1  # a distance between tokens of different trees, or to padding
_OPERATOR_IDS = tuple(LISTOPS_TOKENS.index(op) for op in OPERATORS)


class Parse(NamedTuple):
    """Each token's parent, (B, L) long: the index of the operator token of the node around it
    (-1 for a root and for padding); ``pad`` (B, L) bool flags the padding."""

    parents: Tensor
    pad: Tensor


def listops_parents(ids: Tensor, pad_id: int = PAD_ID) -> Parse:
    """The parse tree of ListOps examples (B, L) or (L,) of ``attnlab.data.listops`` token ids.

    Every token is a node: an operator (``[MIN`` …) opens one, and its parent is the operator of the
    node it sits in; a digit's parent is the operator of its node; a ``]`` belongs to the node it closes,
    so its parent is that node's operator. The root operator (and a lone digit) has parent -1, and so
    has padding, which ``pad`` flags. InputError for an id outside the vocabulary or brackets that do
    not balance.

    Vectorised: a token's depth is the count of operators opened and not yet closed before it, and its
    parent the latest operator opened one level up; a running maximum per level finds that operator.
    """
    ids = _batch(ids, "ids")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(LISTOPS_TOKENS)):
        raise InputError(f"ListOps ids run from 0 to {len(LISTOPS_TOKENS) - 1}, got {int(ids.min())} to "
                         f"{int(ids.max())}")
    batch, length = ids.shape
    pad = ids == pad_id
    opens = torch.isin(ids, torch.tensor(_OPERATOR_IDS, device=ids.device)) & ~pad
    closes = (ids == END_ID) & ~pad
    steps = opens.long() - closes.long()
    depth = steps.cumsum(1) - steps  # open operators before each token
    if (depth + steps < 0).any() or (length and (depth[:, -1] + steps[:, -1] != 0).any()):
        raise InputError("ListOps brackets do not balance: every ']' must close an operator, and every "
                         "operator be closed; are these ListOps token ids?")
    levels = int(depth.max()) + 1 if length else 1
    position = torch.arange(length, device=ids.device).expand(batch, length)
    # latest[k][b, i]: the last operator at depth k opened strictly before token i (-1 if none)
    opened = torch.where(opens.unsqueeze(1) & (depth.unsqueeze(1) == torch.arange(levels, device=ids.device)
                                               .view(1, -1, 1)), position.unsqueeze(1), -1)
    latest = opened.cummax(2).values.roll(1, 2)
    latest[:, :, 0] = -1
    up = (depth - 1).clamp(min=0).unsqueeze(1)
    parents = torch.where(depth > 0, latest.gather(1, up).squeeze(1), -1)
    return Parse(parents.masked_fill(pad, -1), pad)


def tree_depths(parents: Tensor) -> Tensor:
    """(B, L) the number of ancestors of each node (0 for a root and for padding). InputError when the
    parent pointers hold a cycle or point outside the row."""
    parents = _parents(parents)
    depth = torch.zeros_like(parents)
    current = parents.clone()
    for _ in range(parents.shape[1] + 1):
        live = current >= 0
        if not live.any():
            return depth
        depth += live.long()
        current = torch.where(live, parents.gather(1, current.clamp(min=0)), -1)
    raise InputError("the parent pointers hold a cycle: following parents from some token never "
                     "reaches a root")


def ancestors(parents: Tensor) -> tuple[Tensor, Tensor]:
    """Each node's path from its root: ``path[b, i, d]`` is the ancestor of node i at depth d (node i
    itself at d = depth[i]; -1 beyond), (B, L, D) with D one more than the greatest depth; and the
    depths (B, L)."""
    parents = _parents(parents)
    depth = tree_depths(parents)
    batch, length = parents.shape
    levels = int(depth.max()) + 1 if parents.numel() else 1
    path = torch.full((batch, length, levels + 1), -1, dtype=torch.long, device=parents.device)
    node = torch.arange(length, device=parents.device).expand(batch, length).clone()
    for k in range(levels):  # node: the k-th ancestor, written at its depth; a finished climb writes
        climbing = node >= 0  # its -1 into the spare last column
        path.scatter_(2, torch.where(climbing, depth - k, levels).unsqueeze(2), node.unsqueeze(2))
        node = torch.where(climbing, parents.gather(1, node.clamp(min=0)), -1)
    path = path[:, :, :levels]
    return path, depth


def tree_distances(parents: Tensor, pad: Tensor | None = None, *, dtype: torch.dtype = torch.long) -> Tensor:
    """(B, L, L) ``dtype``: the number of edges between tokens i and j in the forest whose edges join
    each token to its parent; 0 on the diagonal, -1 (``UNREACHABLE``) between different trees and
    wherever i or j is padding (``pad`` (B, L) bool; without it nothing is padding). ``dtype=torch.int16``
    saves the conversion and three quarters of the memory (``graph_distance`` takes any integer type).

    Vectorised in two steps. A leaf's paths all leave through its parent, so
    ``d(i, j) = d(a(i), a(j)) + leaf(i) + leaf(j)`` off the diagonal, where ``a`` is the parent of a
    leaf and the node itself otherwise: only the K nodes with children (ListOps' operators, under a
    tenth of the tokens) need distances among themselves. Those come from the lowest common ancestor:
    with each node's path from its root (``ancestors``), two paths agree exactly down to that ancestor,
    so with ``shared`` the number of depths where they agree, ``d = depth[u] + depth[v] - 2 * (shared - 1)``
    (``shared = 0``: different trees), one (B, K, K) comparison per level. Two gathers then expand the
    (B, K, K) table to (B, L, L).
    """
    parents = _parents(parents)
    pad = _pad(pad, parents)
    batch, length = parents.shape
    if length == 0:
        return torch.zeros((batch, 0, 0), dtype=dtype, device=parents.device)
    real = ~pad
    child_of = torch.where((parents >= 0) & real, parents, length)  # a root counts in a spare column
    has_child = torch.zeros((batch, length + 1), dtype=torch.long, device=parents.device).scatter_add_(
        1, child_of, torch.ones_like(parents))[:, :length] > 0
    kept = real & (has_child | (parents < 0))  # the nodes the table holds: inner nodes and roots
    leaf = real & ~kept
    anchor = torch.where(leaf, parents, torch.arange(length, device=parents.device))
    rank = kept.long().cumsum(1) - 1
    size = int(kept.sum(1).max())
    # padding reads a spare last slot, whose row and column hold FAR (as do different trees), so that
    # adding the leaf steps keeps them negative and one clamp turns them all into -1
    slot = torch.where(real, rank.gather(1, anchor), size)
    nodes = torch.full((batch, size + 1), -1, dtype=torch.long, device=parents.device)
    nodes.scatter_(1, torch.where(kept, rank, size), torch.where(kept, parents, -1))
    nodes = nodes[:, :size]  # compressed parent pointers: an inner node's parent is an inner node
    compressed = torch.where(nodes >= 0, rank.gather(1, nodes.clamp(min=0)), -1)
    table = torch.full((batch, size + 1, size + 1), _FAR, dtype=torch.int16, device=parents.device)
    table[:, :size, :size] = _node_distances(compressed)
    steps = leaf.to(torch.int16)
    rows = table.gather(1, slot.unsqueeze(2).expand(batch, length, size + 1)) + steps.unsqueeze(2)
    distance = rows.gather(2, slot.unsqueeze(1).expand(batch, length, length))
    distance += steps.unsqueeze(1)
    distance.clamp_(min=UNREACHABLE)
    distance.diagonal(dim1=1, dim2=2).masked_fill_(real, 0)
    return distance.to(dtype)


_FAR = -(2**14)  # stands for "unreachable" inside tree_distances, far below any real distance


def _node_distances(parents: Tensor) -> Tensor:
    """(B, K, K) int16 tree distances among all the nodes of ``parents`` (B, K), ``_FAR`` between trees."""
    path, depth = ancestors(parents)
    batch, size, levels = path.shape
    # past a node's own depth its path holds -1: give each node its own negative filler there, so two
    # nodes agree only on real ancestors
    filler = -1 - torch.arange(size, device=parents.device).view(1, -1, 1)
    path = torch.where(path >= 0, path, filler).to(torch.int32)
    shared = torch.zeros((batch, size, size), dtype=torch.int16, device=parents.device)
    for d in range(levels):
        column = path[:, :, d]
        shared += column.unsqueeze(2) == column.unsqueeze(1)
    depth = depth.to(torch.int16)
    distance = depth.unsqueeze(2) + depth.unsqueeze(1) + 2 - 2 * shared
    distance.masked_fill_(shared == 0, _FAR).diagonal(dim1=1, dim2=2).zero_()  # a node agrees with
    return distance  # itself on its fillers too


def tree_neighbours(parents: Tensor, pad: Tensor | None = None) -> Tensor:
    """(B, L, L) bool: token i sees token j when j is i itself, i's parent, one of i's children, or a
    sibling of i (another child of i's parent; roots are nobody's siblings). For ListOps: an operator
    sees its arguments, its own ``]``, the operator of its enclosing node and that node's other
    arguments; a digit sees its node's operator, its fellow arguments and the ``]``. Padding sees
    nothing and is seen by nothing. Symmetric."""
    parents = _parents(parents)
    real = ~_pad(pad, parents)
    length = parents.shape[1]
    # siblings: one L x L comparison of parents, where a root or padding gets a parent of its own (a
    # negative number no other token has), so it is nobody's sibling
    index = torch.arange(length, device=parents.device)
    own = torch.where(parents >= 0, parents, -1 - index).to(torch.int16 if length < 2**14 else torch.int32)
    near = own.unsqueeze(2) == own.unsqueeze(1)
    # parent and child: L edges a row, set directly
    child = ((parents >= 0) & real).nonzero(as_tuple=True)
    rows, up = child[0], parents[child]
    near[rows, child[1], up] = True
    near[rows, up, child[1]] = True
    near.diagonal(dim1=1, dim2=2).copy_(real)
    return near


def _batch(tensor: Tensor, name: str) -> Tensor:
    if not isinstance(tensor, Tensor) or tensor.dim() not in (1, 2) or tensor.is_floating_point():
        raise InputError(f"{name} must be an integer tensor (B, L) or (L,), got "
                         f"{getattr(tensor, 'shape', type(tensor).__name__)}")
    return (tensor.unsqueeze(0) if tensor.dim() == 1 else tensor).long()


def _parents(parents: Tensor) -> Tensor:
    parents = _batch(parents, "parents")
    if parents.numel() and (int(parents.min()) < -1 or int(parents.max()) >= parents.shape[1]):
        raise InputError(f"parents must be -1 (a root) or the index of a token in the same row "
                         f"(0 to {parents.shape[1] - 1}), got {int(parents.min())} to {int(parents.max())}")
    return parents


def _pad(pad: Tensor | None, parents: Tensor) -> Tensor:
    if pad is None:
        return torch.zeros_like(parents, dtype=torch.bool)
    pad = pad.unsqueeze(0) if pad.dim() == 1 else pad
    if pad.shape != parents.shape or pad.dtype != torch.bool:
        raise InputError(f"pad must be a bool tensor shaped like parents {tuple(parents.shape)}, got "
                         f"{pad.dtype} {tuple(pad.shape)}")
    return pad
