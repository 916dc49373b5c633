"""The studio's Run screen API: experiments by name (shipped or uploaded), one training job per
program, their events as server-sent events, cancelling; mistakes are one-line 4xx."""

from __future__ import annotations

import json

import pytest
import yaml
from fastapi.testclient import TestClient

from attnlab.ui.studio import create_app

TINY = {"name": "tiny-studio",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal ; softmax",
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003, "seed": 3}}


@pytest.fixture
def http(tmp_path):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "copy-small.yaml").write_text(yaml.safe_dump({**TINY, "name": "copy-small"}))
    app = create_app(root=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                     experiments=shipped, jobs=2)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:  # its end cancels the jobs
        yield client


def test_an_uploaded_experiment_trains_once_per_program_and_streams_its_events(http) -> None:
    assert http.get("/api/experiments").json() == [{"name": "copy-small", "source": "shipped"}]
    up = http.post("/api/experiments", json={"text": yaml.safe_dump(TINY)})
    assert up.status_code == 200 and up.json() == {"name": "tiny-studio", "source": "uploaded"}
    started = http.post("/api/runs", json={"experiment": "tiny-studio",
                                           "programs": ["causal ; softmax", "causal & window(2)"]})
    assert started.status_code == 200, started.text
    first, second = started.json()["jobs"]
    assert first["state"] == second["state"] == "running"  # the limit is two
    lines = []
    with http.stream("GET", f"/api/runs/{first['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream"), stream.read()
        for line in stream.iter_lines():
            lines.append(line)
            if line.startswith("data: ") and lines[-2:-1] == ["event: end"]:
                break
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert data[-2]["kind"] == "finished"
    assert "validation" in [d["kind"] for d in data[:-1]]
    end = data[-1]
    assert end["state"] == "finished" and end["metrics"]["program"] == "scaled_dot ; causal ; softmax"
    ids = [int(line[4:]) for line in lines if line.startswith("id: ")]
    assert ids == list(range(len(ids)))  # numbered, for a reconnect with Last-Event-ID
    listed = {j["id"]: j for j in http.get("/api/runs").json()}
    assert set(listed) == {first["id"], second["id"]}


def test_a_running_job_is_cancelled(http) -> None:
    started = http.post("/api/runs", json={"experiment": "copy-small",
                                           "set": ["task.train_examples=100000", "train.epochs=20"]})
    job = started.json()["jobs"][0]
    answer = http.post(f"/api/runs/{job['id']}/cancel")
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
    assert http.get(f"/api/runs/{job['id']}").json()["state"] == "cancelled"


@pytest.mark.parametrize("path, body, message", [
    ("/api/runs", {"experiment": "nope"}, "no experiment 'nope'; known: copy-small"),
    ("/api/runs", {"experiment": "copy-small", "programs": ["causl"]}, "unknown"),
    ("/api/runs", {"experiment": "copy-small", "set": ["train.batchsize=3"]}, "batchsize"),
    ("/api/runs", {"experiment": "../../etc/passwd"}, "no experiment"),
    ("/api/experiments", {"text": "name: [unclosed"}, "not YAML"),
    ("/api/experiments", {"text": yaml.safe_dump({**TINY, "name": "copy-small"})}, "shipped"),
    ("/api/experiments", {"text": yaml.safe_dump({**TINY, "name": "../x"})}, "run name"),
    ("/api/experiments", {"text": yaml.safe_dump({**TINY, "task": {"name": "csv", "params": {
        "path": "/etc/passwd"}}})}, "task.params.path names a file on the server"),
    ("/api/runs", {"experiment": "copy-small", "set": ["task.name=sms-spam",
                                                      "task.params.download=true"]}, "installs"),
])
def test_mistakes_are_one_line_4xx(http, path, body, message) -> None:
    answer = http.post(path, json=body)
    assert answer.status_code == 422 and message in answer.json()["error"], answer.text
    assert http.get("/api/runs/99").status_code == 422
