"""The picture functions write readable PNGs of the expected shape, including edge cases."""

import matplotlib.image
import numpy as np
import pytest
import torch

from attnlab.inspect.pictures import draw_mask, draw_masks, draw_weights

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path):
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    height, width = image.shape[:2]
    return width / height, image


def _grey_fraction(image):
    grey = np.array([0xC4, 0xC4, 0xC4]) / 255
    return (np.abs(image[..., :3] - grey).max(axis=-1) < 0.02).mean()


def _local_causal(n):
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None]
    return (j <= i) & ((i - j) <= 3)


def test_draw_mask_square(tmp_path):
    path = draw_mask(_local_causal(32), tmp_path / "deep" / "dir" / "mask.png", title="local")
    aspect, _ = _read_png(path)
    assert 0.8 < aspect < 1.25


@pytest.mark.parametrize(("shape", "wide"), [((16, 64), True), ((64, 16), False)])
def test_draw_mask_follows_mask_aspect(tmp_path, shape, wide):
    visible = np.random.default_rng(0).random(shape) > 0.5
    aspect, _ = _read_png(draw_mask(visible, tmp_path / "m.png"))
    assert (aspect > 1.4) if wide else (aspect < 0.75)


def test_draw_mask_with_nothing_visible(tmp_path):
    _, image = _read_png(draw_mask(torch.zeros(8, 8, dtype=torch.bool), tmp_path / "empty.png"))
    assert np.isfinite(image).all()


def test_draw_mask_large(tmp_path):
    visible = torch.rand(300, 300, generator=torch.Generator().manual_seed(0)) > 0.5
    _read_png(draw_mask(visible, str(tmp_path / "big.png")))


def test_draw_mask_rejects_non_2d(tmp_path):
    with pytest.raises(ValueError, match="2-D"):
        draw_mask(torch.ones(2, 3, 3, dtype=torch.bool), tmp_path / "x.png")


def test_draw_weights_with_mask(tmp_path):
    visible = _local_causal(32)
    logits = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(0))
    weights = torch.softmax(logits.masked_fill(~visible, float("-inf")), dim=-1)
    path = draw_weights(
        weights,
        tmp_path / "w.png",
        titles=[f"head {h}" for h in range(4)],
        suptitle="weights",
        mask=visible,
    )
    aspect, image = _read_png(path)
    assert aspect > 2  # four panels in one row
    # Masked cells (most of this band mask) come out in the neutral grey; without a mask the
    # same zero weights are drawn in the colour map instead.
    assert _grey_fraction(image) > 0.1
    _, unmasked = _read_png(draw_weights(weights, tmp_path / "u.png"))
    assert _grey_fraction(unmasked) < 0.01


def test_draw_weights_many_panels_wrap(tmp_path):
    panels = np.random.default_rng(1).random((11, 10, 12))
    aspect, _ = _read_png(draw_weights(panels, tmp_path / "many.png"))
    single_row, _ = _read_png(draw_weights(panels[:8], tmp_path / "eight.png"))
    assert aspect < single_row  # 11 panels take two rows of at most 8


def test_draw_weights_all_zero_and_single_panel(tmp_path):
    _read_png(draw_weights(torch.zeros(6, 6), tmp_path / "zero.png"))


def test_draw_weights_mask_hides_everything(tmp_path):
    mask = torch.zeros(5, 5, dtype=torch.bool)
    _read_png(draw_weights(torch.rand(2, 5, 5), tmp_path / "hidden.png", mask=mask))


def test_draw_weights_checks_shapes(tmp_path):
    with pytest.raises(ValueError, match="titles"):
        draw_weights(torch.rand(2, 4, 4), tmp_path / "a.png", titles=["one"])
    with pytest.raises(ValueError, match="mask shape"):
        draw_weights(torch.rand(2, 4, 4), tmp_path / "b.png", mask=torch.ones(3, 4, dtype=bool))


def _red_fraction(image):
    red = np.array([0xE6, 0x39, 0x46]) / 255  # pictures.MARK
    return (np.abs(image[..., :3] - red).max(axis=-1) < 0.08).mean()


def test_draw_weights_rings_marked_cells_and_names_positions(tmp_path):
    weights = torch.softmax(torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(0)), -1)
    plain = _read_png(draw_weights(weights, tmp_path / "plain.png"))[1]
    labels = ["k1", "v1", "k2", "v2", "q2", ".", "q1", "."]
    _, marked = _read_png(draw_weights(weights, tmp_path / "marked.png", marks=[(4, 2), (6, 0)],
                                       labels=labels))
    assert _red_fraction(plain) == 0 and _red_fraction(marked) > 0
    with pytest.raises(ValueError, match="labels name the positions"):
        draw_weights(weights, tmp_path / "bad.png", labels=labels[:5])


def test_draw_masks_side_by_side(tmp_path):
    named = [
        ("causal", torch.ones(16, 16).tril().bool()),
        ("local", _local_causal(16)),
        ("none", torch.zeros(16, 16, dtype=torch.bool)),
    ]
    aspect, _ = _read_png(draw_masks(named, tmp_path / "masks.png", suptitle="programs"))
    assert aspect > 2


def test_draw_masks_needs_a_mask(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        draw_masks([], tmp_path / "none.png")
