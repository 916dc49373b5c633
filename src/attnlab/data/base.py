"""The shared shape of every generated task, and how a (seed, split) pair becomes one generator seed."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from attnlab.errors import ConfigError, did_you_mean
from attnlab.ids import IGNORE_INDEX

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class TaskData:
    """One split of a task: inputs, targets and what a model needs to know to read them.

    Labels are one class id per example (N,), or per position (N, L): ``labels[n, t]`` is what the
    output at position ``t`` (having seen ``inputs[n, :t + 1]``) is scored against, ``IGNORE_INDEX``
    where nothing is. Inputs are token ids (N, L), images (N, C, H, W) or frames (N, L, F) of F
    floats each (a frame of NaN is padding). With ``candidates`` (N, C), an example is also scored
    by where its last position ranks the items ``candidates[n]``, of which column 0 is the true next
    item. With ``alignments`` (N, P, 2), an example also says where attention should look: up to
    P (query position, key position) pairs, padded with -1 rows, that attention objectives
    (`attnlab.objectives`) supervise and alignment scores read. Which task kind reads them is the
    task registry's business (`attnlab.tasks`), not the data's.
    """

    inputs: torch.Tensor
    labels: torch.LongTensor
    vocab_size: int = 0
    num_classes: int | None = None
    pad_id: int | None = None
    label_names: tuple[str, ...] | None = None  # class id → the data set's name for it
    target_vocab_size: int | None = None  # translation: the target side's vocabulary
    candidates: torch.LongTensor | None = None  # items to rank per example, the true one first
    alignments: torch.Tensor | None = None  # (N, P, 2) (query, key) pairs, -1 rows as padding

    def __post_init__(self) -> None:
        n = self.inputs.shape[:1]
        frames = self.inputs.dim() == 3 and self.inputs.is_floating_point()
        if (self.inputs.dim() not in (2, 4) and not frames) or self.labels.shape[:1] != n \
                or self.labels.dim() > 2:
            raise ConfigError(f"TaskData needs inputs (N, L), images (N, C, H, W) or float frames "
                              f"(N, L, F) and labels (N,) or (N, L), got {tuple(self.inputs.shape)} "
                              f"and {tuple(self.labels.shape)}")
        if self.candidates is not None and self.candidates.shape[:1] != n:
            raise ConfigError(f"candidates {tuple(self.candidates.shape)} need one row per example")
        if self.alignments is not None and (self.alignments.dim() != 3 or self.alignments.shape[0]
                                            != n[0] or self.alignments.shape[2] != 2):
            raise ConfigError(f"alignments {tuple(self.alignments.shape)} need one row of (query, "
                              f"key) pairs per example: (N, P, 2)")
        if self.label_names is not None:
            object.__setattr__(self, "label_names", tuple(self.label_names))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """What a batch holds: inputs, labels, then candidates and alignments where present."""
        return tuple(t for t in (self.inputs, self.labels, self.candidates, self.alignments)
                     if t is not None)

    @property
    def images(self) -> bool:
        """Inputs are images (N, C, H, W), not token ids (N, L)."""
        return self.inputs.dim() == 4

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def head(self, n: int) -> TaskData:
        """The first n examples."""
        candidates = None if self.candidates is None else self.candidates[:n]
        alignments = None if self.alignments is None else self.alignments[:n]
        return replace(self, inputs=self.inputs[:n], labels=self.labels[:n], candidates=candidates,
                       alignments=alignments)

    def label_distribution(self) -> dict[int, float]:
        """Fraction of examples per class (one label per example), or of scored positions per
        target token that occurs (labels per position)."""
        scored = self.labels[self.labels != IGNORE_INDEX]
        if scored.numel() == 0:
            return {}
        per_example = self.labels.dim() == 1
        size = self.num_classes if per_example and self.num_classes else self.vocab_size
        counts = torch.bincount(scored, minlength=size).double() / scored.numel()
        return {i: float(c) for i, c in enumerate(counts.tolist()) if per_example or c > 0}


def split_seed(seed: int, split: str) -> int:
    """The generator seed for one split: ``3 * seed + {train: 0, validation: 1, test: 2}[split]``.

    The map is one-to-one, so no two (seed, split) pairs, within or across base seeds, ever share a
    generator seed: train, val and test of any seed draw from disjoint seed sets.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'{did_you_mean(split, SPLITS)}; "
                          f"splits are {', '.join(SPLITS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    return len(SPLITS) * seed + SPLITS.index(split)


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, or a ConfigError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def require(condition: bool, message: str) -> None:
    """Raise a ConfigError with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
