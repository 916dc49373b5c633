"""The command line on bad input: every mistake is exactly one `error:` line on stderr and exit 2,
never a traceback (without --debug); and what people and data sets wrote is printed literally."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import attnlab.train
import attnlab.train.run
from attnlab import tasks
from attnlab.cli.app import app
from attnlab.cli.text import shown
from attnlab.tasks import Task

runner = CliRunner()
EXPERIMENT = {"name": "t", "task": {"name": "mqar", "params": {"vocab_size": 16, "seq_len": 16}},
              "attention": "causal", "train": {"epochs": 1}}
FUZZ = settings(max_examples=40, deadline=10_000,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_error_line(result, *args) -> None:
    """Exit 2, one `error:` line on stderr, no traceback anywhere."""
    where = f"attnlab {' '.join(map(repr, args))}:\n{result.output}"
    assert "Traceback" not in result.output, where
    assert result.exception is None or isinstance(result.exception, SystemExit), where
    assert result.exit_code == 2, where
    assert sum(line.startswith("error:") for line in result.stderr.splitlines()) == 1, where


def assert_ok_or_one_error_line(result, *args) -> None:
    if result.exit_code != 0:
        assert_one_error_line(result, *args)


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path_factory, monkeypatch):
    """Commands that default to ./runs or ./out write into a temporary folder, not the checkout."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture
def no_training(monkeypatch):
    """`train` and `compare` stop where training would begin: these tests check what comes before."""
    metrics = {"test_accuracy": 0.5, "train_seconds": 1.0, "params": 10, "main_metric": "test_accuracy"}
    monkeypatch.setattr(attnlab.train, "train", lambda *a, **k: metrics)
    monkeypatch.setattr("attnlab.train.compare.train", lambda *a, **k: metrics)
    monkeypatch.setattr("attnlab.train.compare.bar_chart", lambda rows, path, **k: path)


# -- mistakes in the command line itself ------------------------------------------------------------

USAGE_MISTAKES = [
    ("program", "explain", "causal", "--seq", "-5"),
    ("program", "explain", "causal", "--heads", "many"),
    ("program", "explain"),
    ("program", "show", "causal", "--seq", "0"),
    ("program", "bogus"),
    ("bench", "kernels", "--threads", "0"),
    ("bench", "kernels", "--device", "tpu"),
    ("bench", "kernels", "--only", "no-such-case"),
    ("train",),
    ("train", "exp.yaml", "--devices", "0"),
    ("eval",),
    ("predict", "run"),
    ("predict", "run", "text", "--k", "0"),
    ("runs", "--bogus"),
    ("data", "get"),
    ("data", "get", "no-such-set"),
    ("zoo", "no-such-entry"),
    ("compare", "exp.yaml"),
    ("no-such-command",),
    ("--no-such-option",),
]


@pytest.mark.parametrize("args", USAGE_MISTAKES, ids=" ".join)
def test_a_command_line_mistake_is_one_error_line(args) -> None:
    assert_one_error_line(invoke(*args), *args)


def test_debug_still_shows_the_traceback() -> None:
    result = invoke("--debug", "zoo", "no-such-entry")
    assert result.exit_code != 0 and result.exception is not None


# -- text printed literally ---------------------------------------------------------------------------


class EchoTask(Task):
    """A stand-in kind whose predictions echo the inputs, as the text classifier's do."""

    kind = "echo-text"
    summary = "says the text back"
    models = ("encoder_classifier",)

    def print_predictions(self, predictor, inputs, exp, echo, *, k: int) -> None:
        for text in inputs:
            echo(f"[label]\t0.900\t{text}")


@pytest.fixture
def echo_run(tmp_path, monkeypatch):
    """A run folder of the echo kind; loading its model is skipped (the folder is not the point)."""
    tasks.register(EchoTask())
    monkeypatch.setattr(attnlab.train.run, "load", lambda out: None)
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(
        {**EXPERIMENT, "task": {"name": "texts", "kind": "echo-text"}}))
    yield tmp_path
    del tasks.KINDS["echo-text"]


def test_predict_prints_input_text_literally(echo_run) -> None:
    texts = ["a [/x] b", "[bold]not bold[/bold] :thumbs_up:", "\x1b[2Jcleared\rback\u202eevil"]
    result = invoke("predict", echo_run, *texts)
    assert result.exit_code == 0, result.output
    assert "[label] 0.900   a [/x] b" in result.stdout  # rich expands the tab
    assert "[bold]not bold[/bold] :thumbs_up:" in result.stdout
    assert "\\x1b[2Jcleared\\rback\\u202eevil" in result.stdout
    assert "\x1b" not in result.stdout and "\r" not in result.stdout


def test_an_error_quoting_the_input_prints_it_literally() -> None:
    result = invoke("program", "explain", "causal ; [/x]\x1b[2J")
    assert_one_error_line(result)
    assert "\x1b" not in result.output and "[/x]" in result.output  # shown, never obeyed


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"), ("tab\tand\nnewline", "tab\tand\nnewline"), ("\x1b[31m", "\\x1b[31m"),
    ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"), ("\u202e\u2066", "\\u202e\\u2066"), ("é ü 日本", "é ü 日本"),
])
def test_shown_escapes_only_control_characters(text, expected) -> None:
    assert shown(text) == expected


