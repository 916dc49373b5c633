"""The studio's API through FastAPI's test client: caret errors as the CLI prints them, the mask,
density and plan of a valid program, the controls' rewrite, 4xx one-line errors, the token and
Host guards, and a benchmark run in worker processes."""

from __future__ import annotations

import base64
import time

import pytest
import torch
from fastapi.testclient import TestClient

from attnlab.errors import ConfigError, ProgramError
from attnlab.inspect.showcase import mask_inputs
from attnlab.lang import parse
from attnlab.ui.studio import create_app

BASE = "http://127.0.0.1:8765"


@pytest.fixture(scope="module")
def client():
    return TestClient(create_app(), base_url=BASE)


def test_a_typo_returns_the_clis_caret_text(client) -> None:
    text = "scaled_dot ; causal & windw(8) ; softmax"
    with pytest.raises(ProgramError) as err:
        parse(text)
    r = client.post("/api/design/program", json={"text": text})
    assert r.status_code == 422
    assert r.json()["detail"] == str(err.value)
    assert r.json()["error"] == str(err.value).splitlines()[0]
    assert "did you mean 'window'" in r.json()["error"] and "^^^^^" in r.json()["detail"]


def test_a_valid_program_gives_text_tree_mask_density_and_plan(client) -> None:
    text = "scaled_dot ;  causal & (window(16) | global_tokens(2)) ; softmax"
    r = client.post("/api/design/program", json={"text": text, "seq": 100, "block": 32})
    assert r.status_code == 200
    d = r.json()
    program = parse(text)
    assert d["canonical"] == str(program)
    assert [c["label"].split()[0] for c in d["tree"]["children"]] == \
        ["score", "mask", "normalizer", "layout"]
    dense = program.mask.dense(mask_inputs(8, 100))[0, 0]
    assert d["density"] == pytest.approx(dense.sum().item() / dense.numel(), abs=1e-12)
    cells = base64.b64decode(d["mask"]["cells"])
    assert d["mask"]["side"] == 100 and d["mask"]["step"] == 1  # exact below the grid size
    drawn = torch.tensor(list(cells)).view(100, 100) == 255
    assert torch.equal(drawn, dense)
    assert d["blocks"]["total"] == 16 and d["blocks"]["block"] == 32
    assert d["plan"]["backend"] in {"sdpa", "flex", "tiled", "reference", "linear"}
    assert d["plan"]["backend"] in d["plan"]["text"]


def test_a_long_mask_is_drawn_downsampled(client) -> None:
    d = client.post("/api/design/program", json={"text": "zoo:causal", "seq": 4096}).json()
    assert d["mask"]["side"] == 256 and d["mask"]["step"] == 16
    assert d["density"] == pytest.approx((4096 * 4097 / 2) / 4096**2)


def test_the_controls_rewrite_the_program_and_read_it_back(client) -> None:
    text = "scaled_dot ; causal & window(8) ; softmax"
    r = client.post("/api/design/rewrite", json={"text": text, "window": 32, "heads": 4,
                                                 "normalizer": "sparsemax"})
    assert r.status_code == 200
    new = r.json()["text"]
    assert new == str(parse("scaled_dot ; causal & window(32) ; sparsemax ; heads(4)"))
    controls = client.post("/api/design/program", json={"text": new}).json()["controls"]
    assert controls == {"editable": True, "window": 32, "global_tokens": None, "heads": 4,
                        "normalizer": "sparsemax"}
    back = client.post("/api/design/rewrite", json={"text": new, "window": 8, "heads": 8,
                                                    "normalizer": "softmax"}).json()["text"]
    assert parse(back) == parse(text).replace(layout=parse(new).layout.__class__(heads=8))
    more = client.post("/api/design/rewrite", json={"text": text, "global_tokens": 4}).json()["text"]
    assert "global_tokens(4)" in more


@pytest.mark.parametrize("body", [
    {}, {"text": ""}, {"text": 3}, {"text": "causal", "seq": 0}, {"text": "causal", "seq": 10**6},
    {"text": "causal", "extra": 1}, {"text": "x" * 5000},
    {"text": "scaled_dot ; predicate(lambda b, h, q, k: q > k) ; softmax"},
    {"text": {"mask": {"name": "predicate", "fn": "os.system"}}},
])
def test_bad_bodies_get_one_line_4xx(client, body) -> None:
    r = client.post("/api/design/program", json=body)
    assert 400 <= r.status_code < 500
    assert set(r.json()) <= {"error", "detail"} and "\n" not in r.json()["error"]


