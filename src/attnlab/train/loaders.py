"""Batches for training and evaluation: seeded shuffles, and for translation batches of like
lengths, so that little of each step goes on padding."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from attnlab.data import TaskData


def loader(data: TaskData, batch: int, shuffle: bool, seed: int) -> DataLoader:
    """Batches of (inputs, labels[, candidates]); shuffled ones are seeded."""
    gen = torch.Generator().manual_seed(seed)
    extra = () if data.candidates is None else (data.candidates,)
    dataset = TensorDataset(data.inputs, data.labels, *extra)
    if data.kind == "translate" and shuffle:  # batches of like lengths: little time on padding
        lengths = data.inputs.ne(0).sum(-1) + data.labels.ne(0).sum(-1)
        return DataLoader(dataset, batch_sampler=LengthBatches(lengths, batch, gen))
    return DataLoader(dataset, batch_size=batch, shuffle=shuffle, generator=gen)


class LengthBatches(torch.utils.data.Sampler):
    """Random batches of examples of similar length: shuffle, sort each pool of 50 batches by
    length, cut it into batches, and shuffle the batches (a new order every epoch)."""

    POOL = 50

    def __init__(self, lengths: torch.Tensor, batch: int, generator: torch.Generator) -> None:
        self.lengths, self.batch, self.generator = lengths, batch, generator

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator)
        batches = []
        for pool in order.split(self.batch * self.POOL):
            pool = pool[self.lengths[pool].argsort(stable=True)]
            batches += pool.split(self.batch)
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i].tolist()
