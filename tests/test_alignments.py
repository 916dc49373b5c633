"""Gold alignments: greek-english's word links become exactly the token pairs of linked words,
the AER of a translation run reads its cross-attention forced to the reference, and a copy
run's supervised head is scored against the positions it should read."""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab import tasks
from attnlab.tasks.alignments import links
from attnlab.train.config import load_experiment
from attnlab.train.run import evaluate

TRANSLATION = tasks.kind("translation")

TINY = {"name": "tiny-greek",
        "task": {"name": "greek-english", "params": {"vocab_size": 400, "max_len": 24},
                 "train_examples": 256, "val_examples": 32, "test_examples": 48},
        "model": {"d_model": 32, "layers": 2, "heads": 2},
        "decode": {"beam_size": 1, "max_len": 12},
        "objectives": [{"kind": "supervise", "layers": [-2], "heads": [1], "shift": 1}],
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003}}


@pytest.fixture(scope="module")
def prepared():
    return TRANSLATION.prepare(load_experiment(TINY)).head({"train": 256, "validation": 32,
                                                            "test": 48})


def test_token_pairs_are_the_pieces_of_linked_words(prepared) -> None:
    enc, data = prepared.encoders, prepared.test
    for i, ex in enumerate(prepared.test_examples[:40]):
        src = enc.source.encode(ex["source"]).word_ids[:24]
        tgt = enc.target.encode(ex["target"]).word_ids[:22]  # the target row holds [BOS], [EOS]
        gold = {tuple(link) for link in ex["alignment"]}
        pairs = {tuple(p) for p in data.alignments[i].tolist() if p[0] >= 0}
        # every pair joins a piece of one linked word to a piece of the other…
        assert all((src[c], tgt[r]) in gold for r, c in pairs)
        # …and every link whose words survive the cut gives all their pieces' pairs
        expected = {(r, c) for r, t in enumerate(tgt) for c, s in enumerate(src) if (s, t) in gold}
        assert pairs == expected
        # row r is the decoder row that puts out target token r: labels[r + 1] (after [BOS])
        assert data.labels[i, 1:1 + len(tgt)].tolist() == enc.target.encode(ex["target"]).ids[:22]


def test_shifted_rows_are_the_rows_that_read_each_token(prepared) -> None:
    """With shift 1 a target word is read from the rows one below its own: the weights of a
    model that puts all of row r + 1's weight on the source of row r's gold link score AER as
    the unshifted reading of the gold itself."""
    from attnlab.tasks.alignments import word_pieces

    examples = prepared.test_examples[:10]
    source, target = word_pieces(prepared.encoders, examples)
    for ex, src, tgt in zip(examples, source, target, strict=True):
        gold = {(s, t) for s, t in ex["alignment"] if s in src and t in tgt}
        one_to_one = {t: min(s for s, u in gold if u == t) for t in {u for _, u in gold}}
        w = torch.zeros(25, 24)
        for t, rows in tgt.items():
            if t in one_to_one:
                w[[r + 1 for r in rows], src[one_to_one[t]][0]] = 1.0
        shifted = {t: [r + 1 for r in rows] for t, rows in tgt.items()}
        assert {(s, t) for s, t in links(w, src, shifted) if t in one_to_one} == \
            {(s, t) for t, s in one_to_one.items()}


def test_links_take_each_target_word_to_its_most_attended_source_word() -> None:
    # target words 0 (tokens 0, 1) and 1 (token 2); source words 0 (tokens 0, 1) and 1 (token 2)
    w = torch.tensor([[0.3, 0.3, 0.4], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]])
    # word 0: mean rows 0,1 = [0.2, 0.25, 0.55] → source words [0.45, 0.55] → 1
    # word 1: row 2 = [0.5, 0.1, 0.4] → [0.6, 0.4] → 0
    assert links(w, {0: [0, 1], 1: [2]}, {0: [0, 1], 1: [2]}) == {(1, 0), (0, 1)}


def test_a_translation_run_reports_aer_and_eval_agrees(tmp_path) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(TINY), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"test_aer", "test_aer_layer0", "test_aer_layer1", "test_aer_layer0_shift1",
            "test_aer_layer1_shift1", "test_aer_layer0_head1_shift1", "test_supervise"} <= set(metrics)
    assert metrics["test_aer"] == metrics["test_aer_layer0_head1_shift1"]
    assert all(0 <= metrics[k] <= 1 for k in metrics if k.startswith("test_aer"))
    again = evaluate(out)
    for key in ("test_aer", "test_aer_layer0", "test_aer_layer1_shift1"):
        assert again[key] == pytest.approx(metrics[key])
