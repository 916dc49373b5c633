"""Sequences of feature frames (audio as MFCCs), one label each: every feature standardised with
the training split's mean and spread, utterances padded with NaN frames, classified by the encoder
classifier reading frames through a linear projection, so that attention runs over time.
`attnlab.load` gives a `FrameClassifier` whose `predict(utterances)` returns label names."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.data.base import TaskData
from attnlab.errors import InputError
from attnlab.runfiles import reading
from attnlab.tasks.base import (
    Axis,
    Classifier,
    Inspection,
    Prepared,
    Step,
    Task,
    attention_layers,
    class_labels,
    longest,
    pooled_rows,
    read_examples,
    with_learned_cls,
)
from attnlab.tasks.service import Body, Service, classified, listed, too_long
from attnlab.train.metrics import classification_scores

MAX_FRAMES = 96  # default frames per utterance, longer ones cut (spoken-digits' longest has 92)
PAD = float("nan")  # a padding frame is all NaN: no real feature is, so a batch says its lengths


@dataclass(frozen=True)
class FrameEncoder:
    """Utterances (T, F) → standardised frames (N, max_frames, F), NaN frames after each; label
    names. `mean` and `std` are per feature, from the training split's frames."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_frames: int
    label_names: tuple[str, ...]

    @classmethod
    def fit(cls, utterances: list[np.ndarray], max_frames: int, label_names: tuple[str, ...]):
        frames = np.concatenate(utterances).astype(np.float64)
        std = frames.std(0)
        std[std == 0] = 1  # a constant feature stays 0 rather than dividing by 0
        return cls(tuple(frames.mean(0).tolist()), tuple(std.tolist()), max_frames, label_names)

    @property
    def features(self) -> int:
        return len(self.mean)

    def __call__(self, utterances: Sequence[np.ndarray]) -> Tensor:
        out = torch.full((len(utterances), self.max_frames, self.features), PAD)
        mean, std = torch.tensor(self.mean), torch.tensor(self.std)
        for i, frames in enumerate(utterances):
            kept = torch.from_numpy(np.asarray(frames, dtype=np.float32)[: self.max_frames])
            out[i, : len(kept)] = (kept - mean) / std
        return out


class Frames(Body):
    frames: list[list[list[float]]]  # utterances of frames (T, features)


def trim(frames: Tensor) -> Tensor:
    """`frames` (B, L, F) without the padding columns after every row's last real frame (masked
    keys, left out of pooling: they change nothing), so that short batches run short."""
    used = (~frames.isnan().all(-1)).any(0).nonzero()
    return frames[:, : int(used.max()) + 1] if len(used) else frames[:, :1]


def check_frames(frames: Any, features: int, where: str) -> np.ndarray:
    """`frames` as a float32 array (T, features) of finite numbers, or an InputError naming `where`."""
    array = np.asarray(frames)
    if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape[1] != features or not len(array):
        raise InputError(f"{where}: {array.dtype} array of shape {array.shape}; give one utterance "
                         f"as frames (T, {features}) of numbers, T at least 1")
    if not np.isfinite(array).all():
        raise InputError(f"{where}: frame {int(np.argwhere(~np.isfinite(array))[0, 0])} holds NaN or "
                         "infinity; every feature must be a finite number")
    return array.astype(np.float32)


def read_frames(path: str | Path, features: int) -> np.ndarray:
    """One utterance from a .npy file of frames (T, features), read without unpickling."""
    path = Path(path)
    if path.suffix.lower() != ".npy" or not path.is_file():
        raise InputError(f"{path}: {'no such file' if not path.exists() else 'not a .npy file'}; give "
                         f".npy files of frames (T, {features}), one utterance each")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:  # not an .npy, or an array of objects (a pickle)
        raise InputError(f"{path} is not a readable .npy array of numbers: {err}") from None
    return check_frames(array, features, str(path))


class FrameClassifier(Classifier):
    """A trained classifier with its frame statistics: `predict(utterances)` gives label names for
    utterances, each raw frames (T, F) as the data set gives them (one (T, F) array alone is one
    utterance). Called on frames (B, L, F), standardised and NaN-padded, it is the bare model."""

    def encode(self, utterances: Sequence[np.ndarray] | np.ndarray) -> Tensor:
        if isinstance(utterances, np.ndarray) and utterances.ndim == 2:
            utterances = [utterances]
        checked = [check_frames(u, self.encoder.features, f"utterance {i}")
                   for i, u in enumerate(utterances)]
        return trim(self.encoder(checked))


