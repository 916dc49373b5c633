"""The Run screen in a real browser (Debian's chromium through Playwright, the studio served by
uvicorn on a free loopback port, with its own root and sqlite store): a tiny training streams its
progress to the page and then shows its metric; its links open it in Compare's runs table with
that metric and on Inspect, where a test example draws a head view that another head changes; a CSV
uploaded through the page starts a second job, queued behind the first, which is cancelled; a
reload shows both again. Nothing is asked of any host but 127.0.0.1. With STUDIO_SHOTS set it
writes studio-run.png while the training is live. On a token-guarded studio, a pasted experiment,
an image folder upload and a job's stream all carry the token."""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from attnlab.ui.studio import create_app

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# the shipped mqar, made tiny: 376 steps of a one-layer model, validated every 75
TINY = ["task.params.vocab_size=32", "task.params.seq_len=8", "task.params.num_kv_pairs=2",
        "task.train_examples=3000", "task.val_examples=64", "task.test_examples=64",
        "model.d_model=16", "model.layers=1", "model.heads=2",
        "train.epochs=2", "train.batch_size=16", "train.warmup_steps=10", "train.validate_every=75"]
TOKEN = "t0ken-for-the-run-test"
EXPERIMENT = ("name: pasted\ntask: {name: mqar, params: {vocab_size: 32, seq_len: 8, num_kv_pairs: 2}}\n"
              "train: {epochs: 1}\n")
CSV = "message,intent\n" + "".join(f"refund order {n} please,refund\nblock card {n} now,card\n"
                                   for n in range(20))


