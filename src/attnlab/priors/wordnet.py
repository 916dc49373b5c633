"""WordNet 3.0's nouns as knowledge: each lemma's lexicographer classes (noun.location, noun.person …),
read offline from Debian's ``wordnet-base`` and kept, parsed once, in attnlab's cache.

``noun_classes()`` gives the table; ``python -m attnlab.priors.wordnet`` fetches the package into the cache
(``apt-get download``, the .deb's sha256 checked, ``dpkg -x``; no root) and parses it, as the Makefile does.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from attnlab.data.datasets.base import DebianPackage, DebianSource, installed_location, installed_locations
from attnlab.data.datasets.install import Progress, install, note, repair
from attnlab.data.datasets.integrity import file_sha256
from attnlab.errors import ConfigError, DataError
from attnlab.machine import cache_dir

NAME = "wordnet"
INDEX, DATA, LEXNAMES = "wordnet/index.noun", "wordnet/data.noun", "man/man5/lexnames.5WN.gz"
# Debian ships no `lexnames` file; its man page (same package) holds the same table of 45 names.
WORDNET = DebianSource(
    (DebianPackage("wordnet-base", "1:3.0-37",
                   "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752"),),
    folder="usr/share", files={
        INDEX: "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
        DATA: "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
        LEXNAMES: "43a305072b9fab51d86c1dfddd8a06745dc79963fc54a0a4ce31cc257d9ac2fe"})
ORIGIN = ("WordNet 3.0 (Princeton University, 2006; Miller, 1995; Fellbaum, 1998) as shipped by Debian's "
          "wordnet-base 1:3.0-37: its noun index and noun synsets, with the lexicographer file names of "
          "its lexnames(5WN) page")
LICENCE = ("WordNet 3.0 licence (Princeton University): use, copying, modification and distribution for "
           "any purpose without fee, provided the copyright notice \"WordNet 3.0 Copyright 2006 by "
           "Princeton University. All rights reserved.\" and the disclaimer appear on all copies; the "
           "database is provided as is, without warranties; the name of Princeton may not be used in "
           "advertising. Full text: /usr/share/doc/wordnet-base/copyright in the package.")
# What the parsed table must hold: checked after every parse, so a wrong file cannot pass as WordNet.
COUNTS = MappingProxyType({"lemmas": 117_798, "synsets": 82_115, "noun.location": 3_209,
                           "noun.person": 11_087})
TABLE = "wordnet-3.0-nouns.json"
# The sha256 of the parsed table as written (sorted keys, no spaces): a cached copy that differs is
# parsed again from the pinned source.
TABLE_SHA256 = "a1b7bce0f0d7df424dd7002a4ac156c9620709bac2b89f66205d87d286f2e6ba"
GET = f"`python -m attnlab.priors.wordnet` (no root needed) or `{WORDNET.install_command}`"


@dataclass(frozen=True)
class NounClasses:
    """WordNet's nouns by lexicographer class: ``senses[lemma]`` lists the lexicographer file number
    of each of the lemma's noun senses, most frequent first (index.noun's order: by tagged frequency);
    ``lexnames[n]`` names file ``n`` (``noun.location`` is 15, ``noun.person`` 18).

    Lemmas are lower case, multi-word ones joined by ``_`` (``new_york``), as WordNet writes them.
    ``synsets`` counts the synsets of each class.
    """

    lexnames: tuple[str, ...]
    senses: Mapping[str, tuple[int, ...]]
    synsets: Mapping[str, int]

    def __contains__(self, word: str) -> bool:
        return _lemma(word) in self.senses

    def classes(self, word: str, senses: int | None = 1) -> tuple[str, ...]:
        """The lexicographer classes of ``word``'s first ``senses`` noun senses (all with None), each once,
        in sense order; empty for a word that is no WordNet noun. The default, the first sense only, is
        the most frequent one: later senses are mostly rare readings ("city" 3 is a city's people,
        noun.group), which would put noise into every sentence holding the word."""
        if senses is not None and (isinstance(senses, bool) or not isinstance(senses, int) or senses < 1):
            raise ConfigError(f"senses must be a whole number from 1, or None for all, got {senses!r}")
        numbers = self.senses.get(_lemma(word), ())
        return tuple(dict.fromkeys(self.lexnames[n] for n in numbers[:senses]))


def _lemma(word: str) -> str:
    return "_".join(word.lower().split())


def parse(folder: Path) -> NounClasses:
    """The table from the files of ``WORDNET`` under ``folder`` (their tree's ``usr/share``); DataError
    for a file that does not read as WordNet's."""
    lexnames = _lexnames(folder / LEXNAMES)
    synset_class: dict[str, int] = {}
    with open(folder / DATA, encoding="utf-8") as data:
        for number, line in enumerate(data, 1):
            if line.startswith("  "):  # the licence, at the head of the file
                continue
            offset, lex, _ = line.split(" ", 2)
            if not (offset.isdigit() and lex.isdigit() and int(lex) < len(lexnames)):
                raise DataError(f"{folder / DATA}, line {number}: expected a synset offset and a "
                                f"lexicographer file number, got {line[:40]!r}")
            synset_class[offset] = int(lex)
    senses: dict[str, tuple[int, ...]] = {}
    with open(folder / INDEX, encoding="utf-8") as index:
        for number, line in enumerate(index, 1):
            if line.startswith("  "):
                continue
            fields = line.split()
            try:  # lemma pos synset_cnt p_cnt ptr_symbol… sense_cnt tagsense_cnt synset_offset…
                count, pointers = int(fields[2]), int(fields[3])
                offsets = fields[6 + pointers:]
                numbers = tuple(synset_class[offset] for offset in offsets)
            except (IndexError, ValueError, KeyError):
                numbers, count = (), -1
            if fields[1:2] != ["n"] or len(numbers) != count:
                raise DataError(f"{folder / INDEX}, line {number}: not a noun index line whose synsets "
                                f"data.noun holds: {line[:60]!r}")
            senses[fields[0]] = numbers
    counts: dict[str, int] = {}
    for lex in synset_class.values():
        counts[lexnames[lex]] = counts.get(lexnames[lex], 0) + 1
    return NounClasses(lexnames, MappingProxyType(senses), MappingProxyType(dict(sorted(counts.items()))))


def _lexnames(file: Path) -> tuple[str, ...]:
    """File number → name from the table in lexnames(5WN): lines ``NN<tab>name<tab>contents``."""
    with gzip.open(file, "rt", encoding="utf-8") as page:
        rows = re.findall(r"^(\d\d)\t(\w+\.\w+)\s*\t", page.read(), flags=re.M)
    if [int(n) for n, _ in rows] != list(range(45)):
        raise DataError(f"{file}: expected the 45 lexicographer files numbered 00–44, found {len(rows)}")
    return tuple(name for _, name in rows)


def count_problems(nouns: NounClasses) -> list[str]:
    """One line per count of ``COUNTS`` the table does not have."""
    found = {"lemmas": len(nouns.senses), "synsets": sum(nouns.synsets.values()), **nouns.synsets}
    return [f"{NAME}: {found.get(name, 0):,} {name}, expected {expected:,}"
            for name, expected in COUNTS.items() if found.get(name, 0) != expected]


def encode(nouns: NounClasses) -> bytes:
    """The table as the cache keeps it: JSON with sorted keys and no spaces, so one table has one sha256."""
    senses = {lemma: list(numbers) for lemma, numbers in nouns.senses.items()}
    return json.dumps({"source": WORDNET.requirement, "lexnames": list(nouns.lexnames),
                       "synsets": dict(nouns.synsets), "senses": senses},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode(data: bytes) -> NounClasses:
    table = json.loads(data)
    return NounClasses(tuple(table["lexnames"]),
                       MappingProxyType({k: tuple(v) for k, v in table["senses"].items()}),
                       MappingProxyType(table["synsets"]))


def table_path() -> Path:
    """Where the parsed table is kept: ``priors/`` in attnlab's cache."""
    return cache_dir() / "priors" / TABLE


def source_folder(*, fresh: bool = False) -> tuple[Path | None, list[str]]:
    """The first installed copy of the source whose files match their pins (None if none does), and the
    problems of the copies before it. ``fresh`` hashes every file again instead of trusting the cache."""
    problems: list[str] = []
    for folder in installed_locations(WORDNET):
        found = [f"{folder / name}: sha256 {actual}, expected {expected} ({WORDNET.requirement})"
                 for name, expected in WORDNET.files.items()
                 if (actual := file_sha256(folder / name, fresh=fresh)) != expected]
        if not found:
            return folder, problems
        problems += found
    return None, problems


def noun_classes(*, download: bool = False, progress: Progress = note) -> NounClasses:
    """WordNet's noun classes, from the cached table while its sha256 is the pinned one; otherwise (not
    there yet, or altered) parsed again from the pinned source and cached. A missing or altered source
    raises DataError saying how to get it; with ``download=True`` it is fetched instead (``fetch``)."""
    path = table_path()
    try:
        data = path.read_bytes()
    except OSError:
        data = None
    if data is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest == TABLE_SHA256:
            return decode(data)
        progress(f"{path}: sha256 {digest}, expected {TABLE_SHA256}; parsing WordNet again")
    folder, problems = source_folder()
    if folder is None and download:
        return fetch(progress=progress)
    if folder is None:
        places = " nor ".join(str(root / WORDNET.folder) for root in WORDNET.roots())
        found = (f"{problems[0]}; restore it with " if problems else
                 f"{NAME} reads Debian's wordnet-base, found in neither {places}; get it with ")
        raise DataError(f"{found}{GET}; from Python, noun_classes(download=True)")
    return _parse_and_keep(folder, path)


def _parse_and_keep(folder: Path, path: Path) -> NounClasses:
    try:
        nouns = parse(folder)
    except (OSError, EOFError, ValueError) as err:
        raise DataError(f"{NAME}: cannot read {folder} ({type(err).__name__}: {err}); fetch it again "
                        f"with {GET}") from err
    problems = count_problems(nouns)
    if problems:
        raise DataError("\n".join(problems))
    data = encode(nouns)
    digest = hashlib.sha256(data).hexdigest()
    if digest != TABLE_SHA256:
        raise DataError(f"{NAME}: the table parsed from {folder} has sha256 {digest}, expected "
                        f"{TABLE_SHA256}; the parser and its pin disagree")
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # whole or not at all
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError:  # a cache that cannot be written only costs a parse next time
        partial.unlink(missing_ok=True)
    return nouns


def fetch(progress: Progress = note) -> NounClasses:
    """Put the pinned wordnet-base into attnlab's cache if no checked copy is here (or fetch it again if
    the copy is altered), check its files' sha256, parse it and check the counts (``COUNTS``)."""
    folder, problems = source_folder(fresh=True)
    if folder is None:
        present = installed_location(WORDNET)
        if present is None:
            install(WORDNET, NAME, progress)
        else:
            progress(f"{problems[0]}; fetching {WORDNET.requirement} again")
            repair(WORDNET, present, NAME, progress)
        folder, problems = source_folder(fresh=True)
    if folder is None:
        raise DataError(f"{NAME}: the files are not the pinned version's, even after fetching them again\n"
                        + "\n".join(problems))
    return _parse_and_keep(folder, table_path())


def main() -> int:
    try:
        nouns = fetch()
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{NAME}: {len(nouns.senses):,} noun lemmas, {sum(nouns.synsets.values()):,} synsets in "
          f"{table_path()}, sha256 and counts as pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
