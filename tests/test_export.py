"""Export: a trained run as one ONNX or torch.export file with a dynamic batch and length, checked
against the model over its test split, and loaded back as the task's own predictor from the file
alone; frozen models compile with fullgraph=True for every normalizer."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab.deploy import export, load_exported
from attnlab.deploy.export import EXPORTABLE
from attnlab.errors import ExportError, InputError
from attnlab.lang import registry
from attnlab.models import EncoderClassifier, EncoderClassifierConfig
from attnlab.nn.attention import Attention
from attnlab.tasks.text import TextClassifier
from attnlab.train.config import load_experiment
from attnlab.train.run import load

SPAM = {"name": "tiny-spam",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 24},
                 "train_examples": 128, "val_examples": 32, "test_examples": 64},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "train": {"steps": 6, "batch_size": 32, "lr": 0.003}}
TEXTS = ["WINNER!! Claim your free prize now, call 09061701461 to claim your reward today, before "
         "the offer ends, text STOP to end", "ok see you at home later", "hi"]


def trained(tmp_path_factory, exp: dict):
    out = tmp_path_factory.mktemp("run") / exp["name"]
    attnlab.train.train(load_experiment(exp), out, progress=False,
                        tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}")
    return out


@pytest.fixture(scope="module")
def spam(tmp_path_factory):
    return trained(tmp_path_factory, SPAM)


@pytest.fixture(scope="module")
def exports(spam):
    """Each format's summary, exported (and checked) once: exporting takes seconds."""
    return {fmt: export(spam, fmt, progress=False) for fmt in ("onnx", "pt2")}


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_text_run_exports_checks_and_predicts_from_the_file_alone(spam, exports, tmp_path,
                                                                    fmt) -> None:
    summary, file = exports[fmt], spam / f"model.{fmt}"
    assert summary["file"] == str(file) and summary["bytes"] == file.stat().st_size
    assert summary["backends"] == ["sdpa"]
    check = summary["check"]
    assert check["examples"] == 64 and check["max_abs_diff"] <= 1e-4
    assert check["prediction_agreement"] == 1.0
    assert len(check["input_shapes"]) >= 2  # another length and batch than the freeze example
    eager = load(spam)
    alone = tmp_path / "elsewhere" / f"m.{fmt}"
    alone.parent.mkdir()
    shutil.copy(file, alone)
    away = spam.rename(spam.with_name("away"))  # the file is the whole model: no run folder
    try:
        exported = load_exported(alone)
        assert isinstance(exported, TextClassifier) and exported.label_names == eager.label_names
        assert exported.predict(TEXTS) == eager.predict(TEXTS)
        torch.testing.assert_close(exported.predict_proba(TEXTS), eager.predict_proba(TEXTS),
                                   rtol=0, atol=1e-5)
        ids = eager.encoder(TEXTS)
        for length in (5, 17):  # the export was traced on the test split's 24 columns
            torch.testing.assert_close(exported.model(ids[:, :length]),
                                       eager.model(ids[:, :length]), rtol=0, atol=1e-4)
        torch.testing.assert_close(exported.model(ids[:1]), eager.model(ids[:1]), rtol=0, atol=1e-4)
    finally:
        away.rename(spam)


def test_the_file_carries_the_tokenizer_labels_experiment_and_metrics(spam, exports) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(spam / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["attnlab"])
    assert meta["labels"] == ["ham", "spam"] and meta["task"] == "text-classification"
    assert {"tokenizer.json", "labels.json"} <= set(meta["encoders"])
    assert "sms-spam" in meta["experiment"] and "test_accuracy" in meta["metrics"]
    assert meta["attnlab"] == attnlab.__version__
    assert [i.name for i in session.get_inputs()] == ["tokens"]
    assert [str(d) for d in session.get_inputs()[0].shape] == ["batch", "seq"]
    extra = {"attnlab.json": ""}
    torch.export.load(spam / "model.pt2", extra_files=extra)
    assert json.loads(extra["attnlab.json"]) == meta


