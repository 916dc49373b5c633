"""Prior knowledge as data: ListOps parse trees against a breadth-first search, K-BERT sentence trees
against a worked example, WordNet's noun classes against its own counts, MovieLens genres against
the item file."""

from __future__ import annotations

import hashlib
import shutil
from collections import deque
from pathlib import Path

import pytest
import torch

from attnlab.data.datasets import base, load, movielens_genres
from attnlab.data.listops import END_ID, LISTOPS_TOKENS, listops
from attnlab.errors import ConfigError, DataError, InputError
from attnlab.priors.genres import genre_coverage, genre_distances, genre_table
from attnlab.priors.knowledge import (
    Entity,
    SentenceTree,
    WordNetLookup,
    class_ids,
    coverage,
    sentence_tree,
    stack_trees,
    text_trees,
    visible_matrix,
)
from attnlab.priors.trees import listops_parents, tree_depths, tree_distances, tree_neighbours
from attnlab.priors.wordnet import DATA, TABLE_SHA256, WORDNET, noun_classes, source_folder, table_path
from attnlab.tasks.text import train_tokenizer

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


# --- K-BERT sentence trees ---------------------------------------------------------------------------

# K-BERT's own example (Liu et al., 2020, figure 2): "Tim Cook is visiting Beijing now" with
# (Tim Cook, CEO, Apple), (Beijing, capital, China) and (Beijing, is_a, City).
TRUNK = ["[CLS]", "Tim", "Cook", "is", "visiting", "Beijing", "now"]
ENTITIES = [Entity(1, 3, (("CEO", "Apple"),)), Entity(5, 6, (("capital", "China"), ("is_a", "City")))]
EXPANDED = ["[CLS]", "Tim", "Cook", "CEO", "Apple", "is", "visiting", "Beijing", "capital", "China", "is_a",
            "City", "now"]
# written out by hand: a trunk token sees the trunk (and an entity token its own branches); a branch
# token sees its entity's tokens and its own branch
VISIBLE = ["1110011100001",  # [CLS]
           "1111111100001",  # Tim: the trunk and CEO Apple
           "1111111100001",  # Cook
           "0111100000000",  # CEO: Tim Cook and its branch
           "0111100000000",  # Apple
           "1110011100001",  # is
           "1110011100001",  # visiting
           "1110011111111",  # Beijing: the trunk and both its branches
           "0000000111000",  # capital: Beijing and capital China
           "0000000111000",  # China
           "0000000100110",  # is_a: Beijing and is_a City, not the other branch
           "0000000100110",  # City
           "1110011100001"]  # now


def test_sentence_tree_of_the_worked_example():
    tree = sentence_tree(TRUNK, ENTITIES)
    assert list(tree.tokens) == EXPANDED
    assert list(tree.positions) == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7, 6, 7, 6]  # the paper's soft positions
    assert list(tree.branch) == [0, 0, 0, 1, 1, 0, 0, 0, 2, 2, 3, 3, 0]
    assert list(tree.anchor) == [-1, 1, 1, 1, 1, -1, -1, 7, 7, 7, 7, 7, -1]
    assert tree.kept == (0, 1, 2)
    vocab = {token: i for i, token in enumerate(EXPANDED, 1)}
    ids = SentenceTree(tuple(vocab[t] for t in tree.tokens), tree.positions, tree.branch, tree.anchor)
    batch = stack_trees([ids, sentence_tree([1, 2], [])], length=15)
    visible = batch.visible()
    assert visible.shape == (2, 15, 15)
    assert ["".join(str(int(v)) for v in row) for row in visible[0, :13, :13].tolist()] == VISIBLE
    assert not visible[0, 13:].any() and not visible[0, :, 13:].any()  # padding sees and is seen by nothing
    assert visible[1, :2, :2].all() and visible[1].sum() == 4  # no knowledge: the trunk sees itself
    assert batch.tokens[0, 13:].tolist() == [0, 0] and batch.anchor[0, 13:].tolist() == [-1, -1]
    assert batch.branches().tolist() == [3, 0]
    assert torch.equal(visible_matrix(batch.branch[0], batch.anchor[0], batch.pad[0]), visible[:1])


