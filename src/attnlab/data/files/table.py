"""Rows of a user's table file (CSV, TSV, JSON Lines, Parquet), each with where it starts, and the
checks every format shares: a column that must be there, a cell that must not be empty, a split
name. Every problem is one DataError naming the file and the line."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnlab.errors import DataError

TABLES = ("csv", "tsv", "jsonl", "parquet")
DELIMITERS = {"csv": ",", "tsv": "\t"}
# what a split column may say, and the split each means
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "valid": "validation",
               "dev": "validation", "test": "test"}
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl",
            ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class Row:
    """One record of the file: where it starts ("line 7", or "row 7" of a Parquet file) and its cells."""

    where: str
    cells: dict[str, Any]


@dataclass(frozen=True)
class Table:
    """A file's columns (in file order) and its rows."""

    path: Path
    columns: list[str]
    rows: list[Row]

    def require(self, column: str, option: str) -> None:
        """DataError unless ``column`` (what ``option`` names) is there, naming the columns found."""
        if column not in self.columns:
            raise DataError(f"{self.path}: no column '{column}'; the columns are {', '.join(self.columns)}: "
                            f"say which one holds the {option} with {option}=COLUMN")

    def text(self, row: Row, column: str) -> str:
        """The cell as text, DataError if it is missing or empty (numbers become their text)."""
        if column not in row.cells:
            raise DataError(f"{self.path}, {row.where}: no '{column}' (it has "
                            f"{', '.join(map(str, row.cells)) or 'nothing'}); every row needs one")
        value = as_text(row.cells[column])
        if value is None:
            raise DataError(f"{self.path}, {row.where}: '{column}' is {json.dumps(row.cells[column])[:40]}, "
                            "not text or a number")
        if not value.strip():
            raise DataError(f"{self.path}, {row.where}: empty '{column}'; give every row one, or remove "
                            "the row")
        return value

    def split_of(self, row: Row, column: str) -> str:
        """The split the row's ``column`` names (train, validation or test)."""
        value = as_text(row.cells.get(column))
        name = SPLIT_NAMES.get((value or "").strip().lower())
        if name is None:
            raise DataError(f"{self.path}, {row.where}: split {row.cells.get(column)!r} is not train, "
                            f"validation (or val, valid, dev) or test; fix it, or read the file "
                            f"without its split column (split=null)")
        return name


def as_text(value: Any) -> str | None:
    """A cell as text: strings as they are, numbers and booleans as JSON writes them, None for
    anything else (a list, an object)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def table_kind(path: Path, given: str | None, name: str, kinds: tuple[str, ...] = TABLES) -> str:
    """The table kind ``given`` (an option), or the one the file's extension says."""
    kind = given if given is not None else SUFFIXES.get(path.suffix.lower())
    if kind not in kinds:
        said = f"format={given!r}" if given is not None else f"its extension '{path.suffix}'"
        raise DataError(f"{name}: cannot tell the format of {path} from {said}; give format= "
                        f"one of {', '.join(kinds)}")
    return kind


def read_table(path: Path, kind: str) -> Table:
    """The file's columns and rows; DataError for an empty file or a malformed row."""
    if kind == "parquet":
        return _parquet(path)
    text = decoded(path)
    table = _jsonl(path, text) if kind == "jsonl" else _delimited(path, text, DELIMITERS[kind])
    if not table.rows:
        raise DataError(f"{path}: no rows" + (f" (only the header: {', '.join(table.columns)})"
                                              if table.columns else " (the file is empty)"))
    return table


def decoded(path: Path) -> str:
    """The file's text: UTF-8, a byte-order mark at the start allowed; DataError naming the line
    of the first bytes that are not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: bytes that are not UTF-8 ({data[err.start:err.start + 4]!r}); "
                        "save the file as UTF-8") from None


def _delimited(path: Path, text: str, delimiter: str) -> Table:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows, start = [], 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1  # a quoted field may span lines
            if not fields:  # a blank line holds no row
                continue
            if header is None:
                header = [field.strip() for field in fields]
                continue
            if len(fields) != len(header):
                raise DataError(f"{path}, line {line}: {len(fields)} fields, but the header has "
                                f"{len(header)} ({', '.join(header)}); quote a field that holds "
                                f"{'a comma' if delimiter == ',' else 'a tab'}")
            rows.append(Row(f"line {line}", dict(zip(header, fields, strict=True))))
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: {err}") from None
    return Table(path, header or [], rows)


def _jsonl(path: Path, text: str) -> Table:
    columns: dict[str, None] = {}
    rows = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}, line {number}: not JSON ({err.msg}, column {err.colno}); each "
                            "line holds one object, {\"text\": ..., \"label\": ...}") from None
        if not isinstance(value, dict):
            raise DataError(f"{path}, line {number}: a JSON {type(value).__name__}, not an object; each "
                            "line holds one object, {\"text\": ..., \"label\": ...}")
        columns.update(dict.fromkeys(value))
        rows.append(Row(f"line {number}", value))
    return Table(path, list(columns), rows)


def _parquet(path: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow, which is not installed: "
                        "pip install pyarrow") from None
    try:
        table = pq.read_table(path)
    except Exception as err:  # pyarrow's own errors (ArrowInvalid, …) share no base we may name
        raise DataError(f"{path}: not a Parquet file pyarrow can read ({err})") from None
    rows = [Row(f"row {i}", cells) for i, cells in enumerate(table.to_pylist(), 1)]
    if not rows:
        raise DataError(f"{path}: no rows (columns {', '.join(table.column_names)})")
    return Table(path, list(table.column_names), rows)
