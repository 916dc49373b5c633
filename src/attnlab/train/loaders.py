"""Seeded batches: one generator per loader, so a run's shuffles follow from its seed."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from attnlab.data import TaskData


def loader(task, data: TaskData, batch: int, shuffle: bool, seed: int) -> DataLoader:
    """The task's batches of `data`; shuffled ones draw from a generator seeded with `seed`."""
    return task.loader(data, batch, shuffle, torch.Generator().manual_seed(seed))
