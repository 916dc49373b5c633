"""Readers for the translation sets: ``{"source", "target", "ref"}`` pairs in canonical order, read from
SWORD Bible modules (the zText format) without libsword, or from bible-alignments' word and alignment
files (greek-english, whose pairs also carry their gold word ``alignment``)."""

from __future__ import annotations

import csv
import json
import re
import struct
import unicodedata
import zlib
from pathlib import Path
from typing import NamedTuple

from attnlab.data.datasets.base import Example, open_text, require_header
from attnlab.errors import DataError

MODULES = ("engKJV2006eb", "spaRV1909eb")  # source: King James Version; target: Reina-Valera 1909
TESTAMENTS = ("ot", "nt")
BLOCK = struct.Struct("<III")  # .bzs: offset and size in .bzz, size once decompressed
ENTRY = struct.Struct("<IIH")  # .bzv: block, offset and size within the decompressed block

_CHAPTER = re.compile(r"<chapter\b[^>]*>")
_START = re.compile(r"\bsID=")  # \b: "osisID=" ends with "sID=" too
_OSIS_ID = re.compile(r'\bosisID="([^"]+)"')
_NOTE = re.compile(r"<note\b.*?</note>", re.S)
_TAG = re.compile(r"<[^>]*>")


def kjv_spanish(where: Path) -> list[Example]:
    """The King James Version (source) beside the Reina-Valera 1909 (target), verse by verse.

    ``where`` is the folder holding the module folders engKJV2006eb and spaRV1909eb. Both follow the KJV
    versification, so a verse sits at the same index in both; one that is empty on either side is left
    out. ``ref`` is the OSIS reference, ``Gen.1.1``. Where the Reina-Valera numbers verses otherwise
    (Num 13, Job 39–40, Jonah 2 …) its module keeps its own numbering in the KJV slots, so about 170
    pairs there are out of step by a verse or more.
    """
    folders = [where / module for module in MODULES]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"kjv-spanish: no {folder.name} folder in '{where}'; give the folder holding "
                            f"{' and '.join(MODULES)} (SWORD's modules/texts/ztext)")
    examples = []
    for testament in TESTAMENTS:
        english, spanish = (ztext(folder, testament) for folder in folders)
        slots = verse_slots(english)
        if len(spanish) != len(english) or verse_slots(spanish) != slots:
            raise DataError(f"kjv-spanish: the {testament} chapters of {' and '.join(MODULES)} in '{where}' "
                            "differ; both modules should follow the KJV versification")
        for ref, index in slots:
            source, target = plain(english[index]), plain(spanish[index])
            if source and target:
                examples.append({"source": source, "target": target, "ref": ref})
    return examples


def ztext(folder: Path, testament: str) -> list[str]:
    """Every index entry of one testament (``ot`` or ``nt``) of a SWORD zText module, as OSIS markup.

    ``.bzs`` holds, per block, where its zlib stream lies in ``.bzz``; ``.bzv``, per entry, where its
    UTF-8 text lies in a decompressed block. An empty entry has size 0.
    """
    files = {ext: folder / f"{testament}.{ext}" for ext in ("bzs", "bzv", "bzz")}
    for file in files.values():
        if not file.is_file():
            raise DataError(f"{folder}: no {file.name}; a zText module has ot and nt .bzs, .bzv, .bzz files")
    bzs, bzv, bzz = (file.read_bytes() for file in files.values())
    if len(bzs) % BLOCK.size or len(bzv) % ENTRY.size:
        raise DataError(f"{folder}: {testament}.bzs or {testament}.bzv is not whole {BLOCK.size}- and "
                        f"{ENTRY.size}-byte records; is this a zText module?")
    blocks = []
    for offset, size, expected in BLOCK.iter_unpack(bzs):
        try:
            block = zlib.decompress(bzz[offset:offset + size])
        except zlib.error as err:
            raise DataError(f"{files['bzz']}: block {len(blocks)} does not decompress ({err})") from err
        if len(block) != expected:
            raise DataError(f"{files['bzz']}: block {len(blocks)} holds {len(block)} bytes, "
                            f"{files['bzs'].name} says {expected}")
        blocks.append(block)
    entries = []
    for block, offset, size in ENTRY.iter_unpack(bzv):
        if size and (block >= len(blocks) or offset + size > len(blocks[block])):
            raise DataError(f"{files['bzv']}: entry {len(entries)} lies outside the blocks of "
                            f"{files['bzz'].name}")
        try:
            entries.append(blocks[block][offset:offset + size].decode("utf-8") if size else "")
        except UnicodeDecodeError as err:
            raise DataError(f"{files['bzv']}: entry {len(entries)} is not UTF-8 ({err})") from err
    return entries


