"""The studio's Compare and Inspect screens in a real browser (Debian's chromium through Playwright,
the studio served by uvicorn on a free loopback port over a temporary sqlite store holding two tiny
trained spam classifiers, the newer one a mixture). Compare shows the runs with their metric, the
baseline bars and the curves; Inspect draws G's head view of a typed text, another head changes
the drawing, a test example and faithfulness follow, and a bad input is one line. No request
leaves 127.0.0.1. With STUDIO_SHOTS=<dir> the screens are saved as studio-compare.png and
studio-inspect.png."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from attnlab.train.run import train
from attnlab.ui.studio import create_app

SPAM = {"name": "tiny-look",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 24},
                 "train_examples": 128, "val_examples": 32, "test_examples": 24},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "mix({softmax}, {window(4) ; softmax}, gate=token)",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003}}
# Pixels of a canvas that are not (near) white; with `red`, only the baseline's dark red ones.
INK = """([c, red]) => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0; for (let i = 0; i < d.length; i += 4) {
    const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
    if (red ? r > 150 && g < 60 && b < 60 : r < 240 || g < 240 || b < 240) n++; }
  return n; }"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory, serve):
    root = tmp_path_factory.mktemp("look")
    uri = f"sqlite:///{root}/mlflow.db"
    # a plain softmax with 4 heads first, then the mixture: the newest, inspected below
    train(SPAM, root / "plain", tracking_uri=uri, progress=False,
          overrides=["attention=softmax", "model.heads=4"])
    train(SPAM, root / "spam", tracking_uri=uri, progress=False)
    return serve(lambda port: create_app(port=port, tracking_uri=uri, root=root / "studio",
                                         experiments=None)), root


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.requests, page.errors = [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    yield page
    assert not page.errors
    # every request goes to the studio (an example's thumbnail would be a data: URL, no request)
    assert page.requests and all(urlparse(u).hostname == "127.0.0.1" for u in page.requests
                                 if not u.startswith("data:")), page.requests
    page.close()


def test_compare_shows_the_run_its_metric_its_baseline_and_curves(studio, page) -> None:
    url, root = studio
    saved = json.loads((root / "spam" / "metrics.json").read_text())
    page.goto(url + "#compare")
    page.wait_for_function("() => document.body.dataset.compared")
    assert page.is_hidden("#design") and page.is_hidden("#inspect")  # one screen at a time
    assert page.locator("#cmp-table tbody tr").count() == 2
    assert "model.heads" in page.inner_text("#cmp-table thead")  # the key that tells them apart
    row = page.locator("#cmp-table tbody tr", has_text="mix(")
    cells = row.locator("td").all_inner_texts()
    assert "tiny-look" in cells and "sms-spam" in cells and "FINISHED" in cells and "2" in cells
    assert f"{saved['test_accuracy']:.3f}" in cells and f"{saved['test_majority_rate']:.3f}" in cells
    assert page.locator("#cmp-table input[type=checkbox]:checked").count() == 2  # newest ticked
    assert page.locator("#cmp-legend span").count() == 2
    charts = page.locator("#cmp-curves canvas")
    metrics = [charts.nth(i).get_attribute("data-metric") for i in range(charts.count())]
    assert "val_accuracy" in metrics and "train_loss_epoch" in metrics
    for i in range(charts.count()):
        assert page.evaluate(INK, [charts.nth(i).element_handle(), False]) > 100
    bars = page.locator("#cmp-bars").element_handle()
    assert page.evaluate(INK, [bars, False]) > 500 and page.evaluate(INK, [bars, True]) > 10
    assert "majority" in page.inner_text("#cmp-bars-note")
    if os.environ.get("STUDIO_SHOTS"):
        page.screenshot(path=str(Path(os.environ["STUDIO_SHOTS"]) / "studio-compare.png"),
                        full_page=True)
    # a filter that matches nothing says so; unticking the run empties the charts
    page.fill("#cmp-program", "no such program")
    page.wait_for_function("() => !document.getElementById('cmp-empty').hidden")
    assert "no run matches" in page.inner_text("#cmp-empty")
    page.fill("#cmp-program", "window(4)")
    page.wait_for_function("() => document.querySelectorAll('#cmp-table tbody tr').length === 1")
    page.locator("#cmp-table input[type=checkbox]").uncheck()
    page.wait_for_function("() => !document.querySelector('#cmp-curves canvas')")
    assert "tick runs" in page.inner_text("#cmp-curves")
    # the run's link opens it on Inspect
    page.click("#cmp-table tbody a")
    page.wait_for_function("() => document.body.dataset.screen === 'inspect' && "
                           "document.getElementById('ins-run').value !== ''")
    assert page.input_value("#ins-run") == row.get_attribute("data-run")


def _view(page, before: str | None):
    """The iframe's frame, once the studio has loaded a view newer than number `before`."""
    page.wait_for_function("b => (document.body.dataset.views || '0') !== (b || '0')", arg=before)
    return page.query_selector("#ins-view").content_frame()


def test_inspecting_draws_a_head_view_and_another_head_changes_it(studio, page) -> None:
    url, _ = studio
    page.goto(url + "#inspect")
    page.wait_for_function("() => document.getElementById('ins-run').options.length > 1")
    assert page.is_hidden("#design") and page.is_hidden("#compare")
    assert page.locator("#ins-run option").count() == 3
    run_id = page.eval_on_selector("#ins-run", "s => s.options[1].value")
    assert "mixture of 2" in page.eval_on_selector("#ins-run", "s => s.options[1].text")
    page.select_option("#ins-run", run_id)
    page.wait_for_selector("#ins-examples tr[data-example]")
    assert page.locator("#ins-examples tr[data-example]").count() == 8
    assert page.is_visible("#ins-alloc") and "K = 2" in page.inner_text("#ins-alloc")
    assert page.is_hidden("#ins-upload")  # a text run: no image upload

    page.fill("#ins-text", "free prize! call now to claim")
    page.click("#ins-text-form button")
    frame = _view(page, None)
    assert page.evaluate("document.body.dataset.view") == "ok"
    frame.wait_for_function("() => document.getElementById('map')")
    ink = "() => { const c = document.getElementById('map'), d = c.getContext('2d')" \
          ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 0; i < d.length;" \
          " i += 4) if (d[i] < 250) n++; return n; }"
    assert frame.evaluate(ink) > 1000  # a head view is drawn
    assert "free prize" in frame.inner_text("#title")
    assert "mix" in frame.inner_text("#allocation")  # G's page shows the mixture's allocation
    drawn = frame.evaluate("document.getElementById('map').toDataURL()")
    frame.click("button.head[data-head='1']")
    assert frame.evaluate("document.getElementById('map').toDataURL()") != drawn
    assert frame.evaluate(ink) > 1000

    # a test example, then a text too long: one line, the view hidden
    before = page.evaluate("document.body.dataset.views")
    page.click("#ins-examples tr[data-example='2']")
    frame = _view(page, before)
    assert page.evaluate("document.body.dataset.view") == "ok"
    before = page.evaluate("document.body.dataset.views")
    page.fill("#ins-text", "spam " * 500)
    page.click("#ins-text-form button")
    _view(page, before)
    assert page.evaluate("document.body.dataset.view") == "error"
    assert "at most 2000" in page.inner_text("#ins-error") and page.is_hidden("#ins-view")
    before = page.evaluate("document.body.dataset.views")
    page.click("#ins-examples tr[data-example='1']")
    _view(page, before)
    assert page.inner_text("#ins-error") == "" and page.is_visible("#ins-view")

    page.fill("#ins-faith-n", "16")
    page.click("#ins-faith")
    page.wait_for_selector(".faith-table", timeout=60_000)
    rows = page.locator(".faith-table tbody tr")
    assert rows.count() == 4 and "rollout" in rows.nth(1).inner_text()
    marks = page.inner_text(".faith-table tbody")
    assert any(m in marks for m in "✓~✗")
    assert "16 test examples" in page.inner_text("#ins-faith-state")
    assert page.locator("#ins-faith-out li").count() == 3  # a verdict per importance but random
    if os.environ.get("STUDIO_SHOTS"):
        page.fill("#ins-text", "free prize! call now to claim")
        page.screenshot(path=str(Path(os.environ["STUDIO_SHOTS"]) / "studio-inspect.png"),
                        full_page=True)