def test_the_cli_prints_the_check_as_json(spam, tmp_path) -> None:
    out = tmp_path / "cli.pt2"
    result = CliRunner().invoke(attnlab.cli.app.app, ["export", str(spam), "--format", "pt2",
                                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["file"] == str(out) and summary["check"]["prediction_agreement"] == 1.0


def test_what_cannot_be_written_or_loaded_is_an_attnlab_error(spam, tmp_path) -> None:
    with pytest.raises(ExportError, match="no folder"):
        export(spam, "onnx", tmp_path / "missing" / "m.onnx", progress=False)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if not os.access(locked, os.W_OK):  # root writes anywhere
        with pytest.raises(ExportError, match="not writable"):
            export(spam, "onnx", locked / "m.onnx", progress=False)
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        export(spam, "tflite", progress=False)
    result = CliRunner().invoke(attnlab.cli.app.app, ["export", str(spam), "--out",
                                                      str(tmp_path / "nope" / "m.onnx")])
    assert result.exit_code == 2 and "error:" in result.output and "no folder" in result.output
    for name in ("garbage.onnx", "garbage.pt2"):
        (tmp_path / name).write_bytes(b"not a model at all")
        with pytest.raises(ExportError, match=r"garbage\.(onnx|pt2) is not a"):
            load_exported(tmp_path / name)
    with pytest.raises(ExportError, match=r"a \.onnx or \.pt2 file"):
        load_exported(tmp_path / "garbage.bin")
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ExportError, match="carries no attnlab metadata"):
        load_exported(tmp_path / "other.onnx")
    program = torch.export.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2),))
    torch.export.save(program, tmp_path / "other.pt2")
    with pytest.raises(ExportError, match="carries no attnlab metadata"):
        load_exported(tmp_path / "other.pt2")


def encoder(program, pad_id: int | None = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderClassifierConfig(50, 3, d_model=16, layers=len(program), heads=2,
                                                      programs=program, pad_id=pad_id, max_len=32)).eval()
    tokens = torch.randint(1, 50, (2, 20))
    if pad_id is not None:
        tokens[1, 12:] = pad_id
    return model, tokens


def test_freezing_for_export_pins_only_backends_that_trace_with_a_free_length() -> None:
    # linear attention and sparsemax over padding run on reference there, exactly
    model, tokens = encoder(["scaled_dot ; linear", "scaled_dot ; sparsemax"])
    with torch.no_grad():
        attnlab.freeze(model, tokens, backends=EXPORTABLE)
        assert [m.frozen for m in model.modules() if isinstance(m, Attention)] == [("reference",)] * 2
        seq = torch.export.Dim("seq", min=1, max=32)
        program = torch.export.export(model, (tokens,), dynamic_shapes=({0: torch.export.Dim("batch"),
                                                                         1: seq},))
        for cut in (tokens[:, :7], tokens[:1, :20], tokens[:, :1]):
            torch.testing.assert_close(program.module()(cut), model(cut), rtol=0, atol=1e-5)
        with pytest.raises(InputError, match=r"no backend allowed \(sdpa\) runs 'scaled_dot ; "
                                             r"linear & padding ; softmax'|no backend allowed"):
            attnlab.freeze(model, tokens, backends=("sdpa",))
        with pytest.raises(InputError, match="unknown backend 'sdpaa' — did you mean 'sdpa'"):
            attnlab.freeze(model, tokens, backends=("sdpaa",))


NORMALIZERS = {"softmax": "softmax", "sparsemax": "sparsemax", "entmax": "entmax(1.5)",
               "topk": "topk(3)", "gumbel": "gumbel(0.5)", "sigmoid": "sigmoid", "relu": "relu"}


def test_every_normalizer_is_covered() -> None:
    assert set(NORMALIZERS) == set(registry("normalizer"))


