"""Alignments as targets and as a score: word links of a translation data set turned into the
token pairs `supervise` trains towards, and the alignment error rate (AER) of what a model's
attention reads as aligned, for translation (words) and generated tasks (positions).

A translation example may carry `alignment`: (source word, target word) pairs, words being
`text.split()`. Tokens are pieces of those words (the tokenizers' `word_ids`); the decoder row
that puts out target token j is row j (it reads [BOS] y1 … and predicts y1 …), so a link
between two words links every piece of one to every piece of the other.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor, nn

from attnlab.nn.recorder import layer_name, record
from attnlab.tasks.base import attention_layers
from attnlab.train.metrics import alignment_error_rate


def has_alignments(examples: list[dict] | None) -> bool:
    return bool(examples) and "alignment" in examples[0]


def pieces(encodings, limit: int) -> list[dict[int, list[int]]]:
    """Per encoding, word index → the positions (< limit) of its tokens."""
    out = []
    for e in encodings:
        words: dict[int, list[int]] = defaultdict(list)
        for position, word in enumerate(e.word_ids[:limit]):
            if word is not None:
                words[word].append(position)
        out.append(words)
    return out


def word_pieces(encoders, examples: list[dict]) -> tuple[list, list]:
    """Each example's source and target word → token positions, as the model sees them: source
    tokens by position, target tokens by the decoder row that puts them out."""
    source = pieces(encoders.source.encode_batch([ex["source"] for ex in examples]),
                    encoders.max_len)
    target = pieces(encoders.target.encode_batch([ex["target"] for ex in examples]),
                    encoders.max_len - 2)  # the target row also holds [BOS] and [EOS]
    return source, target


def token_pairs(encoders, examples: list[dict]) -> Tensor:
    """(N, P, 2) (decoder row, source position) pairs of every example's word links, padded
    with -1 rows; links to words cut by `max_len` are left out."""
    source, target = word_pieces(encoders, examples)
    rows = []
    for ex, src, tgt in zip(examples, source, target, strict=True):
        rows.append([(r, c) for s, t in ex["alignment"] for r in tgt.get(t, ())
                     for c in src.get(s, ())])
    width = max((len(r) for r in rows), default=0) or 1
    out = torch.full((len(rows), width, 2), -1, dtype=torch.int32)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = torch.tensor(r, dtype=torch.int32)
    return out


def cross_layers(model: nn.Module) -> list[str]:
    """The cross-attention layers (target rows, source columns), in model order."""
    return [name for name in attention_layers(model) if name.endswith("cross_attention")]


def supervised_heads(exp, layers: list[str]) -> list[tuple[str, int, int]]:
    """(layer, head, shift) of each head the experiment's `supervise` objectives train (`layers`:
    the ones the alignments are given in), in the order they are named."""
    found = []
    for o in exp.objectives:
        if o.kind != "supervise":
            continue
        names = layers if o.layers == "all" else [layer_name(layers, x) for x in o.layers]
        found += [(name, h, o.shift) for name in names for h in (o.heads if o.heads != "all" else [])]
    return list(dict.fromkeys(found))


def aer_table(model: nn.Module, layers: list[str], exp, batches, read, gold: list[set],
              shifts: tuple[int, ...] = (0,)) -> dict:
    """AER of the alignment read from each layer's average over heads (with each row shift in
    `shifts`) and from each supervised head (with its own): `batches` yields (first example,
    forward) and `read(weights (B, T, S), first, shift)` the links of those examples.
    `test_aer` is the first supervised head's, or else the best layer average's."""
    heads = supervised_heads(exp, layers)
    keys = [(name, None, shift) for name in layers for shift in shifts] + heads
    predicted: dict[tuple, list[set]] = {key: [] for key in keys}
    model.eval()
    with torch.no_grad():
        for first, forward in batches:
            with record(model, layers=layers) as rec:
                forward()
            for name in layers:
                w = rec.weights(name).float()  # (B, H, T, S)
                for layer, head, shift in keys:
                    if layer == name:
                        picked = w.mean(1) if head is None else w[:, head]
                        predicted[(layer, head, shift)] += read(picked, first, shift)
    index = {name: i for i, name in enumerate(layers)}

    def label(layer: str, head: int | None, shift: int) -> str:
        return (f"test_aer_layer{index[layer]}" + ("" if head is None else f"_head{head}")
                + (f"_shift{shift}" if shift else ""))

    scores = {label(*key): alignment_error_rate(predicted[key], gold) for key in keys}
    scores["test_aer"] = (scores[label(*heads[0])] if heads else
                          min(scores[label(n, None, s)] for n in layers for s in shifts))
    return scores


def alignment_scores(model: nn.Module, prepared, exp, batch: int = 32) -> dict[str, float]:
    """Word AER of a translation model's cross-attention, forced to the reference targets: each
    target word is linked to the source word its tokens attend to most (mean over its tokens,
    summed over each source word's tokens). Rows are read as they put a token out, and also one
    row later, as they read it (`_shift1`: Shift-Att, Chen et al. 2020)."""
    from attnlab.tasks.translation import _trim

    examples, test = prepared.test_examples, prepared.test
    source, target = word_pieces(prepared.encoders, examples)

    def batches():
        for start in range(0, len(examples), batch):
            src = _trim(test.inputs[start:start + batch])
            tgt = _trim(test.labels[start:start + batch])
            yield start, lambda src=src, tgt=tgt: model(src, tgt[:, :-1])

    def read(w: Tensor, first: int, shift: int) -> list[set]:
        rows = len(w[0])
        return [links(w[i], source[first + i], {t: [r + shift for r in rs if r + shift < rows]
                                                for t, rs in target[first + i].items()})
                for i in range(len(w))]

    gold = [{(s, t) for s, t in ex["alignment"] if t in tgt and s in src}
            for ex, src, tgt in zip(examples, source, target, strict=True)]
    return aer_table(model, cross_layers(model), exp, batches(), read, gold, shifts=(0, 1))


def position_scores(model: nn.Module, task, data, exp, batch: int = 64) -> dict[str, float]:
    """AER of a model whose alignments are positions of its own input (copy, MQAR, …): each
    aligned row linked to the key it attends to most, against the data's (row, key) pairs."""
    pairs = data.alignments

    def batches():
        for start in range(0, len(data), batch):
            chunk = tuple(t[start:start + batch] for t in data.tensors())
            yield start, lambda chunk=chunk: task.step(model, chunk)

    def read(w: Tensor, first: int, shift: int) -> list[set]:
        out = []
        for i in range(len(w)):
            rows = sorted({r for r, k in pairs[first + i].tolist() if 0 <= r < len(w[i]) - shift})
            best = w[i, [r + shift for r in rows]].argmax(-1).tolist() if rows else []
            out.append(set(zip(rows, best, strict=True)))
        return out

    gold = [{(r, k) for r, k in row.tolist() if r >= 0} for row in pairs]
    return aer_table(model, task.aligned_layers(model), exp, batches(), read, gold)


def links(weights: Tensor, source: dict[int, list[int]], target: dict[int, list[int]]) -> set:
    """(source word, target word) links from one example's (T, S) weights: each target word
    to the source word with the most attention."""
    target = {t: rows for t, rows in target.items() if rows}
    if not source or not target:
        return set()
    t_words, s_words = sorted(target), sorted(source)
    rows = torch.stack([weights[target[t]].mean(0) for t in t_words])  # (target words, S)
    cols = torch.stack([rows[:, source[s]].sum(1) for s in s_words], dim=1)
    best = cols.argmax(1).tolist()
    return {(s_words[b], t) for t, b in zip(t_words, best, strict=True)}
