"""The studio's Inspect screen API: finished runs by id, and G's view of a typed input or a test
example as one self-contained page, equal to what `attnlab inspect` writes."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from attnlab.inspect.views import inspect_run, write_html
from attnlab.train.run import train
from attnlab.ui.studio import create_app

SPAM = {"name": "tiny-inspect",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 24},
                 "train_examples": 128, "val_examples": 32, "test_examples": 16},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "train": {"steps": 4, "batch_size": 32, "lr": 0.003}}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    uri = f"sqlite:///{root}/mlflow.db"
    train(SPAM, root / "spam", tracking_uri=uri, progress=False)
    app = create_app(tracking_uri=uri, root=root / "studio", experiments=None)
    return TestClient(app, base_url="http://127.0.0.1:8765"), root


def test_a_typed_input_and_a_test_example_give_the_runs_view(made, tmp_path) -> None:
    http, root = made
    (run,) = http.get("/api/inspect/runs").json()
    assert run["experiment"] == "tiny-inspect" and run["task"] == "sms-spam"
    answer = http.get(f"/api/inspect/runs/{run['run_id']}/view",
                      params={"text": "free prize call now", "head": 1})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    path, _ = write_html(inspect_run(root / "spam", text="free prize call now"), tmp_path / "v.html",
                         head=1)
    assert answer.text == path.read_text()  # the page attnlab inspect writes
    assert "http://" not in answer.text and "https://" not in answer.text  # nothing loads from afar
    other = http.get(f"/api/inspect/runs/{run['run_id']}/view", params={"example": 3})
    assert other.status_code == 200 and other.text != answer.text


def test_bad_requests_are_one_line_4xx(made) -> None:
    http, _ = made
    run_id = http.get("/api/inspect/runs").json()[0]["run_id"]
    for params, message in (({}, "give one input"), ({"example": 999}, "out of range"),
                            ({"text": "x" * 3000}, "at most 2000")):
        answer = http.get(f"/api/inspect/runs/{run_id}/view", params=params)
        assert answer.status_code == 422 and message in answer.json()["error"], answer.text
    missing = http.get("/api/inspect/runs/deadbeef/view", params={"text": "hi"})
    assert missing.status_code == 422 and "no finished run" in missing.json()["error"]
