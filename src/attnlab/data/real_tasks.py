"""Real data sets as training tasks: all three splits of a text or image classification set as
TaskData, with label names as class ids.

Text becomes padded token ids through a WordPiece vocabulary (HF `tokenizers`); images become
standardised float pixels. Both learn only from the training split (the vocabulary, the pixel
statistics, the label set), so nothing of validation or test leaks in.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from attnlab.data.base import TaskData
from attnlab.data.datasets.base import Example, cache_dir
from attnlab.errors import DataError

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"
TEXT_MAX_LEN, TEXT_VOCAB = 64, 8000  # defaults: tokens per text (longer ones are cut), vocabulary
# our split names → the data sets' names
SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


@dataclass(frozen=True)
class TextEncoder:
    """Texts → (N, max_len) token ids, with [CLS] first and [PAD] (id 0) after the text."""

    tokenizer: Any  # tokenizers.Tokenizer
    max_len: int

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]) -> torch.LongTensor:
        return pad_rows([e.ids for e in self.tokenizer.encode_batch(list(texts))], self.max_len)


def pad_rows(rows: list[list[int]], max_len: int) -> torch.LongTensor:
    """Token id rows as (N, max_len): cut to max_len, padded with id 0 ([PAD]) after."""
    ids = torch.zeros(len(rows), max_len, dtype=torch.long)
    for i, row in enumerate(rows):
        row = row[:max_len]
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids


def train_tokenizer(texts: list[str], vocab_size: int):
    """A lower-casing WordPiece tokenizer (BERT's normalisation) learned from `texts`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK, CLS],
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{CLS} $A",
                                                       special_tokens=[(CLS, tok.token_to_id(CLS))])
    return tok


def stored_tokenizer(dataset: str, options: dict, seed: int, vocab_size: int, texts: list[str],
                     make: Callable[[list[str], int], Any] = train_tokenizer):
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


def text_splits(name: str, *, seed: int, vocab_size: int = TEXT_VOCAB, max_len: int = TEXT_MAX_LEN,
                **options: Any) -> tuple[dict[str, TaskData], TextEncoder]:
    """train / val / test of a real text-classification set, and the encoder that made them."""
    splits = read_splits(name, "text-classification", seed, options)
    texts = [ex["text"] for ex in splits["train"]]
    encoder = TextEncoder(stored_tokenizer(name, options, seed, vocab_size, texts), max_len)
    names, labels = _class_ids(name, splits)
    data = {s: TaskData(encoder([ex["text"] for ex in examples]), labels[s], kind="classify",
                        vocab_size=encoder.vocab_size, num_classes=len(names), pad_id=0,
                        label_names=names) for s, examples in splits.items()}
    return data, encoder


def image_splits(name: str, *, seed: int, **options: Any) -> dict[str, TaskData]:
    """train / val / test of a real image-classification set: inputs (N, 1, H, W) float32,
    standardised with the training split's mean and spread."""
    splits = read_splits(name, "image-classification", seed, options)
    pixels = {s: np.stack([ex["image"] for ex in examples]).astype(np.float32)
              for s, examples in splits.items()}
    mean, std = float(pixels["train"].mean()), float(pixels["train"].std())
    names, labels = _class_ids(name, splits)
    return {s: TaskData(torch.from_numpy((p - mean) / std).unsqueeze(1), labels[s],
                        kind="classify", vocab_size=0, num_classes=len(names), label_names=names)
            for s, p in pixels.items()}


def read_splits(name: str, kind: str, seed: int, options: dict) -> dict[str, list[Example]]:
    """The data set's splits under our split names, once it is known to be of `kind`."""
    from attnlab.data.datasets import dataset, load

    info = dataset(name)
    if info.kind != kind:
        raise DataError(f"{name} is {info.kind}, not {kind.replace('-', ' ')}")
    loaded = load(name, seed=seed, **options)
    return {ours: loaded[theirs] for ours, theirs in SPLIT_NAMES.items()}


def _class_ids(name: str, splits: dict[str, list[Example]]) -> tuple[tuple[str, ...], dict]:
    """The training split's label names, sorted, and each split's labels as class ids."""
    names = tuple(sorted({ex["label"] for ex in splits["train"]}))
    index = {label: i for i, label in enumerate(names)}
    for split, examples in splits.items():
        unseen = {ex["label"] for ex in examples} - set(index)
        if unseen:
            raise DataError(f"{name}: the {split} split has labels the training split lacks: "
                            f"{', '.join(sorted(unseen))}")
    return names, {s: torch.tensor([index[ex["label"]] for ex in examples], dtype=torch.long)
                   for s, examples in splits.items()}
