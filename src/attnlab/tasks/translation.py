"""Translation: source and target token ids from two BPE vocabularies (HF `tokenizers`), one per
language, learned from the training split only; a Seq2Seq trained teacher-forced, scored by BLEU and
chrF (sacreBLEU) on its beam-searched test translations beside copying the source.

Targets are framed ``[BOS] … [EOS]`` and padded with PAD_ID, the ids `Seq2Seq` expects. The
vocabularies keep case and spacing (a SentencePiece-style metaspace), so decoding gives text that
BLEU can score against the untouched references.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attnlab.data.base import TaskData
from attnlab.data.encoding import pad_rows, stored_tokenizer
from attnlab.errors import InputError
from attnlab.ids import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID
from attnlab.lang.masks import Causal
from attnlab.lang.program import Program
from attnlab.runfiles import read_json, reading
from attnlab.tasks.alignments import alignment_scores, cross_layers, has_alignments, token_pairs
from attnlab.tasks.base import (
    Axis,
    Inspection,
    Prepared,
    Step,
    Task,
    attention_layers,
    longest,
    read_examples,
)
from attnlab.tasks.service import Service, Texts, listed, texts_within
from attnlab.train.metrics import translation_scores

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"  # ids 0, 1, 2, 3: Seq2Seq's defaults
MAX_LEN, VOCAB = 96, 8000  # defaults: tokens per side (longer texts are cut), vocabulary per language
EXAMPLES_FILE = "test_examples.json"


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
        """(N, max_len) ids, padded with PAD_ID."""
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


class Translator(nn.Module):
    """A trained Seq2Seq (`.model`) with its two tokenizers: `predict(texts)` gives translations,
    decoded as the experiment's `decode` section says (beam search by default).

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

        lengths = src.ne(PAD_ID).sum(-1)
        order = lengths.argsort(descending=True).tolist()
        out: list[str] = [""] * len(order)
        chunks = range(0, len(order), batch)
        for start in track(chunks, description="translating the test split", disable=not progress):
            rows = order[start:start + batch]
            ids = src[rows][:, : int(lengths[rows].max().clamp(min=1))]
            generated = self.generate(ids)
            for row, text in zip(rows, self.encoder.decode_target(generated), strict=True):
                out[row] = text
        return out

    @torch.no_grad()
    def generate(self, src: Tensor) -> Tensor:
        """Target ids (N, ≤ 1 + max_len) from [BOS], as `decode` says: greedy or beam search."""
        d = self.decode
        new_tokens = (d.max_len or self.encoder.max_len) - 1  # the row also holds [BOS]
        if d.beam_size == 1:
            return self.model.greedy(src, new_tokens)
        return self.model.beam(src, d.beam_size, new_tokens, d.length_penalty)

    def predict(self, texts: list[str] | str) -> list[str]:
        """The translation of each text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.translate_ids(self.encoder.encode_source(texts))


class Translation(Task):
    kind = "translation"
    summary = "a target text for each source text"
    models = ("seq2seq",)
    settings: ClassVar[dict[str, int]] = {"vocab_size": VOCAB, "max_len": MAX_LEN}
    main_metric = "test_bleu"

    def prepare(self, exp, encoders: TranslationEncoder | None = None) -> Prepared:
        t, read = exp.task, read_examples(exp)
        splits = read.splits
        if encoders is None:
            train, vocab_size = splits["train"], read.settings["vocab_size"]
            encoders = TranslationEncoder(
                *(stored_tokenizer(f"{t.name}-{side}", read.options, exp.train.seed, vocab_size,
                                   [ex[side] for ex in train], train_bpe) for side in ("source", "target")),
                read.settings["max_len"])
        data = {s: TaskData(encoders.encode_source([ex["source"] for ex in examples]),
                            encoders.encode_target([ex["target"] for ex in examples]),
                            vocab_size=encoders.source.get_vocab_size(), pad_id=PAD_ID,
                            target_vocab_size=encoders.target.get_vocab_size(),
                            alignments=token_pairs(encoders, examples)
                            if has_alignments(examples) else None)
                for s, examples in splits.items()}
        return Prepared(**data, encoders=encoders, test_examples=splits["test"])

    def loader(self, data: TaskData, batch: int, shuffle: bool, generator: torch.Generator) -> DataLoader:
        if not shuffle:
            return super().loader(data, batch, shuffle, generator)
        lengths = data.inputs.ne(PAD_ID).sum(-1) + data.labels.ne(PAD_ID).sum(-1)
        return DataLoader(TensorDataset(*data.tensors()),
                          batch_sampler=LengthBatches(lengths, batch, generator))

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        encoder = exp.attention
        return {"src_vocab": data.vocab_size, "tgt_vocab": data.target_vocab_size, "pad_id": PAD_ID,
                "max_len": data.inputs.shape[1], "encoder_programs": encoder,
                "decoder_programs": exp.decoder_attention or with_causal(encoder),
                "cross_programs": exp.cross_attention or "scaled_dot ; softmax"}

    def step(self, model, batch) -> Step:
        src, tgt = _trim(batch[0]), _trim(batch[1])  # padding every row has costs time, not loss
        target = tgt[:, 1:].masked_fill(tgt[:, 1:] == PAD_ID, IGNORE_INDEX)
        return Step(model(src, tgt[:, :-1]).flatten(0, 1), target.flatten(), {})

    def export_inputs(self, batch) -> tuple[Tensor, ...]:
        src, tgt = _trim(batch[0]), _trim(batch[1])
        return src, tgt[:, :-1]  # the seq2seq forward, as `step` calls it

    def export_axes(self, model) -> tuple[dict[int, Axis], ...]:
        most = longest(model)  # targets are framed in max_len; tgt_in drops the last token
        return ({0: Axis("batch"), 1: Axis("source", most)},
                {0: Axis("batch"), 1: Axis("target", None if most is None else most - 1)})

    def compare_exported(self, eager: Translator, exported: Translator, prepared: Prepared,
                         exp) -> dict[str, Any]:
        """The greedy translations of the first 50 test sentences, text for text."""
        greedy = exp.decode.model_copy(update={"beam_size": 1})
        sources = prepared.test.inputs[:50]
        ours, theirs = (Translator(p.model, p.encoder, greedy).translate_ids(sources)
                        for p in (eager, exported))
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        return {"translations_compared": len(ours), "translations_equal": same / max(1, len(ours))}

    def aligned_layers(self, model) -> list[str]:
        return cross_layers(model)  # alignments link target rows to source columns

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        translator = Translator(model, prepared.encoders, exp.decode).eval()
        outputs = translator.translate_ids(prepared.test.inputs, progress=progress)
        scores = translation_scores(outputs, prepared.test_examples)
        if has_alignments(prepared.test_examples):  # gold word alignments: the AER of attention
            scores.update(alignment_scores(model, prepared, exp))
        return scores

    def save(self, prepared: Prepared, out: Path) -> None:
        super().save(prepared, out)
        (out / EXAMPLES_FILE).write_text(json.dumps(prepared.test_examples, ensure_ascii=False))

    def save_encoders(self, encoders: TranslationEncoder, out: Path) -> None:
        encoders.source.save(str(out / "source_tokenizer.json"))
        encoders.target.save(str(out / "target_tokenizer.json"))
        (out / "translation.json").write_text(json.dumps({"max_len": encoders.max_len}))

    def load_encoders(self, out: Path, exp) -> TranslationEncoder:
        from tokenizers import Tokenizer

        sides = []
        for name in ("source_tokenizer.json", "target_tokenizer.json"):
            with reading(out / name):
                sides.append(Tokenizer.from_file(str(out / name)))
        with reading(out / "translation.json"):
            return TranslationEncoder(*sides, int(read_json(out / "translation.json")["max_len"]))

    def load_test_examples(self, out: Path) -> list[dict] | None:
        return read_json(out / EXAMPLES_FILE)

    def predictor(self, model, encoders: TranslationEncoder, exp) -> Translator:
        return Translator(model, encoders, exp.decode)

    def print_predictions(self, predictor: Translator, inputs, exp, echo, *, k: int) -> None:
        for text, translation in zip(inputs, predictor.predict(inputs), strict=True):
            echo(f"{text}\n  → {translation}")


    def service(self, predictor: Translator, exp) -> Service:
        """`POST /translate {"texts": [...]}` → a translation per text, decoded as the run's
        `decode` section says."""
        source, most = predictor.encoder.source, predictor.encoder.max_len

        def examples(test: Prepared) -> list[dict]:
            texts = [ex["source"] for ex in test.test_examples or ()]
            return [{"texts": [text]} for text, encoded in zip(texts, source.encode_batch(texts),
                                                               strict=True)
                    if len(encoded.ids) <= most]

        return Service("/translate", Texts, texts_within(source, most),
                       lambda texts: [{"translation": t} for t in predictor.predict(texts)],
                       listed("translations"), examples, {"tokens": most}, counted="texts")

    def inspection(self, model, encoders: TranslationEncoder, exp, *, text=None, image=None,
                   example=None) -> Inspection:
        if image is not None:
            raise InputError(f"{exp.name} translates text, not images: give the text to translate")
        src = encoders.encode_source([text]) if example is None else example[:1]
        src = src[:, : max(1, int(src.ne(PAD_ID).sum()))]  # one example: no padding needed
        out = Translator(model, encoders, exp.decode).generate(src)[0]
        ended = (out == EOS_ID).nonzero()
        out = out[: int(ended[0]) + 1 if len(ended) else len(out)]
        tgt_in = out[None, :-1]  # the decoder reads [BOS] y1 … and puts out y1 … [EOS]
        source = _pieces(encoders.source, src[0].tolist())
        target = _pieces(encoders.target, out[1:].tolist())
        sides = {}
        for name in attention_layers(model):
            sides[name] = (("source", "source") if name.startswith("encoder") else
                           ("target", "source") if name.endswith("cross_attention") else
                           ("target", "target"))
        said = encoders.source.decode(src[0].tolist())
        return Inspection(
            lambda: model(src, tgt_in), {"source": source, "target": target}, sides,
            rollout="source",
            title=f"{exp.name}: \u201c{said[:80]}\u201d → "
                  f"\u201c{encoders.decode_target(out[None])[0][:80]}\u201d",
            notes=["target positions are labelled by the token each one put out (the "
                   f"{'greedy' if exp.decode.beam_size == 1 else 'beam-searched'} translation); "
                   "cross-attention rows are target tokens, columns source tokens",
                   "## marks a piece that continues the word before it"])


def _pieces(tokenizer, ids: list[int]) -> list[str]:
    """Tokens as labels: a word's first piece as the word, a continuation as ##piece (the
    metaspace ▁ marks where a word starts)."""
    out = []
    for i in ids:
        piece = tokenizer.id_to_token(i) or UNK
        out.append(piece[1:] or "▁" if piece.startswith("▁") else piece if piece.startswith("[")
                   else f"##{piece}")
    return out


def with_causal(programs):
    """The same programs with `causal` added to each mask: the encoder's attention, made fit for
    a decoder (head groups keep their sizes)."""
    if isinstance(programs, Program):
        if programs.components:
            return programs.each(with_causal)
        mask = programs.mask
        return programs.replace(mask=Causal() if mask is None else mask & Causal())
    return [with_causal(p) if isinstance(p, Program) else [(with_causal(t), h) for t, h in p]
            for p in programs]


def _trim(ids: Tensor) -> Tensor:
    """Right-padded ids without the trailing columns that are padding in every row."""
    used = ids.ne(PAD_ID).any(0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids[:, :1]


class LengthBatches(torch.utils.data.Sampler):
    """Random batches of examples of similar length: shuffle, sort each pool of 50 batches by
    length, cut it into batches, and shuffle the batches (a new order every epoch)."""

    POOL = 50

    def __init__(self, lengths: torch.Tensor, batch: int, generator: torch.Generator) -> None:
        self.lengths, self.batch, self.generator = lengths, batch, generator

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches = []
        for pool in order.split(self.batch * self.POOL):
            pool = pool[self.lengths[pool].argsort(stable=True)]
            batches += pool.split(self.batch)
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i].tolist()