def verse_slots(entries: list[str]) -> list[tuple[str, int]]:
    """``(ref, index)`` of every verse of a testament's entries, from its chapter headings.

    After two heading entries, each book has an introduction, then per chapter a heading (holding
    ``<chapter osisID="Gen.1" sID=…>``) followed by one entry per verse.
    """
    heads = [(index, chapter) for index, entry in enumerate(entries) if (chapter := _chapter_start(entry))]
    slots = []
    for k, (head, chapter) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(entries)
        if k + 1 < len(heads) and _book(heads[k + 1][1]) != _book(chapter):
            end -= 1  # the next book's introduction
        slots += [(f"{chapter}.{index - head}", index) for index in range(head + 1, end)]
    return slots


def plain(markup: str) -> str:
    """OSIS markup as text: notes dropped with their content, other tags dropped, whitespace collapsed."""
    return " ".join(_TAG.sub("", _NOTE.sub("", markup)).split())


def _chapter_start(entry: str) -> str | None:
    """The osisID (``Gen.1``) of the chapter that ``entry`` starts, if it starts one."""
    for tag in _CHAPTER.findall(entry):
        found = _OSIS_ID.search(tag)
        if found and _START.search(tag):
            return found.group(1)
    return None


def _book(chapter: str) -> str:
    return chapter.rsplit(".", 1)[0]


# --- greek-english: the Greek New Testament beside the Berean Standard Bible, with gold word alignments

ALIGNMENTS = "eng/alignments/BSB/SBLGNT-BSB-manual.json"  # the manual SBLGNT→BSB alignment records
TARGET_WORDS = "eng/targets/BSB/nt_BSB.tsv"  # the BSB New Testament, one word or punctuation mark a row
SOURCE_WORDS = "sources/SBLGNT.tsv"  # the SBLGNT, one Greek word a row
_WORD_ID = re.compile(r"\d{11}")  # BBCCCVVVWWW: book, chapter, verse, word; the verse is its first 8 digits
_FETCH = "is it bible-alignments 0.4.2's data? `attnlab data get greek-english` fetches it"


class Aligned(NamedTuple):
    """greek-english's examples, and the links the reader left out because they join two verses."""

    examples: list[Example]
    dropped: int  # word links between a word of one verse and a word of another
    records_across: int  # alignment records holding words of more than one verse


def greek_english(where: Path) -> list[Example]:
    """The Greek New Testament (SBLGNT, source) beside the Berean Standard Bible (BSB, target), verse by
    verse, with the manual word alignments between them: one example per verse that has alignments.

    ``where`` is the folder holding bible-alignments' ``data/`` files (see ``aligned_verses``).
    """
    return aligned_verses(where).examples


