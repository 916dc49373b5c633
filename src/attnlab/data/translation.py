"""A real translation set as a training task: source and target token ids from two BPE
vocabularies (HF `tokenizers`), one per language, learned from the training split only.

Targets are framed ``[BOS] … [EOS]`` and padded with id 0, the ids `Seq2Seq` expects. The
vocabularies keep case and spacing (a SentencePiece-style metaspace), so decoding gives text
that BLEU can score against the untouched references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from attnlab.data.base import TaskData
from attnlab.data.datasets.base import Example
from attnlab.data.real_tasks import pad_rows, read_splits, stored_tokenizer

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"  # ids 0, 1, 2, 3: Seq2Seq's defaults
BOS_ID, EOS_ID = 1, 2
MAX_LEN, VOCAB = 96, 8000  # defaults: tokens per side (longer texts are cut), vocabulary per language


def train_bpe(texts: list[str], vocab_size: int):
    """A cased byte-pair vocabulary over metaspace-split words, which decodes back to the text."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS, UNK], show_progress=False))
    return tok


@dataclass(frozen=True)
class TranslationEncoder:
    """Texts ↔ token ids for both sides of a translation pair."""

    source: Any  # tokenizers.Tokenizer
    target: Any
    max_len: int

    def encode_source(self, texts: list[str]) -> torch.LongTensor:
        """(N, max_len) ids, padded with 0."""
        return pad_rows([e.ids for e in self.source.encode_batch(list(texts))], self.max_len)

    def encode_target(self, texts: list[str]) -> torch.LongTensor:
        """(N, max_len) ids framed [BOS] … [EOS]; a text that is too long loses its end, not [EOS]."""
        rows = [[BOS_ID, *e.ids[: self.max_len - 2], EOS_ID] for e in self.target.encode_batch(list(texts))]
        return pad_rows(rows, self.max_len)

    def decode_target(self, ids: torch.Tensor) -> list[str]:
        """Generated rows (starting with [BOS]) → texts, cut at the first [EOS]."""
        rows = []
        for row in ids.tolist():
            row = row[1:]  # [BOS]
            rows.append(row[: row.index(EOS_ID)] if EOS_ID in row else row)
        return self.target.decode_batch(rows, skip_special_tokens=True)


def translation_splits(name: str, *, seed: int, vocab_size: int = VOCAB, max_len: int = MAX_LEN,
                       **options: Any) -> tuple[dict[str, TaskData], TranslationEncoder,
                                                dict[str, list[Example]]]:
    """train / val / test as TaskData (inputs: source ids, labels: framed target ids), the
    encoder that made them, and the examples themselves (the references BLEU reads)."""
    splits = read_splits(name, "translation", seed, options)
    train = splits["train"]
    encoder = TranslationEncoder(
        *(stored_tokenizer(f"{name}-{side}", options, seed, vocab_size,
                           [ex[side] for ex in train], train_bpe) for side in ("source", "target")),
        max_len)
    data = {s: TaskData(encoder.encode_source([ex["source"] for ex in examples]),
                        encoder.encode_target([ex["target"] for ex in examples]), kind="translate",
                        vocab_size=encoder.source.get_vocab_size(), pad_id=0,
                        target_vocab_size=encoder.target.get_vocab_size())
            for s, examples in splits.items()}
    return data, encoder, splits