class FrameClassification(Task):
    kind = "frame-classification"
    summary = "one label per sequence of feature frames (audio)"
    models = ("encoder_classifier",)
    settings: ClassVar[dict[str, int]] = {"max_frames": MAX_FRAMES}

    def prepare(self, exp, encoders: FrameEncoder | None = None) -> Prepared:
        t, read = exp.task, read_examples(exp)
        splits = read.splits
        encoders, labels = class_labels(t, splits, encoders, lambda names: FrameEncoder.fit(
            [ex["frames"] for ex in splits["train"]], read.settings["max_frames"], names))
        names = encoders.label_names
        return Prepared(**{s: TaskData(encoders([ex["frames"] for ex in examples]), labels[s],
                                       num_classes=len(names), label_names=names)
                           for s, examples in splits.items()}, encoders=encoders)

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        _, frames, features = data.inputs.shape
        return {"vocab_size": 0, "features": features, "max_len": frames, "num_classes": data.num_classes,
                "programs": exp.attention, "pooling": exp.model.pooling}

    def step(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Step:
        frames, labels, *_ = batch
        return Step(model(trim(frames)), labels, {})

    def export_inputs(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return (trim(batch[0]),)

    def export_axes(self, model) -> tuple[dict[int, Axis], ...]:
        return ({0: Axis("batch"), 1: Axis("frames", longest(model))},)  # frames (B, T, F)

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        return classification_scores(model, prepared.test, exp.train.batch_size, exp.task.positive)

    def save_encoders(self, encoders: FrameEncoder, out: Path) -> None:
        (out / "frames.json").write_text(json.dumps({
            "mean": list(encoders.mean), "std": list(encoders.std), "max_frames": encoders.max_frames,
            "labels": list(encoders.label_names)}))

    def load_encoders(self, out: Path, exp) -> FrameEncoder:
        with reading(out / "frames.json"):
            saved = json.loads((out / "frames.json").read_text())
            return FrameEncoder(tuple(map(float, saved["mean"])), tuple(map(float, saved["std"])),
                                int(saved["max_frames"]), tuple(saved["labels"]))

    def predictor(self, model, encoders: FrameEncoder, exp) -> FrameClassifier:
        return FrameClassifier(model, encoders)

    def print_predictions(self, predictor: FrameClassifier, inputs, exp, echo, *, k: int) -> None:
        utterances = [read_frames(path, predictor.encoder.features) for path in inputs]
        predictor.print_best(utterances, inputs, echo)

    def service(self, predictor: FrameClassifier, exp) -> Service:
        """`POST /classify {"frames": [utterance, ...]}`, each utterance frames (T, F) of raw
        features → a label, its probability and every class's per utterance."""
        encoder = predictor.encoder

        def items(body: Frames) -> list[np.ndarray]:
            checked = []
            for i, frames in enumerate(body.frames):
                array = check_frames(frames, encoder.features, f"frames[{i}]")
                if len(array) > encoder.max_frames:
                    raise too_long(f"frames[{i}]", len(array), encoder.max_frames, "frames")
                checked.append(array)
            return checked

        def examples(test: Prepared) -> list[dict]:
            mean, std = np.array(encoder.mean), np.array(encoder.std)
            rows = [row[~np.isnan(row).all(-1)] * std + mean for row in test.test.inputs.numpy()]
            return [{"frames": [row.tolist()]} for row in rows]

        return Service("/classify", Frames, items,
                       lambda utterances: classified(predictor.predict_proba(utterances),
                                                     predictor.label_names),
                       listed("predictions"), examples,
                       {"frames": encoder.max_frames, "features": encoder.features}, counted="frames")

    def inspection(self, model, encoders: FrameEncoder, exp, *, text=None, image=None,
                   example=None) -> Inspection:
        if example is not None:
            frames = example[:1]
        else:  # a .npy file named as the text, or read as an --image array
            raw = read_frames(text, encoders.features) if text is not None else \
                check_frames(image, encoders.features, "the input")
            frames = encoders([raw])
        frames = trim(frames)  # one utterance needs no padding after it
        count = frames.shape[1]
        labels = [f"frame {t}" for t in range(count)]
        real = list(range(count))
        if getattr(model, "cls", None) is not None:  # the model puts a learned [CLS] in front
            labels, real = ["[CLS]", *labels], [0, *(i + 1 for i in real)]
        with torch.no_grad():
            probs = model(frames).softmax(-1)[0]
        best = int(probs.argmax())
        return Inspection(lambda: model(frames), {"frames": labels},
                          {name: ("frames", "frames") for name in attention_layers(model)},
                          shown={"frames": real}, rollout="frames",
                          title=f"{exp.name}: {count} frames → {encoders.label_names[best]} "
                                f"({float(probs[best]):.2f})",
                          notes=["positions are the utterance's frames in time order, frame 0 first"])

    # -- faithfulness: erasing a frame removes it --------------------------------------------------

    def units(self, model, inputs: Tensor) -> Tensor:
        return with_learned_cls(model, ~model.padding(inputs))

    def readout(self, model, inputs: Tensor) -> Tensor:
        return pooled_rows(model, with_learned_cls(model, ~model.padding(inputs)))

    def erase(self, model, inputs: Tensor, keep: Tensor) -> Tensor:
        kept = keep[:, keep.shape[1] - inputs.shape[1]:] & ~model.padding(inputs)
        # the kept frames first, in their order (a stable sort), then padding
        order = (~kept).to(torch.int8).argsort(dim=1, stable=True)
        after = torch.arange(inputs.shape[1], device=inputs.device) >= kept.sum(1, keepdim=True)
        packed = inputs.gather(1, order.unsqueeze(-1).expand_as(inputs))
        return packed.masked_fill(after.unsqueeze(-1), PAD)

    def trim(self, model, inputs: Tensor) -> Tensor:
        return trim(inputs)

    def erasing(self) -> str:
        return "erased frames are removed and the rest packed in their time order, padded at the end"
