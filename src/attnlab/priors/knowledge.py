"""K-BERT sentence trees (Liu et al., 2020, "K-BERT: Enabling Language Representation with Knowledge
Graph"): knowledge about a sentence's entities inserted as branch tokens right after each entity,
with soft positions and a visible matrix, so the branches inform their entity without changing what
the rest of the sentence reads.

The compact form is per token, O(L): ``positions`` (soft), ``branch`` (0 on the trunk, 1, 2 … per
branch) and ``anchor`` (the index of the first token of the entity a branch hangs from, on the branch
and on the entity's own tokens; -1 elsewhere). ``visible_matrix`` expands a batch to (B, L, L) bool for
the ``graph`` mask; ``positions`` replaces ``arange(L)`` for the position embedding.

The glue for a text task is ``WordNetLookup`` (which words are entities, and the names of their
WordNet classes as branches) and ``text_trees`` (a tokenizer's WordPiece ids, with the words they
come from).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from attnlab.errors import InputError
from attnlab.ids import PAD_ID
from attnlab.priors.wordnet import NounClasses


@dataclass(frozen=True)
class Entity:
    """Tokens ``start`` up to (not including) ``stop`` of the trunk name an entity; each of ``branches``
    is a run of tokens that hangs from it: a triple (entity, relation, object) becomes the branch
    ``(*relation tokens, *object tokens)``, or just the object's tokens when the relation goes
    without saying (WordNet's "is a")."""

    start: int
    stop: int
    branches: tuple[tuple[Hashable, ...], ...]


@dataclass(frozen=True)
class SentenceTree:
    """One sentence with its knowledge inserted: the expanded ``tokens`` and, per token, its soft
    position, branch number and anchor (see the module's docstring). ``kept`` lists, for branch 1, 2 …,
    which of the input branches it is (their index when the entities' branches are read in order),
    so a caller can tell which knowledge survived the caps."""

    tokens: tuple[Hashable, ...]
    positions: tuple[int, ...]
    branch: tuple[int, ...]
    anchor: tuple[int, ...]
    kept: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.tokens)


def sentence_tree(trunk: Sequence[Hashable], entities: Sequence[Entity], *, max_branches: int | None = None,
                  max_branch_tokens: int | None = None, max_len: int | None = None) -> SentenceTree:
    """The sentence tree of ``trunk`` (tokens) with each entity's branches inserted right after its last
    token, in order.

    Soft positions: the trunk keeps its own positions 0, 1, … as if there were no branches; each branch
    continues from its entity's last position (an entity ending at position p gives its branches
    p + 1, p + 2, …, every branch of it starting again from p + 1).

    Caps: each branch is cut to its first ``max_branch_tokens`` tokens, and only the first
    ``max_branches`` branches of the sentence are kept (sentence order, then each entity's order).
    When the whole is longer than ``max_len``, branches are dropped first, the last first; only
    when the trunk alone is longer is it cut to ``max_len`` tokens (with its entities that no longer
    fit). InputError for entities that overlap, run backwards or reach past the trunk.
    """
    for name, cap, least in (("max_branches", max_branches, 0), ("max_branch_tokens", max_branch_tokens, 1),
                             ("max_len", max_len, 1)):
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < least):
            raise InputError(f"{name} must be a whole number from {least}, or None for no cap; got {cap!r}")
    entities = sorted(entities, key=lambda e: e.start)
    end = 0
    for entity in entities:
        if not end <= entity.start < entity.stop <= len(trunk):
            raise InputError(f"entity spans must lie in the trunk ({len(trunk)} tokens), start < stop, "
                             f"without overlapping; got {entity.start}–{entity.stop}")
        end = entity.stop
    if max_len is not None and len(trunk) > max_len:
        trunk = trunk[:max_len]
        entities = [e for e in entities if e.stop <= max_len]
    # every branch as (entity number, its index among all input branches, tokens), capped
    every = [(e, tuple(tokens)[:max_branch_tokens]) for e, entity in enumerate(entities)
             for tokens in entity.branches]
    flat = [(e, index, tokens) for index, (e, tokens) in enumerate(every) if tokens]
    if max_branches is not None:
        flat = flat[:max_branches]
    if max_len is not None:
        while flat and len(trunk) + sum(len(tokens) for _, _, tokens in flat) > max_len:
            flat.pop()
    hanging: dict[int, list[tuple[int, tuple[Hashable, ...]]]] = {}
    for e, index, tokens in flat:
        hanging.setdefault(e, []).append((index, tokens))
    span_of = {i: e for e, entity in enumerate(entities) if e in hanging
               for i in range(entity.start, entity.stop)}
    tokens_out: list[Hashable] = []
    positions: list[int] = []
    branch: list[int] = []
    anchor: list[int] = []
    kept: list[int] = []
    starts: dict[int, int] = {}  # entity number → index of its first token in the output
    for i, token in enumerate(trunk):
        e = span_of.get(i)
        if e is not None and i == entities[e].start:
            starts[e] = len(tokens_out)
        tokens_out.append(token)
        positions.append(i)
        branch.append(0)
        anchor.append(-1 if e is None else starts[e])
        if e is not None and i == entities[e].stop - 1:
            for index, run in hanging[e]:
                kept.append(index)
                tokens_out.extend(run)
                positions.extend(range(i + 1, i + 1 + len(run)))
                branch.extend([len(kept)] * len(run))
                anchor.extend([starts[e]] * len(run))
    return SentenceTree(tuple(tokens_out), tuple(positions), tuple(branch), tuple(anchor), tuple(kept))


