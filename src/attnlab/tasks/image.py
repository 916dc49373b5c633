"""Real image classification: pixels standardised per channel with the training split's mean and
spread, classified by a ViT whose sequence is the image's patches. Image files (to predict or
inspect) are made as the training images were: same size, colour and pixel scale."""

from __future__ import annotations

import base64
import binascii
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import Tensor

from attnlab.data.base import TaskData
from attnlab.data.files.images import read_image
from attnlab.errors import ConfigError, InputError
from attnlab.runfiles import reading
from attnlab.tasks.base import (
    Axis,
    Classifier,
    Inspection,
    Picture,
    Prepared,
    Task,
    attention_layers,
    class_labels,
    pooled_rows,
    read_examples,
    with_learned_cls,
)
from attnlab.tasks.service import Body, Service, classified, listed
from attnlab.train.metrics import classification_scores


@dataclass(frozen=True)
class PixelEncoder:
    """Images → standardised float pixels (N, C, H, W), each channel by its training mean and
    spread; label names; and how an image file is made like the training images."""

    mean: float | tuple[float, ...]  # one per channel (a float: one channel)
    std: float | tuple[float, ...]
    label_names: tuple[str, ...]
    size: int | None = None  # the side image files are resized to (None: the model's)
    colour: str = "grey"  # grey or rgb: what image files are turned into
    white: float | None = None  # the training pixels' value for full 8-bit intensity (255, or
    # 16 for digits' counts); None: a run saved before it was recorded, which reads no files

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _per_channel(self.mean))
        object.__setattr__(self, "std", _per_channel(self.std))

    @property
    def channels(self) -> int:
        return len(self.mean)

    def __call__(self, images: list[Any] | np.ndarray) -> Tensor:
        """Each image an array (H, W) or (H, W, C) of raw pixels as the data set has them, or an
        image file's path (read as `read` reads it)."""
        if isinstance(images, str | Path):  # one file, not the characters of its name
            images = [images]
        return self.standardise(np.stack([self.read(x) if isinstance(x, str | Path) else self.shaped(x)
                                          for x in images]))

    def standardise(self, pixels: np.ndarray) -> Tensor:
        """(N, C, H, W) raw pixels → each channel less its training mean, over its spread."""
        mean, std = (np.array(v, dtype=np.float32)[:, None, None] for v in (self.mean, self.std))
        return torch.from_numpy((pixels.astype(np.float32) - mean) / std)

    def raw(self, inputs: Tensor) -> np.ndarray:
        """(C, H, W) raw pixels of one standardised image (C, H, W): `standardise` undone."""
        mean, std = (np.array(v, dtype=np.float32)[:, None, None] for v in (self.mean, self.std))
        return inputs.numpy() * std + mean

    def shaped(self, image: Any) -> np.ndarray:
        """(C, H, W) float pixels of an (H, W) or (H, W, C) array; InputError if the channels or
        (where known) the size differ from training's."""
        pixels = np.asarray(image, dtype=np.float32)
        if pixels.ndim in (2, 3):  # grey (H, W) gets its one channel; (H, W, C) puts C first
            pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)
        wanted = f"{self.colour} {self.size}×{self.size}" if self.size else self.colour
        if pixels.ndim != 3 or pixels.shape[0] != self.channels or (
                self.size is not None and pixels.shape[1:] != (self.size, self.size)):
            raise InputError(f"an image of shape {'×'.join(map(str, np.shape(image)))}; this run takes "
                             f"{wanted} images, (H, W){'' if self.channels == 1 else ', C'} arrays")
        return pixels

    def read(self, file: str | Path | BinaryIO) -> np.ndarray:
        """(C, H, W) float pixels of an image file (or a stream of its bytes, named by its `name`),
        made as the training images were (same size, colour, and scale: 0–255 levels times
        white / 255). InputError naming the file if it is missing or not an image."""
        if isinstance(file, str | Path):
            file = Path(file)
            if not file.is_file():
                raise InputError(f"no image file '{file}'")
        if self.white is None:
            raise InputError(f"this run was saved before image runs recorded their pixel scale, so "
                             f"it cannot read '{file if isinstance(file, Path) else file.name}'; "
                             "give arrays to attnlab.load(RUN).predict, or train it again")
        pixels = read_image(file, self.size, self.colour, error=InputError)
        return self.shaped(pixels.astype(np.float32) * (self.white / 255))

    def fitted(self, side: int) -> PixelEncoder:
        """With the model's side as `size` where a run saved before did not record it."""
        return self if self.size is not None else replace(self, size=side)

    def saved(self) -> dict[str, Any]:
        """What pixels.json holds."""
        return {"mean": list(self.mean), "std": list(self.std), "labels": list(self.label_names),
                "size": self.size, "colour": self.colour, "white": self.white}

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> PixelEncoder:
        """From pixels.json; one written before it held channels (one float mean and std, no
        size, colour or scale) reads as one grey channel."""
        found = cls(saved["mean"], saved["std"], tuple(saved["labels"]), saved.get("size"),
                    saved.get("colour", "grey"), saved.get("white"))
        size, white = found.size, found.white
        if (found.colour != ("rgb" if found.channels == 3 else "grey") or len(found.std) != found.channels
                or not (size is None or (type(size) is int and size > 0))
                or not (white is None or (type(white) in (int, float) and white > 0))):
            raise ValueError(f"channels, colour, size or scale out of place: {saved}"[:200])
        return found