def _studio(serve, tmp_path: Path, token: str | None = None) -> str:
    return serve(lambda port: create_app(
        port=port, root=tmp_path / "studio", experiments=EXPERIMENTS, jobs=1,
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", token=token))


@pytest.fixture
def studio(serve, tmp_path):
    return _studio(serve, tmp_path)


@pytest.fixture
def guarded(serve, tmp_path):
    return _studio(serve, tmp_path, TOKEN) + "?token=" + TOKEN


def _job(page, n: int, attr: str) -> str | None:
    return page.get_attribute(f"#jobs article[data-id='{n}']", f"data-{attr}")


def test_a_tiny_training_streams_progress_then_shows_its_metric(browser, studio, tmp_path) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(studio + "#run")
    page.wait_for_function("() => [...document.querySelectorAll('#experiment option')]"
                           ".some(o => o.value === 'mqar')")
    page.select_option("#experiment", "mqar")
    # a second program with a typo shows the caret error as it is typed; removed, it is gone
    page.click("#add-program")
    row = "#programs .program:nth-child(2)"
    page.fill(f"{row} input", "scaled_dot ; causal & windw(4) ; softmax")
    page.wait_for_selector(f"{row}[data-state=error] pre:not([hidden])")
    assert "did you mean 'window'" in page.inner_text(f"{row} pre")
    page.click(f"{row} button")
    page.wait_for_selector("#programs .program:first-child[data-state=ok]")
    page.fill("#settings", "\n".join(TINY))
    page.click("#start")
    page.wait_for_selector("#jobs article[data-id='1']")

    # own data through the page: a CSV uploaded, its columns offered, a second job started on it
    page.check("input[name=source][value=data]")
    page.set_input_files("#data-file", files=[{"name": "intents.csv", "mimeType": "text/csv",
                                               "buffer": CSV.encode()}])
    page.wait_for_function("() => document.getElementById('data-facts').textContent"
                           ".includes('columns message, intent')")
    assert page.input_value("#data-text") == "message" and page.input_value("#data-label") == "intent"
    page.fill("#settings", "train.epochs=1\ntask.params.vocab_size=100")
    page.click("#start")
    page.wait_for_selector("#jobs article[data-id='2'][data-state=queued]")
    page.wait_for_function("() => document.getElementById('queue').textContent"
                           ".startsWith('1 running · 1 waiting · at most 1')")
    page.click("#jobs article[data-id='2'] button.cancel")
    page.wait_for_selector("#jobs article[data-id='2'][data-state=cancelled]")
    assert page.is_hidden("#jobs article[data-id='2'] button.cancel")

    # the first job's progress, as the page shows it, at several moments
    seen, shot = [], None
    deadline = time.monotonic() + 120
    while _job(page, 1, "state") != "finished" and time.monotonic() < deadline:
        state, progress = _job(page, 1, "state"), float(_job(page, 1, "progress") or 0)
        seen.append((state, progress, int(_job(page, 1, "events")), page.inner_text(
            "#jobs article[data-id='1'] .facts")))
        if os.environ.get("STUDIO_SHOTS") and shot is None and 0.45 < progress < 0.9 and \
                int(_job(page, 1, "drawn") or 0) >= 3:
            shot = Path(os.environ["STUDIO_SHOTS"]) / "studio-run.png"
            page.screenshot(path=str(shot), full_page=True)
        if state == "failed":
            break
        time.sleep(0.15)
    assert _job(page, 1, "state") == "finished", page.inner_text("#jobs article[data-id='1']")
    live = sorted({p for state, p, _, _ in seen if state == "running" and 0 < p < 1})
    assert len(live) >= 3, seen  # the bar moved, step by step, while it ran
    assert [n for *_, n, _ in seen] == sorted(n for *_, n, _ in seen)  # events only add up
    assert any("step" in facts and "loss" in facts for *_, facts in seen)
    assert int(_job(page, 1, "events")) >= 5 and int(_job(page, 1, "drawn")) >= 5
    metric = page.inner_text("#jobs article[data-id='1'] .result .metric[data-name=test_accuracy] b")
    assert 0 <= float(metric) <= 1
    href = page.get_attribute("#jobs article[data-id='1'] .result a[href^='#inspect']", "href")
    run_id = href.split("run=")[1]
    # the store's runs table (the Compare screen's) holds the run with that metric
    table = page.evaluate("async () => (await api('GET', '/api/store/runs')).data.runs")
    row = next(r for r in table if r["run_id"] == run_id)
    assert row["main_metric"] == "test_accuracy" and abs(row["score"] - float(metric)) < 1e-3

    # the job's link opens Compare: the run is in its table with that metric
    page.click("#jobs article[data-id='1'] .result a[href^='#compare']")
    page.wait_for_function("() => document.body.dataset.compared")
    compared = f"#cmp-table tbody tr[data-run='{run_id}']"
    assert metric in page.locator(compared).locator("td").all_inner_texts()
    # and its row's link opens Inspect: a test example drawn as a head view; another head changes it
    page.click(f"{compared} a")
    page.wait_for_function("r => document.getElementById('ins-run').value === r", arg=run_id)
    page.click("#ins-examples tr[data-example='0']")
    page.wait_for_function("() => document.body.dataset.view === 'ok'")
    frame = page.query_selector("#ins-view").content_frame()
    frame.wait_for_function("() => document.getElementById('map')")
    drawn = frame.evaluate("document.getElementById('map').toDataURL()")
    frame.click("button.head[data-head='1']")
    assert frame.evaluate("document.getElementById('map').toDataURL()") != drawn
    page.goto(studio + "#run")

    # a reload shows both jobs as they ended, the finished one with its chart
    page.reload()
    page.wait_for_selector("#jobs article[data-id='2'][data-state=cancelled]")
    page.wait_for_function("() => Number(document.querySelector(\"#jobs article[data-id='1']\")"
                           ".dataset.drawn) >= 5")
    assert page.inner_text("#jobs article[data-id='1'] .state") == "finished"
    assert not errors, errors
    assert requests and all(urlparse(u).hostname == "127.0.0.1" for u in requests), requests
    print(f"\nrun screen: {len(seen)} looks, progress seen {live}")
    page.close()


def test_uploads_and_a_stream_carry_the_token_of_a_guarded_studio(browser, guarded, tmp_path) -> None:
    """A pasted experiment kept, an image folder uploaded (other files left out, counted), a job
    followed and cancelled: every request of the page passes the token guard."""
    from PIL import Image

    folder = tmp_path / "shapes"
    for label, shade in (("dark", 20), ("light", 230)):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), shade + i).save(folder / label / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "dark" / ".DS_Store").write_bytes(b"\0")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    refused, errors = [], []
    page.on("response", lambda r: refused.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(guarded + "#run")
    page.click("#exp-upload summary")
    page.fill("#exp-text", "name: [unclosed")
    page.click("#exp-keep")
    page.wait_for_selector("#exp-msg.bad")
    assert "not YAML" in page.inner_text("#exp-msg")
    page.fill("#exp-text", EXPERIMENT)
    page.click("#exp-keep")
    page.wait_for_function("() => document.getElementById('experiment').value === 'pasted'")
    refused.clear()  # the YAML mistake's 422 was meant

    page.check("input[name=source][value=data]")
    page.set_input_files("#data-folder", str(folder))
    page.wait_for_function("() => document.getElementById('data-facts').textContent"
                           ".includes('classes dark, light')")
    assert page.text_content("#data-progress") == "shapes: 6 / 6 images (2 other files left out)"
    assert page.input_value("#data-set") == "shapes" and page.is_visible("#data-size")
    assert page.is_hidden("#data-text")

    page.check("input[name=source][value=experiment]")
    page.fill("#settings", "task.train_examples=100000\ntrain.epochs=20")
    # the job's stream: an EventSource, the token in its URL
    with page.expect_response(lambda r: "/api/runs/1/events" in r.url) as streamed:
        page.click("#start")
    assert streamed.value.status == 200 and "token=" in streamed.value.url
    page.wait_for_selector("#jobs article[data-id='1'][data-state=running]")
    page.click("#jobs article[data-id='1'] button.cancel")
    page.wait_for_selector("#jobs article[data-id='1'][data-state=cancelled]")
    page.check("input[name=source][value=data]")
    page.click("#data-delete")
    page.wait_for_function("() => document.getElementById('data-facts').textContent === 'deleted shapes'")
    assert not refused and not errors, (refused, errors)
    page.close()
