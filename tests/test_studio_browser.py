"""The studio in a real browser (Debian's chromium through Playwright, served by uvicorn on a free
loopback port): a typo shows the caret error, fixing it draws the mask and the plan, N and the
controls update them, nothing is asked of any host but 127.0.0.1, and a token-guarded studio
refuses a page without its token; one served on the machine's network address (off loopback)
refuses every request without it. Also writes the docs' screenshots when STUDIO_SHOTS is set."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

from attnlab.lang import parse
from attnlab.ui.studio import create_app

TOKEN = "t0ken-for-the-test"
INK = """() => { const c = document.getElementById('mask'), d = c.getContext('2d')
  .getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) n++;
  return n; }"""


@pytest.fixture(scope="module")
def studio(serve):
    return [serve(lambda port: create_app(port=port)),
            serve(lambda port: create_app(token=TOKEN, port=port))]


def _answered(page, state: str, before: str | None = None) -> None:
    """Wait until the page has an answer in `state` newer than answer number `before`."""
    page.wait_for_function("([s, b]) => document.body.dataset.state === s && "
                           "document.body.dataset.answers !== b", arg=[state, before])


def test_typing_errors_masks_plans_and_controls_in_chromium(browser, studio) -> None:
    url = studio[0]
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    _answered(page, "ok")
    assert page.evaluate(INK) > 0
    page.fill("#program", "scaled_dot ; causal & windw(8) ; softmax")
    _answered(page, "error")
    shown = page.inner_text("#error")
    assert "did you mean 'window'" in shown and "^^^^^" in shown
    assert shown.strip() == _caret("scaled_dot ; causal & windw(8) ; softmax").strip()
    if os.environ.get("STUDIO_SHOTS"):
        page.screenshot(path=str(Path(os.environ["STUDIO_SHOTS"]) / "studio-design-error.png"))

    page.fill("#program", "scaled_dot ; causal & window(8) ; softmax")
    _answered(page, "ok")
    assert page.is_hidden("#error")
    assert page.evaluate(INK) > 0
    assert "window(8)" in page.inner_text("#canonical") and page.inner_text("#backend")
    assert "backend" in page.inner_text("#plan")
    facts = page.inner_text("#facts")
    assert facts.startswith("N 64")

    # N = 1024: the whole answer (mask and plan) timed in the page, reported by the run
    before = page.evaluate("document.body.dataset.answers")
    page.fill("#seq", "1024")
    page.dispatch_event("#seq", "change")
    _answered(page, "ok", before)
    assert page.inner_text("#facts").startswith("N 1024")
    times = []
    for w in (64, 128, 256, 100, 32):
        before = page.evaluate("document.body.dataset.answers")
        page.fill("#program", f"scaled_dot ; causal & window({w}) ; softmax")
        _answered(page, "ok", before)
        times.append(float(page.evaluate("document.body.dataset.responseMs")))
    print(f"\ndesign screen at N=1024, ms per change: {times}")

    # a control rewrites the text server-side, and the mask follows
    drawn = page.evaluate("document.getElementById('mask').toDataURL()")
    before = page.evaluate("document.body.dataset.answers")
    page.fill("#c-window", "300")
    page.dispatch_event("#c-window", "change")
    page.wait_for_function("() => document.getElementById('program').value.includes('window(300)')")
    _answered(page, "ok", before)
    assert page.evaluate("document.getElementById('mask').toDataURL()") != drawn
    page.select_option("#c-normalizer", "sparsemax")
    page.wait_for_function("() => document.getElementById('program').value.includes('sparsemax')")
    assert parse(page.input_value("#program")).normalizer == parse("causal ; sparsemax").normalizer
    # the zoo picker loads a program, and the controls read it back
    page.select_option("#zoo", "longformer")
    page.wait_for_function("() => document.getElementById('c-global_tokens').value === '4'")
    assert page.input_value("#c-window") == "256"
    if os.environ.get("STUDIO_SHOTS"):
        page.fill("#seq", "256")
        page.dispatch_event("#seq", "change")
        page.fill("#program", "scaled_dot ; causal & (window(24) | global_tokens(8)) ; softmax")
        page.wait_for_function("() => document.getElementById('facts').textContent.startsWith('N 256')"
                               " && document.getElementById('c-window').value === '24'")
        page.screenshot(path=str(Path(os.environ["STUDIO_SHOTS"]) / "studio-design.png"), full_page=True)
    assert not errors
    assert requests and all(urlparse(u).hostname == "127.0.0.1" for u in requests), requests
    page.close()


def _caret(text: str) -> str:
    try:
        parse(text)
    except Exception as err:
        return str(err)
    raise AssertionError("no error")


def test_a_token_guarded_studio_refuses_a_page_without_it(browser, studio) -> None:
    url = studio[1]
    page = browser.new_page()
    response = page.goto(url)
    assert response.status == 401 and "token" in page.inner_text("body")
    response = page.goto(url + "?token=" + TOKEN)
    assert response.status == 200
    _answered(page, "ok")  # the page's own API calls carry the token
    assert page.evaluate(INK) > 0
    page.close()


def _own_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one: a UDP socket
    "connected" anywhere names it, and sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_a_studio_off_loopback_refuses_every_request_without_its_token(browser, serve) -> None:
    address = _own_address()
    if address is None:
        pytest.skip("this machine has no address but loopback")
    url = serve(lambda port: create_app(host=address, port=port, token=TOKEN), host=address)
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    for path in ("", "static/common.js", "api/design/zoo", "api/store/runs", "api/data"):
        response = page.goto(url + path)
        assert response.status == 401 and "token" in page.inner_text("body"), path
    response = page.goto(url + "?token=" + TOKEN)
    assert response.status == 200
    _answered(page, "ok")  # the page's own API calls carry the token, and the cookie it set
    assert page.evaluate(INK) > 0
    assert page.goto(url + "api/design/zoo").status == 200  # the cookie, set by the first load
    assert {urlparse(u).hostname for u in requests} == {address}
    page.close()
