"""`tune`: parameter specs, a tiny Optuna study whose trials are MLflow runs scored on validation,
pruning through Lightning, and a study that survives a kill and is shared by two processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console
from typer.testing import CliRunner

import attnlab
import attnlab.train.run
from attnlab import ConfigError
from attnlab.cli.app import app
from attnlab.train.tune import parse_param, parse_params, tune
from stores import fresh_store

TINY = {"name": "tiny-tune",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal & window($w) ; softmax",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "seed": 3}}
PARAMS = {"attention.w": "int(1,6)", "model.heads": "choice(1,2)"}
SRC = str(Path(attnlab.__file__).parents[1])
QUIET = {"console": Console(quiet=True), "progress": False}


# -- parameter specs ------------------------------------------------------------------------------


def test_each_kind_of_spec_parses() -> None:
    assert parse_param("w", "int(4, 64, log)") == parse_param("w", "int(4,64,log)")
    w = parse_param("w", "int(4,64,step=4)")
    assert (w.kind, w.low, w.high, w.step, w.log) == ("int", 4, 64, 4, False)
    lr = parse_param("train.lr", "float(1e-4,1e-2,log)")
    assert (lr.kind, lr.low, lr.high, lr.log) == ("float", 1e-4, 1e-2, True)
    programs = parse_param("attention", "choice(causal ; softmax, causal & window(4) ; softmax, 3)")
    assert programs.choices == ("causal ; softmax", "causal & window(4) ; softmax", 3)
    assert parse_params(["attention.w=int(1,3)", "model.heads=choice(2,4)"]) == {
        "attention.w": "int(1,3)", "model.heads": "choice(2,4)"}


@pytest.mark.parametrize("spec, problem", [
    ("int(4)", "int(lo,hi) takes two integers first"),
    ("int(1.5,3)", "int(lo,hi) takes two integers first"),
    ("int(8,4)", "lo 8 is above hi 4"),
    ("int(0,4,log)", "a log range starts above 0"),
    ("int(1,4,step=0)", "step=k takes a number above 0"),
    ("int(1,4,sqrt)", "after lo,hi comes 'log' or 'step=k', got 'sqrt'"),
    ("range(1,4)", "not a parameter spec"),
    ("choice(2,2)", "a value is given twice"),
    ("choice([1, 2])", "a choice is among numbers, words, programs or true/false"),
    ("choice(1,,2)", "an empty argument"),
])
def test_a_bad_spec_names_the_param_and_what_is_accepted(spec, problem) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"--param w={spec}: {problem}; accepted: "
                                                    "int(lo,hi), int(lo,hi,log)")):
        parse_param("w", spec)


# -- a tiny study -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module."""
    return fresh_store(tmp_path_factory.mktemp("store"))


@pytest.fixture(scope="module")
def study(tmp_path_factory, store):
    tmp = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{tmp / 'optuna.db'}"
    result = tune(TINY, PARAMS, trials=3, storage=storage, out=tmp / "tune", tracking_uri=store,
                  **QUIET)
    return {"result": result, "storage": storage, "out": tmp / "tune", "store": store}


