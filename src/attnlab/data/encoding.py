"""What real data sets share on their way to token ids: padded id rows, tokenizers learned once
and kept on disk, the three splits under our names, and label names as class ids. Each task kind
(`attnlab.tasks`) builds its encoders from these."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import torch

from attnlab.data.datasets.base import Example, cache_dir
from attnlab.errors import DataError
from attnlab.ids import PAD_ID


def pad_rows(rows: list[list[int]], max_len: int) -> torch.LongTensor:
    """Token id rows as (N, max_len): cut to max_len, padded with PAD_ID after."""
    ids = torch.full((len(rows), max_len), PAD_ID, dtype=torch.long)
    for i, row in enumerate(rows):
        row = row[:max_len]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids


def stored_tokenizer(dataset: str, options: dict, seed: int, vocab_size: int, texts: list[str],
                     make: Callable[[list[str], int], Any]):
    """The tokenizer `make(texts, vocab_size)` for (dataset, options, seed, vocab_size), trained
    once and kept on disk (training it again would give the same file; the cache saves the time)."""
    from tokenizers import Tokenizer

    key = json.dumps({"dataset": dataset, "options": options, "seed": seed, "vocab": vocab_size},
                     sort_keys=True)
    name = f"{dataset}-{vocab_size}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    path = cache_dir() / "tokenizers" / name
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = make(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    tok.save(str(partial))
    os.replace(partial, path)  # two runs training at once never read half a file
    return tok


def class_ids(name: str, splits: dict[str, list[Example]]) -> tuple[tuple[str, ...], dict]:
    """The training split's label names, sorted, and each split's labels as class ids."""
    names = tuple(sorted({ex["label"] for ex in splits["train"]}))
    return names, {s: label_ids(name, s, examples, names) for s, examples in splits.items()}


def label_ids(name: str, split: str, examples: list[Example], names: tuple[str, ...]) -> torch.Tensor:
    """The examples' labels as ids into `names`; a DataError for a label `names` lacks."""
    index = {label: i for i, label in enumerate(names)}
    unseen = {ex["label"] for ex in examples} - set(index)
    if unseen:
        raise DataError(f"{name}: the {split} split has labels the training split lacks: "
                        f"{', '.join(sorted(unseen))}")
    return torch.tensor([index[ex["label"]] for ex in examples], dtype=torch.long)
