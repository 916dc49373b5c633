"""Your own files as tasks. A file format reads a file (or folder) the user names with ``path`` into
examples, as a data set's reader does, and cuts them into splits; ``attnlab.data.load(FORMAT,
path=..., **options)`` and an experiment's ``task: {name: FORMAT, params: {path: ...}}`` take it
like a data set's name."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlab.data.datasets.base import Example, check_seed, split
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
        return self.split(self.read(given, **options), seed)


FORMATS: dict[str, FileFormat] = {}


def register_format(fmt: FileFormat) -> FileFormat:
    """Add a file format (replacing one of the same name)."""
    FORMATS[fmt.name] = fmt
    return fmt


__all__ = ["FORMATS", "FileFormat", "register_format"]

from attnlab.data.files import images  # noqa: E402  (the formats plug in once the registry exists)

register_format(FileFormat("image-folder", "image-classification", "a folder of class folders of PNG or JPEG "
                           "images", images.image_folder, images.split_folder))
