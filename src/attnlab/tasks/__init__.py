"""Task kinds as plugins, in one registry: the only place a kind is named.

A data set (`attnlab.data.DATASETS`) or generator (`attnlab.data.GENERATORS`) says its kind; an
experiment may also name one (`task.kind`). Adding a kind is one file with a `Task` subclass and
one line here (or `register(MyTask())` from outside).
"""

from __future__ import annotations

from attnlab.errors import ConfigError, did_you_mean
from attnlab.tasks.base import Prepared, Step, Task
from attnlab.tasks.frames import FrameClassification
from attnlab.tasks.generated import LanguageModelling, SequenceClassification
from attnlab.tasks.image import ImageClassification
from attnlab.tasks.recommendation import Recommendation
from attnlab.tasks.text import TextClassification
from attnlab.tasks.translation import Translation

KINDS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add a task kind (replacing one of the same name)."""
    KINDS[task.kind] = task
    return task


for _task in (LanguageModelling(), SequenceClassification(), TextClassification(),
              ImageClassification(), FrameClassification(), Translation(), Recommendation()):
    register(_task)


def kind(name: str) -> Task:
    """The task kind registered as `name`."""
    if name not in KINDS:
        raise ConfigError(f"unknown task kind '{name}'{did_you_mean(name, KINDS)}; kinds are "
                          f"{', '.join(KINDS)}")
    return KINDS[name]


def task_of(task_config) -> Task:
    """The kind of an experiment's task: its `kind` if it names one, else its data set's or
    generator's."""
    from attnlab.data import DATASETS, GENERATORS

    if task_config.kind is not None:
        return kind(task_config.kind)
    name = task_config.name
    info = DATASETS.get(name) or GENERATORS.get(name)
    if info is None:
        known = [*DATASETS, *GENERATORS]
        raise ConfigError(f"unknown task '{name}'{did_you_mean(name, known)}; tasks are the generated "
                          f"{', '.join(GENERATORS)} and the data sets {', '.join(DATASETS)} "
                          "(attnlab data list)")
    return kind(info.kind)


__all__ = ["KINDS", "Prepared", "Step", "Task", "kind", "register", "task_of"]
