"""Real text classification: texts become padded token ids through a WordPiece vocabulary (HF
`tokenizers`) learned from the training split only; runs report macro F1 beside the majority rate,
and `attnlab.load` gives a `TextClassifier` whose `predict(texts)` returns label names."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from attnlab.data.base import TaskData
from attnlab.data.encoding import pad_rows, stored_tokenizer
from attnlab.errors import InputError
from attnlab.ids import PAD_ID
from attnlab.runfiles import reading
from attnlab.tasks.base import (
    Classifier,
    Inspection,
    Prepared,
    Task,
    attention_layers,
    class_labels,
    pooled_rows,
    read_examples,
    with_learned_cls,
)
from attnlab.tasks.service import Service, Texts, classified, listed, texts_within
from attnlab.train.metrics import classification_scores

PAD, UNK, CLS = "[PAD]", "[UNK]", "[CLS]"  # ids 0, 1, 2
MAX_LEN, VOCAB = 64, 8000  # defaults: tokens per text (longer ones are cut), vocabulary


@dataclass(frozen=True)
class TextEncoder:
    """Texts → (N, max_len) token ids, with [CLS] first and [PAD] after the text; label names."""

    tokenizer: Any  # tokenizers.Tokenizer
    max_len: int
    label_names: tuple[str, ...]

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: list[str]) -> torch.LongTensor:
        return pad_rows([e.ids for e in self.tokenizer.encode_batch(list(texts))], self.max_len)


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


class TextClassifier(Classifier):
    """A trained text classifier with its tokenizer: `predict(texts)` gives label names."""

    def encode(self, texts: list[str] | str) -> Tensor:
        return self.encoder([texts] if isinstance(texts, str) else list(texts))


class TextClassification(Task):
    kind = "text-classification"
    summary = "one label per text"
    models = ("encoder_classifier", "pretrained_classifier")
    pretrained_model = "pretrained_classifier"
    settings: ClassVar[dict[str, int]] = {"vocab_size": VOCAB, "max_len": MAX_LEN}

    def prepare(self, exp, encoders: TextEncoder | None = None) -> Prepared:
        t, read = exp.task, read_examples(exp)
        splits = read.splits

        def fit(names: tuple[str, ...]) -> TextEncoder:
            from attnlab.models import model_class

            max_len = read.settings["max_len"]
            # a pretrained model reads with its own tokenizer; otherwise one is learned from train
            tokenizer = model_class(self.model_kind(exp)).tokenizer(exp.model, max_len)
            if tokenizer is None:
                texts = [ex["text"] for ex in splits["train"]]
                tokenizer = stored_tokenizer(t.name, read.options, exp.train.seed,
                                             read.settings["vocab_size"], texts, train_tokenizer)
            return TextEncoder(tokenizer, max_len, names)

        encoders, labels = class_labels(t, splits, encoders, fit)
        encoders = self.with_prior(exp, encoders)
        names = encoders.label_names
        data = {s: TaskData(encoders([ex["text"] for ex in examples]), labels[s],
                            vocab_size=encoders.vocab_size, num_classes=len(names), pad_id=PAD_ID,
                            label_names=names) for s, examples in splits.items()}
        return Prepared(**data, encoders=encoders)

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        return {**super().model_settings(exp, data), "num_classes": data.num_classes,
                "pad_id": data.pad_id, "pooling": exp.model.pooling}

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        return classification_scores(model, prepared.test, exp.train.batch_size, exp.task.positive)

    def save_encoders(self, encoders: TextEncoder, out: Path) -> None:
        encoders = getattr(encoders, "base", encoders)  # a prior's wrapper is made again on load
        encoders.tokenizer.save(str(out / "tokenizer.json"))
        (out / "labels.json").write_text(json.dumps({"labels": list(encoders.label_names),
                                                     "max_len": encoders.max_len}))

    def load_encoders(self, out: Path, exp) -> TextEncoder:
        from tokenizers import Tokenizer

        with reading(out / "labels.json"):
            saved = json.loads((out / "labels.json").read_text())
            labels, max_len = tuple(saved["labels"]), int(saved["max_len"])
        with reading(out / "tokenizer.json"):
            tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
        return self.with_prior(exp, TextEncoder(tokenizer, max_len, labels))

    def predictor(self, model, encoders: TextEncoder, exp) -> TextClassifier:
        return TextClassifier(model, encoders)

    def print_predictions(self, predictor: TextClassifier, inputs, exp, echo, *, k: int) -> None:
        predictor.print_best(inputs, inputs, echo)

    def service(self, predictor: TextClassifier, exp) -> Service:
        """`POST /classify {"texts": [...]}` → a label, its probability and every class's per text."""
        encoder = getattr(predictor.encoder, "base", predictor.encoder)  # a prior's wrapper: its base
        tokenizer, most = encoder.tokenizer, encoder.max_len

        def examples(test: Prepared) -> list[dict]:
            return [{"texts": [text]} for text in test_texts(tokenizer, test.test.inputs, most)]

        return Service("/classify", Texts, texts_within(tokenizer, most),
                       lambda texts: classified(predictor.predict_proba(texts), predictor.label_names),
                       listed("predictions"), examples, {"tokens": most}, counted="texts")

    def inspection(self, model, encoders: TextEncoder, exp, *, text=None, image=None,
                   example=None) -> Inspection:
        if image is not None:
            raise InputError(f"{exp.name} classifies text, not images: give the text to look at")
        ids = encoders([text]) if example is None else example[:1]
        # one text needs no padding after it (positions count from the start, so nothing moves)
        ids = ids[:, : max(1, int(ids.ne(PAD_ID).sum()))]
        real = ids[0].ne(PAD_ID).nonzero().flatten().tolist()
        labels, note = _token_labels(encoders.tokenizer, ids[0].tolist())
        if getattr(model, "cls", None) is not None:  # the model puts a learned [CLS] in front
            labels, real = ["[CLS]", *labels], [0, *(i + 1 for i in real)]
        with torch.no_grad():
            probs = model(ids).softmax(-1)[0]
        best = int(probs.argmax())
        shown = encoders.tokenizer.decode([i for i in ids[0].tolist() if i != PAD_ID])
        title = (f"{exp.name}: \u201c{shown[:120]}{'…' if len(shown) > 120 else ''}\u201d → "
                 f"{encoders.label_names[best]} ({float(probs[best]):.2f})")
        return Inspection(lambda: model(ids), {"tokens": labels},
                          {name: ("tokens", "tokens") for name in attention_layers(model)},
                          shown={"tokens": real}, rollout="tokens", title=title,
                          notes=[note])

    # -- faithfulness: erasing a token removes it ------------------------------------------------

    def units(self, model, inputs: Tensor) -> Tensor:
        return with_learned_cls(model, _tokens(model, inputs))

    def readout(self, model, inputs: Tensor) -> Tensor:
        return pooled_rows(model, with_learned_cls(model, _real(model, inputs)))

    def erase(self, model, inputs: Tensor, keep: Tensor) -> Tensor:
        kept = keep[:, keep.shape[1] - inputs.shape[1]:] | ~_tokens(model, inputs)
        kept = kept & _real(model, inputs)
        # the kept tokens first, in their order (a stable sort), then padding
        order = (~kept).to(torch.int8).argsort(dim=1, stable=True)
        after = torch.arange(inputs.shape[1], device=inputs.device) >= kept.sum(1, keepdim=True)
        pad = PAD_ID if model.pad_id is None else model.pad_id
        return inputs.gather(1, order).masked_fill(after, pad)

    def trim(self, model, inputs: Tensor) -> Tensor:
        """Without the columns of padding after every row's last token (masked keys, left out of
        mean pooling: they change nothing)."""
        used = _real(model, inputs).any(0).nonzero()
        return inputs[:, :int(used.max()) + 1] if len(used) else inputs[:, :1]

    def erasing(self) -> str:
        return ("erased tokens are removed and the rest packed in their order, padded at the end; "
                "[CLS] is always kept")


