"""Seeded batches. A training loader's order is a function of (seed, epoch) and it remembers how
far into the epoch it got, so a resumed run sees the very batches the uninterrupted one would."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from attnlab.data import TaskData


def loader(task, data: TaskData, batch: int, shuffle: bool, seed: int, *,
           resumable: bool = False) -> DataLoader:
    """The task's batches of `data`; shuffled ones draw from a generator seeded with `seed`.
    `resumable`: a training loader whose position Lightning saves in checkpoints and restores."""
    generator = torch.Generator().manual_seed(seed)
    made = task.loader(data, batch, shuffle, generator)
    if not (shuffle and resumable):
        return made
    return ResumableLoader(made.dataset, EpochBatches(made.batch_sampler, generator, seed),
                           made.collate_fn)


class EpochBatches(Sampler[list[int]]):
    """The task's batches, their order drawn afresh each epoch from (seed, epoch) rather than
    from whatever a generator went through before, and skippable up to where a checkpoint was
    taken. Lightning tells the epoch through `set_epoch` on `batch_sampler.sampler`."""

    def __init__(self, batches, generator: torch.Generator, seed: int) -> None:
        self.batches, self.generator, self.seed = batches, generator, seed
        self.epoch = 0
        self.done = 0  # batches handed out in this epoch
        self._skip = 0  # batches a restored checkpoint had already trained on
        self.sampler = self  # where Lightning looks for set_epoch

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = epoch, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        # one seed per (seed, epoch); seeds are < 2**32, so the pair never collides
        self.generator.manual_seed((self.seed << 24) + self.epoch)
        skip, self._skip = self._skip, 0
        self.done = 0
        for i, batch in enumerate(self.batches):  # skipped batches are drawn all the same
            self.done = i + 1
            if i >= skip:
                yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self._skip = int(state["epoch"]), int(state["done"])


class ResumableLoader(DataLoader):
    """A DataLoader Lightning sees as stateful: its position goes into every checkpoint."""

    def __init__(self, dataset, batch_sampler: EpochBatches, collate_fn) -> None:
        # its own generator for the worker base seed, so making an iterator never draws from
        # torch's global generator (which dropout and gumbel draw from, and resume restores)
        super().__init__(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn,
                         generator=torch.Generator().manual_seed(batch_sampler.seed))

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)
