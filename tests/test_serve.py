"""`attnlab serve` on tiny trained runs (text, image, translation, recommendation): each endpoint
answers as the run's own predictor does, bad input is a one-line 4xx (never a 500), concurrent
requests share model calls, the server binds to loopback, and the load test sends real examples."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab.data import load
from attnlab.deploy import serve
from attnlab.train.config import load_experiment

SHORT = {"train": {"steps": 8, "batch_size": 32, "lr": 0.003}}
TEXT = {"name": "serve-spam",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 40},
                 "train_examples": 256, "val_examples": 32, "test_examples": 48},
        "model": {"d_model": 16, "layers": 1, "heads": 2}, **SHORT}
IMAGE = {"name": "serve-digits",
         "task": {"name": "digits", "train_examples": 256, "val_examples": 32, "test_examples": 32},
         "model": {"d_model": 16, "layers": 1, "heads": 2, "patch_size": 2}, **SHORT}
RECOMMEND = {"name": "serve-movies",
             "task": {"name": "movielens-100k", "params": {"max_len": 10, "negatives": 20}},
             "model": {"d_model": 16, "layers": 1, "heads": 1},
             "attention": "scaled_dot ; causal ; softmax", **SHORT}
GENERATED = {"name": "serve-copy",
             "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 12, "num_kv_pairs": 2},
                      "train_examples": 64, "val_examples": 32, "test_examples": 32},
             "model": {"d_model": 16, "layers": 1, "heads": 2}, "attention": "causal ; softmax",
             **SHORT}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Trains a run once per module: made(name, experiment) → its folder."""
    root = tmp_path_factory.mktemp("serve")
    store = f"sqlite:///{root / 'mlflow.db'}"
    runs = {}

    def trained(exp: dict):
        if exp["name"] not in runs:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("ATTNLAB_CACHE", str(root / "cache"))
                attnlab.train.train(load_experiment(exp), root / exp["name"], progress=False,
                                    tracking_uri=store)
            runs[exp["name"]] = root / exp["name"]
        return runs[exp["name"]]

    trained.root = root
    return trained


def client(run, **limits) -> TestClient:
    # a server exception would come back as a 500 here, not raise: the tests look for it
    return TestClient(serve.build_app(serve.load_source(run), **limits), raise_server_exceptions=False)


def translation(made):
    """A translation run on 240 short real verses of kjv-spanish, given as a pairs file."""
    path = made.root / "verses.jsonl"
    if not path.exists():
        verses = [ex for ex in load("kjv-spanish", seed=0)["train"] if len(ex["source"]) < 60][:240]
        path.write_text("".join(json.dumps(ex) + "\n" for ex in verses))
    return made({"name": "serve-verses",
                 "task": {"name": "pairs", "params": {"path": str(path), "vocab_size": 200,
                                                      "max_len": 40}},
                 "model": {"d_model": 16, "layers": 1, "heads": 2},
                 "decode": {"beam_size": 1, "max_len": 12}, **SHORT})


def png(pixels: np.ndarray) -> str:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


# -- each endpoint answers as the predictor does ----------------------------------------------------