def test_bad_rewrites_and_unknown_jobs_are_4xx(client) -> None:
    r = client.post("/api/design/rewrite", json={"text": "causal", "normalizer": "softmaxx"})
    assert r.status_code == 422 and "did you mean" in r.json()["error"]
    assert client.post("/api/design/program", content=b"not json",
                       headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/api/design/bench/nope").status_code == 404


def test_a_non_loopback_app_needs_its_token() -> None:
    with pytest.raises(ConfigError):
        create_app(host="0.0.0.0")
    app = create_app(host="10.1.2.3", port=9000, token="s3cret")
    c = TestClient(app, base_url="http://10.1.2.3:9000")
    assert c.get("/api/design/zoo").status_code == 401
    assert c.get("/").status_code == 401
    assert c.get("/api/design/zoo", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/design/zoo", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/?token=s3cret").status_code == 200  # the first page load sets the cookie
    assert c.get("/api/design/zoo").status_code == 200
    anywhere = TestClient(create_app(host="0.0.0.0", port=9000, token="s3cret"),
                          base_url="http://192.168.7.7:9000")  # clients name the machine their way
    assert anywhere.get("/api/design/zoo").status_code == 401
    assert anywhere.get("/api/design/zoo", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_wrong_host_header_is_refused(client) -> None:
    r = client.get("/api/design/zoo", headers={"host": "evil.example:8765"})
    assert r.status_code == 421 and "127.0.0.1:8765" in r.json()["error"]
    assert client.get("/api/design/zoo", headers={"host": "localhost:8765"}).status_code == 200


def test_the_zoo_and_the_page_are_served(client) -> None:
    zoo = {e["name"]: e["text"] for e in client.get("/api/design/zoo").json()}
    assert "longformer" in zoo and parse(zoo["longformer"]) == parse("zoo:longformer")
    assert "<canvas" in client.get("/").text
    assert client.get("/static/common.js").status_code == 200


def test_the_benchmark_runs_in_worker_processes(client) -> None:
    r = client.post("/api/design/bench", json={"text": "scaled_dot ; causal ; softmax", "seq": 64,
                                               "heads": 2, "head_dim": 16})
    assert r.status_code == 202
    job = r.json()["job"]
    deadline = time.time() + 60
    while (d := client.get(f"/api/design/bench/{job}").json())["state"] != "done":
        assert time.time() < deadline
        time.sleep(0.2)
    for row in d["results"].values():
        assert "error" not in row, row
        assert row["median_ms"] > 0 and row["peak_mb"] >= 0
    assert d["results"]["sdpa"]["impl"] == "sdpa_causal"
    assert d["results"]["attnlab"]["backend"]


def test_every_screens_api_is_behind_the_same_guards(tmp_path) -> None:
    app = create_app(host="10.1.2.3", port=9000, token="s3cret", root=tmp_path / "studio",
                     tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", experiments=tmp_path)
    with TestClient(app, base_url="http://10.1.2.3:9000") as c:
        for path in ("/api/experiments", "/api/runs", "/api/store/runs", "/api/inspect/runs"):
            assert c.get(path).status_code == 401, path
            answer = c.get(path, headers={"Authorization": "Bearer s3cret"})
            assert answer.status_code == 200, (path, answer.text)
        refused = c.post("/api/runs", json={"experiment": "nope"},
                         headers={"Authorization": "Bearer s3cret"})
        assert refused.status_code == 422 and "no experiment 'nope'" in refused.json()["error"]
        wrong = c.get("/api/store/runs", headers={"Authorization": "Bearer s3cret",
                                                  "host": "evil.example:9000"})
        assert wrong.status_code == 421


def test_the_command_says_where_its_experiments_come_from(tmp_path, monkeypatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from attnlab.cli.app import app

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.yaml").write_text("name: a\n")
    runner = CliRunner()
    found = runner.invoke(app, ["studio", "--port", "8123", "--experiments", "mine"])
    assert found.exit_code == 0, found.output
    assert "127.0.0.1:8123" in found.output and "experiments: 1 in mine/" in found.output
    missing = runner.invoke(app, ["studio"])  # ./experiments is not here
    assert missing.exit_code == 0 and "experiments: none in experiments/" in missing.output
    assert served == [{"host": "127.0.0.1", "port": 8123, "log_level": "warning"},
                      {"host": "127.0.0.1", "port": 8765, "log_level": "warning"}]
