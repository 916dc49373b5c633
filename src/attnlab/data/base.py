"""The shared shape of every generated task, and how a (seed, split) pair becomes one generator seed."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from attnlab.errors import ConfigError, did_you_mean

IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")
KINDS = ("lm", "classify", "translate", "rank")


@dataclass(frozen=True)
class TaskData:
    """A generated data set: token ids, targets and what a model needs to know to read them.

    For ``kind == "lm"`` the labels are per position: ``labels[n, t]`` is what the model's output at
    position ``t`` (having seen ``inputs[n, :t + 1]``) is scored against, ``-100`` where nothing is.
    For ``kind == "classify"`` the labels are one class id per example.
    For ``kind == "translate"`` inputs are source ids and labels the target ids, ``[BOS] … [EOS]``.
    For ``kind == "rank"`` (next-item recommendation) labels are per position as for "lm"; with
    ``candidates`` (N, C), an example is also scored by where its last position ranks the items
    ``candidates[n]``, of which column 0 is the true next item.
    """

    inputs: torch.LongTensor
    labels: torch.LongTensor
    kind: str
    vocab_size: int
    num_classes: int | None = None
    pad_id: int | None = None
    label_names: tuple[str, ...] | None = None  # class id → the data set's name for it
    target_vocab_size: int | None = None  # translate: the target side's vocabulary
    candidates: torch.LongTensor | None = None  # rank: items to rank per example, the true one first

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"TaskData.kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        n = self.inputs.shape[:1]
        expected = {"classify": n, "translate": (*n, self.labels.shape[-1])}.get(
            self.kind, self.inputs.shape)
        images = self.kind == "classify" and self.images
        if (self.inputs.dim() != 2 and not images) or self.labels.shape != expected:
            raise ConfigError(f"{self.kind} task needs inputs (N, L) (or images (N, C, H, W) to "
                            f"classify) and labels {tuple(expected)}, got "
                            f"{tuple(self.inputs.shape)} and {tuple(self.labels.shape)}")
        if self.candidates is not None and (self.kind != "rank" or self.candidates.shape[:1] != n):
            raise ConfigError(f"candidates {tuple(self.candidates.shape)} belong to a rank task "
                            "with one row per example")

    @property
    def images(self) -> bool:
        """Inputs are images (N, C, H, W), not token ids (N, L)."""
        return self.inputs.dim() == 4

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def head(self, n: int) -> TaskData:
        """The first n examples."""
        candidates = None if self.candidates is None else self.candidates[:n]
        return replace(self, inputs=self.inputs[:n], labels=self.labels[:n], candidates=candidates)

    def label_distribution(self) -> dict[int, float]:
        """Fraction of examples per class (classify), or of scored positions per target token (lm)."""
        scored = self.labels[self.labels != IGNORE_INDEX]
        if scored.numel() == 0:
            return {}
        size = self.num_classes if self.kind == "classify" and self.num_classes else self.vocab_size
        counts = torch.bincount(scored, minlength=size).double() / scored.numel()
        if self.kind == "lm":  # a vocabulary is large; list only targets that occur
            return {i: float(c) for i, c in enumerate(counts.tolist()) if c > 0}
        return {i: float(c) for i, c in enumerate(counts.tolist())}


def split_seed(seed: int, split: str) -> int:
    """The generator seed for one split: ``3 * seed + {train: 0, val: 1, test: 2}[split]``.

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