def _runs(store: str, study_name: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny-tune")
    return client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`optuna.study` = '{study_name}'")


def test_each_trial_is_an_mlflow_run_scored_by_its_best_validation_value(study) -> None:
    import mlflow

    result = study["result"]
    assert [t["state"] for t in result["trials"]] == ["COMPLETE"] * 3
    runs = {int(r.data.tags["optuna.trial"]): r for r in _runs(study["store"], "tiny-tune")}
    assert sorted(runs) == [0, 1, 2]
    client = mlflow.MlflowClient(tracking_uri=study["store"])
    for trial in result["trials"]:
        run = runs[trial["number"]]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "COMPLETE"
        history = [m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert len(history) == 2  # one value per validation (two epochs): the objective is the best
        assert trial["value"] == pytest.approx(max(history))
        folder = Path(trial["folder"])
        assert folder == study["out"] / f"trial-{trial['number']}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert trial["test"] == {"test_accuracy": metrics["test_accuracy"]}  # beside, not the value
        assert f"window({trial['params']['attention.w']})" in metrics["program"]


def test_the_best_trial_plots_and_tune_json(study) -> None:
    result, out = study["result"], study["out"]
    best = max(result["trials"], key=lambda t: t["value"])
    assert (result["best_value"], result["best_params"], result["best_folder"]) == (
        best["value"], best["params"], best["folder"])
    assert result["best_test"] == best["test"]
    assert json.loads((out / "tune.json").read_text()) == json.loads(json.dumps(result))
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"
    if result["importances"]:
        assert (out / "importances.png").read_bytes()[:4] == b"\x89PNG"
    else:  # three trials that happen to share every value: said, not failed
        assert "parameter importances" in result["importances_note"]


def test_a_rerun_of_a_study_that_has_its_trials_trains_nothing(study, monkeypatch) -> None:
    monkeypatch.setattr(attnlab.train.run, "train", lambda *a, **k: pytest.fail("trained"))
    again = tune(TINY, PARAMS, trials=3, storage=study["storage"], out=study["out"],
                 tracking_uri=study["store"], **QUIET)
    assert [t["number"] for t in again["trials"]] == [0, 1, 2]


def test_a_trial_the_pruner_stops_is_pruned_and_its_run_says_so(tmp_path, store) -> None:
    from attnlab.train.folder import verify

    always = optuna.pruners.ThresholdPruner(lower=2.0)  # no accuracy reaches 2: pruned at once
    result = tune(TINY, PARAMS, trials=1, storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                  study="pruned", out=tmp_path / "tune", tracking_uri=store, pruner=always, **QUIET)
    assert [t["state"] for t in result["trials"]] == ["PRUNED"]
    assert result["best_trial"] is None and result["finished"] == 1
    assert result["importances"] is None  # said instead of drawn
    assert result["importances_note"].startswith("parameter importances need 2 complete trials")
    [run] = _runs(store, "pruned")
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "PRUNED"
    verify(tmp_path / "tune" / "trial-0", complete=False)  # the folder as a kill would leave it
    assert not (tmp_path / "tune" / "trial-0" / "metrics.json").exists()


# -- killed, resumed, shared ----------------------------------------------------------------------

# Both processes start their trials at the same moment (each waits for the other here).
TOGETHER = """
import os, pathlib, time, optuna
_optimize = optuna.study.Study.optimize
def _together(self, *args, **kwargs):
    here = pathlib.Path(os.environ["BARRIER"])
    (here / f"ready-{os.getpid()}").touch()
    deadline = time.time() + 120
    while len(list(here.glob("ready-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    return _optimize(self, *args, **kwargs)
optuna.study.Study.optimize = _together
"""
# ... and this one is killed in its second trial, right after that trial's first checkpoint.
KILLED_IN_SECOND_TRIAL = TOGETHER + """
import signal
from attnlab.train.checkpoints import AtomicCheckpointIO
_save, _folders = AtomicCheckpointIO.save_checkpoint, []
def _save_then_die(self, checkpoint, path, storage_options=None):
    _save(self, checkpoint, path, storage_options)
    folder = os.path.dirname(str(path))
    _folders.extend([] if folder in _folders else [folder])
    if len(_folders) == 2 and str(path).endswith("last.ckpt"):
        os.kill(os.getpid(), signal.SIGKILL)
AtomicCheckpointIO.save_checkpoint = _save_then_die
"""


def tune_process(tmp_path: Path, args: list[str], prelude: str) -> subprocess.Popen:
    code = (f"{prelude}\nimport sys\nfrom attnlab.cli.app import main\n"
            "sys.argv = ['attnlab', *sys.argv[1:]]\nmain()")
    env = {**os.environ, "PYTHONPATH": SRC, "BARRIER": str(tmp_path), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_processes_share_a_study_and_a_killed_trial_is_run_again(tmp_path, store,
                                                                     monkeypatch) -> None:
    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    args = ["tune", str(exp), "--param", "attention.w=int(1,6)", "--param", "model.heads=choice(1,2)",
            "--trials", "5", "--storage", "sqlite:///runs/optuna.db", "--tracking-uri", store,
            "--set", "train.epochs=1"]
    killed = tune_process(tmp_path, [*args, "--seed", "1"], KILLED_IN_SECOND_TRIAL)
    other = tune_process(tmp_path, [*args, "--seed", "2"], TOGETHER)
    outputs = [p.communicate(timeout=300)[0] for p in (killed, other)]
    assert killed.returncode == -9, outputs[0][-3000:]
    assert other.returncode == 0, outputs[1][-3000:]

    shared = optuna.load_study(study_name="tiny-tune", storage="sqlite:///" + str(
        tmp_path / "runs" / "optuna.db"))
    [dead] = shared.get_trials(states=(TrialState.RUNNING,))  # its process is gone
    pids = {t.user_attrs["attnlab.process"]["attnlab.pid"] for t in shared.get_trials()}
    assert {str(killed.pid), str(other.pid)} <= pids  # both processes ran trials of one study
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(shared.get_trials(states=finished)) == 4  # the other process counted the dead one

    # rerun (from the same folder, as a person would): the dead trial fails, its values run again
    monkeypatch.chdir(tmp_path)
    result = tune(exp, PARAMS, trials=5, storage="sqlite:///runs/optuna.db",
                  overrides=["train.epochs=1"], tracking_uri=store, **QUIET)
    states = {t["number"]: t["state"] for t in result["trials"]}
    assert states[dead.number] == "FAIL"
    assert sum(s in ("COMPLETE", "PRUNED") for s in states.values()) == 5 == result["finished"]
    again = [t for t in shared.get_trials() if t.user_attrs.get("retry_of") == dead.number]
    assert len(again) == 1 and again[0].params == dead.params
    assert again[0].state == TrialState.COMPLETE
    assert again[0].user_attrs["attnlab.process"]["attnlab.pid"] == str(os.getpid())
    assert len({t.number for t in shared.get_trials()}) == len(shared.get_trials())
    runs = {int(r.data.tags["optuna.trial"]): r.info.status for r in _runs(store, "tiny-tune")
            if Path(r.data.tags["attnlab.folder"]).is_relative_to(tmp_path)}
    assert runs[dead.number] == "KILLED"
    assert runs[again[0].number] == "FINISHED"


def test_cli_mistakes_are_one_line(tmp_path) -> None:
    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump(TINY))
    runner = CliRunner()
    for args, message in [
        (["--param", "attention.w=int(1)"], "error: --param attention.w=int(1): int(lo,hi) takes"),
        ([], "error: give the parameters to tune: --param"),
        (["--param", "attention.x=int(1,3)"], "error: --param attention.x at 1: --set "
                                              "'attention.x': attention has no placeholder $x"),
        (["--param", "attention.w=int(1,3)", "--storage", "runs/optuna.db"],
         "error: --storage 'runs/optuna.db': give sqlite:///PATH"),
        (["--param", "attention.w=int(1,3)", "--trials", "0"], "error: --trials: give a number"),
    ]:
        done = runner.invoke(app, ["tune", str(exp), *args])
        assert done.exit_code == 2 and done.output.startswith(message), done.output
        assert len(done.output.strip().splitlines()) == 1, done.output
