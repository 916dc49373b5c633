"""Next-item recommendation over users' histories, scored as SASRec (Kang & McAuley, 2018) scores it.

Leave-one-out: a user's last item is the test target and the one before it the validation
target; training reads the rest, cut into windows with a target at every position. Each
validation and test example ranks its true item among `negatives` items the user never interacted
with, sampled once from the seed, so every model (and the most-popular baseline) ranks the same
candidates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn

from attnlab.data.base import TaskData
from attnlab.data.datasets import DATASETS, item_titles
from attnlab.errors import DataError, InputError
from attnlab.ids import IGNORE_INDEX, PAD_ID
from attnlab.runfiles import reading
from attnlab.tasks.base import Inspection, Prepared, Step, Task, attention_layers, read_examples
from attnlab.tasks.service import Body, Service
from attnlab.train.metrics import model_ranking_scores, popularity_scores, ranking_scores

MAX_LEN, NEGATIVES = 50, 100  # defaults: items of history a model reads; negatives per target
MAX_K = 100  # the most items one served request may ask for


@dataclass(frozen=True)
class ItemIndex:
    """The catalogue as model ids (1…n; PAD_ID 0 is padding), each item's training popularity,
    and the history length the model reads."""

    items: tuple[str, ...]  # items[i - 1] is the data set's id of model id i
    popularity: torch.Tensor  # (n + 1,) interactions per model id in the training split
    max_len: int

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {item: i for i, item in enumerate(self.items, 1)}

    def __contains__(self, item: str) -> bool:
        return item in self._ids

    def ids(self, items: list[str]) -> list[int]:
        """Model ids of the data set's item ids."""
        return [self._ids[item] for item in items]


class Recommender(nn.Module):
    """A trained SequentialRecommender (`.model`) with its item catalogue: `recommend(history)`
    gives the data set's item ids. Called on model ids (B, L) it is the bare model: logits."""

    def __init__(self, model: nn.Module, items: ItemIndex) -> None:
        super().__init__()
        self.model, self.items, self.max_len = model, items, items.max_len

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return self.model(items)

    def recommend(self, history: list[str], k: int = 10) -> list[str]:
        """The k items most likely next after `history` (oldest first), leaving out those in it."""
        return self.recommend_many([history], [k])[0]

    @torch.no_grad()
    def recommend_many(self, histories: list[list[str]], ks: list[int]) -> list[list[str]]:
        """`recommend` for many histories in one model call: ks[i] items for histories[i]."""
        unknown = [item for history in histories for item in history if item not in self.items]
        if unknown:
            raise InputError(f"items not in the catalogue: {', '.join(unknown[:5])}")
        ids = [self.items.ids(history) for history in histories]
        rows = [_left_pad(history[-self.max_len:], self.max_len, PAD_ID) for history in ids]
        scores = self.model(torch.tensor(rows))[:, -1]
        found = []
        for row, seen, k in zip(scores, ids, ks, strict=True):
            row[seen] = float("-inf")
            found.append([self.items.items[i - 1] for i in row.topk(k).indices.tolist()])
        return found


