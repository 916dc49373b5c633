"""Real image-classification sets as training tasks: pixels as float tensors (N, 1, H, W),
standardised with the training split's mean and spread, label names as class ids."""

from __future__ import annotations

import numpy as np
import torch

from attnlab.data.base import TaskData
from attnlab.data.text_tasks import SPLIT_NAMES
from attnlab.errors import DataError


def image_task(name: str, split: str, *, seed: int, **options) -> TaskData:
    """One split of a real image set as TaskData (inputs (N, 1, H, W) float32)."""
    from attnlab.data.datasets import dataset, load

    info = dataset(name)
    if info.kind != "image-classification":
        raise DataError(f"{name} is {info.kind}, not image classification")
    splits = load(name, seed=seed, **options)
    train = np.stack([ex["image"] for ex in splits["train"]]).astype(np.float32)
    # statistics of the training split only, so nothing of validation or test leaks in
    mean, std = float(train.mean()), float(train.std())
    examples = splits[SPLIT_NAMES[split]]
    pixels = np.stack([ex["image"] for ex in examples]).astype(np.float32)
    names = sorted({ex["label"] for ex in splits["train"]})
    index = {label: i for i, label in enumerate(names)}
    return TaskData(torch.from_numpy((pixels - mean) / std).unsqueeze(1),
                    torch.tensor([index[ex["label"]] for ex in examples], dtype=torch.long),
                    kind="classify", vocab_size=0, num_classes=len(names),
                    label_names=tuple(names))