def aligned_verses(where: Path) -> Aligned:
    """``{"source", "target", "ref", "alignment"}`` per verse, in canonical order; ``ref`` is the verse as
    the files number it (BBCCCVVV: ``40001001`` is Matthew 1:1).

    ``source.split()`` are the verse's Greek words and ``target.split()`` its BSB words (a punctuation
    mark is a word of its own), each in the files' word order and in Unicode NFC. ``alignment`` lists,
    sorted, every ``[source word index, target word index]`` that a manual record links: a record of s
    Greek and t English words links all s×t pairs.

    A link between words of two verses is left out (80 of the 115,008 records hold words of more than
    one verse: 454 links), and a verse keeps an example only if a link within it is left. That gives
    7,919 verses. The records themselves are filed under 7,921 verses (the BSB verse of their words); the
    two others are 2 Corinthians 13:13 and 13:14, where the BSB numbers one verse more than the SBLGNT
    (its 13:12–13 are the BSB's 13:12–14), so every link of theirs joins two verses.
    """
    greek = _words(where / SOURCE_WORDS, ["id", "altId", "text"], prefix="n")
    english = _words(where / TARGET_WORDS, ["id", "source_verse", "text", "skip_space_after", "exclude"])
    file = where / ALIGNMENTS
    links: dict[str, set[tuple[int, int]]] = {}
    dropped = across = 0
    for number, record in enumerate(_records(file)):
        sides = (record.get("source"), record.get("target")) if isinstance(record, dict) else (None, None)
        if not all(isinstance(side, list) and side for side in sides):
            raise DataError(f"{file}: record {number} does not link a list of source words to a list of "
                            f"target words; {_FETCH}")
        sources = [_place(greek, word, file, number) for word in sides[0]]
        targets = [_place(english, word, file, number) for word in sides[1]]
        if len({verse for verse, _ in sources} | {verse for verse, _ in targets}) > 1:
            across += 1
        for verse, s in sources:
            for other, t in targets:
                if verse == other:
                    links.setdefault(verse, set()).add((s, t))
                else:
                    dropped += 1
    examples = [{"source": " ".join(greek.by_verse[verse]), "target": " ".join(english.by_verse[verse]),
                 "ref": verse,
                 "alignment": [list(pair) for pair in sorted(links[verse])]} for verse in sorted(links)]
    return Aligned(examples, dropped, across)


class _Words(NamedTuple):
    """A word file: each verse's words in id order, and where each word id sits (verse, index)."""

    by_verse: dict[str, list[str]]
    places: dict[str, tuple[str, int]]


def _words(file: Path, header: list[str], prefix: str = "") -> _Words:
    """A word file (a TSV, one word a row, its id first and its text third) by verse."""
    if not file.is_file():
        raise DataError(f"greek-english: no {file.name} in '{file.parent}'; path= takes the folder holding "
                        f"{SOURCE_WORDS}, {TARGET_WORDS} and {ALIGNMENTS}")
    with open_text(file) as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        require_header(file, next(rows, None), header)
        words = {}
        for number, row in enumerate(rows, 2):
            word = unicodedata.normalize("NFC", row[2]) if len(row) >= len(header) else ""
            if not row or not _WORD_ID.fullmatch(row[0].removeprefix(prefix)) or \
                    not row[0].startswith(prefix) or word.split() != [word] or row[0] in words:
                raise DataError(f"{file}, line {number}: expected a new word id {prefix}BBCCCVVVWWW and one "
                                f"word without spaces, got {str(row[:3])[:80]}; {_FETCH}")
            words[row[0]] = word
    table = _Words({}, {})
    start = len(prefix)
    for word_id in sorted(words):  # the ids are fixed-width, so their order is the canonical one
        verse = word_id[start:start + 8]
        verse_words = table.by_verse.setdefault(verse, [])
        table.places[word_id] = verse, len(verse_words)
        verse_words.append(words[word_id])
    return table


def _place(words: _Words, word_id: object, file: Path, number: int) -> tuple[str, int]:
    """(verse, index in the verse) of a word an alignment record names; DataError for an unknown id."""
    place = words.places.get(word_id) if isinstance(word_id, str) else None
    if place is None:
        raise DataError(f"{file}: record {number} links the word {str(word_id)[:20]!r}, which the word files "
                        f"do not have; {_FETCH}")
    return place


def _records(file: Path) -> list:
    """The alignment file's records, each to be a ``{"source": [word id, …], "target": [word id, …]}``."""
    with open_text(file) as f:
        document = json.load(f)
    records = document.get("records") if isinstance(document, dict) else None
    if not isinstance(records, list):
        raise DataError(f"{file}: no list of alignment records; {_FETCH}")
    return records