class Recommendation(Task):
    kind = "recommendation"
    summary = "the next item of a user's history"
    models = ("recommender",)
    settings: ClassVar[dict[str, int]] = {"max_len": MAX_LEN, "negatives": NEGATIVES}
    main_metric = "test_ndcg10"
    monitor = "val_ndcg10"
    scores = ("hr10", "ndcg10")

    def prepare(self, exp, encoders: ItemIndex | None = None) -> Prepared:
        t, seed = exp.task, exp.train.seed
        read = read_examples(exp)
        splits, max_len, negatives = read.splits, read.settings["max_len"], read.settings["negatives"]
        catalogue = sorted({i for examples in splits.values() for ex in examples for i in ex["items"]},
                           key=lambda item: (len(item), item))  # numeric ids in numeric order
        if negatives >= len(catalogue):
            raise DataError(f"{t.name}: negatives={negatives}, but the catalogue has only "
                            f"{len(catalogue)} items")
        index = ItemIndex(tuple(catalogue), torch.zeros(len(catalogue) + 1), max_len)
        users = [[index.ids(split[u]["items"]) for split in (splits["train"], splits["validation"],
                                                              splits["test"])]
                 for u in range(len(splits["train"]))]
        train = [history for history, _, _ in users]
        for history in train:
            index.popularity.index_add_(0, torch.tensor(history), torch.ones(len(history)))
        rng = np.random.default_rng(seed)
        n = len(catalogue)
        val = [(h, v[0], _negatives(rng, h + v + t_, n, negatives)) for h, v, t_ in users]
        test = [(h + v, t_[0], _negatives(rng, h + v + t_, n, negatives)) for h, v, t_ in users]
        return Prepared(_windows(train, max_len, n), _held_out(val, max_len, n),
                        _held_out(test, max_len, n), encoders=index)

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        return {"num_items": data.vocab_size - 1, "max_len": data.inputs.shape[1],
                "programs": exp.attention}

    def step(self, model, batch) -> Step:
        tokens, labels, *candidates = batch
        logits = model(tokens)
        scores = {}
        if candidates:  # rank the held-out item among its candidates, at the last position
            hit, ndcg = ranking_scores(logits[:, -1].gather(1, candidates[0]))
            scores = {"hr10": hit.mean(), "ndcg10": ndcg.mean()}
        return Step(logits.flatten(0, 1), labels.flatten(), scores)

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        return {**model_ranking_scores(model, prepared.test, exp.train.batch_size),
                **popularity_scores(prepared.encoders.popularity, prepared.test)}

    def save_encoders(self, encoders: ItemIndex, out: Path) -> None:
        (out / "items.json").write_text(json.dumps({
            "items": list(encoders.items), "max_len": encoders.max_len,
            "popularity": encoders.popularity.tolist()}))

    def load_encoders(self, out: Path, exp) -> ItemIndex:
        with reading(out / "items.json"):
            saved = json.loads((out / "items.json").read_text())
            return ItemIndex(tuple(saved["items"]), torch.tensor(saved["popularity"]),
                             saved["max_len"])

    def predictor(self, model, encoders: ItemIndex, exp) -> Recommender:
        return Recommender(model, encoders)

    def print_predictions(self, predictor: Recommender, inputs, exp, echo, *, k: int) -> None:
        titles = _titles(exp.task.name)
        for rank, item in enumerate(predictor.recommend(inputs, k), 1):
            echo(f"{rank:>3}  {item:>6}  {titles.get(item, '')}".rstrip())


    def service(self, predictor: Recommender, exp) -> Service:
        """`POST /recommend {"history": ["item id", ...], "k": 10}` → the k items most likely next
        (oldest first in the history), with titles where the data set has them."""
        catalogue, titles = predictor.items, _titles(exp.task.name)

        def items(body: History) -> list[tuple[list[str], int]]:
            if not body.history:
                raise InputError("history: empty; give at least one item id, oldest first")
            for i, item in enumerate(body.history):
                if item not in catalogue:
                    raise InputError(f"history[{i}]: item '{item:.40}' is not in the catalogue of "
                                     f"{len(catalogue.items)} items")
            if body.k > len(catalogue.items) - len(set(body.history)):
                raise InputError(f"k: {body.k}, but only {len(catalogue.items) - len(set(body.history))} "
                                 "items are left beside the history")
            return [(body.history, body.k)]

        def run(asked: list[tuple[list[str], int]]) -> list[dict]:
            found = predictor.recommend_many([h for h, _ in asked], [k for _, k in asked])
            return [{"items": [{"item": item, **({"title": titles[item]} if item in titles else {})}
                               for item in row]} for row in found]

        def examples(test: Prepared) -> list[dict]:
            return [{"history": [catalogue.items[i - 1] for i in row if i != PAD_ID], "k": 10}
                    for row in test.test.inputs.tolist() if any(row)]

        return Service("/recommend", History, items, run, lambda body, answers: answers[0], examples,
                       {"k": MAX_K, "history": f"the last {predictor.max_len} items are read"})

    def inspection(self, model, encoders: ItemIndex, exp, *, text=None, image=None,
                   example=None) -> Inspection:
        if image is not None:
            raise InputError(f"{exp.name} recommends items, not images: give a history of item "
                             "ids (\"50 172 133\") or --example N")
        if example is None:
            history = (text or "").replace(",", " ").split()
            unknown = [item for item in history if item not in encoders]
            if not history or unknown:
                raise InputError(f"give a history of item ids from the catalogue, oldest first "
                                 f"(\"50 172 133\"); not in it: {', '.join(unknown[:5]) or 'nothing given'}")
            ids = encoders.ids(history)[-encoders.max_len:]
            example = torch.tensor([_left_pad(ids, encoders.max_len, PAD_ID)])
        items = example[:1]
        titles = _titles(exp.task.name)
        labels = ["(none)" if i == PAD_ID else
                  titles.get(encoders.items[i - 1], f"item {encoders.items[i - 1]}")
                  for i in items[0].tolist()]
        real = items[0].ne(PAD_ID).nonzero().flatten().tolist()
        with torch.no_grad():
            scores = model(items)[0, -1]
        scores[items[0]] = float("-inf")
        best = encoders.items[int(scores.argmax()) - 1]
        return Inspection(
            lambda: model(items), {"items": labels},
            {name: ("items", "items") for name in attention_layers(model)},
            shown={"items": real}, rollout="items",
            title=f"{exp.name}: {len(real)} items of history → next: {titles.get(best, best)}",
            notes=["the history runs oldest first; the last row is what the next item is "
                   "predicted from", f"padding is left out: {len(real)} of {len(labels)} positions shown"])


class History(Body):
    history: list[str]  # item ids, oldest first
    k: int = Field(10, ge=1, le=MAX_K)


def _titles(name: str) -> dict[str, str]:
    """Item id → title for data set `name`, when the set has titles and they are here."""
    try:
        return item_titles(name) if name in DATASETS else {}
    except DataError:  # the model still recommends; only the names are missing
        return {}


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
            inputs.append(_left_pad(items[start:end - 1], max_len, PAD_ID))
            labels.append(_left_pad(items[start + 1:end], max_len, IGNORE_INDEX))
    return TaskData(torch.tensor(inputs), torch.tensor(labels), vocab_size=n + 1, pad_id=PAD_ID)


def _held_out(rows: list[tuple[list[int], int, list[int]]], max_len: int, n: int) -> TaskData:
    inputs = [_left_pad(history[-max_len:], max_len, PAD_ID) for history, _, _ in rows]
    labels = torch.full((len(rows), max_len), IGNORE_INDEX)
    labels[:, -1] = torch.tensor([target for _, target, _ in rows])
    candidates = torch.tensor([[target, *negs] for _, target, negs in rows])
    return TaskData(torch.tensor(inputs), labels, vocab_size=n + 1, pad_id=PAD_ID, candidates=candidates)


def _left_pad(items: list[int], length: int, fill: int) -> list[int]:
    return [fill] * (length - len(items)) + items
