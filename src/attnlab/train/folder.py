"""A run folder's integrity: one training at a time (a lock), no leftovers from a kill, and a
manifest of sha256 hashes that ties its files together, so a swapped file is refused, not used."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attnlab.errors import RunFolderError
from attnlab.runfiles import read_json
from attnlab.train.tracking import RUN_FILE

MANIFEST, LOCK = "manifest.json", ".lock"
NOT_VOUCHED = {MANIFEST, RUN_FILE}  # the manifest itself; the MLflow run id, which a resume rewrites


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT's lock for a training; a second training on OUT gets an error naming the holder.
    The lock is the kernel's (flock), so a killed holder releases it."""
    path = out / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunFolderError(f"{out} is in use by another training (pid {holder}); wait for it "
                                 "to finish or give another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def clean_leftovers(out: Path) -> list[str]:
    """Remove the half-written `.NAME.*.tmp` files a kill during a save leaves; their names."""
    gone = []
    for path in out.glob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            gone.append(path.name)
    return gone


def write_manifest(out: Path, *, complete: bool, names: list[str] | None = None) -> None:
    """OUT/manifest.json: the sha256 of `names` (default: every file of the run), written
    atomically. `complete` says the run finished: only then do load, eval and predict accept the
    folder; an unfinished run's manifest holds what does not change while it trains."""
    paths = [out / n for n in names] if names is not None else sorted(out.iterdir())
    files = {p.name: _sha256(p) for p in paths
             if p.is_file() and not p.name.startswith(".") and p.name not in NOT_VOUCHED}
    text = json.dumps({"complete": complete, "sha256": files}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{MANIFEST}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / MANIFEST)


def verify(out: Path, *, complete: bool = True) -> None:
    """Refuse OUT unless every file its manifest lists is there, unchanged (and, with `complete`,
    the run finished)."""
    path = out / MANIFEST
    if not path.exists():
        raise RunFolderError(f"{out} has no {MANIFEST}: its files cannot be checked against each "
                             "other (a run from an older attnlab, or not a run); train it again")
    manifest = read_json(path)
    hashes = manifest.get("sha256") if isinstance(manifest, dict) else None
    if not isinstance(hashes, dict) or not all(isinstance(v, str) for v in hashes.values()):
        raise RunFolderError(f"{path} is damaged (no file hashes); train the run again")
    if complete and manifest.get("complete") is not True:
        raise RunFolderError(f"{out} holds a run that did not finish; finish it with "
                             f"`attnlab train EXPERIMENT --out {out} --resume`")
    for name, digest in hashes.items():
        file = out / name
        if Path(name).name != name or not file.is_file():
            raise RunFolderError(f"{file} is missing: the run folder is incomplete")
        if _sha256(file) != digest:
            raise RunFolderError(f"{file} was changed after the run wrote it (its sha256 differs "
                                 f"from {MANIFEST}); restore it or train again")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_run(out: str | Path):
    """The experiment of the trained run in `out`, once its manifest vouches for every file of
    the folder: what loading, evaluating and inspecting a run start from (no Lightning needed)."""
    from attnlab.errors import ConfigError
    from attnlab.train.config import load_experiment

    out = Path(out)
    if not (out / "experiment.yaml").is_file():
        raise ConfigError(f"{out} holds no trained run (no experiment.yaml): give the folder a "
                          "training wrote (attnlab runs)")
    verify(out)
    return load_experiment(out / "experiment.yaml")
