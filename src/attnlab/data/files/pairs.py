"""Translation pairs from your own file: a source and a target text per row, from a TSV with a header
or JSON Lines (CSV works too). A ``split`` column is honoured, otherwise the pairs are cut 80/10/10."""

from __future__ import annotations

from pathlib import Path

from attnlab.data.datasets.base import Example
from attnlab.data.files.table import read_table, table_kind
from attnlab.data.files.text import check_split_column, cut_split

PAIR_TABLES = ("tsv", "jsonl", "csv")


def read_pairs(path: Path, source: str = "source", target: str = "target", split: str | None = "split",
               format: str | None = None) -> list[Example]:
    """``{"source", "target"}`` examples in file order (with ``"split"`` where the file has a split
    column); ``format`` is tsv, jsonl or csv, by default what the file's extension says."""
    table = read_table(path, table_kind(path, format, "pairs", PAIR_TABLES))
    table.require(source, "source")
    table.require(target, "target")
    has_split = split is not None and split in table.columns
    rows = [(row.where, {"source": table.text(row, source), "target": table.text(row, target),
                         **({"split": table.split_of(row, split)} if has_split else {})})
            for row in table.rows]
    if has_split:
        check_split_column("pairs", table, split, rows, share="of them")
    return [example for _, example in rows]


def pairs_split(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """The ``split`` column's splits (a held-out split it never names is cut from train), or
    seeded 80/10/10."""
    return cut_split(examples, seed)
