"""Real text as a training task: the tokenizer, the tensors, F1, and predict() on label names."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab import tasks
from attnlab.errors import ConfigError
from attnlab.train.config import load_experiment
from attnlab.train.metrics import f1_scores


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


SPAM = {"name": "tiny-spam",
        "task": {"name": "sms-spam", "params": {"vocab_size": 500, "max_len": 24},
                 "train_examples": 256, "val_examples": 64, "test_examples": 128,
                 "positive": "spam"},
        "model": {"d_model": 32, "layers": 1, "heads": 2},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003}}


def prepare(exp: dict):
    return tasks.kind("text-classification").prepare(load_experiment(exp))


def test_text_splits_become_padded_ids_with_cls_first_and_named_labels(cache) -> None:
    prepared = prepare(SPAM)
    data, encoder = prepared.test, prepared.encoders
    full = attnlab.data.load("sms-spam", seed=0)["test"]
    assert data.inputs.shape == (len(full), 24) and data.labels.shape == (len(full),)
    assert data.label_names == ("ham", "spam") and data.pad_id == 0
    assert [data.label_names[i] for i in data.labels.tolist()] == [ex["label"] for ex in full]
    cls = encoder.tokenizer.token_to_id("[CLS]")
    assert (data.inputs[:, 0] == cls).all()
    ids = encoder.tokenizer.encode(full[0]["text"]).ids[:24]
    assert data.inputs[0, :len(ids)].tolist() == ids and (data.inputs[0, len(ids):] == 0).all()
    assert encoder.vocab_size <= 500
    # learned from the training split once, then read from the cache
    files = list((cache / "tokenizers").glob("sms-spam-500-*.json"))
    assert len(files) == 1
    assert torch.equal(prepare(SPAM).test.inputs, data.inputs)


def test_f1_known_answers() -> None:
    """Per class 2·tp / (predicted + actual), worked by hand; 0 for a class neither predicted nor
    present."""
    preds, labels = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 2])
    assert f1_scores(preds, labels, 4) == [2 * 1 / (2 + 1), 2 * 2 / (2 + 3), 1.0, 0.0]
    assert f1_scores(torch.tensor([1, 1]), torch.tensor([0, 0]), 2) == [0.0, 0.0]


def test_f1_matches_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    gen = torch.Generator().manual_seed(0)
    labels, preds = torch.randint(0, 4, (200,), generator=gen), torch.randint(0, 4, (200,), generator=gen)
    ours = f1_scores(preds, labels, 4)
    theirs = f1_score(labels.numpy(), preds.numpy(), average=None, labels=range(4))
    assert ours == pytest.approx(list(theirs))


def test_training_on_real_text_reports_f1_and_predicts_label_names(tmp_path) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(SPAM), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"test_f1", "test_macro_f1", "test_majority_rate"} <= set(metrics)
    assert 0 <= metrics["test_f1"] <= 1
    assert json.loads((out / "labels.json").read_text())["labels"] == ["ham", "spam"]
    from attnlab.train.run import evaluate

    assert evaluate(out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    model = attnlab.load(out)
    assert not model.training
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "ok see you at home later"]
    labels = model.predict(texts)
    assert len(labels) == 2 and set(labels) <= {"ham", "spam"}
    probs = model.predict_proba(texts)
    assert probs.shape == (2, 2) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert model(model.encoder(texts)).shape == (2, 2)  # token ids in, logits out
    result = CliRunner().invoke(attnlab.cli.app.app, ["predict", str(out), texts[1]])
    assert result.exit_code == 0, result.output
    assert result.output.split()[0] in ("ham", "spam")


def test_an_unknown_positive_label_names_the_labels(tmp_path) -> None:
    exp = load_experiment(SPAM, ["task.positive=spma"])
    with pytest.raises(ConfigError, match="'spma' is not a label of sms-spam; its labels are ham, spam"):
        attnlab.train.train(exp, tmp_path / "run", progress=False)


def test_a_byte_level_tokenizers_pieces_are_labelled_with_their_spaces() -> None:
    """Views label GPT-2/Llama-style pieces as text (' wrote'), not as their 'Ġwrote' form."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from attnlab.tasks.text import _token_labels

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tok.train_from_iterator(["who wrote hamlet"] * 10, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    ids = tok.encode("who wrote hamlet").ids
    labels, note = _token_labels(tok, ids)
    assert "".join(labels) == "who wrote hamlet" and labels[1] == " wrote"
    assert "Ġ" in tok.id_to_token(ids[1]) and "space" in note
    wordpiece = attnlab.tasks.text.train_tokenizer(["unbelievable things"] * 5, 60)
    ids = wordpiece.encode("unbelievable things").ids
    labels, note = _token_labels(wordpiece, ids)  # WordPiece pieces are shown as they are
    assert labels == ["[CLS]", "unbelievable", "things"] and "##" in note