@dataclass(frozen=True)
class TreeBatch:
    """Sentence trees of token ids as (B, L) tensors: ``tokens`` (``pad_id`` after each tree),
    ``positions`` (0 on padding), ``branch`` (0 on padding), ``anchor`` (-1 on padding) and ``pad``
    (bool, True on padding). ``kept[b]`` as in ``SentenceTree``."""

    tokens: Tensor
    positions: Tensor
    branch: Tensor
    anchor: Tensor
    pad: Tensor
    kept: tuple[tuple[int, ...], ...] = field(default=())

    def visible(self) -> Tensor:
        """(B, L, L) bool: ``visible_matrix(self.branch, self.anchor, self.pad)``."""
        return visible_matrix(self.branch, self.anchor, self.pad)

    def branches(self) -> Tensor:
        """(B,) how many branches each tree holds."""
        if self.branch.shape[1] == 0:
            return torch.zeros(len(self.branch), dtype=torch.long)
        return self.branch.amax(1)


def stack_trees(trees: Sequence[SentenceTree], length: int | None = None, pad_id: int = PAD_ID) -> TreeBatch:
    """Trees of integer token ids as one ``TreeBatch`` of width ``length`` (the longest tree's by
    default); InputError for a tree longer than ``length``."""
    width = max((len(t) for t in trees), default=0) if length is None else length
    longest = max((len(t) for t in trees), default=0)
    if longest > width:
        raise InputError(f"a sentence tree of {longest} tokens does not fit length={width}; build the "
                         f"trees with max_len={width}")
    shape = (len(trees), width)
    tokens = torch.full(shape, pad_id, dtype=torch.long)
    positions = torch.zeros(shape, dtype=torch.long)
    branch = torch.zeros(shape, dtype=torch.long)
    anchor = torch.full(shape, -1, dtype=torch.long)
    pad = torch.ones(shape, dtype=torch.bool)
    for row, tree in enumerate(trees):
        n = len(tree)
        tokens[row, :n] = torch.tensor(tree.tokens, dtype=torch.long)
        positions[row, :n] = torch.tensor(tree.positions, dtype=torch.long)
        branch[row, :n] = torch.tensor(tree.branch, dtype=torch.long)
        anchor[row, :n] = torch.tensor(tree.anchor, dtype=torch.long)
        pad[row, :n] = False
    return TreeBatch(tokens, positions, branch, anchor, pad, tuple(tree.kept for tree in trees))


