"""Your own files as tasks. A file format reads a file (or folder) the user names with ``path`` into
examples, as a data set's reader does, and cuts them into splits; ``attnlab.data.load(FORMAT,
path=..., **options)`` and an experiment's ``task: {name: FORMAT, params: {path: ...}}`` take it
like a data set's name."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlab.data.datasets.base import Example, check_seed, leave_one_out, sha256, split
from attnlab.errors import DataError, did_you_mean


@dataclass(frozen=True)
class FileFormat:
    """One kind of user file: its name (what an experiment's task names), task kind, one line of
    description, and ``read(path, **options)`` giving the examples in file order."""

    name: str
    kind: str  # a task kind (attnlab.tasks)
    summary: str
    read: Callable[..., list[Example]]
    split: Callable[[list[Example], int], dict[str, list[Example]]] = split
    split_rule: str = "80/10/10"  # how ``split`` cuts, in words

    @property
    def options(self) -> Mapping[str, Any]:
        """The reader's keyword options and their defaults, after ``path``."""
        params = list(inspect.signature(self.read).parameters.values())[1:]
        return {p.name: p.default for p in params}

    def check_options(self, options: Mapping[str, Any], beside: tuple[str, ...] = ("path",)) -> None:
        """DataError naming every accepted option unless each key of ``options`` is one."""
        accepted = [*beside, *self.options]
        for key in options:
            if key not in accepted:
                raise DataError(f"{self.name} has no option '{key}'{did_you_mean(str(key), accepted)}; "
                                f"it takes {', '.join(accepted)}")

    def load(self, path: str | Path | None, seed: int = 0, **options: Any) -> dict[str, list[Example]]:
        """The file at ``path`` as ``{"train", "validation", "test"}`` lists of examples."""
        check_seed(seed)
        self.check_options(options)
        if path is None:
            raise DataError(f"{self.name} reads your own file: give its path (task.params.path, or "
                            f"attnlab.data.load({self.name!r}, path=...))")
        given = Path(path).expanduser()
        if not given.exists():
            raise DataError(f"{self.name}: no file or folder at '{given}'")
        try:
            examples = self.read(given, **options)
        except OSError as err:  # a folder where a file belongs, no permission, …
            raise DataError(f"{self.name}: cannot read '{given}' ({err.strerror or err}); "
                            f"path= takes {'a folder' if self.kind.startswith('image') else 'a file'}"
                            ) from None
        return self.split(examples, seed)


FORMATS: dict[str, FileFormat] = {}


def register_format(fmt: FileFormat) -> FileFormat:
    """Add a file format (replacing one of the same name)."""
    FORMATS[fmt.name] = fmt
    return fmt


def content_sha256(path: str | Path) -> str:
    """The sha256 of a file; of a folder, over each file's relative path and sha256, in order: the
    same content anywhere gives the same digest."""
    path = Path(path).expanduser()
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256(file)}\n".encode())
    return digest.hexdigest()


def source_params(task_config) -> dict[str, str]:
    """What a run records about a user's file (its MLflow params): the format and the content's
    sha256, so the run says which data it saw whatever the file is called. Empty for other tasks."""
    path = task_config.params.get("path")
    if task_config.name not in FORMATS or path is None or not Path(path).expanduser().exists():
        return {}
    return {"data.format": task_config.name, "data.sha256": content_sha256(path)}


def unknown_task(name: str, what: str = "task") -> str:
    """'unknown task 'x' — did you mean …; tasks are …': every name a task may take, by origin."""
    from attnlab.data.datasets.registry import DATASETS
    from attnlab.data.generators import GENERATORS

    if name in GENERATORS:  # a name that is a task, only not of this sort
        return (f"'{name}' is a generated task, not a {what}: attnlab.data.make({name!r}, "
                "num_examples=N) makes it, and an experiment names it as its task")
    known = [*GENERATORS, *DATASETS, *FORMATS]
    return (f"unknown {what} '{name}'{did_you_mean(name, known)}; tasks are the generated "
            f"{', '.join(GENERATORS)}, the data sets {', '.join(DATASETS)} and your own files as "
            f"{', '.join(FORMATS)} (attnlab tasks)")


from attnlab.data.files import images  # noqa: E402 - they need FileFormat above
from attnlab.data.files.interactions import read_interactions  # noqa: E402
from attnlab.data.files.pairs import pairs_split, read_pairs  # noqa: E402
from attnlab.data.files.text import stratified_split, text_reader  # noqa: E402

for _table, _what in (("csv", "comma-separated file"), ("tsv", "tab-separated file"),
                      ("jsonl", "JSON Lines file"), ("parquet", "Parquet file (needs pyarrow)")):
    register_format(FileFormat(
        _table, "text-classification", f"your own texts and labels, one per row of a {_what}",
        text_reader(_table), stratified_split,
        "a split column's, else 80/10/10 per label (every label in train)"))
register_format(FileFormat(
    "pairs", "translation", "your own source and target texts, one pair per row (TSV with a header, "
    "JSON Lines or CSV)", read_pairs, pairs_split, "a split column's, else 80/10/10"))
register_format(FileFormat(
    "interactions", "recommendation", "your own users' interactions: user, item, timestamp per row "
    "(CSV or TSV)", read_interactions, leave_one_out,
    "leave-one-out: last item test, second-to-last validation"))
register_format(FileFormat(
    "image-folder", "image-classification", "your own images: a folder of class folders of PNG or JPEG "
    "files", images.image_folder, images.split_folder,
    "its train/ validation/ test/ folders, else 80/10/10 per class (from 3 images, one in each split)"))

__all__ = ["FORMATS", "FileFormat", "content_sha256", "register_format", "source_params", "unknown_task"]
