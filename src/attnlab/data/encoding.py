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
    """The tokenizer `make(texts, vocab_size)`, trained once and kept on disk (training it again
    would give the same file; the cache saves the time).

    The file is named by what the tokenizer is learned from: a hash of `texts` themselves, with
    `vocab_size`, `seed` and the kind of tokenizer (`make`), so a changed file behind `path=`, other
    options or another data set never reuse a stale vocabulary. `dataset` only names the file for a
    reader, and `options` (which shape the texts) are covered by the texts' hash. The file's own
    sha256 is written beside it; an entry that does not match it (damaged, or another file copied
    over it) is trained again and replaced: it is a cache.
    """
    from tokenizers import Tokenizer

    key = tokenizer_key(texts, vocab_size, seed, make)
    path = cache_dir() / "tokenizers" / f"{dataset}-{vocab_size}-{key}.json"
    stamp = path.with_name(path.name + ".sha256")
    try:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == stamp.read_text().strip():
            return Tokenizer.from_str(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        pass  # not there yet, or unreadable: made below
    tok = make(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tok.to_str().encode("utf-8")
    # each file whole or not at all, so two runs training at once never read half of one; the hash
    # goes last, so a kill between the two leaves an entry that is made again
    for target, content in ((path, data), (stamp, hashlib.sha256(data).hexdigest().encode())):
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        partial.write_bytes(content)
        os.replace(partial, target)
    return tok


def tokenizer_key(texts: list[str], vocab_size: int, seed: int, make: Callable) -> str:
    """A hash of everything a learned tokenizer depends on: each text (length-prefixed, so no two
    lists of texts run together into the same bytes), the vocabulary size, the seed and the trainer."""
    digest = hashlib.sha256(json.dumps({"vocab": vocab_size, "seed": seed,
                                        "kind": f"{make.__module__}.{make.__qualname__}"}).encode())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:24]


def class_ids(name: str, splits: dict[str, list[Example]]) -> tuple[tuple[str, ...], dict]:
    """The training split's label names, sorted, and each split's labels as class ids."""
    names = tuple(sorted({ex["label"] for ex in splits["train"]}))
    return names, {s: label_ids(name, s, examples, names) for s, examples in splits.items()}


def label_ids(name: str, split: str, examples: list[Example], names: tuple[str, ...]) -> torch.Tensor:
    """The examples' labels as ids into `names`; a DataError for a label `names` lacks."""
    index = {label: i for i, label in enumerate(names)}
    unseen = {ex["label"] for ex in examples} - set(index)
    if unseen:
        # `names` are the training split's labels, or a trained run's classes when it is scored on
        # another data set: say both sides, so the second case reads as what it is
        raise DataError(f"{name}: the {split} split has labels outside the classes {', '.join(names)}: "
                        f"{', '.join(sorted(unseen))}")
    return torch.tensor([index[ex["label"]] for ex in examples], dtype=torch.long)
