"""Run folders hold everything `load`, `eval` and `predict` need: they work with the data set
uninstalled and attnlab's cache empty, and read no pickled code."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.data.datasets.base as sources
from attnlab.errors import DataError, RunFolderError
from attnlab.train.config import load_experiment
from attnlab.train.run import evaluate

SPAM = {"name": "tiny-spam",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 16},
                 "train_examples": 128, "val_examples": 32, "test_examples": 64, "positive": "spam"},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "train": {"steps": 4, "batch_size": 32}}
DIGITS = {"name": "tiny-digits", "task": {"name": "digits", "train_examples": 256},
          "model": {"d_model": 16, "layers": 1, "heads": 2, "patch_size": 4},
          "train": {"steps": 4, "batch_size": 64}}
MQAR = {"name": "tiny-mqar",
        "task": {"name": "mqar", "params": {"vocab_size": 64, "seq_len": 32, "num_kv_pairs": 4},
                 "train_examples": 128, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal & window(8)",
        "train": {"steps": 4, "batch_size": 32}}


def hide_data(monkeypatch, tmp_path) -> None:
    """No data package is found on the path, and the cache (tokenizers, Debian sets) is empty."""
    monkeypatch.setattr(sources, "package_dir", lambda module: None)
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "empty-cache"))


@pytest.mark.parametrize("exp", [SPAM, DIGITS, MQAR], ids=["text", "image", "generated"])
def test_a_run_loads_evaluates_and_predicts_with_its_data_hidden(exp, tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(exp), out, progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    test = attnlab.tasks.task_of(load_experiment(exp).task).load_test(out, load_experiment(exp)).test
    expected = attnlab.load(out)(test.inputs[:8])

    hide_data(monkeypatch, tmp_path)
    if exp is not MQAR:
        with pytest.raises(DataError):
            attnlab.data.load(exp["task"]["name"])
    model = attnlab.load(out)
    assert torch.equal(model(test.inputs[:8]), expected)
    scores = evaluate(out)
    for key, value in metrics.items():
        if key.startswith("test_") and key != "test_loss":
            assert scores[key] == pytest.approx(value, abs=1e-6), key
    runner = CliRunner()
    done = runner.invoke(attnlab.cli.app.app, ["eval", str(out)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output)["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    done = runner.invoke(attnlab.cli.app.app, ["predict", str(out), "free prize, call now"])
    if exp is SPAM:
        assert done.exit_code == 0, done.output
        assert done.output.split()[0] in ("ham", "spam")
    else:  # one line that says why, no traceback
        assert done.exit_code == 2 and done.output.startswith("error: ")
        assert ("generated task" if exp is MQAR else "classifies images") in done.output


def test_a_program_string_is_parsed_once_per_run(tmp_path, monkeypatch) -> None:
    """The experiment parses it; models, tasks and logging receive the Program object."""
    from attnlab.lang import program

    program._parse_text.cache_clear()  # parse's LRU cache: start from nothing
    calls = []
    original = program.Program.from_string
    monkeypatch.setattr(program.Program, "from_string",
                        classmethod(lambda cls, text: calls.append(text) or original(text)))
    metrics = attnlab.train.train(load_experiment(MQAR), tmp_path / "run", progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert calls == ["causal & window(8)"]
    assert metrics["program"] == "scaled_dot ; causal & window(8) ; softmax"  # from the model


def test_loading_reads_no_pickled_code(tmp_path) -> None:
    """model.pt is read with weights_only=True: a planted object is refused, not run."""
    out = tmp_path / "run"
    attnlab.train.train(load_experiment(MQAR), out, progress=False,
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")

    class Planted:
        def __reduce__(self):
            return (print, ("planted code ran",))

    torch.save({"planted": Planted()}, out / "model.pt")
    with pytest.raises(RunFolderError, match=r"model\.pt"):  # its hash no longer matches
        attnlab.load(out)
