"""The studio's Compare screen API: the store's runs filtered, the settings that differ among the
ones shown, the main metric beside its baseline, and a run's curves as MLflow holds them."""

from __future__ import annotations

import json

import mlflow
import pytest
from fastapi.testclient import TestClient

from attnlab.train.run import train
from attnlab.train.tracking import FOLDER_TAG
from attnlab.ui.studio import create_app

TINY = {"name": "tiny-compare",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal ; softmax",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "seed": 3}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{root}/mlflow.db"
    for name, overrides in (("a", []), ("b", ["model.heads=1"]), ("c", ["attention=causal & window(2)"])):
        train(TINY, root / name, tracking_uri=uri, progress=False, overrides=overrides)
    return uri, root


def test_runs_are_filtered_and_show_what_differs_among_them(store) -> None:
    uri, root = store
    http = TestClient(_app(uri), base_url="http://127.0.0.1:8765")
    every = http.get("/api/store/runs").json()
    assert len(every["runs"]) == 3 and "model.heads" in every["differs"]
    windowed = http.get("/api/store/runs", params={"program": "window(2)"}).json()
    assert [r["program"] for r in windowed["runs"]] == ["scaled_dot ; causal & window(2) ; softmax"]
    assert windowed["differs"] == []  # one run: nothing to tell apart
    plain = http.get("/api/store/runs", params={"program": "; causal ; softmax"}).json()
    assert plain["differs"] == ["model.heads"] and len(plain["runs"]) == 2
    assert sorted(r["differs"]["model.heads"] for r in plain["runs"]) == ["1", "2"]
    assert every["experiments"] == ["tiny-compare"] and every["tasks"] == ["mqar"]
    assert windowed["experiments"] == every["experiments"]  # the filters' choices stay whole
    client = mlflow.MlflowClient(tracking_uri=uri)
    folders = {client.get_run(r["run_id"]).data.tags[FOLDER_TAG]: r for r in every["runs"]}
    assert not any("folder" in r for r in every["runs"])  # the browser never sees a path
    for name in "abc":
        saved = json.loads((root / name / "metrics.json").read_text())
        row = folders[str(root / name)]
        assert (row["task"], row["main_metric"], row["label"]) == ("mqar", "test_accuracy",
                                                                  "test accuracy")
        assert row["score"] == pytest.approx(saved["test_accuracy"])
        # a generated task has no majority class to report: no baseline bar
        assert row["baseline_metric"] == "test_majority_rate"
        assert row["baseline"] == saved.get("test_majority_rate") is None
        assert row["pretrained"] is None
    assert http.get("/api/store/runs", params={"task": "copy"}).json()["runs"] == []
    assert http.get("/api/store/runs", params={"experiment": "other"}).json()["runs"] == []
    assert len(http.get("/api/store/runs", params={"experiment": "tiny-compare"}).json()["runs"]) == 3


def test_curves_are_the_runs_metric_history(store) -> None:
    uri, _ = store
    http = TestClient(_app(uri), base_url="http://127.0.0.1:8765")
    run_id = http.get("/api/store/runs").json()["runs"][0]["run_id"]
    curves = http.get(f"/api/store/runs/{run_id}/curves").json()
    client = mlflow.MlflowClient(tracking_uri=uri)
    want = [m.value for m in client.get_metric_history(run_id, "val_accuracy")]
    assert [p["value"] for p in curves["val_accuracy"]] == want and len(want) == 2
    assert "train_loss_epoch" in curves and "test_accuracy" not in curves
    assert http.get("/api/store/runs/nope/curves").status_code == 422


def _app(uri: str):
    return create_app(tracking_uri=uri, experiments=None)
