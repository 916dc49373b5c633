"""Trained models that read real data: the model with what made its ids (a tokenizer and label
names, two tokenizers, an item catalogue), saved beside the checkpoint and loaded back."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from attnlab.data.base import TaskData
from attnlab.data.real_tasks import TEXT_MAX_LEN, TextEncoder
from attnlab.data.recommendation import MAX_LEN as HISTORY_LEN
from attnlab.data.recommendation import ItemIndex
from attnlab.data.translation import MAX_LEN as TRANSLATION_LEN
from attnlab.data.translation import TranslationEncoder


class ReadsRealData(nn.Module):
    """A trained model (`.model`) with what turns real data into its ids."""

    model: nn.Module


class TextClassifier(ReadsRealData):
    """A trained classifier with its tokenizer: `predict(texts)` gives label names.

    Called on token ids (B, L) it is the bare model: logits (B, classes).
    """

    def __init__(self, model: nn.Module, encoder: TextEncoder, label_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.encoder, self.label_names = model, encoder, tuple(label_names)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    @torch.no_grad()
    def predict_proba(self, texts: list[str] | str) -> Tensor:
        """Class probabilities (N, classes), in the order of `label_names`."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.model(self.encoder(texts)).softmax(-1)

    def predict(self, texts: list[str] | str) -> list[str]:
        """The most probable label name for each text."""
        return [self.label_names[i] for i in self.predict_proba(texts).argmax(-1).tolist()]


class Translator(ReadsRealData):
    """A trained Seq2Seq with its two tokenizers: `predict(texts)` gives translations, decoded
    as the experiment's `decode` section says (beam search by default).

    Called on (source ids, shifted target ids) it is the bare model: logits.
    """

    def __init__(self, model: nn.Module, encoder: TranslationEncoder, decode) -> None:
        super().__init__()
        self.model, self.encoder, self.decode = model, encoder, decode

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        return self.model(src, tgt_in)

    @torch.no_grad()
    def translate_ids(self, src: Tensor, batch: int = 64, progress: bool = False) -> list[str]:
        """Translations of source ids (N, S), batched by length so little time goes on padding."""
        from rich.progress import track

        d, model = self.decode, self.model
        new_tokens = (d.max_len or self.encoder.max_len) - 1  # the row also holds [BOS]
        lengths = src.ne(0).sum(-1)
        order = lengths.argsort(descending=True).tolist()
        out: list[str] = [""] * len(order)
        chunks = range(0, len(order), batch)
        for start in track(chunks, description="translating the test split", disable=not progress):
            rows = order[start:start + batch]
            ids = src[rows][:, : int(lengths[rows].max().clamp(min=1))]
            generated = (model.greedy(ids, new_tokens) if d.beam_size == 1 else
                         model.beam(ids, d.beam_size, new_tokens, d.length_penalty))
            for row, text in zip(rows, self.encoder.decode_target(generated), strict=True):
                out[row] = text
        return out

    def predict(self, texts: list[str] | str) -> list[str]:
        """The translation of each text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.translate_ids(self.encoder.encode_source(texts))


class Recommender(ReadsRealData):
    """A trained SequentialRecommender with its item catalogue: `recommend(history)` gives the
    data set's item ids. Called on model ids (B, L) it is the bare model: logits."""

    def __init__(self, model: nn.Module, items: ItemIndex, max_len: int) -> None:
        super().__init__()
        self.model, self.items, self.max_len = model, items, max_len

    def forward(self, items: Tensor) -> Tensor:
        return self.model(items)

    @torch.no_grad()
    def recommend(self, history: list[str], k: int = 10) -> list[str]:
        """The k items most likely next after `history` (oldest first), leaving out those in it."""
        from attnlab.errors import InputError

        known = set(self.items.items)
        unknown = [item for item in history if item not in known]
        if unknown:
            raise InputError(f"items not in the catalogue: {', '.join(unknown[:5])}")
        ids = self.items.ids(history)
        recent = ids[-self.max_len:]
        scores = self.model(torch.tensor([[0] * (self.max_len - len(recent)) + recent]))[0, -1]
        scores[ids] = float("-inf")
        return [self.items.items[i - 1] for i in scores.topk(k).indices.tolist()]


def save_encoder(encoder, out: Path, label_names: tuple[str, ...] | None) -> None:
    """What turns real data into the model's ids, as files in the run folder."""
    if isinstance(encoder, TextEncoder):
        encoder.tokenizer.save(str(out / "tokenizer.json"))
        (out / "labels.json").write_text(json.dumps(list(label_names)))
    elif isinstance(encoder, TranslationEncoder):
        encoder.source.save(str(out / "source_tokenizer.json"))
        encoder.target.save(str(out / "target_tokenizer.json"))
    else:
        (out / "items.json").write_text(json.dumps({"items": list(encoder.items),
                                                    "popularity": encoder.popularity.tolist()}))


def load_encoder(out: Path, exp) -> tuple[object, TaskData] | None:
    """The saved encoder and an empty TaskData of the model's shape, or None (no files saved)."""
    from tokenizers import Tokenizer

    params = exp.task.params
    if (out / "tokenizer.json").exists():
        encoder = TextEncoder(Tokenizer.from_file(str(out / "tokenizer.json")),
                              params.get("max_len", TEXT_MAX_LEN))
        names = tuple(json.loads((out / "labels.json").read_text()))
        return encoder, TaskData(_ids(encoder.max_len), torch.zeros(0, dtype=torch.long),
                                 kind="classify", vocab_size=encoder.vocab_size,
                                 num_classes=len(names), pad_id=0, label_names=names)
    if (out / "source_tokenizer.json").exists():
        encoder = TranslationEncoder(Tokenizer.from_file(str(out / "source_tokenizer.json")),
                                     Tokenizer.from_file(str(out / "target_tokenizer.json")),
                                     params.get("max_len", TRANSLATION_LEN))
        return encoder, TaskData(_ids(encoder.max_len), _ids(encoder.max_len), kind="translate",
                                 vocab_size=encoder.source.get_vocab_size(), pad_id=0,
                                 target_vocab_size=encoder.target.get_vocab_size())
    if (out / "items.json").exists():
        saved = json.loads((out / "items.json").read_text())
        items = ItemIndex(tuple(saved["items"]), torch.tensor(saved["popularity"]))
        length = params.get("max_len", HISTORY_LEN)
        return items, TaskData(_ids(length), _ids(length), kind="rank",
                               vocab_size=len(items.items) + 1, pad_id=0)
    return None


def _ids(length: int) -> Tensor:
    return torch.zeros(0, length, dtype=torch.long)


def wrap(model: nn.Module, encoder, data: TaskData, exp) -> nn.Module:
    """The model with its encoder: a TextClassifier, Translator or Recommender."""
    if isinstance(encoder, TextEncoder):
        return TextClassifier(model, encoder, data.label_names)
    if isinstance(encoder, TranslationEncoder):
        return Translator(model, encoder, exp.decode)
    return Recommender(model, encoder, data.inputs.shape[1])
