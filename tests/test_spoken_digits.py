"""Spoken digits: the .npz reader and its errors, frames standardised and NaN-padded, the encoder
classifier reading frames (padding changes nothing), erasing frames, and a tiny run that predicts
from .npy files and opens in inspect, heads and faithfulness."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.train
from attnlab import tasks
from attnlab.cli.app import app
from attnlab.data.datasets import read
from attnlab.errors import DataError, InputError
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.tasks.frames import trim
from attnlab.train.config import load_experiment

runner = CliRunner()
TINY = {"name": "tiny-speech",
        "task": {"name": "spoken-digits", "params": {"max_frames": 40},
                 "train_examples": 256, "val_examples": 32, "test_examples": 64},
        "model": {"d_model": 32, "layers": 2, "heads": 2},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003}}


def npz(path, **arrays):
    np.savez(path, **arrays)
    return path


# -- the reader -----------------------------------------------------------------------------------

def test_the_npz_is_cut_into_utterances_by_lengths(tmp_path) -> None:
    frames = np.arange(6 * 13, dtype=np.float32).reshape(6, 13)
    file = npz(tmp_path / "digits.npz", X=frames, y=np.array([3, 7]), lengths=np.array([2, 4]))
    got = read("spoken-digits", path=file)
    assert [ex["label"] for ex in got] == ["3", "7"]
    assert np.array_equal(got[0]["frames"], frames[:2]) and np.array_equal(got[1]["frames"], frames[2:])
    real = read("spoken-digits")
    assert len(real) == 3_000 and sum(len(ex["frames"]) for ex in real) == 53_999
    assert min(len(ex["frames"]) for ex in real) == 6 and max(len(ex["frames"]) for ex in real) == 92


@pytest.mark.parametrize(("arrays", "message"), [
    ({"X": np.zeros((3, 13), np.float32), "y": np.array([1])}, "no array lengths; found X, y"),
    ({"X": np.zeros((3, 12), np.float32), "y": np.array([1]), "lengths": np.array([3])},
     "X is float32 (3, 12), expected floats (frames, 13)"),
    ({"X": np.zeros((3, 13), np.float32), "y": np.array([1]), "lengths": np.array([2])},
     "lengths add up to 2 frames (shortest 2); X holds 3"),
    ({"X": np.zeros((3, 13), np.float32), "y": np.array([12]), "lengths": np.array([3])},
     "y holds 12…12, expected digits 0–9"),
])
def test_a_wrong_npz_is_one_line_naming_the_file(tmp_path, arrays, message) -> None:
    file = npz(tmp_path / "digits.npz", **arrays)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path}/digits.npz: {message}")):
        read("spoken-digits", path=file)


def test_a_pickle_or_a_non_archive_is_never_unpickled(tmp_path) -> None:
    pickled = npz(tmp_path / "digits.npz", X=np.array([object()]), y=np.array([1]), lengths=np.array([1]))
    with pytest.raises(DataError, match="Object arrays cannot be loaded when allow_pickle=False"):
        read("spoken-digits", path=pickled)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk.npz: not a .npz archive \(it starts b'not '\)"):
        read("spoken-digits", path=tmp_path / "junk.npz")
    np.save(tmp_path / "frames.npy", np.zeros((3, 13), np.float32))  # an array, not an archive
    with pytest.raises(DataError, match=r"frames.npy: not a .npz archive \(it starts b'\\x93NUM'\)"):
        read("spoken-digits", path=tmp_path / "frames.npy")


def test_data_get_shows_a_frames_example() -> None:
    result = runner.invoke(app, ["data", "get", "spoken-digits"])
    assert result.exit_code == 0, result.output
    assert "3,000 examples, 10 labels: as expected" in result.output
    first = attnlab.data.load("spoken-digits", seed=0)["train"][0]
    assert (f"example  label={first['label']!r} frames {len(first['frames'])}×13 float32\n"
            f"         frame 0: {first['frames'][0, 0]:.1f} {first['frames'][0, 1]:.1f} ") in result.output


# -- frames as tensors, and the model reading them ----------------------------------------------------

def test_frames_are_standardised_with_training_statistics_and_padded_with_nan() -> None:
    exp = load_experiment(TINY)
    prepared = tasks.task_of(exp.task).prepare(exp)
    encoder, full = prepared.encoders, attnlab.data.load("spoken-digits", seed=0)
    assert prepared.train.inputs.shape == (2_400, 40, 13) and prepared.test.labels.shape == (300,)
    assert prepared.test.label_names == tuple(str(d) for d in range(10))
    train = np.concatenate([ex["frames"] for ex in full["train"]]).astype(np.float64)
    assert encoder.mean == pytest.approx(train.mean(0)) and encoder.std == pytest.approx(train.std(0))
    real = prepared.train.inputs[~prepared.train.inputs.isnan().all(-1)].double()
    assert real.shape[0] == sum(min(len(ex["frames"]), 40) for ex in full["train"])  # cut at 40
    first = full["test"][0]["frames"]
    row = prepared.test.inputs[0]
    expected = (first - np.array(encoder.mean)) / np.array(encoder.std)
    assert torch.allclose(row[:len(first)], torch.tensor(expected, dtype=torch.float32), atol=1e-5)
    assert row[len(first):].isnan().all()


def frame_model(pooling="mean") -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier(EncoderClassifierConfig(0, 10, d_model=16, heads=2, features=13, max_len=12,
                                                     pooling=pooling)).eval()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_frames_change_nothing(pooling) -> None:
    model = frame_model(pooling)
    assert model.programs() == ["scaled_dot ; padding ; softmax"]
    frames = torch.randn(1, 5, 13)
    padded = torch.cat([frames, torch.full((1, 7, 13), math.nan)], dim=1)
    assert torch.allclose(model(frames), model(padded), atol=1e-6)
    assert trim(padded).shape == (1, 5, 13)


def test_erasing_frames_removes_them_and_packs_the_rest() -> None:
    model, task = frame_model(), tasks.kind("frame-classification")
    frames = torch.arange(2 * 4 * 13, dtype=torch.float32).view(2, 4, 13)
    frames[1, 3] = math.nan  # the second utterance has 3 frames
    keep = torch.tensor([[False, True, False, True], [True, False, True, True]])
    erased = task.erase(model, frames, keep)
    assert torch.equal(erased[0, :2], frames[0, [1, 3]]) and erased[0, 2:].isnan().all()
    assert torch.equal(erased[1, :2], frames[1, [0, 2]]) and erased[1, 2:].isnan().all()
    assert task.units(model, frames).tolist() == [[True] * 4, [True, True, True, False]]


# -- a trained run -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech") / "run"
    metrics = attnlab.train.train(load_experiment(TINY), out, progress=False,
                                  tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}")
    return out, metrics


def test_a_run_scores_predicts_and_reloads_its_statistics(run, tmp_path) -> None:
    out, metrics = run
    assert {"test_accuracy", "test_macro_f1", "test_majority_rate"} <= set(metrics)
    saved = json.loads((out / "frames.json").read_text())
    assert saved["max_frames"] == 40 and saved["labels"] == [str(d) for d in range(10)]
    assert len(saved["mean"]) == len(saved["std"]) == 13
    from attnlab.train.run import evaluate

    assert evaluate(out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    model = attnlab.load(out)
    test = attnlab.data.load("spoken-digits", seed=0)["test"][:4]
    utterances = [ex["frames"] for ex in test]
    probs = model.predict_proba(utterances)
    assert probs.shape == (4, 10) and torch.allclose(probs.sum(-1), torch.ones(4))
    # one at a time or together, padded to another length: the same answers
    assert model.predict(utterances) == [model.predict(u)[0] for u in utterances]
    assert torch.allclose(model(model.encoder(utterances)).softmax(-1), probs, atol=1e-5)
    np.save(tmp_path / "digit.npy", utterances[0])
    result = runner.invoke(app, ["predict", str(out), str(tmp_path / "digit.npy")])
    assert result.exit_code == 0, result.output
    assert result.output.split()[0] == model.predict(utterances[0])[0]


def test_predict_refuses_a_bad_file_in_one_line(run, tmp_path) -> None:
    out, _ = run
    np.save(tmp_path / "wide.npy", np.zeros((5, 12), np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "nan.npy", np.full((3, 13), np.nan, np.float32))
    for name, message in (("wide.npy", "float32 array of shape (5, 12); give one utterance as frames "
                                       "(T, 13) of numbers, T at least 1"),
                          ("objects.npy", "is not a readable .npy array of numbers"),
                          ("nan.npy", "frame 0 holds NaN or infinity"),
                          ("none.npy", "no such file")):
        result = runner.invoke(app, ["predict", str(out), str(tmp_path / name)])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    with pytest.raises(InputError, match=r"utterance 1: float32 array of shape \(2,\)"):
        attnlab.load(out).predict([np.zeros((3, 13)), np.zeros(2, np.float32)])


def test_inspect_heads_and_faithfulness_read_frames(run, tmp_path) -> None:
    out, _ = run
    result = runner.invoke(app, ["inspect", str(out), "--example", "0", "--out", str(tmp_path / "v.html")])
    assert result.exit_code == 0, result.output
    assert "frames →" in result.output and (tmp_path / "v.html").stat().st_size > 0
    from attnlab.inspect.views import inspect_run

    count = min(len(attnlab.data.load("spoken-digits", seed=0)["test"][0]["frames"]), 40)
    view = inspect_run(out, example=0)
    assert view.inspection.sequences["frames"] == [f"frame {t}" for t in range(count)]
    assert view.inspection.title.startswith(f"tiny-speech: {count} frames → ")
    utterance = attnlab.data.load("spoken-digits", seed=0)["test"][1]["frames"]
    np.save(tmp_path / "digit.npy", utterance)  # a file: raw frames, standardised by the run
    seen = inspect_run(out, text=str(tmp_path / "digit.npy")).inspection
    assert seen.sequences["frames"] == [f"frame {t}" for t in range(min(len(utterance), 40))]
    assert seen.title.endswith(f"→ {attnlab.load(out).predict(utterance)[0]} "
                               f"({float(attnlab.load(out).predict_proba(utterance).max()):.2f})")
    result = runner.invoke(app, ["heads", str(out), "--examples", "16", "--out", str(tmp_path / "h")])
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "h" / "heads.json").read_text())["heads"]) == 4
    from attnlab.inspect.faithfulness import faithfulness

    found = faithfulness(out, examples=8, draws=2)
    assert found["task"] == "frame-classification" and "frames are removed" in found["erasing"]