def test_texts(tokenizer, ids: Tensor, most: int) -> list[str]:
    """The texts of saved token ids (lower-cased, as the tokenizer read them), those whose
    tokens fit in `most` once read again."""
    texts = tokenizer.decode_batch([[i for i in row if i != PAD_ID] for row in ids.tolist()])
    return [t for t, e in zip(texts, tokenizer.encode_batch(texts), strict=True)
            if t.strip() and len(e.ids) <= most]


def _token_labels(tokenizer, ids: list[int]) -> tuple[list[str], str]:
    """A label per token id, and how to read them: WordPiece pieces as they are (## continues a
    word); byte-level BPE pieces (GPT-2, Llama-style tokenizers) decoded, so a piece that starts a
    word shows its space rather than 'Ġ'."""
    from tokenizers import decoders

    if isinstance(tokenizer.decoder, decoders.ByteLevel):
        return ([tokenizer.decode([i]) for i in ids],
                "tokens are byte-level pieces: one that starts a word begins with a space")
    return ([tokenizer.id_to_token(i) or UNK for i in ids],
            "## marks a word piece that continues the word before it")


def _real(model, inputs: Tensor) -> Tensor:
    """(B, L) True at the real tokens (not padding)."""
    if model.pad_id is None:
        return torch.ones_like(inputs, dtype=torch.bool)
    return inputs != model.pad_id


def _tokens(model, inputs: Tensor) -> Tensor:
    """(B, L) True at the tokens an explanation ranks: the real ones after the [CLS] the
    tokenizer puts first."""
    tokens = _real(model, inputs)
    tokens[:, 0] = False
    return tokens
