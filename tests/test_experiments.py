"""Experiment files: validation that names the key, overrides, atomic checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from attnlab import ConfigError
from attnlab.lang import parse
from attnlab.train.checkpoints import AtomicCheckpointIO
from attnlab.train.config import PROGRAM_FIELDS, load_experiment, placeholders

ROOT = Path(__file__).resolve().parents[1]
BASE = {"name": "t", "task": {"name": "mqar"}, "attention": "causal", "train": {"epochs": 1}}


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_experiments_validate(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    # a file made for sweeps and tuning leaves its placeholders to --set, --grid or --param
    fills = [f"{field}.{name}=4" for field in PROGRAM_FIELDS for name in placeholders(data.get(field))]
    exp = load_experiment(path, fills)
    assert exp.name and exp.task.name
    if fills:
        with pytest.raises(ConfigError, match=re.escape("has no value: give it with --set")):
            load_experiment(path)


def test_mqar_experiment_is_zoologys_setting() -> None:
    exp = load_experiment(ROOT / "experiments/mqar.yaml")
    assert exp.task.params == {"vocab_size": 8192, "seq_len": 64, "num_kv_pairs": 4}
    assert (exp.model.d_model, exp.model.layers) == (64, 2)
    assert exp.attention == parse("causal ; softmax")  # parsed once, here


@pytest.mark.parametrize("data, overrides, message", [
    ({**BASE, "train": {"epochs": 1, "batchsize": 8}}, [], "unknown key 'train.batchsize' — did "
     "you mean 'batch_size'?"),
    (BASE, ["model.d_modle=32"], "unknown key 'model.d_modle' — did you mean 'd_model'?"),
    ({**BASE, "attention": "causl"}, [], "did you mean 'causal'?"),
    ({**BASE, "train": {}}, [], "give train.epochs or train.steps"),
    (BASE, ["train.lr=-1"], "train.lr: Input should be greater than 0"),
    ({**BASE, "tsk": 1}, [], "unknown key 'tsk' — did you mean 'task'?"),
    (BASE, ["train.lr"], "--set takes key.path=value"),
    ({k: v for k, v in BASE.items() if k != "task"}, [], "missing key 'task'"),
])
def test_mistakes_name_the_key(data, overrides, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_experiment(data, overrides)


def test_overrides_reach_any_key() -> None:
    exp = load_experiment(BASE, ["train.lr=3e-4", "model.layers=3", "task.params.seq_len=128",
                                 "attention=[causal, [['causal', 2], ['causal & window(4)', 2]]]"])
    assert exp.train.lr == 3e-4 and exp.model.layers == 3 and exp.task.params["seq_len"] == 128
    assert exp.attention == [parse("causal"), [(parse("causal"), 2), (parse("causal & window(4)"), 2)]]
    assert exp.model_dump(mode="json")["attention"] == [
        "scaled_dot ; causal ; softmax",
        [["scaled_dot ; causal ; softmax", 2], ["scaled_dot ; causal & window(4) ; softmax", 2]]]


def test_checkpoints_are_replaced_whole(tmp_path, monkeypatch) -> None:
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def crash(obj, f):  # dies half-way through writing the new checkpoint
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, target)
    monkeypatch.undo()
    assert torch.load(target)["step"] == 1  # the old checkpoint, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left behind
