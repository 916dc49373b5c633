"""Task kinds as plugins, in one registry: the only place a kind is named.

A data set (`attnlab.data.DATASETS`) or generator (`attnlab.data.GENERATORS`) says its kind; an
experiment may also name one (`task.kind`). Adding a kind is one file with a `Task` subclass and
one line here (or `register(MyTask())` from outside).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    from attnlab.data.files import FORMATS, unknown_task

    if task_config.kind is not None:
        return kind(task_config.kind)
    name = task_config.name
    info = DATASETS.get(name) or GENERATORS.get(name) or FORMATS.get(name)
    if info is None:
        raise ConfigError(unknown_task(name))
    return kind(info.kind)


@dataclass(frozen=True)
class NamedTask:
    """A task a user can name in an experiment (`task.name`): a generator, a data set or a file
    format, with its kind, its options (its own, then the kind's settings) and their defaults."""

    name: str
    kind: str
    origin: str  # generated, data set or your file
    options: dict[str, Any]
    summary: str
    required: tuple[str, ...] = field(default=())  # options without a default (a file's path)


def named_tasks(kind_name: str | None = None) -> list[NamedTask]:
    """Every task a user can name (`attnlab tasks`), generated, then data sets, then file formats;
    only those of kind `kind_name` if given (a ConfigError names the kinds for an unknown one)."""
    from attnlab.data import DATASETS, GENERATORS
    from attnlab.data.datasets import LOAD_OPTIONS
    from attnlab.data.files import FORMATS

    if kind_name is not None:
        kind(kind_name)

    def named(name, kind_of, origin, options, summary, required=()):
        settings = KINDS[kind_of].settings if kind_of in KINDS else {}
        return NamedTask(name, kind_of, origin, {**options, **settings}, summary, required)

    load_defaults = {"path": None, "download": False}
    found = [named(g.name, g.kind, "generated", g.params, g.summary) for g in GENERATORS.values()]
    found += [named(d.name, d.kind, "data set", {**{k: load_defaults[k] for k in LOAD_OPTIONS}, **d.options},
                    d.summary) for d in DATASETS.values()]
    found += [named(f.name, f.kind, "your file", f.options, f.summary, ("path",)) for f in FORMATS.values()]
    return [t for t in found if kind_name in (None, t.kind)]


__all__ = ["KINDS", "NamedTask", "Prepared", "Step", "Task", "kind", "named_tasks", "register", "task_of"]
