"""The tracking store survives kills and concurrency: made once under a lock, repaired or explained
when half made, killed runs shown as killed, a resume continuing its MLflow run, bad URIs refused."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import attnlab
from attnlab.cli.app import app
from attnlab.errors import ConfigError
from attnlab.train.config import load_experiment
from attnlab.train.tracking import RUN_FILE, list_runs

TINY = {"name": "tiny-track",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal ; softmax",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "seed": 3}}
SRC = str(Path(attnlab.__file__).parents[1])
# Kill this process the moment MLflow's migrations add the `step` column: in the middle of making
# the store, where a kill used to leave it broken for good ('duplicate column name: step').
KILL_IN_STORE_CREATION = """
import os, signal
from sqlalchemy import event
from sqlalchemy.engine import Engine

@event.listens_for(Engine, "after_cursor_execute")
def _kill(conn, cursor, statement, *args):
    if "ADD COLUMN step" in statement:
        os.kill(os.getpid(), signal.SIGKILL)
"""
# Kill this training right after its first last.ckpt is written (the end of epoch one of two).
KILL_AFTER_FIRST_EPOCH = """
import os, signal
from attnlab.train.checkpoints import AtomicCheckpointIO

_save = AtomicCheckpointIO.save_checkpoint
def _save_then_die(self, checkpoint, path, storage_options=None):
    _save(self, checkpoint, path, storage_options)
    if str(path).endswith("last.ckpt"):
        os.kill(os.getpid(), signal.SIGKILL)
AtomicCheckpointIO.save_checkpoint = _save_then_die
"""
runner = CliRunner()


def attnlab_process(tmp_path: Path, args: list[str], prelude: str = "") -> subprocess.Popen:
    """`attnlab ARGS` in a new process (after running `prelude` in it), this checkout's code."""
    code = (f"{prelude}\nimport sys\nfrom attnlab.cli.app import main\n"
            "sys.argv = ['attnlab', *sys.argv[1:]]\nmain()")
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def experiment_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def train_args(tmp_path: Path, out: str, store: str) -> list[str]:
    return ["train", str(experiment_file(tmp_path)), "--out", str(tmp_path / out),
            "--tracking-uri", store]


def store_is_whole(db: Path) -> bool:
    from attnlab.train.tracking import _store_state

    return _store_state(db)[1] is None


def test_two_trainings_at_once_on_a_fresh_store_both_finish(tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    both = [attnlab_process(tmp_path, train_args(tmp_path, out, store)) for out in ("a", "b")]
    outputs = [p.communicate(timeout=300)[0] for p in both]
    for p, output in zip(both, outputs, strict=True):
        assert p.returncode == 0, output[-3000:]
    runs = list_runs("tiny-track", store)
    assert [r["status"] for r in runs] == ["FINISHED", "FINISHED"]


def test_a_kill_while_the_store_is_made_leaves_it_usable(tmp_path) -> None:
    """The process that makes the store is killed mid-migration; the next training succeeds."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    killed = attnlab_process(tmp_path, train_args(tmp_path, "killed", store), KILL_IN_STORE_CREATION)
    killed.communicate(timeout=300)
    assert killed.returncode == -9
    metrics = attnlab.train.train(load_experiment(TINY), tmp_path / "run", tracking_uri=store,
                                  progress=False)
    assert [r["test_accuracy"] for r in list_runs("tiny-track", store)] == [metrics["test_accuracy"]]
    assert store_is_whole(tmp_path / "mlflow.db")
    assert not list(tmp_path.glob("mlflow.db.init-*"))  # the killed half is cleaned up


def test_a_half_made_store_that_holds_no_runs_is_made_again(tmp_path) -> None:
    """A store MLflow itself left half made (a kill among its migrations) is rebuilt on first use."""
    db = tmp_path / "mlflow.db"
    code = f"{KILL_IN_STORE_CREATION}\nimport mlflow\nmlflow.MlflowClient(tracking_uri='sqlite:///{db}')"
    done = subprocess.run([sys.executable, "-c", code], timeout=300, capture_output=True)
    assert done.returncode == -9 and db.exists() and not store_is_whole(db)
    with pytest.warns(UserWarning, match="held no runs"):
        assert list_runs(None, f"sqlite:///{db}") == []
    assert store_is_whole(db)


def test_a_store_at_another_schema_that_holds_runs_is_explained(tmp_path) -> None:
    import mlflow

    from attnlab.train.tracking import open_store

    db = tmp_path / "mlflow.db"
    uri = open_store(f"sqlite:///{db}")
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.create_run(client.create_experiment("old"))
    with sqlite3.connect(db) as con:  # as if made by an older MLflow, or its migration cut short
        con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
    con.close()
    with pytest.raises(ConfigError, match=r"holds 1 runs .*mlflow db upgrade"):
        list_runs(None, f"sqlite:///{db}")


def test_a_killed_run_shows_as_killed_and_resume_continues_its_mlflow_run(tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    killed = attnlab_process(tmp_path, train_args(tmp_path, "run", store), KILL_AFTER_FIRST_EPOCH)
    output = killed.communicate(timeout=300)[0]
    assert killed.returncode == -9, output[-3000:]
    run_id = json.loads((out / RUN_FILE).read_text())["run_id"]
    shown = runner.invoke(app, ["runs", "--tracking-uri", store])
    assert shown.exit_code == 0, shown.output
    assert "│ killed │" in shown.output
    assert [r["status"] for r in list_runs("tiny-track", store)] == ["KILLED"]  # set in the store

    attnlab.train.train(load_experiment(TINY), out, resume=True, tracking_uri=store, progress=False)
    assert json.loads((out / RUN_FILE).read_text())["run_id"] == run_id
    runs = list_runs("tiny-track", store)
    assert [(r["run"], r["status"]) for r in runs] == [(run_id[:8], "FINISHED")]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bogus_tracking_uris_give_one_error_line(tmp_path) -> None:
    (tmp_path / "notes.db").write_text("not a database\n")
    (tmp_path / "folder").mkdir()
    bogus = ["foo://bar", "sqlite://relative.db", f"sqlite:///{tmp_path / 'notes.db'}",
             f"sqlite:///{tmp_path / 'folder'}", "just-a-word", f"http://127.0.0.1:{closed_port()}",
             "file:///tmp/mlruns", "postgresql://user@127.0.0.1:1/db"]
    for uri in bogus:
        done = runner.invoke(app, ["runs", "--tracking-uri", uri])
        assert done.exit_code == 2, (uri, done.output)
        assert done.output.startswith("error: ") and done.output.count("\n") == 1, (uri, done.output)
    done = runner.invoke(app, ["train", str(experiment_file(tmp_path)), "--out",
                               str(tmp_path / "run"), "--tracking-uri", "foo://bar"])
    assert done.exit_code == 2 and done.output.startswith("error: tracking URI 'foo://bar'"), done.output