def test_texts_are_classified_as_the_predictor_classifies_them(made) -> None:
    run = made(TEXT)
    predictor = attnlab.load(run)
    texts = ["WINNER!! Claim your free prize now, call 09061701461", "ok see you at home later",
             "Are you coming to dinner tonight?"]
    with client(run) as http:
        assert http.get("/health").json() == {"status": "ok"}
        answer = http.post("/classify", json={"texts": texts})
        info = http.get("/info").json()
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == predictor.predict(texts)
    expected = predictor.predict_proba(texts)
    for p, row in zip(predictions, expected.tolist(), strict=True):
        assert list(p["probabilities"]) == ["ham", "spam"]
        assert list(p["probabilities"].values()) == pytest.approx(row, abs=1e-5)
        assert p["probability"] == pytest.approx(max(row), abs=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert info["program"] == metrics["program"] == "scaled_dot ; padding ; softmax"
    assert (info["experiment"], info["task"], info["kind"]) == ("serve-spam", "sms-spam",
                                                                "text-classification")
    assert info["metrics"] == metrics and info["attnlab"] == attnlab.__version__
    assert info["source"] == str(run)
    assert info["endpoints"] == ["GET /health", "GET /info", "POST /classify"]
    assert info["limits"]["items_per_request"] == 64 and info["limits"]["tokens"] == 40
    assert info["batching"]["model_calls"] == 1 and info["batching"]["latest_batches"] == [3]


def test_images_sent_as_base64_png_are_read_as_predict_reads_files(made, tmp_path) -> None:
    run = made(IMAGE)
    predictor = attnlab.load(run)
    raw = [np.asarray(ex["image"]) * 255 / 16 for ex in load("digits", seed=0)["test"][:4]]
    files = []
    for i, pixels in enumerate(raw):
        files.append(tmp_path / f"{i}.png")
        files[-1].write_bytes(base64.b64decode(png(pixels)))
    with client(run) as http:
        answer = http.post("/classify", json={"images": [png(p) for p in raw]})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [p["label"] for p in predictions] == predictor.predict([str(f) for f in files])
    expected = predictor.predict_proba([str(f) for f in files]).tolist()
    assert [list(p["probabilities"].values()) for p in predictions] == [
        pytest.approx(row, abs=1e-5) for row in expected]


def test_texts_are_translated_as_the_translator_translates_them(made) -> None:
    run = translation(made)
    texts = ["In the beginning God created the heaven and the earth.", "Jesus wept."]
    with client(run) as http:
        answer = http.post("/translate", json={"texts": texts})
        too_long = http.post("/translate", json={"texts": ["Jesus wept. " * 20]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"translations": [{"translation": t}
                                              for t in attnlab.load(run).predict(texts)]}
    assert too_long.status_code == 422
    assert too_long.json()["error"].startswith("texts[0]: ")
    assert "tokens; the model reads at most 40" in too_long.json()["error"]


def test_histories_get_the_recommenders_items_with_titles(made) -> None:
    run = made(RECOMMEND)
    predictor = attnlab.load(run)
    history = ["50", "172", "133", "1", "98"]
    with client(run) as http:
        answer = http.post("/recommend", json={"history": history, "k": 5})
        default = http.post("/recommend", json={"history": history})
        unknown = http.post("/recommend", json={"history": ["50", "no-such-movie"]})
        zero = http.post("/recommend", json={"history": history, "k": 0})
        empty = http.post("/recommend", json={"history": []})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [i["item"] for i in items] == predictor.recommend(history, 5)
    assert all(i["title"] for i in items)  # MovieLens has titles
    assert [i["item"] for i in default.json()["items"]] == predictor.recommend(history, 10)
    assert unknown.status_code == 422
    assert unknown.json() == {"error": "history[1]: item 'no-such-movie' is not in the catalogue "
                                       "of 1682 items"}
    assert zero.status_code == 422 and zero.json()["error"].startswith("k: input should be greater")
    assert empty.status_code == 422 and empty.json()["error"].startswith("history: empty")


# -- bad input: one line, 4xx, never a 500 ------------------------------------------------------------


def test_bad_requests_get_one_line_errors(made) -> None:
    run = made(TEXT)
    with client(run) as http:
        def error(body, status, route="/classify", **kw):
            answer = http.post(route, content=body, **kw) if isinstance(body, bytes) else \
                http.post(route, json=body, **kw)
            assert answer.status_code == status, answer.text
            assert list(answer.json()) == ["error"] and "\n" not in answer.json()["error"]
            return answer.json()["error"]

        assert error({"texts": ["fine", "also fine", 3]}, 422) == \
            "texts[2]: expected a string, got a number"
        assert error({}, 422) == "texts: missing; this endpoint takes texts"
        assert error({"text": ["a"]}, 422).startswith("text: not a field of this endpoint; it "
                                                      "takes texts")
        assert error({"texts": "one text"}, 422) == "texts: expected a list, got a string"
        assert error([1, 2], 422) == "body: expected a JSON object with texts, got a list"
        assert error({"texts": []}, 422) == "texts: empty; give at least one"
        assert error({"texts": ["hi"] * 65}, 413) == \
            "texts: 65 items; at most 64 per request, so split them"
        long = "a very long message that goes on " * 10
        tokens = len(attnlab.load(run).encoder.tokenizer.encode(long).ids)
        assert error({"texts": ["short", long]}, 422) == (
            f"texts[1]: {tokens} tokens; the model reads at most 40, so shorten it (nothing is "
            "cut silently)")
        assert error(b'{"texts": ["unclosed"', 400).startswith("the body is not JSON (")
        assert error(b"\xff\xfe\x00", 400).startswith("the body is not JSON (")
        assert error(b"[" * 100_000 + b"]" * 100_000, 400).startswith("the body is not JSON (")
        missing = http.get("/predict")
        assert missing.status_code == 404
        assert missing.json() == {"error": "no route GET /predict; this server has GET /health, "
                                           "GET /info, POST /classify"}
        assert http.get("/classify").status_code == 405
    with client(run, max_body=1000) as http:
        big = http.post("/classify", json={"texts": ["x" * 600, "y" * 600]})
        assert big.status_code == 413
        assert big.json() == {"error": f"the body is {len(big.request.content)} bytes; at most "
                                       "1000 are read"}


def test_no_bad_input_is_a_server_error(made) -> None:
    """Each kind's endpoint, sent what a careless client sends: always a 4xx."""
    bad = [b"", b"null", b"7", b'"texts"', b"{", b'{"texts": null}', b'{"texts": [null]}',
           b'{"images": ["%%%"]}', b'{"images": ["aGVsbG8="]}', b'{"images": [[1, 2]]}',
           b'{"history": "50"}', b'{"history": [50]}', b'{"history": ["50"], "k": "3"}',
           b'{"history": ["50"], "k": 1e9}', b'{"history": ["50"], "k": 1681}',
           b'{"texts": ["' + b"word " * 3000 + b'"]}', b'{"texts": [NaN]}']
    for run, route in ((made(TEXT), "/classify"), (made(IMAGE), "/classify"),
                       (made(RECOMMEND), "/recommend")):
        with client(run) as http:
            for body in bad:
                answer = http.post(route, content=body)
                assert 400 <= answer.status_code < 500, (route, body[:40], answer.text)
                assert list(answer.json()) == ["error"], answer.text
    with client(made(IMAGE)) as http:
        assert http.post("/classify", json={"images": ["%%%"]}).json() == {
            "error": "images[0]: not base64; give the bytes of a PNG or JPEG file in base64"}
        assert http.post("/classify", json={"images": ["aGVsbG8="]}).json() == {
            "error": "'images[0]' is not an image Pillow can read (a PNG or JPEG)"}


# -- batching -----------------------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls_and_answer_as_one_by_one(made) -> None:
    run = made(TEXT)
    texts = [ex["text"] for ex in load("sms-spam", seed=0)["test"][:32]]
    texts = [t for t in texts if len(attnlab.load(run).encoder.tokenizer.encode(t).ids) <= 40]
    app = serve.build_app(serve.load_source(run), max_wait_ms=20)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            together = await asyncio.gather(*(http.post("/classify", json={"texts": [t]})
                                              for t in texts))
            calls = app.state.batcher.calls
            alone = [await http.post("/classify", json={"texts": [t]}) for t in texts]
        return together, calls, alone

    together, calls, alone = asyncio.run(burst())
    assert all(a.status_code == 200 for a in together + alone)
    assert calls < len(texts) // 2, f"{calls} model calls for {len(texts)} requests"
    assert app.state.batcher.calls == calls + len(texts)  # one by one: a call each
    for a, b in zip(together, alone, strict=True):
        (x,), (y,) = a.json()["predictions"], b.json()["predictions"]
        assert x["label"] == y["label"] and x["probability"] == pytest.approx(y["probability"],
                                                                              abs=1e-5)


def test_a_request_is_never_split_and_a_batch_never_overflows() -> None:
    seen = []

    def run(items):
        seen.append(list(items))
        return [i * 10 for i in items]

    batcher = serve.MicroBatcher(run, max_batch=5, max_wait_s=0.05)

    async def many():
        return await asyncio.gather(*(batcher.submit(list(range(n, n + 3))) for n in (0, 3, 6, 9)))

    assert asyncio.run(many()) == [[0, 10, 20], [30, 40, 50], [60, 70, 80], [90, 100, 110]]
    assert [len(batch) for batch in seen] == [3, 3, 3, 3]  # two requests of 3 would make 6 > 5
    assert batcher.stats()["mean_batch"] == 3


# -- the command line ---------------------------------------------------------------------------------


def test_serve_binds_to_loopback_unless_told_and_warns_when_told(made, monkeypatch) -> None:
    started = []
    monkeypatch.setattr(serve.Server, "run", lambda self: started.append(self.config))
    run = str(made(TEXT))
    result = CliRunner().invoke(attnlab.cli.app.app, ["serve", run])
    assert result.exit_code == 0, result.output
    config = started[-1]
    assert (config.host, config.port) == ("127.0.0.1", 8000)
    assert f"serving {run} on http://127.0.0.1:8000" in result.output
    assert "POST http://127.0.0.1:8000/classify" in result.output
    assert "GET  http://127.0.0.1:8000/info" in result.output
    assert "warning" not in result.output
    result = CliRunner().invoke(attnlab.cli.app.app, ["serve", run, "--host", "0.0.0.0",
                                                      "--port", "9100"])
    assert result.exit_code == 0, result.output
    assert (started[-1].host, started[-1].port) == ("0.0.0.0", 9100)
    assert "warning: listening on 0.0.0.0" in result.output and "no authentication" in result.output


def test_a_generated_task_run_is_refused_in_one_line(made) -> None:
    result = CliRunner().invoke(attnlab.cli.app.app, ["serve", str(made(GENERATED))])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: serve-copy is a language-modelling run, which has no raw input to serve; attnlab "
        "serve serves text-classification, image-classification, frame-classification, "
        "translation, recommendation runs"]


def test_the_load_test_sends_real_examples_with_no_errors(made, tmp_path) -> None:
    report_file = tmp_path / "load.json"
    result = CliRunner().invoke(attnlab.cli.app.app, [
        "bench", "serve", str(made(TEXT)), "--requests", "100", "--concurrency", "8",
        "--timeout", "60", "--json", str(report_file)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_file.read_text())
    assert report["errors"] == 0 and report["answered"] == 100 and not report["timed_out"]
    assert 0 < report["p50_ms"] <= report["p99_ms"] < 60_000
    assert report["throughput_rps"] > 1 and report["distinct_bodies"] > 10
    assert 1 <= report["mean_batch"] <= 8 and report["model_calls"] <= 100
    assert "latency p50" in result.output and "errors       0" in result.output


@pytest.mark.parametrize("kind", ["text", "image", "translation", "recommendation"])
def test_the_load_tests_requests_are_real_test_examples_each_served(made, kind) -> None:
    run = {"text": lambda: made(TEXT), "image": lambda: made(IMAGE),
           "translation": lambda: translation(made), "recommendation": lambda: made(RECOMMEND)}[kind]()
    loaded = serve.load_source(run)
    service = serve.service_of(loaded)
    bodies = service.examples(loaded.test())
    assert len(bodies) >= 5 and len({json.dumps(b) for b in bodies}) == len(bodies)
    with client(run) as http:
        for body in bodies[:5]:
            answer = http.post(service.route, json=body)
            assert answer.status_code == 200, answer.text


def test_frames_are_classified_as_the_frame_classifier_classifies_them() -> None:
    """A frames run's service, on an untrained model (the spoken-digits set takes seconds to
    read): raw utterances in, the predictor's own labels and probabilities out."""
    import torch

    from attnlab.models import EncoderClassifier, EncoderClassifierConfig
    from attnlab.tasks import kind
    from attnlab.tasks.frames import FrameClassifier, FrameEncoder

    torch.manual_seed(0)
    model = EncoderClassifier(EncoderClassifierConfig(0, 3, d_model=16, layers=1, heads=2,
                                                      max_len=8, features=4)).eval()
    predictor = FrameClassifier(model, FrameEncoder((0.5,) * 4, (2.0,) * 4, 8, ("yes", "no", "maybe")))
    service = kind("frame-classification").service(predictor, None)
    utterances = [np.random.default_rng(i).normal(size=(3 + i, 4)).round(3).tolist() for i in range(3)]
    body = service.request.model_validate({"frames": utterances})
    answers = service.run(service.items(body))
    expected = predictor.predict_proba([np.array(u) for u in utterances])
    assert [a["label"] for a in answers] == predictor.predict([np.array(u) for u in utterances])
    assert [list(a["probabilities"].values()) for a in answers] == [
        pytest.approx(row, abs=1e-6) for row in expected.tolist()]
    assert service.route == "/classify" and service.limits == {"frames": 8, "features": 4}
    with pytest.raises(attnlab.InputError, match=re.escape(
            "frames[1]: 9 frames; the model reads at most 8, so shorten it")):
        service.items(service.request.model_validate({"frames": [[[0.0] * 4], [[0.0] * 4] * 9]}))
    with pytest.raises(attnlab.InputError, match=re.escape(
            "frames[0]: float64 array of shape (2, 3); give one utterance as frames (T, 4)")):
        service.items(service.request.model_validate({"frames": [[[0.0] * 3] * 2]}))


def test_an_exported_file_is_served_as_its_run_is(made, tmp_path) -> None:
    from attnlab.deploy import export

    run = made(TEXT)
    file = tmp_path / "spam.onnx"
    export(run, "onnx", out=file, check=False, progress=False)
    texts = ["WINNER!! Claim your free prize now", "see you at home", "call me later please"]
    with client(run) as eager, client(file) as exported:
        want, got = (http.post("/classify", json={"texts": texts}) for http in (eager, exported))
        info = exported.get("/info").json()
        too_long = exported.post("/classify", json={"texts": ["word " * 200]})
    assert got.status_code == 200, got.text
    for a, b in zip(want.json()["predictions"], got.json()["predictions"], strict=True):
        assert a["label"] == b["label"]
        assert list(a["probabilities"].values()) == pytest.approx(
            list(b["probabilities"].values()), abs=1e-5)
    assert info["source"] == str(file) and info["program"] == "scaled_dot ; padding ; softmax"
    assert too_long.status_code in (413, 422) and "40" in too_long.json()["error"]
