"""The studio's Inspect screen API: finished runs by id, and G's view of a typed input or a test
example as one self-contained page, equal to what `attnlab inspect` writes; the test examples to
pick from, uploaded images checked and kept by content, and faithfulness measured in the
background with the library's numbers and the CLI's marks."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from attnlab.cli.faithfulness import MARKS
from attnlab.inspect.faithfulness import faithfulness
from attnlab.inspect.views import inspect_run, page, write_html
from attnlab.train.run import train
from attnlab.ui import inspect as ui_inspect
from attnlab.ui.studio import create_app

SPAM = {"name": "tiny-inspect",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 24},
                 "train_examples": 128, "val_examples": 32, "test_examples": 16},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "mix({softmax}, {window(4) ; softmax}, gate=token)",  # a mixture: K = 2
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
    assert run["components"] == 2 and run["pretrained"] is None
    answer = http.get(f"/api/inspect/runs/{run['run_id']}/view",
                      params={"text": "free prize call now", "head": 1})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    path, _ = write_html(inspect_run(root / "spam", text="free prize call now"), tmp_path / "v.html",
                         head=1)
    assert answer.text == path.read_text()  # the page attnlab inspect writes
    assert "http://" not in answer.text and "https://" not in answer.text  # nothing loads from afar
    assert '"allocation":{"mix":' in answer.text  # G's page draws the mixture's allocation
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


def test_test_examples_are_listed_a_page_at_a_time(made) -> None:
    http, root = made
    run_id = http.get("/api/inspect/runs").json()[0]["run_id"]
    first = http.get(f"/api/inspect/runs/{run_id}/examples", params={"limit": 5}).json()
    assert (first["input"], first["total"], first["offset"]) == ("text", 16, 0)
    assert [e["index"] for e in first["examples"]] == [0, 1, 2, 3, 4]
    saved = torch.load(root / "spam" / "test.pt", weights_only=True)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(root / "spam" / "tokenizer.json"))
    names = json.loads((root / "spam" / "labels.json").read_text())["labels"]
    for e in first["examples"]:
        ids = [i for i in saved["inputs"][e["index"]].tolist() if i != 0]
        assert e["text"] == tokenizer.decode(ids)[:160] or e["text"].endswith("…")
        assert e["label"] == names[int(saved["labels"][e["index"]])]
    last = http.get(f"/api/inspect/runs/{run_id}/examples", params={"offset": 14, "limit": 5}).json()
    assert [e["index"] for e in last["examples"]] == [14, 15]
    for params in ({"limit": 0}, {"limit": 51}, {"offset": -1}):
        answer = http.get(f"/api/inspect/runs/{run_id}/examples", params=params)
        assert answer.status_code == 422 and "limit 1..50" in answer.json()["error"]
    missing = http.get("/api/inspect/runs/deadbeef/examples")
    assert missing.status_code == 422 and "no finished run" in missing.json()["error"]


def _png(side: int = 8) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.arange(side * side, dtype=np.uint8).reshape(side, side)).save(out, "PNG")
    return out.getvalue()


def test_uploaded_images_are_checked_and_named_by_content(made, monkeypatch) -> None:
    http, root = made
    run_id = http.get("/api/inspect/runs").json()[0]["run_id"]
    notimage = http.put("/api/inspect/images", content=b"hello, not a picture")
    assert notimage.status_code == 422 and "not a PNG or JPEG" in notimage.json()["error"]
    huge = http.put("/api/inspect/images", content=b"\x89PNG\r\n\x1a\n" + bytes(5 * 2**20))
    assert huge.status_code == 413 and "over 4 MB" in huge.json()["error"]
    png = _png()
    kept = http.put("/api/inspect/images", content=png).json()["image"]
    assert http.put("/api/inspect/images", content=png).json()["image"] == kept  # same content
    assert (root / "studio" / "images" / kept).read_bytes() == png
    assert sorted(p.name for p in (root / "studio" / "images").iterdir()) == [kept]
    view = http.get(f"/api/inspect/runs/{run_id}/view", params={"image": kept})
    assert view.status_code == 422 and "classifies text, not images" in view.json()["error"]
    for name, message in (("../../etc/passwd", "not the name of an uploaded image"),
                          ("0123456789abcdef.png", "no uploaded image")):
        answer = http.get(f"/api/inspect/runs/{run_id}/view", params={"image": name})
        assert answer.status_code == 422 and message in answer.json()["error"]
    monkeypatch.setattr(ui_inspect, "MAX_IMAGES", 2)  # past the cap, the oldest upload goes
    newer = [http.put("/api/inspect/images", content=_png(side)).json()["image"] for side in (9, 10)]
    assert sorted(p.name for p in (root / "studio" / "images").iterdir()) == sorted(newer)


def test_faithfulness_runs_in_the_background_with_the_librarys_numbers(made) -> None:
    http, root = made
    run_id = http.get("/api/inspect/runs").json()[0]["run_id"]
    started = http.post(f"/api/inspect/runs/{run_id}/faithfulness", json={"examples": 8, "seed": 1})
    assert started.status_code == 202
    job = started.json()["job"]
    deadline = time.monotonic() + 60
    while (answer := http.get(f"/api/inspect/faithfulness/{job}").json())["state"] == "running":
        assert time.monotonic() < deadline, "faithfulness did not finish in 60 s"
        time.sleep(0.1)
    assert answer["state"] == "done" and not answer["cached"]
    got, want = answer["result"], faithfulness(root / "spam", examples=8, seed=1)
    assert got["run"] == run_id and str(root) not in json.dumps(answer)  # no path in the browser
    assert got["examples"] == want["examples"] == 8
    table = got["table"]
    assert table["columns"][0] == "comp 1%" and table["columns"][-1] == "suff aopc"
    for row, entry in zip(table["rows"], want["importances"].values(), strict=True):
        assert row["importance"] == entry["label"]
        values = [entry[m][c] for m in ("comprehensiveness", "sufficiency")
                  for c in ("1", "5", "10", "20", "aopc")]
        assert [c["value"] for c in row["cells"]] == pytest.approx(values, rel=1e-5, abs=1e-7)
        marks = [MARKS[entry[f"{m}_vs_random"][c]["verdict"]] if "verdict" in entry else ""
                 for m in ("comprehensiveness", "sufficiency") for c in ("1", "5", "10", "20", "aopc")]
        assert [c["mark"] for c in row["cells"]] == marks
    assert table["verdicts"] == [e["verdict"] for e in want["importances"].values() if "verdict" in e]
    again = http.post(f"/api/inspect/runs/{run_id}/faithfulness", json={"examples": 8, "seed": 1})
    assert again.json()["state"] == "done" and again.json()["cached"]  # kept under ROOT
    assert again.json()["result"] == got
    for body, message in (({"examples": 0}, "examples"), ({"seed": -1}, "seed")):
        bad = http.post(f"/api/inspect/runs/{run_id}/faithfulness", json=body)
        assert bad.status_code == 422 and message in bad.json()["error"]
    assert http.get("/api/inspect/faithfulness/nope").status_code == 422


def _studio_of(experiment: dict, out: Path) -> tuple[TestClient, dict]:
    """A studio over a store holding one run of `experiment`, trained into `out`; that run."""
    uri = f"sqlite:///{out.parent}/mlflow.db"
    train(experiment, out, tracking_uri=uri, progress=False)
    http = TestClient(create_app(tracking_uri=uri, root=out.parent / "studio", experiments=None),
                      base_url="http://127.0.0.1:8765")
    (run,) = http.get("/api/inspect/runs").json()
    return http, run


DIGITS = {"name": "tiny-digits", "task": {"name": "digits", "train_examples": 128,
                                          "val_examples": 32, "test_examples": 12},
          "model": {"d_model": 16, "layers": 1, "heads": 2, "patch_size": 2},
          "train": {"steps": 2, "batch_size": 32, "lr": 0.003}}


def test_an_image_run_lists_thumbnails_and_looks_at_an_upload(tmp_path) -> None:
    http, run = _studio_of(DIGITS, tmp_path / "digits")
    listed = http.get(f"/api/inspect/runs/{run['run_id']}/examples", params={"limit": 3}).json()
    assert (listed["input"], listed["total"]) == ("image", 12)
    for e in listed["examples"]:
        assert e["image"].startswith("data:image/png;base64,") and e["label"] in set("0123456789")
    kept = http.put("/api/inspect/images", content=_png(8)).json()["image"]
    view = http.get(f"/api/inspect/runs/{run['run_id']}/view", params={"image": kept})
    assert view.status_code == 200 and '"picture":{' in view.text
    # G's page of that file, as `attnlab inspect RUN --image FILE` makes it
    assert view.text == page(inspect_run(tmp_path / "digits",
                                         image=tmp_path / "studio" / "images" / kept))
    text = http.get(f"/api/inspect/runs/{run['run_id']}/view", params={"text": "a digit"})
    assert text.status_code == 422 and "classifies images, not text" in text.json()["error"]


MQAR = {"name": "tiny-ids",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 16, "test_examples": 16},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal ; softmax", "train": {"steps": 2, "batch_size": 32}}


def test_a_generated_tasks_run_lists_ids_and_refuses_faithfulness(tmp_path) -> None:
    http, run = _studio_of(MQAR, tmp_path / "ids")
    listed = http.get(f"/api/inspect/runs/{run['run_id']}/examples", params={"limit": 2}).json()
    saved = torch.load(tmp_path / "ids" / "test.pt", weights_only=True)
    assert listed["input"] == "ids"
    assert listed["examples"][0]["text"] == " ".join(map(str, saved["inputs"][0].tolist()))
    assert listed["examples"][0]["label"] is None  # a label per position: none to show
    refused = http.post(f"/api/inspect/runs/{run['run_id']}/faithfulness", json={})
    assert refused.status_code == 422 and "classification run" in refused.json()["error"]
