"""Real images as a training task: standardised pixels, a ViT chosen for them, label names."""

from __future__ import annotations

import pytest
import torch

import attnlab
import attnlab.train
from attnlab import tasks
from attnlab.errors import ConfigError
from attnlab.train.config import load_experiment

DIGITS = {"name": "tiny-digits", "task": {"name": "digits"},
          "model": {"d_model": 32, "layers": 1, "heads": 2, "patch_size": 2},
          "train": {"epochs": 3, "batch_size": 32, "lr": 0.003}}


def prepare():
    return tasks.kind("image-classification").prepare(load_experiment(DIGITS))


def test_images_are_standardised_with_training_statistics() -> None:
    made = prepare()
    train, test = made.train, made.test
    assert train.inputs.shape == (1437, 1, 8, 8) and test.inputs.shape == (180, 1, 8, 8)
    assert train.inputs.mean().abs() < 1e-4 and (train.inputs.std() - 1).abs() < 1e-3
    assert train.label_names == tuple(str(d) for d in range(10)) and train.num_classes == 10
    raw = attnlab.data.load("digits", seed=0)["test"]
    assert [train.label_names[i] for i in test.labels.tolist()] == [ex["label"] for ex in raw]
    # every split goes through the same map, made from the training split's raw pixels
    splits = attnlab.data.load("digits", seed=0)
    raw_train = torch.tensor([ex["image"] for ex in splits["train"]], dtype=torch.float32)
    raw_test = torch.tensor([ex["image"] for ex in raw], dtype=torch.float32)
    expected = (raw_test - raw_train.mean()) / raw_train.std(unbiased=False)
    assert torch.allclose(test.inputs[:, 0], expected, atol=1e-5)


def test_a_vit_trains_on_digits_and_loads(tmp_path) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(DIGITS), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert metrics["test_accuracy"] > metrics["test_majority_rate"]  # it learned something
    model = attnlab.load(out)
    assert type(model.model).__name__ == "ViT" and not model.training
    assert model(prepare().test.inputs[:5]).shape == (5, 10)
    raw = attnlab.data.load("digits", seed=0)["test"][:5]
    assert model.predict([ex["image"] for ex in raw]) == [
        model.label_names[i] for i in model(prepare().test.inputs[:5]).argmax(-1).tolist()]


def test_a_text_model_kind_for_images_is_refused(tmp_path) -> None:
    exp = load_experiment(DIGITS, ["model.kind=decoder_lm"])
    with pytest.raises(ConfigError, match=r"model.kind decoder_lm does not fit digits, an? "
                                          r"image-classification task; it takes model.kind vit"):
        attnlab.train.train(exp, tmp_path / "run", progress=False)


def test_an_unknown_positive_label_names_the_image_labels() -> None:
    exp = load_experiment(DIGITS, ["task.positive=seven"])
    with pytest.raises(ConfigError, match="'seven' is not a label of digits; its labels are 0, 1, 2, 3"):
        tasks.kind("image-classification").prepare(exp)
