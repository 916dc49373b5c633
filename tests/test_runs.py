"""`attnlab runs` tells runs apart (the settings that differ, each run's folder) and opens MLflow's
web UI on the store."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from attnlab.cli.app import app
from attnlab.errors import ConfigError
from attnlab.train.run import train
from attnlab.train.tracking import differing_keys, list_runs, web_ui

TINY = {"name": "tiny-runs",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal ; softmax",
        "train": {"steps": 2, "batch_size": 32, "seed": 3}}
runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Two runs of one experiment that differ only in their heads."""
    root = tmp_path_factory.mktemp("runs")
    uri = f"sqlite:///{root}/mlflow.db"
    for heads in (1, 2):
        train(TINY, root / f"heads-{heads}", tracking_uri=uri, progress=False,
              overrides=[f"model.heads={heads}"])
    return uri


def test_differing_keys_are_the_settings_not_shared_by_every_run() -> None:
    runs = [{"model.heads": "2", "train.lr": "0.001", "program": "a"},
            {"model.heads": "4", "train.lr": "0.001", "program": "b"},
            {"model.heads": "2", "train.lr": "0.001", "train.seed": "1", "seed": "1", "program": "a"}]
    # the program has its own column; 'seed' is logged again as train.seed
    assert differing_keys(runs) == ["model.heads", "train.seed"]
    assert differing_keys(runs[:1]) == []
    assert differing_keys([runs[0], dict(runs[0])]) == []
    # None and never logged are alike: a dict setting is logged key by key, None as itself
    prior = [{"model.prior": "None"}, {"model.prior/kind": "listops_tree"}]
    assert differing_keys(prior) == ["model.prior/kind"]


def test_runs_show_what_differs_and_where_each_run_is(store, tmp_path) -> None:
    rows = list_runs("tiny-runs", store)
    assert sorted(r["differs"] for r in rows) == ["model.heads=1", "model.heads=2"]
    root = store.removeprefix("sqlite:///").rsplit("/", 1)[0]
    assert sorted(r["folder"] for r in rows) == [f"{root}/heads-1", f"{root}/heads-2"]
    csv = runner.invoke(app, ["runs", "--csv", "--tracking-uri", store])
    assert csv.exit_code == 0, csv.output
    header, *lines = csv.output.strip().splitlines()
    assert header.split(",") == ["experiment", "run", "status", "program", "differs", "score",
                                 "test_accuracy", "train_seconds", "params", "started", "folder"]
    assert sorted(line.split(",")[4] for line in lines) == ["model.heads=1", "model.heads=2"]
    assert sorted(line.split(",")[-1] for line in lines) == [f"{root}/heads-1", f"{root}/heads-2"]
    table = runner.invoke(app, ["runs", "--tracking-uri", store])
    assert table.exit_code == 0 and "differs" in table.output and "model.heads=2" in table.output


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_web_ui_serves_the_store(store) -> None:
    process, url = web_ui(store, port=_free_port())
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as page:
                    assert page.status == 200 and b"<html" in page.read().lower()
                break
            except OSError:
                assert process.poll() is None, "the MLflow server stopped"
                assert time.monotonic() < deadline, "the MLflow UI did not answer in 90 s"
                time.sleep(0.5)
        search = urllib.request.Request(f"{url}/ajax-api/2.0/mlflow/experiments/search",
                                        data=b'{"max_results": 10}', method="POST",
                                        headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(search, timeout=10) as answer:
            names = [e["name"] for e in json.load(answer)["experiments"]]
        assert "tiny-runs" in names
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_web_ui_refuses_what_it_cannot_open(store, tmp_path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="no runs are tracked"):
        web_ui(f"sqlite:///{tmp_path}/none.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ConfigError, match="another --port"):
            web_ui(store, port=taken.getsockname()[1])
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    result = runner.invoke(app, ["runs", "--ui", "--tracking-uri", store])
    assert result.exit_code == 2 and "pip install 'attnlab[ui]'" in result.output
