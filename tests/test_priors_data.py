"""Prior knowledge as data: ListOps parse trees against a breadth-first search, K-BERT sentence trees
against a worked example, WordNet's noun classes against its own counts, MovieLens genres against
the item file."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from attnlab.data.datasets import movielens_genres
from attnlab.data.listops import END_ID, LISTOPS_TOKENS, listops
from attnlab.errors import DataError, InputError
from attnlab.priors.genres import genre_coverage, genre_distances, genre_table
from attnlab.priors.trees import listops_parents, tree_depths, tree_distances, tree_neighbours

# --- ListOps parse trees -----------------------------------------------------------------------------


def bfs_distances(parents: list[int], real: list[bool]) -> list[list[int]]:
    """All-pairs shortest paths by breadth-first search over the undirected child–parent edges."""
    n = len(parents)
    edges: list[list[int]] = [[] for _ in range(n)]
    for child, parent in enumerate(parents):
        if parent >= 0 and real[child]:
            edges[child].append(parent)
            edges[parent].append(child)
    out = [[-1] * n for _ in range(n)]
    for source in range(n):
        if not real[source]:
            continue
        out[source][source] = 0
        queue = deque([source])
        while queue:
            node = queue.popleft()
            for nxt in edges[node]:
                if out[source][nxt] < 0 and nxt != source:
                    out[source][nxt] = out[source][node] + 1
                    queue.append(nxt)
    return out


def stack_parse(tokens: list[str]) -> list[int]:
    """Each token's parent by a plain stack walk over the LRA text (the oracle for listops_parents)."""
    parents, open_ops = [], []
    for i, token in enumerate(tokens):
        parents.append(open_ops[-1] if open_ops else -1)
        if token.startswith("["):
            open_ops.append(i)
        elif token == "]":
            open_ops.pop()
    return parents


# (min_length, max_length, max_depth, max_args): short and long, shallow and deep, narrow and wide
SHAPES = ((2, 40, 3, 4), (10, 80, 5, 4), (30, 160, 10, 10), (2, 60, 10, 2), (10, 40, 4, 10), (50, 300, 6, 5))


def random_listops(seed: int, n: int = 6) -> torch.Tensor:
    low, high, depth, args = SHAPES[seed % len(SHAPES)]
    return listops(num_examples=n, seed=seed, min_length=low, max_length=high, max_depth=depth,
                   max_args=args).inputs


@pytest.mark.parametrize("seed", range(6))
def test_listops_parents_match_a_stack_walk(seed):
    ids = random_listops(seed)
    parents, pad = listops_parents(ids)
    assert torch.equal(pad, ids == 0)
    for row, found in zip(ids.tolist(), parents.tolist(), strict=True):
        tokens = [LISTOPS_TOKENS[i] for i in row if i != 0]
        assert found[:len(tokens)] == stack_parse(tokens)
        assert set(found[len(tokens):]) <= {-1}
        assert found[0] == -1 and all(p >= 0 for p in found[1:len(tokens)])  # one tree, rooted at 0
        closing = [i for i, t in enumerate(tokens) if t == "]"]
        assert all(tokens[found[i]] in ("[MIN", "[MAX", "[MED", "[SM") for i in closing)


@pytest.mark.parametrize("seed", range(6))
def test_tree_distances_and_neighbours_match_breadth_first_search(seed):
    ids = random_listops(seed)
    parents, pad = listops_parents(ids)
    distances, near = tree_distances(parents, pad), tree_neighbours(parents, pad)
    assert distances.dtype == torch.long and distances.shape == near.shape == (len(ids), *ids.shape[1:] * 2)
    for b in range(len(ids)):
        real = (~pad[b]).tolist()
        expected = torch.tensor(bfs_distances(parents[b].tolist(), real))
        assert torch.equal(distances[b], expected)
        p = parents[b]
        same_parent = (p.unsqueeze(1) == p.unsqueeze(0)) & (p >= 0).unsqueeze(1)
        # itself, parent or child (distance 0 or 1), or a sibling (distance 2 through a shared parent)
        wanted = ((expected == 0) | (expected == 1) | ((expected == 2) & same_parent)) & (expected >= 0)
        assert torch.equal(near[b], wanted)
    assert torch.equal(near, near.transpose(1, 2))
    assert not near[pad].any() and not near.transpose(1, 2)[pad].any()


