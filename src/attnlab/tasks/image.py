"""Real image classification: pixels standardised with the training split's mean and spread,
classified by a ViT whose sequence is the image's patches."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.data.base import TaskData
from attnlab.data.encoding import class_ids, label_ids
from attnlab.errors import ConfigError, InputError
from attnlab.runfiles import reading
from attnlab.tasks.base import (
    Inspection,
    Picture,
    Prepared,
    Task,
    attention_layers,
    pooled_rows,
    read_examples,
    with_learned_cls,
)
from attnlab.train.metrics import classification_scores


@dataclass(frozen=True)
class PixelEncoder:
    """Images (N, H, W) → standardised float pixels (N, 1, H, W); label names."""

    mean: float
    std: float
    label_names: tuple[str, ...]

    def __call__(self, images: list[np.ndarray] | np.ndarray) -> Tensor:
        pixels = np.stack(list(images)).astype(np.float32)
        return torch.from_numpy((pixels - self.mean) / self.std).unsqueeze(1)


class ImageClassifier(nn.Module):
    """A trained ViT (`.model`) with its pixel statistics: `predict(images)` gives label names."""

    def __init__(self, model: nn.Module, encoder: PixelEncoder) -> None:
        super().__init__()
        self.model, self.encoder, self.label_names = model, encoder, encoder.label_names

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    @torch.no_grad()
    def predict(self, images: list[np.ndarray] | np.ndarray) -> list[str]:
        """The most probable label name for each image (H, W) of raw pixels."""
        return [self.label_names[i] for i in self.model(self.encoder(images)).argmax(-1).tolist()]


class ImageClassification(Task):
    kind = "image-classification"
    summary = "one label per image"
    models = ("vit",)

    def prepare(self, exp, encoders: PixelEncoder | None = None) -> Prepared:
        t, splits = exp.task, read_examples(exp).splits
        if encoders is None:
            train = np.stack([ex["image"] for ex in splits["train"]]).astype(np.float32)
            names, labels = class_ids(t.name, splits)
            encoders = PixelEncoder(float(train.mean()), float(train.std()), names)
        else:
            labels = {s: label_ids(t.name, s, ex, encoders.label_names) for s, ex in splits.items()}
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

    def save_encoders(self, encoders: PixelEncoder, out: Path) -> None:
        (out / "pixels.json").write_text(json.dumps({"mean": encoders.mean, "std": encoders.std,
                                                     "labels": list(encoders.label_names)}))

    def load_encoders(self, out: Path, exp) -> PixelEncoder:
        with reading(out / "pixels.json"):
            saved = json.loads((out / "pixels.json").read_text())
            return PixelEncoder(saved["mean"], saved["std"], tuple(saved["labels"]))

    def predictor(self, model, encoders: PixelEncoder, exp) -> ImageClassifier:
        return ImageClassifier(model, encoders)

    def print_predictions(self, predictor, inputs, exp, echo, *, k: int) -> None:
        raise InputError(f"{exp.name} classifies images; `attnlab predict` reads text. From Python: "
                         "attnlab.load(DIR).predict(images)")

    def inspection(self, model, encoders: PixelEncoder, exp, *, text=None, image=None,
                   example=None) -> Inspection:
        if text is not None:
            raise InputError(f"{exp.name} classifies images, not text: give --image FILE or --example N")
        side = model.image_size
        if example is not None:
            pixels = example[:1]
            raw = (pixels[0, 0] * encoders.std + encoders.mean).numpy()
        else:
            raw = np.asarray(image, dtype=np.float32)
            if raw.shape != (side, side):
                raise InputError(f"the image is {'×'.join(map(str, raw.shape))} pixels; {exp.name} "
                                 f"takes grey {side}×{side} images")
            pixels = encoders([raw])
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
                   "to see where it looks"])

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


def _patches(model, inputs: Tensor) -> Tensor:
    """(B, patches) all True: every patch of an image is a unit."""
    return torch.ones(inputs.shape[0], model.num_patches, dtype=torch.bool, device=inputs.device)
