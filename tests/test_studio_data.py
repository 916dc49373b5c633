"""The studio's own-data uploads (one file per PUT into ROOT/data/<name>/: a table, or the images of
class folders) and trainings on them: names and paths checked, limits kept, the path filled in by
the server and never by the client, a data mistake named before anything is queued."""

from __future__ import annotations

import io
import json

import pytest
from fastapi.testclient import TestClient

from attnlab.ui import data
from attnlab.ui.studio import create_app

TEMPLATES = {"refund": "please refund order {n}, it arrived broken",
             "lost_card": "my card was stolen near gate {n}, block it",
             "opening_hours": "is the shop on street {n} open on Sunday?"}


def service_csv(rows: int = 60) -> bytes:
    lines = ["message,intent"] + [f"{TEMPLATES[k].format(n=n)},{k}".replace(", ", " ")
                                  for n in range(rows // 3) for k in TEMPLATES]
    return ("\n".join(lines) + "\n").encode()


def png(shade: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), shade).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def http(tmp_path):
    app = create_app(root=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                     experiments=None, jobs=1)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        yield client


def test_a_csv_and_an_image_folder_are_kept_listed_and_deleted(http, tmp_path) -> None:
    assert http.get("/api/data").json() == []
    put = http.put("/api/data/service/service.csv", content=service_csv())
    assert put.status_code == 200 and put.json()["bytes"] == len(service_csv()), put.text
    for label, shade in (("dark", 20), ("light", 230)):
        for i in range(3):
            assert http.put(f"/api/data/shapes/{label}/{i}.png", content=png(shade + i)).status_code == 200
    listed = {d["name"]: d for d in http.get("/api/data").json()}
    assert listed["service"] | {"bytes": 0} == {
        "name": "service", "format": "csv", "files": 1, "bytes": 0, "file": "service.csv",
        "columns": ["message", "intent"]}
    assert listed["shapes"]["format"] == "image-folder" and listed["shapes"]["files"] == 6
    assert listed["shapes"]["classes"] == ["dark", "light"]
    assert (tmp_path / "runs" / "data" / "shapes" / "dark" / "2.png").read_bytes() == png(22)
    # the images train (read up front, 8×8 resized to 16: patches of 4) until cancelled; a data
    # set a training reads is not deleted from under it
    answer = http.post("/api/runs", json={"data": {"name": "shapes", "params": {"size": "big"}}})
    assert answer.status_code == 422 and "size" in answer.json()["error"], answer.text
    started = http.post("/api/runs", json={"data": {"name": "shapes", "params": {"size": 16}}})
    assert started.status_code == 200, started.text
    job = http.app.state.jobs.get(started.json()["jobs"][0]["id"])
    assert job.experiment["model"]["patch_size"] == 4 and job.experiment["task"]["name"] == "image-folder"
    answer = http.delete("/api/data/shapes")
    assert answer.status_code == 422 and "cancel it" in answer.json()["error"]
    http.post(f"/api/runs/{job.id}/cancel")
    assert http.delete("/api/data/shapes").json() == {"name": "shapes", "deleted": True}
    assert [d["name"] for d in http.get("/api/data").json()] == ["service"]
    assert not list((tmp_path / "runs" / "data" / ".incoming").iterdir())  # nothing left half-kept


@pytest.mark.parametrize("url, body, status, message", [
    ("/api/data/x/%2E%2E/escape.csv", b"a,b\n", 422, "not a file name"),
    ("/api/data/x/..%2Fescape.csv", b"a,b\n", 422, "not a file name"),
    ("/api/data/..%2Fup/a.csv", b"a,b\n", 422, "not a data set name"),
    ("/api/data/x/.hidden/a.png", b"", 422, "not a file name"),
    ("/api/data/x/run.sh", b"echo", 422, "takes .csv, .tsv, .jsonl, .parquet tables"),
    ("/api/data/x/loose.png", b"", 422, "goes in its class's folder"),
    ("/api/data/x/a/b/c/d/e.png", b"", 422, "up to 4 parts"),
    ("/api/data/x/sub/table.csv", b"a,b\n", 422, "at the data set's top"),
])
def test_bad_names_and_extensions_are_refused(http, url, body, status, message) -> None:
    answer = http.put(url, content=body)
    assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert http.get("/api/data").json() == []


def test_limits_refuse_without_keeping(http, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(data, "MAX_FILE", 100)
    monkeypatch.setattr(data, "MAX_FILES", 3)
    monkeypatch.setattr(data, "MAX_SET", 250)
    # over the file limit: by the Content-Length, and by counting a body sent in chunks
    answer = http.put("/api/data/big/big.csv", content=b"x" * 101)
    assert answer.status_code == 413 and "100 bytes" in answer.json()["error"], answer.text
    answer = http.put("/api/data/big/big.csv", content=iter([b"x" * 60, b"x" * 60]))
    assert answer.status_code == 413 and "over 100 bytes" in answer.json()["error"], answer.text
    for i in range(3):
        assert http.put(f"/api/data/pics/a/{i}.png", content=b"p" * 80).status_code == 200
    answer = http.put("/api/data/pics/b/3.png", content=b"p")
    assert answer.status_code == 422 and "3 files, the most" in answer.json()["error"]
    answer = http.put("/api/data/pics/a/2.png", content=b"p" * 100)  # replacing: 260 bytes in all
    assert answer.status_code == 422 and "over 250 bytes" in answer.json()["error"]
    # a data set is one table or one folder of images
    answer = http.put("/api/data/pics/t.csv", content=b"a,b\n")
    assert answer.status_code == 422 and "holds images" in answer.json()["error"]
    assert http.put("/api/data/t/one.csv", content=b"a,b\n").status_code == 200
    answer = http.put("/api/data/t/two.csv", content=b"a,b\n")
    assert answer.status_code == 422 and "holds one.csv already" in answer.json()["error"]
    kept = sorted(p.relative_to(tmp_path / "runs" / "data").as_posix()
                  for p in (tmp_path / "runs" / "data").rglob("*") if p.is_file())
    assert kept == ["pics/a/0.png", "pics/a/1.png", "pics/a/2.png", "t/one.csv"]
    assert http.delete("/api/data/nope").status_code == 422


@pytest.mark.parametrize("body, message", [
    ({"data": {"name": "nope"}}, "no data set 'nope'; data sets: service"),
    ({"data": {"name": "service", "params": {"path": "/etc/passwd"}}}, "fills in where"),
    ({"data": {"name": "service"}, "set": ["task.params.path=/etc/passwd"]}, "task.params.path"),
    ({"data": {"name": "service"}, "set": ["task.params.download=true"]}, "installs"),
    ({"data": {"name": "service", "params": {"text": "msg", "label": "intent"}}},
     "service/service.csv: no column 'msg'; the columns are message, intent"),
    ({"data": {"name": "service", "format": "image-folder"}}, "is a table, not image-folder"),
    ({"data": {"name": "service"}, "experiment": "spam"}, "not both"),
    ({"programs": ["causal"]}, "neither"),
    ({"data": {"name": "service"}, "programs": ["predicate(fn)"]}, "predicate"),
])
def test_own_data_mistakes_are_4xx_before_anything_is_queued(http, body, message) -> None:
    http.put("/api/data/service/service.csv", content=service_csv())
    answer = http.post("/api/runs", json=body)
    assert answer.status_code == 422 and message in answer.json()["error"], answer.text
    assert "/runs/data" not in answer.text  # the server's folders stay its own
    assert http.get("/api/runs").json() == []


def test_own_csv_trains_end_to_end_and_reports_its_mlflow_run(http) -> None:
    http.put("/api/data/service/service.csv", content=service_csv(60))
    started = http.post("/api/runs", json={
        "data": {"name": "service", "format": "csv", "params": {"text": "message", "label": "intent"}},
        "programs": ["scaled_dot ; softmax"],
        "set": ["train.epochs=1", "task.params.vocab_size=200", "task.params.max_len=16"]})
    assert started.status_code == 200, started.text
    job = started.json()["jobs"][0]
    assert job["name"] == "service" and job["program"] == "scaled_dot ; softmax" and "out" not in job
    assert http.delete("/api/data/service").status_code == 422  # it is being read
    with http.stream("GET", f"/api/runs/{job['id']}/events") as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    *events, end = [json.loads(line[6:]) for line in lines]  # the last: the `end` event's summary
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and events[0]["run_id"] and events[0]["monitor"] == "val_accuracy"
    assert kinds[-1] == "finished" and "validation" in kinds, events
    assert end["state"] == "finished" and end["run_id"] == events[0]["run_id"]
    assert 0 <= end["metrics"]["test_accuracy"] <= 1
    assert http.get("/api/queue").json() == {"running": 0, "queued": 0, "limit": 1}
    from mlflow import MlflowClient

    run = MlflowClient(tracking_uri=http.app.state.jobs.tracking_uri).get_run(end["run_id"])
    assert run.data.params["data.format"] == "csv"