def test_sentence_tree_caps_and_truncation():
    short = sentence_tree(TRUNK, ENTITIES, max_branch_tokens=1)
    assert list(short.tokens) == ["[CLS]", "Tim", "Cook", "CEO", "is", "visiting", "Beijing", "capital",
                                  "is_a", "now"]
    assert list(short.positions) == [0, 1, 2, 3, 3, 4, 5, 6, 6, 6]
    two = sentence_tree(TRUNK, ENTITIES, max_branches=2)
    assert two.kept == (0, 1) and "is_a" not in two.tokens and len(two) == 11
    assert sentence_tree(TRUNK, ENTITIES, max_branches=0).tokens == tuple(TRUNK)
    # too long: branches go first, the last first
    fit = sentence_tree(TRUNK, ENTITIES, max_len=12)
    assert fit.kept == (0, 1) and len(fit) == 11 and list(fit.positions)[-1] == 6
    assert sentence_tree(TRUNK, ENTITIES, max_len=8).tokens == tuple(TRUNK)
    # only a trunk longer than max_len is cut, with the entities past the cut
    cut = sentence_tree(TRUNK, ENTITIES, max_len=5)
    assert cut.tokens == tuple(TRUNK[:5]) and cut.kept == () and set(cut.anchor) == {-1}
    assert sentence_tree(TRUNK, ENTITIES, max_len=6).tokens == tuple(TRUNK[:6])
    with pytest.raises(InputError, match="without overlapping"):
        sentence_tree(TRUNK, [Entity(1, 3, (("x",),)), Entity(2, 4, (("y",),))])
    with pytest.raises(InputError, match="without overlapping"):
        sentence_tree(TRUNK, [Entity(5, 9, (("x",),))])
    with pytest.raises(InputError, match="max_len must be a whole number from 1"):
        sentence_tree(TRUNK, ENTITIES, max_len=0)
    with pytest.raises(InputError, match="does not fit length=4"):
        stack_trees([sentence_tree([1, 2, 3, 4, 5], [])], length=4)


# --- WordNet -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nouns():
    return noun_classes()


def test_wordnet_counts_and_known_lemmas(nouns):
    assert len(nouns.lexnames) == 45
    assert nouns.lexnames[15] == "noun.location" and nouns.lexnames[18] == "noun.person"
    assert nouns.synsets["noun.location"] == 3_209 and nouns.synsets["noun.person"] == 11_087
    assert nouns.synsets["noun.quantity"] == 1_275 and nouns.synsets["noun.time"] == 1_028
    assert len(nouns.senses) == 117_798 and sum(nouns.synsets.values()) == 82_115
    assert nouns.classes("city") == ("noun.location",)  # its first sense, the most frequent
    assert nouns.classes("City", senses=None) == ("noun.location", "noun.group")
    assert "noun.person" in nouns.classes("author")
    assert nouns.classes("New York") == ("noun.location",) and "new_york" in nouns
    assert nouns.classes("what") == () and "what" not in nouns
    with pytest.raises(ConfigError, match="senses must be a whole number from 1"):
        nouns.classes("city", senses=0)


def _real_root() -> Path:
    folder, problems = source_folder()
    assert folder is not None, f"wordnet-base should be fetched by the Makefile: {problems}"
    return folder.parents[1]  # the tree holding usr/share


def test_wordnet_cached_table_altered_is_parsed_again(monkeypatch, tmp_path):
    root, table = _real_root(), table_path()
    monkeypatch.setattr(base, "SYSTEM_ROOT", root)
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    kept = table_path()
    kept.parent.mkdir(parents=True)
    data = table.read_bytes()
    assert b'"city":[15,15,14]' in data
    kept.write_bytes(data.replace(b'"city":[15,15,14]', b'"city":[18,15,14]'))  # city: a person?
    notes = []
    found = noun_classes(progress=notes.append)
    assert found.classes("city") == ("noun.location",)
    assert len(notes) == 1 and "parsing WordNet again" in notes[0] and TABLE_SHA256 in notes[0]
    assert hashlib.sha256(kept.read_bytes()).hexdigest() == TABLE_SHA256  # put right in the cache


