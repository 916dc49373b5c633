"""Text classification from your own table: one text and one label per row (CSV, TSV, JSON Lines,
Parquet). Label names are the file's own, as written; a ``split`` column is honoured, otherwise
each label is cut 80/10/10 so that every label is in train."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attnlab.data.base import SPLITS
from attnlab.data.datasets.base import HELD_OUT, Example, check_seed
from attnlab.data.datasets.install import note
from attnlab.data.files.table import Table, read_table
from attnlab.errors import DataError

DUPLICATES = ("keep", "drop")


def text_reader(kind: str) -> Callable[..., list[Example]]:
    """The reader of one table kind: ``read(path, text=, label=, split=, duplicates=)`` gives
    ``{"text", "label"}`` examples in file order, with ``"split"`` where the file has a split column."""

    def read(path: Path, text: str = "text", label: str = "label", split: str | None = "split",
             duplicates: str = "keep") -> list[Example]:
        if duplicates not in DUPLICATES:
            raise DataError(f"{kind}: duplicates={duplicates!r}; it is keep (the default) or drop")
        table = read_table(path, kind)
        table.require(text, "text")
        table.require(label, "label")
        has_split = split is not None and split in table.columns
        rows = [(row.where, {"text": table.text(row, text), "label": table.text(row, label).strip(),
                             **({"split": table.split_of(row, split)} if has_split else {})})
                for row in table.rows]
        if duplicates == "drop":
            rows = without_repeats(kind, table, rows)
        check_labels(table, rows)
        if has_split:
            check_held_out_labels(table, rows)
            check_split_column(kind, table, split, rows)
        return [example for _, example in rows]

    read.__doc__ = f"{kind.upper()} rows as text-classification examples"
    return read


def without_repeats(kind: str, table: Table, rows: list[tuple[str, Example]]) -> list[tuple[str, Example]]:
    """``rows`` less exact repeats of an earlier row's (text, label), reported on stderr."""
    first: dict[tuple[str, str], str] = {}
    kept, dropped = [], []
    for where, example in rows:
        key = (example["text"], example["label"])
        if key in first:
            dropped.append((where, first[key]))
        else:
            first[key] = where
            kept.append((where, example))
    if dropped:
        where, original = dropped[0]
        note(f"{kind}: dropped {len(dropped)} repeated (text, label) rows of {len(rows)} in {table.path} "
             f"(duplicates=drop), {len(kept)} left; the first is {where}, a repeat of {original}")
    return kept


def check_labels(table: Table, rows: list[tuple[str, Example]]) -> None:
    """DataError for a label only one row has: it could be in one split only, never learned and
    tested both."""
    counts = Counter(example["label"] for _, example in rows)
    for where, example in rows:
        if counts[example["label"]] == 1:
            alone = [label for label, n in counts.items() if n == 1]
            more = f" ({len(alone) - 1} more labels have one row too)" if len(alone) > 1 else ""
            raise DataError(f"{table.path}, {where}: the label {example['label']!r} is on this row only"
                            f"{more}; give each label at least two rows, or remove it")


def check_split_column(kind: str, table: Table, column: str, rows: list[tuple[str, Example]],
                       share: str = "of each label") -> None:
    """DataError when no row is marked train; a note for each held-out split the column leaves out
    (it is then cut from train, ``share`` saying how)."""
    named = {example["split"] for _, example in rows}
    if "train" not in named:
        raise DataError(f"{table.path}: no row of column '{column}' says train; mark the rows to train "
                        "on, or read the file without its split column (split=null)")
    for missing in (s for s in SPLITS if s not in named):
        note(f"{kind}: no row of {table.path} is marked {missing} in column '{column}'; {missing} is "
             f"cut from the train rows ({HELD_OUT:.0%} {share})")


def check_held_out_labels(table: Table, rows: list[tuple[str, Example]]) -> None:
    """DataError for a label the split column puts in validation or test only: never learned."""
    trained = {example["label"] for _, example in rows if example["split"] == "train"}
    if not trained:  # no train rows at all: check_split_column says so
        return
    for where, example in rows:
        if example["label"] not in trained:
            raise DataError(f"{table.path}, {where}: the label {example['label']!r} is in the "
                            f"{example['split']} split only; mark some of its rows train")


def stratified_split(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """The ``split`` column's splits, each held-out split it never names cut from train; without
    the column, every label cut 80/10/10: ``round(0.1 * n)`` of its n examples to validation and as
    many to test, the rest (at least one, as no label has one example) to train. Shuffled with
    ``numpy.random.default_rng(seed)``."""
    return cut_split(examples, seed, key=lambda example: example["label"])


def cut_split(examples: list[Example], seed: int, key: Callable[[Example], str] | None = None
              ) -> dict[str, list[Example]]:
    """As ``stratified_split``, with the groups ``key`` makes (None: one group)."""
    check_seed(seed)
    rng = np.random.default_rng(seed)
    marked = "split" in examples[0] if examples else False
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    pool = []
    for example in examples:
        example = dict(example)
        target = example.pop("split", "train")
        (pool if target == "train" else splits[target]).append(example)
    held_out = [name for name in ("validation", "test") if not (marked and splits[name])]
    groups: dict[str, list[Example]] = {}
    for example in pool:
        groups.setdefault(key(example) if key else "", []).append(example)
    for group in groups.values():
        shuffled = [group[i] for i in rng.permutation(len(group))]
        n = round(HELD_OUT * len(shuffled))
        for k, name in enumerate(held_out):
            splits[name] += shuffled[k * n:(k + 1) * n]
        splits["train"] += shuffled[len(held_out) * n:]
    return {name: [rows[i] for i in rng.permutation(len(rows))] for name, rows in splits.items()}
