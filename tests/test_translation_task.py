"""Translation as a training task: the two vocabularies, the framed ids, length-bucketed batches,
the decoder's programs, BLEU beside copying the source, and a Translator that predicts text."""

from __future__ import annotations

import unicodedata

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab import tasks
from attnlab.errors import ConfigError, ProgramError
from attnlab.lang import parse
from attnlab.models import Seq2Seq
from attnlab.tasks.translation import LengthBatches, Translator, with_causal
from attnlab.train.config import load_experiment
from attnlab.train.metrics import translation_scores
from attnlab.train.run import evaluate

TRANSLATION = tasks.kind("translation")

TINY = {"name": "tiny-translate",
        "task": {"name": "kjv-spanish", "params": {"vocab_size": 300, "max_len": 24},
                 "train_examples": 256, "val_examples": 32, "test_examples": 16},
        "model": {"d_model": 32, "layers": 1, "heads": 2},
        "decode": {"beam_size": 2, "max_len": 12},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003}}


@pytest.fixture(scope="module")
def prepared():
    return TRANSLATION.prepare(load_experiment(TINY))


def test_targets_are_framed_and_decode_back_to_the_reference(prepared) -> None:
    test, encoder, examples = prepared.test, prepared.encoders, prepared.test_examples
    assert test.inputs.shape == (3_108, 24) == test.labels.shape
    assert test.vocab_size <= 300 and test.target_vocab_size <= 300
    assert (test.labels[:, 0] == 1).all()  # [BOS]
    for row, ex in zip(test.labels[:50], examples[:50], strict=True):
        ids = row[row != 0].tolist()
        if len(ids) < 24:  # not cut: [EOS] closes it and the text comes back whole
            assert ids[-1] == 2
            assert encoder.decode_target(row[None])[0] == unicodedata.normalize("NFC", ex["target"])
    source = encoder.source.encode(examples[0]["source"]).ids[:24]
    assert test.inputs[0, :len(source)].tolist() == source


def test_length_batches_cover_every_example_once_and_group_like_lengths() -> None:
    lengths = torch.randint(1, 100, (1_000,), generator=torch.Generator().manual_seed(0))
    batches = list(LengthBatches(lengths, 10, torch.Generator().manual_seed(0)))
    assert len(batches) == len(LengthBatches(lengths, 10, torch.Generator())) == 100
    assert sorted(i for b in batches for i in b) == list(range(1_000))
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in batches) / len(batches)
    assert spread < 10  # random batches of 10 would spread over ~80


def build_model(exp: dict, data):
    return TRANSLATION.build_model(load_experiment(exp), data)


def test_the_decoder_gets_the_encoder_program_made_causal(prepared) -> None:
    assert with_causal(parse("scaled_dot ; softmax")) == parse("scaled_dot ; causal ; softmax")
    assert with_causal(parse("window(8) | global_tokens(1) ; entmax(1.5)")) == \
        parse("scaled_dot ; (window(8) | global_tokens(1)) & causal ; entmax(1.5)")
    assert with_causal([[(parse("scaled_dot ; softmax"), 2), (parse("window(4) ; softmax"), 2)]]) == \
        [[(parse("scaled_dot ; causal ; softmax"), 2),
          (parse("scaled_dot ; window(4) & causal ; softmax"), 2)]]
    data = prepared.validation
    model = build_model({**TINY, "attention": "window(4) ; softmax"}, data)
    assert isinstance(model, Seq2Seq)
    assert model.config_dict()["decoder_programs"] == "scaled_dot ; window(4) & causal ; softmax"
    given = {**TINY, "decoder_attention": "scaled_dot ; causal ; entmax(1.5)",
             "cross_attention": "scaled_dot ; entmax(1.5)"}
    assert build_model(given, data).config_dict()["cross_programs"] == "scaled_dot ; entmax(1.5)"
    with pytest.raises(ProgramError, match="must not see the future"):
        build_model({**TINY, "decoder_attention": "scaled_dot ; softmax"}, data)
    with pytest.raises(ConfigError, match=r"model\.kind encoder_classifier does not fit kjv-spanish"):
        build_model({**TINY, "model": {"kind": "encoder_classifier"}}, data)


def test_bleu_is_100_for_the_reference_and_the_copy_baseline_reads_the_source() -> None:
    examples = [{"source": "In the beginning God created the heaven and the earth.",
                 "target": "EN el principio crió Dios los cielos y la tierra."},
                {"source": "And God said, Let there be light: and there was light.",
                 "target": "Y dijo Dios: Sea la luz: y fué la luz."}]
    scores = translation_scores([ex["target"] for ex in examples], examples)
    assert scores["test_bleu"] == pytest.approx(100) and scores["test_chrf"] == pytest.approx(100)
    assert 0 < scores["test_copy_chrf"] < 50 and scores["test_copy_bleu"] < 10


def test_a_translation_run_reports_bleu_and_predicts_text(tmp_path) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(TINY), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"test_bleu", "test_chrf", "test_copy_bleu", "test_copy_chrf"} <= set(metrics)
    assert 0 <= metrics["test_bleu"] <= 100 and metrics["test_copy_bleu"] < 5
    assert {"source_tokenizer.json", "target_tokenizer.json"} <= {p.name for p in out.iterdir()}
    model = attnlab.load(out)
    assert isinstance(model, Translator) and not model.training
    texts = ["In the beginning God created the heaven and the earth.", "Jesus wept."]
    translations = model.predict(texts)
    assert len(translations) == 2 and all(isinstance(t, str) for t in translations)
    assert evaluate(out)["test_bleu"] == pytest.approx(metrics["test_bleu"])
    result = CliRunner().invoke(attnlab.cli.app.app, ["predict", str(out), texts[1]])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Jesus wept.\n  → ")