def _per_channel(value: float | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, list | tuple) else (float(value),)


class ImageClassifier(Classifier):
    """A trained ViT with its pixel statistics: `predict(images)` gives label names, for images
    (H, W) or (H, W, C) of raw pixels, or image files."""

    def encode(self, images: list[Any] | np.ndarray) -> Tensor:
        return self.encoder(images)


class ImageClassification(Task):
    kind = "image-classification"
    summary = "one label per image"
    models = ("vit",)

    def prepare(self, exp, encoders: PixelEncoder | None = None) -> Prepared:
        t, splits = exp.task, read_examples(exp).splits
        encoders, labels = class_labels(t, splits, encoders,
                                        lambda names: _statistics(t.name, splits["train"], names))
        names = encoders.label_names
        return Prepared(**{s: TaskData(encoders([ex["image"] for ex in examples]), labels[s],
                                       num_classes=len(names), label_names=names)
                           for s, examples in splits.items()}, encoders=encoders)

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        _, channels, height, width = data.inputs.shape
        if height != width:
            raise ConfigError(f"ViT takes square images; {exp.task.name} has {height}×{width}")
        return {"image_size": height, "channels": channels, "num_classes": data.num_classes,
                "programs": exp.attention, "pooling": "cls" if exp.model.pooling == "cls" else "mean"}

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        return classification_scores(model, prepared.test, exp.train.batch_size, exp.task.positive)

    def export_axes(self, model) -> tuple[dict[int, Axis], ...]:
        return ({0: Axis("batch")},)  # pixels (B, C, H, W): the image size is the model's

    def save_encoders(self, encoders: PixelEncoder, out: Path) -> None:
        (out / "pixels.json").write_text(json.dumps(encoders.saved()))

    def load_encoders(self, out: Path, exp) -> PixelEncoder:
        with reading(out / "pixels.json"):
            return PixelEncoder.from_saved(json.loads((out / "pixels.json").read_text()))

    def predictor(self, model, encoders: PixelEncoder, exp) -> ImageClassifier:
        return ImageClassifier(model, encoders.fitted(model.image_size))

    def print_predictions(self, predictor: ImageClassifier, inputs, exp, echo, *, k: int) -> None:
        """Each input is an image file: `label<TAB>probability<TAB>file`."""
        for file in inputs:
            if not Path(file).is_file():
                raise InputError(f"no image file '{file}'; {exp.name} classifies images: give PNG or "
                                 "JPEG files")
        predictor.print_best(list(inputs), inputs, echo)

    def service(self, predictor: ImageClassifier, exp) -> Service:
        """`POST /classify {"images": ["<base64 PNG or JPEG>", ...]}` → a label, its probability
        and every class's per image; each image is read as `attnlab predict` reads a file."""
        encoder = predictor.encoder

        def items(body: Images) -> list[np.ndarray]:
            return [encoder.read(_decoded(text, f"images[{i}]")) for i, text in enumerate(body.images)]

        def run(pixels: list[np.ndarray]) -> list[dict]:
            probabilities = predictor.model(encoder.standardise(np.stack(pixels))).softmax(-1)
            return classified(probabilities, predictor.label_names)

        def examples(test: Prepared) -> list[dict]:
            return [{"images": [png_base64(encoder, row)]} for row in test.test.inputs]

        return Service("/classify", Images, items, run, listed("predictions"), examples,
                       {"image": f"{encoder.colour} {encoder.size}×{encoder.size} (other sizes are "
                                 "resized, as attnlab predict does)"}, counted="images")

    def inspection(self, model, encoders: PixelEncoder, exp, *, text=None, image=None,
                   example=None) -> Inspection:
        if text is not None:
            raise InputError(f"{exp.name} classifies images, not text: give --image FILE or --example N")
        side, encoders = model.image_size, encoders.fitted(model.image_size)
        if example is not None:
            pixels = example[:1]
        else:
            pixels = encoders.standardise(_looked_at(image, encoders, exp, side)[None])
        raw = _grey_view(encoders.raw(pixels[0]))
        grid, first = side // model.config.patch_size, int(model.cls is not None)
        labels = ["[CLS]"] * first + [f"patch ({r}, {c})" for r in range(grid) for c in range(grid)]
        with torch.no_grad():
            probs = model(pixels).softmax(-1)[0]
        best = int(probs.argmax())
        return Inspection(
            lambda: model(pixels), {"patches": labels},
            {name: ("patches", "patches") for name in attention_layers(model)},
            rollout="patches", picture=Picture(raw, grid, first),
            title=f"{exp.name}: a {side}×{side} image → {encoders.label_names[best]} "
                  f"({float(probs[best]):.2f})",
            notes=["the heatmap is the [CLS] row (what the classifier reads); hover a patch to see "
                   "where it looks" if first else
                   "the heatmap is the mean over patches (the model pools by mean); hover a patch "
                   "to see where it looks",
                   *(["the image is shown in grey (its luminance); the model read its colours"]
                     if encoders.channels == 3 else [])])

    # -- faithfulness: erasing a patch sets its pixels to the training mean ------------------------

    def units(self, model, inputs: Tensor) -> Tensor:
        return with_learned_cls(model, _patches(model, inputs))

    def readout(self, model, inputs: Tensor) -> Tensor:
        return pooled_rows(model, with_learned_cls(model, _patches(model, inputs)))

    def erase(self, model, inputs: Tensor, keep: Tensor) -> Tensor:
        side, size = model.image_size // model.config.patch_size, model.config.patch_size
        kept = keep[:, keep.shape[1] - side * side:].reshape(-1, 1, side, side)
        kept = kept.repeat_interleave(size, dim=2).repeat_interleave(size, dim=3)
        return inputs * kept.to(inputs.dtype)  # 0 is the training mean after standardising

    def erasing(self) -> str:
        return ("erased patches' pixels are set to the training split's mean pixel value (0 after "
                "standardising: the average pixel the model saw in training)")


