"""The studio's own-data uploads: a managed folder ROOT/data/<name>/ per data set, filled one file
per request (a table file, or each image of a class folder under its relative path), with strict
names, allowed extensions only and limits on file size, data set size and file count. The browser
names data sets, never a server path; the Run screen trains on them through the file formats
(csv, tsv, jsonl, parquet, image-folder)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import Request  # a route's annotation: resolved at module level

from attnlab.errors import ConfigError, InputError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a data set: also a valid run name
PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 _.()+-]{0,127}")  # one folder or file name: no dot first
TABLES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".parquet": "parquet"}
IMAGES = (".png", ".jpg", ".jpeg")
MAX_FILE = 16_000_000  # bytes of one uploaded file
MAX_SET = 200_000_000  # bytes of one data set
MAX_FILES = 5_000  # files of one data set (images of a folder)
MAX_SETS = 50  # data sets kept
MAX_DEPTH = 4  # parts of an image's path: [split/]class/[sub/]file.png
CHUNK = 1 << 16


class TooLarge(Exception):
    """A body over a limit: the route answers 413."""


def _format_of(suffix: str) -> str | None:
    return TABLES.get(suffix.lower()) or ("image-folder" if suffix.lower() in IMAGES else None)


class DataSets:
    """Data sets by name under `folder` (ROOT/data). A set is one table file at its top, or
    class folders of images; never both."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = asyncio.Lock()
        self._state: dict[str, dict] = {}  # name → files, bytes, format, table file: kept as files arrive

    # -- names and paths ---------------------------------------------------------------------

    def checked_name(self, name: str) -> str:
        if not NAME.fullmatch(name):
            raise InputError(f"{name[:40]!r} is not a data set name: letters, digits, '-', '_' and "
                             "'.' (up to 64, starting with a letter or digit)")
        return name

    def checked_file(self, relpath: str) -> tuple[list[str], str]:
        """The path's parts and the format its extension means; every way it may be wrong, named."""
        parts = relpath.split("/")
        if len(parts) > MAX_DEPTH or not all(PART.fullmatch(p) for p in parts):
            raise InputError(f"{relpath[:80]!r} is not a file name the studio keeps: up to {MAX_DEPTH} "
                             "parts (class/file.png), each of letters, digits, spaces and _ . ( ) + -, "
                             "not starting with a dot")
        fmt = _format_of(Path(parts[-1]).suffix)
        if fmt is None:
            raise InputError(f"{parts[-1][:60]!r}: the studio takes {', '.join(TABLES)} tables and "
                             f"{', '.join(IMAGES)} images")
        if fmt == "image-folder" and len(parts) < 2:
            raise InputError(f"{relpath!r}: an image goes in its class's folder (class/{parts[-1]})")
        if fmt != "image-folder" and len(parts) > 1:
            raise InputError(f"{relpath!r}: a table file goes at the data set's top, not in a folder")
        return parts, fmt

    def path(self, name: str) -> Path:
        """The data set's folder (InputError naming the known ones when there is none)."""
        folder = self.folder / self.checked_name(name)
        if not folder.is_dir():
            known = ", ".join(d["name"] for d in self.list()) or "none yet: upload one"
            raise InputError(f"no data set {name!r}; data sets: {known}")
        return folder

    def source(self, name: str) -> tuple[str, Path]:
        """The guessed format and what a task's `path` names: the table file, or the folder."""
        entry = next((d for d in self.list() if d["name"] == name), None)
        folder = self.path(name)
        if entry is None or entry["format"] is None:
            raise InputError(f"the data set {name!r} holds no file yet: upload a table or a folder "
                             "of images")
        if entry["format"] == "image-folder":
            return entry["format"], folder
        return entry["format"], folder / entry["file"]

    def reads(self, experiment: dict, name: str) -> bool:
        """Whether an experiment (as plain data) trains on the data set."""
        given = (experiment.get("task") or {}).get("params", {}).get("path")
        folder = self.folder / name
        return isinstance(given, str) and (Path(given) == folder or folder in Path(given).parents)

    # -- listing -----------------------------------------------------------------------------

    def list(self) -> list[dict]:
        """Each data set: name, format guessed, file count, bytes; a table's file and columns,
        an image folder's classes."""
        if not self.folder.is_dir():
            return []
        return [self._entry(d) for d in sorted(self.folder.iterdir())
                if d.is_dir() and NAME.fullmatch(d.name)]

    def _entry(self, folder: Path) -> dict:
        files = [f for f in folder.rglob("*") if f.is_file()]
        entry = {"name": folder.name, "format": None, "files": len(files),
                 "bytes": sum(f.stat().st_size for f in files)}
        tables = [f for f in files if f.parent == folder and f.suffix.lower() in TABLES]
        if tables:
            entry |= {"format": TABLES[tables[0].suffix.lower()], "file": tables[0].name,
                      "columns": _columns(tables[0])}
        elif files:
            classes = sorted({f.relative_to(folder).parts[0] for f in files})
            entry |= {"format": "image-folder", "classes": classes[:100]}
        return entry

    # -- changing ----------------------------------------------------------------------------

    async def put(self, name: str, relpath: str, body: AsyncIterator[bytes],
                  length: str | None) -> dict:
        """Keep one file of the data set from `body`, read in chunks: a body over MAX_FILE is
        refused as soon as it shows (by its Content-Length, or by counting) and never kept."""
        self.checked_name(name)
        parts, fmt = self.checked_file(relpath)
        if length is not None and length.isdigit() and int(length) > MAX_FILE:
            raise TooLarge(f"{parts[-1]} is {int(length):,} bytes; a file may be {MAX_FILE:,} bytes")
        incoming = self.folder / ".incoming"  # not a data set name: never listed
        incoming.mkdir(parents=True, exist_ok=True)
        temp = incoming / uuid.uuid4().hex
        size = 0
        try:
            with open(temp, "wb") as f:
                async for chunk in body:
                    size += len(chunk)
                    if size > MAX_FILE:
                        raise TooLarge(f"{parts[-1]} is over {MAX_FILE:,} bytes, the most a file may be")
                    f.write(chunk)
            async with self._lock:  # the set's limits, counted with its files
                target = self.folder / name / Path(*parts)
                state = self._admit(name, target, fmt, size)
                target.parent.mkdir(parents=True, exist_ok=True)
                old = target.stat().st_size if target.exists() else None
                os.replace(temp, target)
                state["files"] += old is None
                state["bytes"] += size - (old or 0)
                state["format"], state["file"] = fmt, state["file"] or (parts[0] if len(parts) == 1 else None)
        finally:
            temp.unlink(missing_ok=True)
        return {"name": name, "file": relpath, "bytes": size}

    def _admit(self, name: str, target: Path, fmt: str, size: int) -> dict:
        """Under the lock: the set's running counts, or ConfigError unless the file fits the set
        (its kind, count and size)."""
        folder = self.folder / name
        if not folder.is_dir():
            sets = [d for d in self.folder.iterdir() if d.is_dir() and NAME.fullmatch(d.name)]
            if len(sets) >= MAX_SETS:
                raise ConfigError(f"{MAX_SETS} data sets are kept already: delete one first")
            self._state[name] = {"files": 0, "bytes": 0, "format": None, "file": None}
        elif name not in self._state:  # counted once, then kept up to date
            entry = self._entry(folder)
            self._state[name] = {k: entry.get(k) for k in ("files", "bytes", "format", "file")}
        state = self._state[name]
        have = state["format"]
        if have is not None and (have == "image-folder") != (fmt == "image-folder"):
            raise ConfigError(f"the data set {name!r} holds "
                              f"{'images' if have == 'image-folder' else 'a table'}; a data set is "
                              "one table or one folder of images: use another name")
        if fmt != "image-folder" and have is not None and state["file"] != target.name:
            raise ConfigError(f"the data set {name!r} holds {state['file']} already: one table per "
                              "data set (delete it, or use another name)")
        old = target.stat().st_size if target.exists() else 0
        if not target.exists() and state["files"] + 1 > MAX_FILES:
            raise ConfigError(f"the data set {name!r} has {MAX_FILES:,} files, the most it may hold")
        if state["bytes"] - old + size > MAX_SET:
            raise ConfigError(f"the data set {name!r} would be over {MAX_SET:,} bytes, the most it "
                              "may hold")
        return state

    def delete(self, name: str, busy: bool = False) -> dict:
        folder = self.path(name)
        if busy:
            raise ConfigError(f"a queued or running training reads the data set {name!r}: cancel it "
                              "or let it finish first")
        shutil.rmtree(folder)
        self._state.pop(name, None)
        return {"name": name, "deleted": True}


