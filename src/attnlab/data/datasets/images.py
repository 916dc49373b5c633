"""Readers for the image classification sets: ``{"image": uint8 array (H, W), "label": name}``
examples in file order. Labels are names as strings ("0"…"9" for digits), like every other set's."""

from __future__ import annotations

import gzip
import math
import warnings
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


FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")  # the names of label ids 0–9, from the Fashion-MNIST README


def fashion_mnist(folder: Path) -> list[Example]:
    """Zalando's Fashion-MNIST, 28×28 grey levels: the official train files, then t10k (test).

    Each example also carries ``subset``, "train" or "test": the split it has in the original.
    """
    examples = []
    for subset, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1]:
            raise DataError(f"{folder}: {prefix} images {images.shape} do not match labels {labels.shape}; "
                            "expected (N, 28, 28) and (N,)")
        if labels.size and labels.max() >= len(FASHION_CLASSES):
            raise DataError(f"{folder}: {prefix} label {labels.max()}, expected 0–9")
        examples += [{"image": image, "label": FASHION_CLASSES[label], "subset": subset}
                     for image, label in zip(images, labels.tolist(), strict=True)]
    return examples


def read_idx(file: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (LeCun's MNIST format, gzipped if its name ends .gz) as an array.

    The header is two zero bytes, the type 0x08 (unsigned byte), the number of dimensions, then
    each dimension as a big-endian uint32.
    """
    with (gzip.open if file.suffix == ".gz" else open)(file, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{file}: magic number {data[:4].hex() or 'missing'}, expected 000008xx "
                        "(an IDX file of unsigned bytes)")
    start = 4 + 4 * data[3]
    dims = tuple(np.frombuffer(data[4:start], dtype=">u4").tolist())
    if len(dims) != data[3] or len(data) - start != math.prod(dims):
        raise DataError(f"{file}: header says {data[3]} dimensions {dims}, which do not match its "
                        f"{len(data)} bytes")
    # a copy: np.frombuffer over bytes is read-only
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(dims).copy()


def _numeric_table(file: Path, columns: int) -> np.ndarray:
    """A comma-separated table of whole numbers 0–255, as uint8; DataError if it is not one."""
    with open_text(file) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # an empty file: said below, as a DataError
        table = np.loadtxt(f, delimiter=",", ndmin=2)
    if table.size == 0:
        raise DataError(f"{file}: no rows")
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
