"""A real recommendation set as a training task: next-item prediction over users' histories,
scored as SASRec (Kang & McAuley, 2018) scores it.

Leave-one-out: a user's last item is the test target and the one before it the validation
target; training reads the rest. Each validation and test example ranks its true item among
`negatives` items the user never interacted with, sampled once from the seed, so every model
(and the most-popular baseline) ranks the same candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch

from attnlab.data.base import IGNORE_INDEX, TaskData
from attnlab.data.real_tasks import read_splits
from attnlab.errors import DataError

MAX_LEN, NEGATIVES = 50, 100  # defaults: items of history a model reads; negatives per target


@dataclass(frozen=True)
class ItemIndex:
    """The catalogue as model ids (1…n; 0 is padding) and each item's training popularity."""

    items: tuple[str, ...]  # items[i - 1] is the data set's id of model id i
    popularity: torch.Tensor  # (n + 1,) interactions per model id in the training split

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items, 1)}

    def ids(self, items: list[str]) -> list[int]:
        """Model ids of the data set's item ids."""
        return [self._ids[item] for item in items]


def recommendation_splits(name: str, *, seed: int, max_len: int = MAX_LEN,
                          negatives: int = NEGATIVES, **options: Any
                          ) -> tuple[dict[str, TaskData], ItemIndex]:
    """train (histories cut into windows of `max_len`, a target at every position) and val / test
    (the history before the held-out item, that item as the last position's target, and its
    candidates), with the item index that maps the set's ids to model ids."""
    splits = read_splits(name, "recommendation", seed, options)
    catalogue = sorted({i for examples in splits.values() for ex in examples for i in ex["items"]},
                       key=lambda item: (len(item), item))  # numeric ids in numeric order
    if negatives >= len(catalogue):
        raise DataError(f"{name}: negatives={negatives}, but the catalogue has only "
                        f"{len(catalogue)} items")
    index = ItemIndex(tuple(catalogue), torch.zeros(len(catalogue) + 1))
    users = [[index.ids(split[u]["items"]) for split in (splits["train"], splits["val"],
                                                          splits["test"])]
             for u in range(len(splits["train"]))]
    train = [history for history, _, _ in users]
    for history in train:
        index.popularity.index_add_(0, torch.tensor(history), torch.ones(len(history)))
    rng = np.random.default_rng(seed)
    val = [(h, v[0], _negatives(rng, h + v + t, len(catalogue), negatives)) for h, v, t in users]
    test = [(h + v, t[0], _negatives(rng, h + v + t, len(catalogue), negatives))
            for h, v, t in users]
    n = len(catalogue)
    return {"train": _windows(train, max_len, n), "val": _held_out(val, max_len, n),
            "test": _held_out(test, max_len, n)}, index


def _negatives(rng: np.random.Generator, seen: list[int], n: int, k: int) -> list[int]:
    unseen = np.setdiff1d(np.arange(1, n + 1), seen)
    return rng.choice(unseen, size=k, replace=False).tolist()


def _windows(histories: list[list[int]], max_len: int, n: int) -> TaskData:
    """Every history as input → next-item targets, cut from its end into windows of max_len,
    left-padded (the newest item always sits in the last slot)."""
    inputs, labels = [], []
    for items in histories:
        for end in range(len(items), 1, -max_len):
            start = max(0, end - 1 - max_len)
            inputs.append(_left_pad(items[start:end - 1], max_len, 0))
            labels.append(_left_pad(items[start + 1:end], max_len, IGNORE_INDEX))
    return TaskData(torch.tensor(inputs), torch.tensor(labels), kind="rank", vocab_size=n + 1,
                    pad_id=0)


def _held_out(rows: list[tuple[list[int], int, list[int]]], max_len: int, n: int) -> TaskData:
    inputs = [_left_pad(history[-max_len:], max_len, 0) for history, _, _ in rows]
    labels = torch.full((len(rows), max_len), IGNORE_INDEX)
    labels[:, -1] = torch.tensor([target for _, target, _ in rows])
    candidates = torch.tensor([[target, *negs] for _, target, negs in rows])
    return TaskData(torch.tensor(inputs), labels, kind="rank", vocab_size=n + 1, pad_id=0,
                    candidates=candidates)


def _left_pad(items: list[int], length: int, fill: int) -> list[int]:
    return [fill] * (length - len(items)) + items
