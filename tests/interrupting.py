"""Stopping a training run in the middle, as a crash would: `train_until(stop_at, monkeypatch, run)`
makes training step `stop_at` (1-based) raise out of `run()`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attnlab.train.module import TaskModule


class Interrupted(Exception):
    pass


def train_until(stop_at: int | None, monkeypatch, run: Callable[[], Any]) -> Any:
    """`run()`, raising out of training step `stop_at` (None: not stopped); None if it was stopped."""
    if stop_at is not None:
        original, calls = TaskModule.training_step, [0]

        def step(self, batch, index):
            calls[0] += 1
            if calls[0] == stop_at:
                raise Interrupted
            return original(self, batch, index)

        monkeypatch.setattr(TaskModule, "training_step", step)
    try:
        return run()
    except Interrupted:
        return None
    finally:
        if monkeypatch is not None:
            monkeypatch.undo()