@pytest.mark.parametrize("seed", range(4))
def test_tree_distances_on_random_forests_in_any_order(seed):
    """Parents given in any order (not a preorder), several trees and padding anywhere in a row."""
    gen = torch.Generator().manual_seed(seed)
    batch, length = 5, 37
    rows, pads = [], []
    for _ in range(batch):
        order = torch.randperm(length, generator=gen).tolist()
        parents = [-1] * length
        for k, node in enumerate(order[1:], 1):
            if torch.rand((), generator=gen) > 0.1:  # else a new root: a forest
                parents[node] = order[int(torch.randint(0, k, (), generator=gen))]
        leaves = set(range(length)) - set(parents)
        pad = [i in leaves and torch.rand((), generator=gen) < 0.3 for i in range(length)]
        rows.append([-1 if pad[i] else p for i, p in enumerate(parents)])
        pads.append(pad)
    parents, pad = torch.tensor(rows), torch.tensor(pads)
    found = tree_distances(parents, pad, dtype=torch.int16)
    assert found.dtype == torch.int16
    for b in range(batch):
        assert found[b].tolist() == bfs_distances(rows[b], [not x for x in pads[b]])
    def climb(row, node):
        return 0 if row[node] < 0 else 1 + climb(row, row[node])

    assert tree_depths(parents).tolist() == [[climb(row, i) for i in range(length)] for row in rows]


def test_listops_parents_of_a_worked_example():
    text = "[MAX 2 [MIN 4 7 ] 0 ]"
    ids = torch.tensor([[LISTOPS_TOKENS.index(t) for t in text.split()] + [0, 0]])
    parents, pad = listops_parents(ids)
    assert parents.tolist() == [[-1, 0, 0, 2, 2, 2, 0, 0, -1, -1]]
    assert pad.tolist() == [[False] * 8 + [True] * 2]
    assert tree_distances(parents, pad)[0, 3].tolist() == [2, 3, 1, 0, 2, 2, 3, 3, -1, -1]
    assert tree_neighbours(parents, pad)[0, 3].tolist() == [False, False, True, True, True, True,
                                                            False, False, False, False]
    assert torch.equal(listops_parents(ids[0]).parents, parents)  # one example (L,) as a batch of one


def test_listops_parents_refuse_unbalanced_or_foreign_ids():
    with pytest.raises(InputError, match="brackets do not balance"):
        listops_parents(torch.tensor([[LISTOPS_TOKENS.index("[MAX"), 2, 3]]))
    with pytest.raises(InputError, match="brackets do not balance"):
        listops_parents(torch.tensor([[2, END_ID]]))
    with pytest.raises(InputError, match="ids run from 0 to 15"):
        listops_parents(torch.tensor([[16]]))
    with pytest.raises(InputError, match="cycle"):
        tree_depths(torch.tensor([[1, 0]]))
    with pytest.raises(InputError, match="index of a token in the same row"):
        tree_distances(torch.tensor([[3, -1]]))


# --- MovieLens genres --------------------------------------------------------------------------------

def test_movielens_genres_from_the_item_file():
    genres = movielens_genres()
    assert len(genres) == 1_682
    assert genres["1"] == ("Animation", "Children's", "Comedy")  # Toy Story
    assert genres["2"] == ("Action", "Adventure", "Thriller")  # GoldenEye
    coverage = genre_coverage(genres)
    assert coverage["without"] == 2 and genres["267"] == genres["1373"] == ()  # the file's "unknown"
    assert coverage["several"] == 849 and coverage["items"] == 1_682
    assert len(coverage["per_genre"]) == 18 and coverage["per_genre"]["Drama"] == 725
    assert "unknown" not in coverage["per_genre"]


def test_genre_distances_against_a_formula():
    genres = movielens_genres()
    catalogue = sorted(genres, key=lambda item: (len(item), item))  # as the recommendation task orders it
    table = genre_table(catalogue, genres)
    assert table.table.shape == (1_683, 18) and not table.table[0].any()
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 1_683, (4, 30), generator=gen)
    items[:, :7] = 0  # left padding, as the task pads
    items[1, 10], items[1, 11] = catalogue.index("267") + 1, catalogue.index("1373") + 1  # genre-less
    items[2, 12] = items[2, 13]  # one item twice
    found = genre_distances(items, table)
    assert found.dtype == torch.long and found.shape == (4, 30, 30)
    for b in range(4):
        for i in range(30):
            for j in range(30):
                a, c = int(items[b, i]), int(items[b, j])
                if a == 0 or c == 0:
                    expected = -1
                elif i == j:
                    expected = 0
                else:
                    expected = 1 if set(genres[catalogue[a - 1]]) & set(genres[catalogue[c - 1]]) else 2
                assert found[b, i, j] == expected, (b, i, j)
    assert found[1, 10, 11] == 2 and found[2, 12, 13] == 1
    with pytest.raises(InputError, match="model ids run from 0 to 1682"):
        genre_distances(torch.tensor([[1_683]]), table)
    with pytest.raises(DataError, match="no genres for 1 of the catalogue's 2 items"):
        genre_table(["1", "no-such-item"], genres)