def visible_matrix(branch: Tensor, anchor: Tensor, pad: Tensor | None = None) -> Tensor:
    """(B, L, L) bool, K-BERT's visible matrix from the compact form (B, L) or (L,): token i sees token
    j when both are on the trunk; when both are on the same branch; or when one is on a branch and the
    other is a token of the entity it hangs from (the same ``anchor``, one of them on the trunk). So a
    branch never sees another branch, not even one of the same entity. Padding (``pad``) sees nothing
    and is seen by nothing: attnlab's attention gives a row that sees nothing a zero output, not NaN."""
    if branch.dim() == 1:
        branch, anchor = branch.unsqueeze(0), anchor.unsqueeze(0)
        pad = None if pad is None else pad.unsqueeze(0)
    if branch.shape != anchor.shape or (pad is not None and pad.shape != branch.shape):
        raise InputError(f"branch {tuple(branch.shape)}, anchor {tuple(anchor.shape)} and pad "
                         f"{None if pad is None else tuple(pad.shape)} must have one shape (B, L)")
    real = torch.ones_like(branch, dtype=torch.bool) if pad is None else ~pad
    trunk = (branch == 0) & real
    both_trunk = trunk.unsqueeze(2) & trunk.unsqueeze(1)
    same_branch = (branch.unsqueeze(2) == branch.unsqueeze(1)) & (branch > 0).unsqueeze(2)
    entity = (anchor.unsqueeze(2) == anchor.unsqueeze(1)) & (anchor >= 0).unsqueeze(2) \
        & (trunk.unsqueeze(2) | trunk.unsqueeze(1))
    return (both_trunk | same_branch | entity) & real.unsqueeze(2) & real.unsqueeze(1)


# --- WordNet knowledge for text ---------------------------------------------------------------------

# Words never taken for entities: function words, which WordNet lists as rare nouns ("a" the vitamin,
# "i" iodine, "who" the World Health Organization, "do" the party, "us" the United States).
_FUNCTION_WORDS = """
a an the this that these those some any each every all both no not nor and or but if so than then as
of in on at to for from by with about into onto over under between through during before after
above below up down out off again further once here there when where why how what which who whom
whose i me my mine we us our ours you your yours he him his she her hers it its they them their
theirs is are was were be been being am do does did done doing have has had having will would shall
should can could may might must s t d ll m o re ve y
"""
STOPWORDS = frozenset(_FUNCTION_WORDS.split())


@dataclass(frozen=True)
class WordNetLookup:
    """Which words of a text are entities, and their knowledge: a run of up to ``longest`` words that
    is a WordNet noun lemma (longest first, left to right; ``new york`` → ``new_york``), whose first
    word is no stopword and whose words are all letters; its branches are the short names of its
    lexicographer classes (``noun.location`` → ``location``) over its first ``senses`` senses (see
    ``NounClasses.classes``), limited to ``classes`` when given, never those of ``exclude``: by default
    ``noun.Tops``, the file of WordNet's unique beginners (entity, person, animal, …), whose name says
    nothing of the word ("person" and "someone" are in it, not in noun.person)."""

    nouns: NounClasses
    senses: int | None = 1
    longest: int = 3
    stopwords: frozenset[str] = STOPWORDS
    classes: frozenset[str] | None = None  # lexicographer classes to keep, e.g. {"noun.location"}
    exclude: frozenset[str] = frozenset({"noun.Tops"})

    def entities(self, words: Sequence[str]) -> list[tuple[int, int, tuple[str, ...]]]:
        """(start, stop, class names) for each entity among ``words``: word spans, not token spans."""
        lowered = [word.lower() for word in words]
        found, i = [], 0
        while i < len(lowered):
            for n in range(min(self.longest, len(lowered) - i), 0, -1):
                run = lowered[i:i + n]
                if run[0] in self.stopwords or not all(word.isalpha() for word in run):
                    continue
                names = [name for name in self.nouns.classes("_".join(run), self.senses)
                         if (self.classes is None or name in self.classes) and name not in self.exclude]
                if names:
                    found.append((i, i + n, tuple(short_name(name) for name in names)))
                    i += n
                    break
            else:
                i += 1
        return found