def test_wordnet_altered_or_missing_source_is_refused(monkeypatch, tmp_path):
    real = _real_root() / WORDNET.folder
    copy = tmp_path / "root" / WORDNET.folder
    for name in WORDNET.files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / name, copy / name)
    with open(copy / DATA, "ab") as f:
        f.write(b"\n")
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "root")
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    altered = r"data\.noun: sha256 \w+, expected fea17d2f.*; restore it with `python -m attnlab\.priors"
    with pytest.raises(DataError, match=altered):
        noun_classes()
    monkeypatch.setattr(base, "SYSTEM_ROOT", tmp_path / "nothing")
    with pytest.raises(DataError, match="reads Debian's wordnet-base, found in neither"):
        noun_classes()


# --- WordNet knowledge for TREC ----------------------------------------------------------------------

def test_wordnet_lookup_finds_nouns_not_function_words(nouns):
    lookup = WordNetLookup(nouns)
    words = ["What", "city", "is", "the", "capital", "of", "New", "York", "?"]
    assert lookup.entities(words) == [(1, 2, ("location",)), (4, 5, ("possession",)), (6, 8, ("location",))]
    hamlet = lookup.entities(["Who", "is", "the", "author", "of", "Hamlet", "?"])
    assert hamlet == [(3, 4, ("person",)), (5, 6, ("group",))]  # lower case: a hamlet, a small village
    assert WordNetLookup(nouns, classes=frozenset({"noun.location"})).entities(words) == [
        (1, 2, ("location",)), (6, 8, ("location",))]
    assert lookup.entities(["Who", "is", "someone", "?"]) == []  # "someone" is noun.Tops, left out


def test_trec_trees_on_the_training_questions(nouns):
    train = load("trec-questions", seed=0)["train"]
    texts, labels = [ex["text"] for ex in train], [ex["label"] for ex in train]
    tokenizer = train_tokenizer(texts, 4000)  # as the trec experiment's text task learns it
    lookup = WordNetLookup(nouns)
    batch, names = text_trees(texts, tokenizer, lookup, max_len=32)
    assert batch.tokens.shape == (len(texts), 32) and len(names) == len(texts)
    assert batch.branches().tolist() == [len(found) for found in names]
    # the trunk is the text task's own encoding, in order
    trunk = batch.tokens.masked_fill(batch.branch > 0, -1)
    for row, encoding in zip(trunk[:50], tokenizer.encode_batch(texts[:50]), strict=True):
        assert [t for t in row.tolist() if t > 0] == encoding.ids[:32]
    report = coverage(names, labels)
    assert report["with_branch"] > 0.9 and 2 < report["mean_branches"] <= 4
    share = {label: {name: count / counts["texts"] for name, count in counts.items() if name != "texts"}
             for label, counts in report["by_label"].items()}
    others = [label for label in share if label not in ("LOC", "HUM")]
    assert all(share["LOC"]["location"] > 2 * share[label].get("location", 0) for label in others)
    assert all(share["HUM"]["person"] > 2 * share[label].get("person", 0) for label in others)
    # class names as tokens of their own, after the vocabulary
    extra = class_ids(nouns, tokenizer.get_vocab_size())
    assert len(extra) == 25 and extra["act"] == (4000,) and "tops" not in extra
    one, found = text_trees(["What city is the capital of New York ?"], tokenizer, lookup, max_len=32,
                            class_tokens=extra)
    assert found == [["location", "possession", "location"]]
    words = [tokenizer.id_to_token(t) if t < 4000 else f"<{t - 4000}>" for t in one.tokens[0].tolist() if t]
    location, possession = f"<{extra['location'][0] - 4000}>", f"<{extra['possession'][0] - 4000}>"
    assert words == ["[CLS]", "what", "city", location, "is", "the", "capital", possession, "of", "new",
                     "york", location, "?"]
    assert one.positions[0, :13].tolist() == [0, 1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9]
    assert one.anchor[0, :13].tolist() == [-1, -1, 2, 2, -1, -1, 6, 6, -1, 9, 9, 9, -1]
