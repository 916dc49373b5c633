"""An MLflow store for a test module, copied from one made once per test session: making a store
runs MLflow's ~1,700 migration statements, seconds each time."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path


@functools.cache
def _template() -> Path:
    from attnlab.train.tracking import open_store

    folder = Path(tempfile.mkdtemp(prefix="attnlab-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    open_store(f"sqlite:///{folder / 'mlflow.db'}")
    return folder / "mlflow.db"


def fresh_store(folder: Path) -> str:
    """The URI of a new, empty MLflow store in `folder`."""
    db = folder / "mlflow.db"
    shutil.copyfile(_template(), db)
    return f"sqlite:///{db}"
