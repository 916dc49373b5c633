"""Experiment files as a careless or hostile person writes them: every mistake is one ConfigError
before anything is written or trained, and no input makes loading take long or raise anything else."""

from __future__ import annotations

import math
import os
import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlab import ConfigError
from attnlab.errors import AttnlabError
from attnlab.tasks import KINDS
from attnlab.train.config import load_experiment

BASE = {"name": "t", "task": {"name": "mqar", "params": {"vocab_size": 16, "seq_len": 16}},
        "attention": "causal", "train": {"epochs": 1}}


def _with(path: str, value) -> dict:
    """BASE with the value at a dotted path replaced."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


# (what is wrong, the experiment, --set overrides, what the one line says)
MISTAKES = [
    ("seed below 0", _with("train.seed", -1), [], "train.seed: Input should be greater than or equal to 0"),
    ("seed of 2**32", _with("train.seed", 2**32), [], "train.seed: Input should be less than 4294967296"),
    ("monitor the task never logs", _with("train.early_stopping", {"monitor": "val_acc"}), [],
     "mqar logs val_loss, val_accuracy on validation, not 'val_acc' — did you mean 'val_accuracy'?"),
    ("loss monitored as a maximum", _with("train.early_stopping", {"monitor": "val_loss", "mode": "max"}),
     [], "val_loss falls as the model improves: give mode: min"),
    ("text as a vocabulary size", _with("task.params.vocab_size", "big"), [],
     "task.params.vocab_size: mqar takes an integer below 2**31 here (default 8192), got 'big'"),
    ("true as a vocabulary size", _with("task.params.vocab_size", True), [], "task.params.vocab_size"),
    ("a vocabulary past int64", _with("task.params.vocab_size", 10**30), [], "task.params.vocab_size"),
    ("empty name", _with("name", ""), [], "name: '' is not a run name"),
    ("name climbing out of runs/", _with("name", "../../x"), [], "'../../x' is not a run name"),
    ("absolute name", _with("name", "/tmp/x"), [], "'/tmp/x' is not a run name"),
    ("name '..'", _with("name", ".."), [], "is not a run name"),
    ("name with a slash", BASE, ["name=a/b"], "'a/b' is not a run name"),
    ("infinite learning rate", _with("train.lr", math.inf), [], "train.lr: Input should be a finite number"),
    ("infinite lr from --set", BASE, ["train.lr=.inf"], "train.lr: Input should be a finite number"),
    ("lr of 1e6", BASE, ["train.lr=1e6"], "train.lr: Input should be less than or equal to 10"),
    ("nan dropout", _with("model.dropout", math.nan), [], "model.dropout: Input should be a finite number"),
    ("infinite weight decay", _with("train.weight_decay", math.inf), [], "train.weight_decay"),
    ("infinite clip", _with("train.clip", math.inf), [], "train.clip"),
    ("infinite length penalty", _with("decode.length_penalty", math.inf), [], "decode.length_penalty"),
    ("true as a layer count", _with("model.layers", True), [], "model.layers: expected a number, got true"),
    ("d_model of 10**30", _with("model.d_model", 10**30), [], "model.d_model"),
    ("epochs of 10**30", _with("train.epochs", 10**30), [], "train.epochs"),
    ("heads 0 in a head group", _with("attention", [[["causal", 0]]]), [], "with heads ≥ 1"),
    ("top-level list with --set", ["a", "b"], ["train.lr=1"], "an experiment is a YAML mapping"),
    ("invalid YAML in --set", BASE, ["train.lr=[1"], "--set train.lr: the value is not valid YAML"),
    ("empty key in --set", BASE, ["train..lr=1"], "a key is names joined by '.'"),
    ("--set into a list", _with("attention", ["causal"]), ["attention.0.x=1"], "is not a section"),
]


@pytest.mark.parametrize("data, overrides, message", [m[1:] for m in MISTAKES],
                         ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_config_error_naming_it(data, overrides, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_experiment(data, overrides)


@pytest.mark.parametrize("content, message", [
    (None, "is a folder; give an experiment YAML file"),
    (b"name: caf\xe9\n", "is not UTF-8 text (byte 9); save it as UTF-8"),
    (b"- a\n- b\n", "an experiment is a YAML mapping (name:, task:, train:, …), got a list"),
    (b"", "got an empty file"),
    (b"name: [1\n", "is not valid YAML: expected ',' or ']'"),
    (b"[" * 5000, "nested"),
    (b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     "holds over 100,000 values"),
], ids=["folder", "latin-1", "list", "empty", "bad yaml", "deep", "alias bomb"])
def test_a_bad_file_is_one_config_error(tmp_path, content, message) -> None:
    path = tmp_path / "exp"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_experiment(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_not_read_forever(tmp_path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ConfigError, match="not a regular file"):
        load_experiment(tmp_path / "pipe")


def test_plain_names_and_sane_settings_still_load() -> None:
    exp = load_experiment(BASE, ["name=mqar-window_2.v1", "train.seed=4294967295", "train.lr=1e-3",
                                 "train.early_stopping={monitor: val_loss}", "train.clip=null"])
    assert exp.name == "mqar-window_2.v1" and exp.train.seed == 2**32 - 1
    assert exp.train.early_stopping.mode == "min"  # follows the monitor when not given
    assert exp.train.clip is None


def test_every_task_monitors_a_metric_its_validation_logs() -> None:
    for task in KINDS.values():
        assert task.monitor in task.validation_metrics(), task.kind


# -- property tests: arbitrary documents, overrides and text ----------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
           | st.sampled_from(["causal", "val_loss", "mqar", "../x", "1e-3", ".inf", "-1"]))
KEYS = st.sampled_from(["name", "task", "model", "train", "attention", "decode", "params", "lr",
                        "seed", "epochs", "early_stopping", "monitor", "mode", "d_model", "heads",
                        "dropout", "vocab_size", "kind", "clip"]) | st.text(max_size=8) | st.integers()
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=16)
SECTIONS = st.sampled_from(["name", "task", "task.params", "task.params.vocab_size", "model",
                            "model.heads", "train", "train.lr", "train.early_stopping",
                            "train.early_stopping.monitor", "attention", "decode.beam_size"])
TIME_BOUND_S = 5  # one load, however bad the input


def _only_success_or_attnlab_error(load) -> None:
    try:
        load()
    except AttnlabError as e:
        assert str(e).strip(), "an error with no message"


@settings(max_examples=120, deadline=TIME_BOUND_S * 1000,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(document=NESTED | st.dictionaries(KEYS, NESTED, max_size=6))
def test_any_yaml_document_loads_or_is_an_attnlab_error(tmp_path, document) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(document))
    _only_success_or_attnlab_error(lambda: load_experiment(path))


@settings(max_examples=150, deadline=TIME_BOUND_S * 1000)
@given(changes=st.lists(st.tuples(SECTIONS, NESTED), max_size=3))
def test_any_change_to_a_valid_experiment_loads_or_is_an_attnlab_error(changes) -> None:
    data = BASE
    for where, value in changes:
        data = _with(where, value)
    _only_success_or_attnlab_error(lambda: load_experiment(data))


@settings(max_examples=150, deadline=TIME_BOUND_S * 1000)
@given(key=SECTIONS | st.text(max_size=12), raw=st.text(max_size=30) | NESTED.map(yaml.safe_dump))
def test_any_override_loads_or_is_an_attnlab_error(key, raw) -> None:
    _only_success_or_attnlab_error(lambda: load_experiment(BASE, [f"{key}={raw}"]))


@settings(max_examples=120, deadline=TIME_BOUND_S * 1000,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_file_content_loads_or_is_an_attnlab_error(tmp_path, content) -> None:
    path = tmp_path / "exp.yaml"
    path.write_bytes(content)
    _only_success_or_attnlab_error(lambda: load_experiment(path))

