"""Readers for the image classification sets: ``{"image": uint8 array (H, W), "label": "0"…"9"}``
examples in file order. Labels are the digit names as strings, like every other set's labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnlab.data.datasets.base import Example, open_text
from attnlab.errors import DataError


def digits(file: Path) -> list[Example]:
    """UCI optical digits, the file scikit-learn's ``load_digits`` reads: 8×8 counts of 0–16 set pixels."""
    table = _numeric_table(file, 8 * 8 + 1)
    return _images(table[:, :-1], table[:, -1], (8, 8))


def mnist_5k(file: Path) -> list[Example]:
    """5,000 MNIST digits (500 per class), 28×28 grey levels 0–255; the label is the last column."""
    table = _numeric_table(file, 28 * 28 + 1)
    return _images(table[:, :-1], table[:, -1], (28, 28))


def _numeric_table(file: Path, columns: int) -> np.ndarray:
    """A comma-separated table of whole numbers 0–255, as uint8; DataError if it is not one."""
    with open_text(file) as f:
        table = np.loadtxt(f, delimiter=",", ndmin=2)
    if table.shape[1] != columns:
        raise DataError(f"{file}: expected {columns} columns per row, found {table.shape[1]}")
    if not (np.all(table == np.round(table)) and table.min() >= 0 and table.max() <= 255):
        raise DataError(f"{file}: expected whole numbers 0–255")
    return table.astype(np.uint8)


def _images(pixels: np.ndarray, labels: np.ndarray, shape: tuple[int, int]) -> list[Example]:
    # One (N, H, W) array; each example's image is its own slice of it.
    images = pixels.reshape(len(pixels), *shape)
    pairs = zip(images, labels.tolist(), strict=True)
    return [{"image": image, "label": str(label)} for image, label in pairs]