# -- the whole command line on generated bad input ----------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=24)
PROGRAM_TEXT = TEXT | st.lists(st.sampled_from(
    ["causal", "window(", "4", ")", "&", "|", "~", ";", "softmax", "topk(", "heads(", "-1", "0",
     "1e999", "zoo:", "alibi", "+", "scaled_dot", ",", "(", "sparsemax", "x", "[", "]"]),
    max_size=10).map(" ".join)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(TEXT | st.sampled_from(list(EXPERIMENT)), inner, max_size=3),
                      max_leaves=10)
SET_ITEMS = st.lists(st.tuples(st.sampled_from(["name", "train.lr", "train.seed", "model.heads",
                                                "task.params.vocab_size", "attention", "", "a..b"])
                               | TEXT, TEXT), max_size=2).map(lambda kv: [f"{k}={v}" for k, v in kv])


@FUZZ
@given(program=PROGRAM_TEXT, seq=st.integers(1, 48))
def test_program_commands_never_print_a_traceback(tmp_path, program, seq) -> None:
    args = ("program", "explain", program, "--seq", seq, "--block", 16)
    assert_ok_or_one_error_line(invoke(*args), *args)
    args = ("program", "show", program, "--seq", seq, "--out", tmp_path / "m.png")
    assert_ok_or_one_error_line(invoke(*args), *args)


@FUZZ
@given(document=NESTED | st.dictionaries(st.sampled_from(list(EXPERIMENT)), NESTED, max_size=5),
       overrides=SET_ITEMS)
def test_train_and_compare_on_bad_experiments_never_print_a_traceback(tmp_path, no_training,
                                                                     document, overrides) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(document))
    sets = [arg for item in overrides for arg in ("--set", item)]
    args = ("train", path, *sets, "--out", tmp_path / "out")
    assert_ok_or_one_error_line(invoke(*args), *args)
    args = ("compare", path, *sets, "--out", tmp_path / "cmp", "--programs", "causal")
    assert_ok_or_one_error_line(invoke(*args), *args)


@FUZZ
@given(overrides=SET_ITEMS, program=PROGRAM_TEXT)
def test_overrides_and_compared_programs_never_print_a_traceback(tmp_path, no_training, overrides,
                                                                program) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENT))
    sets = [arg for item in overrides for arg in ("--set", item)]
    args = ("train", path, *sets, "--out", tmp_path / "out")
    assert_ok_or_one_error_line(invoke(*args), *args)
    args = ("compare", path, "--out", tmp_path / "cmp", "--programs", program)
    assert_ok_or_one_error_line(invoke(*args), *args)


@pytest.mark.parametrize("out", ["file", "file/sub"])
def test_train_refuses_an_out_it_cannot_write_before_training(tmp_path, no_training, out) -> None:
    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    result = invoke("train", tmp_path / "exp.yaml", "--out", tmp_path / out)
    assert_one_error_line(result)
    assert "cannot write there" in result.stderr


RUN_FILES = ["experiment.yaml", "model.json", "model.pt", "best.ckpt", "last.ckpt", "labels.json",
             "tokenizer.json", "test.pt", "metrics.json", "manifest.json"]
CONTENTS = (st.binary(max_size=64) | NESTED.map(yaml.safe_dump).map(str.encode)
            | st.just(yaml.safe_dump(EXPERIMENT).encode()) | st.just(b""))


@FUZZ
@given(files=st.dictionaries(st.sampled_from(RUN_FILES), CONTENTS, max_size=5), text=TEXT)
def test_eval_and_predict_on_bad_run_folders_never_print_a_traceback(tmp_path_factory, files,
                                                                      text) -> None:
    run = tmp_path_factory.mktemp("run")
    for name, content in files.items():
        (run / name).write_bytes(content)
    for args in (("eval", run), ("predict", run, text), ("eval", run, "--task", "copy")):
        assert_one_error_line(invoke(*args), *args)


@pytest.mark.parametrize("store", ["bogus://x", "NOT_SQLITE", "FOLDER"])  # a store not made yet: 0 runs
def test_runs_with_a_bad_store_is_one_error_line(tmp_path, store) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not a database")
    uri = {"NOT_SQLITE": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "FOLDER": f"sqlite:///{tmp_path}"}.get(store, store)
    assert_one_error_line(invoke("runs", "--tracking-uri", uri), "runs", "--tracking-uri", uri)


def test_compare_prints_an_out_path_with_brackets_literally(tmp_path, no_training) -> None:
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(EXPERIMENT))
    out = tmp_path / "a [/x] b"
    result = invoke("compare", tmp_path / "exp.yaml", "--out", out, "--programs", "causal")
    assert result.exit_code == 0, result.output
    assert "a [/x]" in result.output  # shown, not read as a closing tag