class Images(Body):
    images: list[str]  # base64 of PNG or JPEG files


def _decoded(text: str, where: str) -> io.BytesIO:
    """The bytes of a base64 image (a data: URL's prefix is allowed), as a stream named `where`."""
    try:
        data = base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text,
                                validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"{where}: not base64; give the bytes of a PNG or JPEG file in base64") from None
    stream = io.BytesIO(data)
    stream.name = where
    return stream


def png_base64(encoder: PixelEncoder, standardised: Tensor) -> str:
    """A standardised image (C, H, W) of a saved split as base64 of a PNG of 8-bit levels, the
    file the training image would have been."""
    from PIL import Image

    raw = encoder.raw(standardised) * (255 / (encoder.white or 255))
    levels = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    image = Image.fromarray(levels[0] if len(levels) == 1 else np.moveaxis(levels, 0, -1))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def _statistics(name: str, train: list[dict], label_names: tuple[str, ...]) -> PixelEncoder:
    """Each channel's mean and spread over the training split, its image size and colour, and
    its scale: an image folder's pixels are 8-bit levels (white 255); a data set's may be counted
    otherwise (digits: 0–16), so white is its largest training pixel."""
    from attnlab.data.files import FORMATS

    pixels = np.stack([ex["image"] for ex in train]).astype(np.float32)
    if pixels.ndim == 3:
        pixels = pixels[..., None]  # grey (N, H, W): one channel
    mean, std = pixels.mean((0, 1, 2)), pixels.std((0, 1, 2))
    std = np.where(std > 0, std, 1.0)  # a channel the same everywhere stays as it is, less its mean
    white = 255.0 if name in FORMATS else float(pixels.max())
    return PixelEncoder(tuple(mean.tolist()), tuple(std.tolist()), label_names, pixels.shape[1],
                        "rgb" if pixels.shape[-1] == 3 else "grey", white)


def _looked_at(image: Any, encoders: PixelEncoder, exp, side: int) -> np.ndarray:
    """(C, H, W) raw pixels of what `attnlab inspect --image` was given: an image file (read as
    predict reads it), a .npy file or an array (raw pixels, as the data set has them)."""
    if isinstance(image, str | Path) and Path(image).suffix.lower() != ".npy":
        return encoders.read(image)
    if isinstance(image, str | Path):
        if not Path(image).is_file():
            raise InputError(f"no image file '{image}'")
        try:
            image = np.load(image, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"'{image}' is not a readable .npy array ({e})") from None
    shape = np.shape(image)
    if len(shape) < 2 or shape[:2] != (side, side):
        raise InputError(f"the image is {'×'.join(map(str, shape))} pixels; {exp.name} takes "
                         f"{encoders.colour} {side}×{side} images")
    return encoders.shaped(image)


def _grey_view(raw: np.ndarray) -> np.ndarray:
    """(H, W) for the view's picture: a colour image's luminance (ITU-R 601 weights, as Pillow's
    grey), so the heat over it stays readable."""
    if raw.shape[0] == 3:
        return np.tensordot(np.array([0.299, 0.587, 0.114], dtype=np.float32), raw, axes=1)
    return raw.mean(0)


def _patches(model, inputs: Tensor) -> Tensor:
    """(B, patches) all True: every patch of an image is a unit."""
    return torch.ones(inputs.shape[0], model.num_patches, dtype=torch.bool, device=inputs.device)
