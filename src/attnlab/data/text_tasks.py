"""Real text-classification sets as training tasks: a WordPiece vocabulary learned from the
training split (HF `tokenizers`), texts as padded token ids, label names as class ids.

The vocabulary is learned from the training split only, so nothing of validation or test leaks
into it, and cached by (data set, options, seed, vocabulary size): training it twice gives the
same file, and the cache only saves the seconds it takes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from attnlab.data.base import TaskData
from attnlab.data.datasets.base import cache_dir
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
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)  # [PAD] is id 0
        for i, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
            row = encoding.ids[: self.max_len]
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


def cached_tokenizer(dataset: str, options: dict, seed: int, vocab_size: int, texts: list[str]):
    """The tokenizer for (dataset, options, seed, vocab_size), trained once and kept on disk."""
    from tokenizers import Tokenizer

    key = json.dumps({"dataset": dataset, "options": options, "seed": seed, "vocab": vocab_size},
                     sort_keys=True)
    name = f"{dataset}-{vocab_size}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"
    path = cache_dir() / "tokenizers" / name
    if path.exists():
        return Tokenizer.from_file(str(path))
    tok = train_tokenizer(texts, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    tok.save(str(partial))
    os.replace(partial, path)  # two runs training at once never read half a file
    return tok


def text_task(name: str, split: str, *, seed: int, vocab_size: int = TEXT_VOCAB, max_len: int = TEXT_MAX_LEN,
              **options: Any) -> tuple[TaskData, TextEncoder]:
    """One split of a real text-classification set as TaskData, and the encoder that made it."""
    from attnlab.data.datasets import dataset, load

    info = dataset(name)
    if info.kind != "text-classification":
        raise DataError(f"{name} is {info.kind}, not text classification")
    splits = load(name, seed=seed, **options)
    train_texts = [ex["text"] for ex in splits["train"]]
    encoder = TextEncoder(cached_tokenizer(name, options, seed, vocab_size, train_texts), max_len)
    names = sorted({ex["label"] for ex in splits["train"]})
    index = {label: i for i, label in enumerate(names)}
    examples = splits[SPLIT_NAMES[split]]
    unseen = {ex["label"] for ex in examples} - set(index)
    if unseen:
        raise DataError(f"{name}: the {split} split has labels the training split lacks: "
                        f"{', '.join(sorted(unseen))}")
    data = TaskData(encoder([ex["text"] for ex in examples]),
                    torch.tensor([index[ex["label"]] for ex in examples], dtype=torch.long),
                    kind="classify", vocab_size=encoder.vocab_size, num_classes=len(names),
                    pad_id=0, label_names=tuple(names))
    return data, encoder