def _columns(file: Path) -> list[str]:
    """A table's column names from its first line (CSV/TSV header, first JSON object); [] when
    that cheap look does not tell (Parquet, a broken first line): the training names the problem."""
    try:
        with open(file, "rb") as f:
            head = f.read(CHUNK).decode("utf-8-sig", errors="replace")
    except OSError:
        return []
    first = head.splitlines()[0] if head.strip() else ""
    kind = TABLES[file.suffix.lower()]
    try:
        if kind in ("csv", "tsv"):
            return next(csv.reader(io.StringIO(first), delimiter="," if kind == "csv" else "\t"), [])
        if kind == "jsonl":
            row = json.loads(first)
            return list(row) if isinstance(row, dict) else []
    except (ValueError, csv.Error):
        return []
    return []


def routes(data: DataSets, busy=lambda name: False):
    """The data routes, to include in the studio app; `busy(name)` says whether a training that
    is not done reads the data set (it is then not deleted)."""
    from fastapi import APIRouter, HTTPException

    router = APIRouter(prefix="/api/data")

    @router.get("")
    async def listed() -> list[dict]:
        return await asyncio.to_thread(data.list)

    @router.put("/{name}/{relpath:path}")
    async def put(name: str, relpath: str, request: Request) -> dict:
        try:
            return await data.put(name, relpath, request.stream(),
                                  request.headers.get("content-length"))
        except TooLarge as err:
            raise HTTPException(413, str(err)) from None

    @router.delete("/{name}")
    async def deleted(name: str) -> dict:
        return await asyncio.to_thread(data.delete, name, busy(data.checked_name(name)))

    return router
