"""Reading a run folder's files: tensors and plain data only, never pickled code. A missing,
damaged or unsafe file becomes one RunFolderError that names it (models, tasks and training all
read run folders, so this sits below them)."""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attnlab.errors import AttnlabError, RunFolderError, UnsafeFileError


@contextmanager
def reading(path: str | Path) -> Iterator[None]:
    """Any failure while reading `path` becomes a RunFolderError naming it."""
    path = Path(path)
    try:
        yield
    except AttnlabError:
        raise
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing: the run folder is incomplete") from None
    except IsADirectoryError:
        raise RunFolderError(f"{path} is a folder, not the file the run wrote") from None
    except Exception as e:  # a damaged file raises whatever its parser raises
        raise RunFolderError(f"{path} is damaged ({_first_line(e)}); retrain or restore the run "
                             "folder") from None


def load_tensors(path: str | Path) -> Any:
    """torch.load with weights_only: tensors, numbers, strings, lists and dicts. A file that would
    run code when unpickled is refused, not opened."""
    import torch

    path = Path(path)
    with reading(path):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            if "weights only" in str(e).lower() or "weights_only" in str(e):
                raise UnsafeFileError(f"{path} holds more than tensors and plain data (loading it "
                                      "could run code); refusing it") from None
            raise


def read_json(path: str | Path) -> Any:
    """A JSON file of a run folder."""
    path = Path(path)
    with reading(path):
        return json.loads(path.read_text(encoding="utf-8"))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__
