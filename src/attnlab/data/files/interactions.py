"""Recommendation from your own interactions file: one (user, item, timestamp) per row, CSV or TSV.
Each user's items become a history in time order (ties keep file order), cut leave-one-out as
movielens-100k is: the last item is test, the one before it validation, the rest train."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

from attnlab.data.datasets.base import Example
from attnlab.data.datasets.install import note
from attnlab.data.files.table import Table, read_table, table_kind
from attnlab.errors import DataError

SHORT_USERS = ("error", "drop")
FEWEST = 3  # one item to train on, one to validate, one to test


def read_interactions(path: Path, user: str = "user", item: str = "item", time: str = "timestamp",
                      short_users: str = "error", format: str | None = None) -> list[Example]:
    """One ``{"user", "items", "timestamps"}`` history per user, in order of first appearance;
    ``format`` is csv or tsv, by default what the extension says. A user with fewer than 3
    interactions is an error, or with ``short_users="drop"`` left out and reported."""
    if short_users not in SHORT_USERS:
        raise DataError(f"interactions: short_users={short_users!r}; it is error (the default) or drop")
    table = read_table(path, table_kind(path, format, "interactions", ("csv", "tsv")))
    for column, option in ((user, "user"), (item, "item"), (time, "time")):
        table.require(column, option)
    histories: dict[str, list[tuple[float, int, str]]] = {}
    first_row: dict[str, str] = {}
    for order, row in enumerate(table.rows):
        who = table.text(row, user).strip()
        histories.setdefault(who, []).append((moment(table, row.where, table.text(row, time)), order,
                                              table.text(row, item).strip()))
        first_row.setdefault(who, row.where)
    short = [who for who, events in histories.items() if len(events) < FEWEST]
    if short:
        who = short[0]
        example = f"user {who!r} ({first_row[who]}) has {len(histories[who])}"
        have = "has" if len(short) == 1 else "have"
        if short_users == "error":
            raise DataError(f"{table.path}: {len(short)} of {len(histories)} users {have} fewer than "
                            f"{FEWEST} interactions, e.g. {example}; leave-one-out needs {FEWEST} (train, "
                            "validation, test): add theirs, or leave them out with short_users=drop")
        lost = sum(len(histories[w]) for w in short)
        note(f"interactions: left out {len(short)} of {len(histories)} users of {table.path} with fewer "
             f"than {FEWEST} interactions ({lost} interaction{'s' * (lost != 1)} in all; "
             f"short_users=drop), e.g. {example}")
        if len(short) == len(histories):
            raise DataError(f"{table.path}: every user has fewer than {FEWEST} interactions; nothing "
                            "is left to train on")
    left_out = set(short)
    kept = [who for who in histories if who not in left_out]
    return [_history(who, sorted(histories[who])) for who in kept]


def _history(who: str, events: list[tuple[float, int, str]]) -> Example:
    return {"user": who, "items": [item for _, _, item in events],
            "timestamps": [_plain(when) for when, _, _ in events]}


def moment(table: Table, where: str, value: str) -> float:
    """A timestamp as seconds: a number as it is, an ISO 8601 date or time (UTC unless it says)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds):
            raise DataError(f"{table.path}, {where}: timestamp {value!r} is not a finite number")
        return seconds
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise DataError(f"{table.path}, {where}: timestamp {value!r} is neither a number nor an ISO 8601 "
                        "date (2024-05-01, 2024-05-01T09:30:00)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _plain(when: float) -> int | float:
    return int(when) if when.is_integer() else when
