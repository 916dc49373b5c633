"""A new task kind is one class and one `register` call: this file adds 'majority-bit' (does a
string of bits hold more ones than zeros?) and trains, saves, evaluates and predicts with it
through the same front doors as the built-in kinds."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
from attnlab import tasks
from attnlab.data import SPLITS, TaskData, split_seed
from attnlab.errors import ConfigError
from attnlab.tasks import Prepared, Task
from attnlab.train.config import load_experiment
from attnlab.train.run import evaluate

LENGTH = 9  # odd: never a tie


class MajorityBit(Task):
    kind = "majority-bit"
    summary = "more ones than zeros?"
    models = ("encoder_classifier",)

    def prepare(self, exp, encoders=None) -> Prepared:
        def split(name: str) -> TaskData:
            gen = torch.Generator().manual_seed(split_seed(exp.train.seed, name))
            bits = torch.randint(0, 2, (exp.task.examples(name) or 256, LENGTH), generator=gen)
            return TaskData(bits + 1, (bits.sum(-1) > LENGTH // 2).long(), vocab_size=3,
                            num_classes=2, label_names=("fewer", "more"))

        return Prepared(*(split(s) for s in SPLITS))

    def model_settings(self, exp, data: TaskData) -> dict:
        return {**super().model_settings(exp, data), "num_classes": 2}

    def print_predictions(self, predictor, inputs, exp, echo, *, k: int) -> None:
        bits = torch.tensor([[int(c) + 1 for c in text] for text in inputs])
        for text, label in zip(inputs, predictor(bits).argmax(-1).tolist(), strict=True):
            echo(f"{text} {('fewer', 'more')[label]}")


EXP = {"name": "majority", "task": {"name": "bits", "kind": "majority-bit", "train_examples": 1024},
       "model": {"d_model": 32, "layers": 1, "heads": 2}, "attention": "scaled_dot ; softmax",
       "train": {"epochs": 3, "batch_size": 64, "lr": 0.003}}


@pytest.fixture
def registered():
    tasks.register(MajorityBit())
    yield
    del tasks.KINDS["majority-bit"]


def test_a_kind_added_from_outside_trains_loads_evaluates_and_predicts(registered, tmp_path) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(EXP), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert metrics["test_accuracy"] > 0.8  # counting is easy for attention
    assert evaluate(out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    runner = CliRunner()
    done = runner.invoke(attnlab.cli.app.app, ["predict", str(out), "111111000", "000000011"])
    assert done.exit_code == 0, done.output
    assert done.output.split() == ["111111000", "more", "000000011", "fewer"]
    assert json.loads((out / "model.json").read_text())["model"] == "encoder_classifier"


def test_an_unknown_kind_names_the_kinds(registered) -> None:
    with pytest.raises(ConfigError, match="unknown task kind 'majority-bits' — did you mean 'majority-bit'"):
        tasks.task_of(load_experiment({**EXP, "task": {"name": "bits", "kind": "majority-bits"}}).task)
