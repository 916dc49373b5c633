"""The views in a real browser: Debian's chromium, headless, driven by Playwright. The page draws
its map, another head draws another map, hovering a token lights up the keys it looks at, the
image view draws a heat over the image, and no page asks the network for anything."""

from __future__ import annotations

import numpy as np
import torch

from attnlab import tasks
from attnlab.inspect import views
from attnlab.models import EncoderClassifier, ViT
from attnlab.tasks.image import PixelEncoder
from attnlab.train.config import load_experiment


def _experiment(name: str) -> object:
    return load_experiment({"name": name, "task": {"name": name}, "train": {"epochs": 1}})


def _token_view(ids: list[int]) -> views.View:
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderClassifier.Config(vocab_size=40, num_classes=2, d_model=16,
                                                       layers=2, heads=2, pad_id=0)).eval()
    inspection = tasks.kind("sequence-classification").inspection(
        model, None, _experiment("listops"), example=torch.tensor([ids]))
    return views.build(model, inspection)


def _open(browser, path):
    """The page at `path`, with every request it makes listed and every script error kept."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    return page, requests, errors


INK = """id => { const c = document.getElementById(id), d = c.getContext('2d')
  .getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) n++;
  return n; }"""


def test_the_text_view_draws_switches_heads_highlights_keys_and_stays_offline(browser, tmp_path) -> None:
    view = _token_view([5, 7, 9, 11, 13, 15, 17, 0, 0])
    path, _ = views.write_html(view, tmp_path / "view.html", layer=1, head=0)
    page, requests, errors = _open(browser, path)
    assert page.evaluate(INK, "map") > 1000  # the map is drawn
    before = page.evaluate("document.getElementById('map').toDataURL()")
    page.click("button.head[data-head='1']")
    assert page.evaluate("document.getElementById('map').toDataURL()") != before
    assert page.locator("#queries .q").count() == 7 and page.locator("#keys .k").count() == 7  # no padding
    assert page.locator("#keys .hot").count() == 0
    page.hover("#queries .q >> nth=2")
    lit = page.locator("#keys .hot")
    assert lit.count() == 7  # seven keys, every one kept (top 24)
    # the brightest key is the row's largest weight
    strongest = int(view.maps[1].index[1, 2, 0])
    shades = page.evaluate("[...document.querySelectorAll('#keys .k')].map(s => s.style.background)")
    assert shades[strongest] == "rgb(42, 157, 143)"  # full strength: no alpha left
    # BertViz-like lines for a short input: every row's lines, then only the hovered row's
    assert page.locator("#lines text.lq").count() == 7 and page.locator("#lines line").count() == 7
    page.mouse.move(0, 0)
    page.hover("#lines text.lq >> nth=4")
    opacities = page.evaluate("[...document.querySelectorAll('#lines line')]"
                              ".map(l => +l.getAttribute('stroke-opacity'))")
    assert len(opacities) == 7 and max(opacities) == 1  # the row's largest weight, fully drawn
    page.select_option("#layer", str(len(view.maps) - 1))  # the rollout, a layer of its own
    assert page.locator("button.head").count() == 1 and page.evaluate(INK, "map") > 1000
    page.click("#tab-model")
    assert page.locator("#grid canvas").count() == 2 * 2 + 1
    page.click("#grid canvas >> nth=1")  # layer 0, head 1
    assert page.evaluate("[document.getElementById('layer').value, "
                         "document.querySelector('button.head.on').dataset.head]") == ["0", "1"]
    assert not errors
    assert requests == [path.as_uri()]  # the file itself, nothing else


def test_the_image_view_heats_the_image_and_follows_the_hovered_patch(browser, tmp_path) -> None:
    torch.manual_seed(0)
    model = ViT(ViT.Config(image_size=8, patch_size=2, channels=1, num_classes=3, d_model=16,
                           layers=1, heads=2)).eval()
    exp = _experiment("digits")
    image = np.arange(64, dtype=np.float32).reshape(8, 8) % 17
    inspection = tasks.kind("image-classification").inspection(
        model, PixelEncoder(4.0, 2.0, ("a", "b", "c")), exp, image=image)
    path, _ = views.write_html(views.build(model, inspection), tmp_path / "digit.html")
    page, requests, errors = _open(browser, path)
    assert page.evaluate(INK, "picture") > 1000 and page.locator("#tokens").is_hidden()
    cls_heat = page.evaluate("document.getElementById('picture').toDataURL()")
    page.hover("#picture", position={"x": 300, "y": 300})  # the bottom-right patch
    assert page.evaluate("document.getElementById('map-note').textContent").endswith("(patches 16)")
    assert page.evaluate("document.getElementById('picture').toDataURL()") != cls_heat
    assert not errors and requests == [path.as_uri()]