def short_name(lexname: str) -> str:
    """``noun.location`` → ``location``: the word a branch holds."""
    return lexname.split(".", 1)[1].lower()


def text_trees(texts: Sequence[str], tokenizer: Any, lookup: WordNetLookup, *, max_len: int,
               max_branches: int | None = 4, max_branch_tokens: int | None = 4,
               class_tokens: Mapping[str, Sequence[int]] | None = None,
               pad_id: int = PAD_ID) -> tuple[TreeBatch, list[list[str]]]:
    """Sentence trees for texts read by a HF ``tokenizers`` tokenizer (the text tasks' WordPiece, with
    the ``[CLS]`` its post-processor puts first): each word the lookup names an entity gets its class
    names as branches, tokenised by the same tokenizer (so ``location`` is the vocabulary's own token,
    or its word pieces: ``communication`` may come out as 4), or taken from ``class_tokens`` (class short
    name → token ids, such as ``class_ids``' new ids after the vocabulary). The batch is ``max_len``
    wide, as ``TextEncoder`` cuts; the second value lists, per text, the class name of each kept branch,
    in branch order."""
    pieces: dict[str, tuple[int, ...]] = {name: tuple(ids) for name, ids in (class_tokens or {}).items()}
    trees, names = [], []
    for text, encoding in zip(texts, tokenizer.encode_batch(list(texts)), strict=True):
        spans: dict[int, list[int]] = {}  # word number → its token indices
        for t, word in enumerate(encoding.word_ids):
            if word is not None:
                spans.setdefault(word, []).append(t)
        order = sorted(spans)
        words = [text[encoding.offsets[spans[w][0]][0]:encoding.offsets[spans[w][-1]][1]] for w in order]
        entities, wanted = [], []
        for start, stop, classes in lookup.entities(words):
            for name in classes:
                if name not in pieces:
                    pieces[name] = tuple(tokenizer.encode(name, add_special_tokens=False).ids)
            entities.append(Entity(spans[order[start]][0], spans[order[stop - 1]][-1] + 1,
                                   tuple(pieces[name] for name in classes)))
            wanted.extend(classes)
        tree = sentence_tree(encoding.ids, entities, max_branches=max_branches,
                             max_branch_tokens=max_branch_tokens, max_len=max_len)
        trees.append(tree)
        names.append([wanted[k] for k in tree.kept])
    return stack_trees(trees, max_len, pad_id), names


def class_ids(nouns: NounClasses, first: int,
              exclude: frozenset[str] = frozenset({"noun.Tops"})) -> dict[str, tuple[int]]:
    """One new token id per noun class short name, from ``first`` (a vocabulary's size) on, in
    lexicographer-file order (``act`` first): for ``text_trees(class_tokens=...)`` when branches should
    be tokens of their own rather than the vocabulary's word pieces."""
    names = [short_name(name) for name in nouns.lexnames if name.startswith("noun.") and name not in exclude]
    return {name: (first + k,) for k, name in enumerate(names)}


def coverage(names: Sequence[Sequence[str]], labels: Sequence[str]) -> dict[str, Any]:
    """How much knowledge the trees carry: the share of texts with at least one branch (``with_branch``),
    the mean branches a text (``mean_branches``), and per label how many of its texts hold a branch of
    each class (``by_label[label][class]``, a class counted once a text) beside its ``texts``."""
    by_label: dict[str, Counter] = {}
    texts = Counter(labels)
    for found, label in zip(names, labels, strict=True):
        by_label.setdefault(label, Counter()).update(set(found))
    return {"texts": len(names), "with_branch": sum(bool(found) for found in names) / max(1, len(names)),
            "mean_branches": sum(len(found) for found in names) / max(1, len(names)),
            "by_label": {label: {"texts": texts[label], **dict(by_label.get(label, Counter()).most_common())}
                         for label in sorted(texts)}}
