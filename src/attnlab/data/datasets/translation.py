"""Readers for the translation sets: ``{"source", "target", "ref"}`` pairs in canonical order, read from
SWORD Bible modules (the zText format) without libsword."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

from attnlab.data.datasets.base import Example
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