@pytest.mark.parametrize(("name", "padded"), [*((n, False) for n in NORMALIZERS), ("topk", True)])
def test_a_frozen_model_compiles_whole_for_every_normalizer(name, padded) -> None:
    # tiled without padding; padding is read from the data, so reference (sdpa for softmax)
    model, tokens = encoder([f"window(4) ; {NORMALIZERS[name]}"], 0 if padded else None)
    with torch.no_grad():
        want = model(tokens)
        attnlab.freeze(model, tokens)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(tokens), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_a_frozen_model_compiles_with_inductor() -> None:
    model, tokens = encoder(["scaled_dot ; entmax(1.5)", "window(4) ; sparsemax"], 0)
    with torch.no_grad():
        want = model(tokens)
        attnlab.freeze(model, tokens)
        torch._dynamo.reset()
        torch.testing.assert_close(torch.compile(model, fullgraph=True)(tokens), want,
                                   rtol=1e-4, atol=1e-5)


DIGITS = {"name": "tiny-digits", "task": {"name": "digits"},
          "model": {"d_model": 16, "layers": 1, "heads": 2, "patch_size": 2},
          "train": {"steps": 5, "batch_size": 64, "lr": 0.003}}
TRANSLATE = {"name": "tiny-translate",
             "task": {"name": "kjv-spanish", "params": {"vocab_size": 200, "max_len": 16},
                      "train_examples": 128, "val_examples": 16, "test_examples": 24},
             "model": {"d_model": 16, "layers": 1, "heads": 2},
             "decode": {"beam_size": 2, "max_len": 10},
             "train": {"steps": 5, "batch_size": 32, "lr": 0.003}}
SPEECH = {"name": "tiny-speech",
          "task": {"name": "spoken-digits", "params": {"max_frames": 40},
                   "train_examples": 128, "val_examples": 32, "test_examples": 64},
          "model": {"d_model": 16, "layers": 1, "heads": 2},
          "train": {"steps": 5, "batch_size": 32, "lr": 0.003}}
RECSYS = {"name": "tiny-recsys",
          "task": {"name": "movielens-100k", "params": {"max_len": 12, "negatives": 20},
                   "test_examples": 64},
          "model": {"d_model": 16, "layers": 1, "heads": 1},
          "attention": "scaled_dot ; causal ; softmax",
          "train": {"steps": 5, "batch_size": 128, "lr": 0.003}}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_image_translation_frames_and_recommender_runs_export(tmp_path_factory, tmp_path, fmt) -> None:
    digits = trained(tmp_path_factory, DIGITS)
    check = export(digits, fmt, progress=False)["check"]
    assert check["max_abs_diff"] <= 1e-4 and check["prediction_agreement"] == 1.0
    images = [ex["image"] for ex in attnlab.data.load("digits", seed=0)["test"][:5]]
    exported, eager = load_exported(digits / f"model.{fmt}"), load(digits)
    assert exported.predict(images) == eager.predict(images)

    translate = trained(tmp_path_factory, TRANSLATE)
    check = export(translate, fmt, progress=False)["check"]
    assert check["max_abs_diff"] <= 1e-4 and check["translations_equal"] == 1.0
    texts = ["In the beginning God created the heaven and the earth.", "Jesus wept."]
    exported, eager = load_exported(translate / f"model.{fmt}"), load(translate)
    assert exported.predict(texts) == eager.predict(texts)  # beam search over the export

    speech = trained(tmp_path_factory, SPEECH)
    check = export(speech, fmt, progress=False)["check"]
    assert check["max_abs_diff"] <= 1e-4 and check["prediction_agreement"] == 1.0
    utterances = [ex["frames"] for ex in attnlab.data.load("spoken-digits", seed=0)["test"][:4]]
    exported, eager = load_exported(speech / f"model.{fmt}"), load(speech)
    assert exported.predict(utterances) == eager.predict(utterances)  # NaN-padded frames

    recsys = trained(tmp_path_factory, RECSYS)
    check = export(recsys, fmt, progress=False)["check"]
    assert check["max_abs_diff"] <= 1e-4 and check["prediction_agreement"] == 1.0
    exported, eager = load_exported(recsys / f"model.{fmt}"), load(recsys)
    history = eager.items.items[:30:3]
    assert exported.recommend(list(history), k=5) == eager.recommend(list(history), k=5)
    assert np.isfinite(check["max_abs_diff"])
