"""The generators: one name per generated task, and ``make`` to build any of them for a split."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from attnlab.data.base import TaskData, check_int, split_seed
from attnlab.data.listops import listops
from attnlab.data.mqar import mqar
from attnlab.data.synthetic import copy, induction_head, selective_copy
from attnlab.errors import ConfigError, did_you_mean

# Parameters every generator takes that ``make`` supplies itself.
_SUPPLIED = ("num_examples", "seed")


@dataclass(frozen=True)
class GeneratorInfo:
    """One generated task: what it is, its task kind (`attnlab.tasks`), what it takes, and the
    function that builds it."""

    name: str
    summary: str
    kind: str
    params: Mapping[str, Any]
    generate: Callable[..., TaskData]

    def describe(self) -> str:
        """``name (kind): summary — param=default, ...`` for a task listing."""
        params = ", ".join(f"{key}={value!r}" for key, value in self.params.items())
        return f"{self.name} ({self.kind}): {self.summary} — {params}"


def _info(name: str, summary: str, kind: str, generate: Callable[..., TaskData]) -> GeneratorInfo:
    defaults = {p.name: p.default for p in inspect.signature(generate).parameters.values()
                if p.name not in _SUPPLIED}
    return GeneratorInfo(name, summary, kind, MappingProxyType(defaults), generate)


GENERATORS: Mapping[str, GeneratorInfo] = MappingProxyType({info.name: info for info in (
    _info("mqar", "multi-query associative recall: recall each key's value when it is queried (Zoology)",
          "language-modelling", mqar),
    _info("listops", "nested MIN/MAX/MED/SM expressions over digits; classify the value (LRA ListOps)",
          "sequence-classification", listops),
    _info("copy", "reproduce a run of tokens after a separator", "language-modelling", copy),
    _info("selective_copy", "recall data tokens scattered among blanks, in order (Mamba)",
          "language-modelling", selective_copy),
    _info("induction_head", "after a trigger reappears, predict the token that followed it (H3)",
          "language-modelling", induction_head),
)})


def make(name: str, split: str = "train", *, num_examples: int, seed: int = 0, **params: Any) -> TaskData:
    """Generate ``num_examples`` examples of task ``name`` for ``split`` (train, validation or test).

    The generator seed is ``3 * seed + {train: 0, validation: 1, test: 2}[split]`` (see ``split_seed``), so
    the result is a pure function of the arguments and splits never share a seed.
    """
    info = GENERATORS.get(name)
    if info is None:
        raise ConfigError(f"unknown generated task '{name}'{did_you_mean(name, GENERATORS)}; they are "
                          f"{', '.join(GENERATORS)}")
    for key in params:
        if key not in info.params:
            raise ConfigError(f"task '{name}' has no parameter '{key}'{did_you_mean(key, info.params)}; "
                              f"it takes {', '.join(info.params)}")
    check_int("num_examples", num_examples, 1)
    return info.generate(num_examples=num_examples, seed=split_seed(seed, split), **params)
