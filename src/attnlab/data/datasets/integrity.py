"""Checking a data set's installed files against their pinned sha256 on every load, cheaply.

A file is hashed once per stamp (size, modification and change times, inode) and its digest remembered
in attnlab's cache (``verified.json``, keyed by the file's path), so later loads only stat it. Writing
to a file, or putting another file in its place, changes the stamp and so forces a new hash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from attnlab.data.datasets.base import sha256
from attnlab.machine import cache_dir

RECORDS = "verified.json"


def _stamp(path: Path) -> list[int]:
    info = path.stat()
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


def _records_file() -> Path:
    return cache_dir() / RECORDS


def _read_records() -> dict:
    """The remembered digests; empty when there are none or the file is unreadable (it is a cache)."""
    try:
        records = json.loads(_records_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _write_records(records: dict) -> None:
    """Replace the records file whole, so a reader never sees half of it; an unwritable cache only
    costs a hash next time."""
    target = _records_file()
    partial = target.with_name(f".{RECORDS}.{os.getpid()}.partial")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(records, indent=0, sort_keys=True), encoding="utf-8")
        os.replace(partial, target)
    except OSError:
        partial.unlink(missing_ok=True)


def file_sha256(path: Path, *, fresh: bool = False) -> str:
    """``path``'s sha256: remembered from an earlier call while the file's stamp is unchanged, else (or
    when ``fresh``) hashed now and remembered."""
    key = str(Path(path).resolve())
    stamp = _stamp(path)
    records = _read_records()
    record = records.get(key)
    if not fresh and isinstance(record, dict) and record.get("stamp") == stamp \
            and isinstance(record.get("sha256"), str):
        return record["sha256"]
    digest = sha256(path)
    if _stamp(path) == stamp:  # unchanged while it was read: the digest belongs to this stamp
        records = _read_records()  # another process may have added records meanwhile
        records[key] = {"stamp": stamp, "sha256": digest}
        _write_records(records)
    return digest
