"""Readers for the recommendation sets: one ``{"user", "items", "timestamps"}`` history per user, in time
order, item ids as the file writes them."""

from __future__ import annotations

from pathlib import Path

from attnlab.data.datasets.base import Example, read_lines, require_header
from attnlab.errors import DataError

INTER, ITEM = "ml-100k.inter", "ml-100k.item"
INTER_COLUMNS = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
ITEM_COLUMNS = ("item_id:token", "movie_title:token_seq", "release_year:token")
GENRE_COLUMN = "class:token_seq"  # RecBole's name for the genres, space-separated
NO_GENRE = "unknown"  # what the file says of an item without a genre (items 267 and 1373)
MIN_HISTORY = 3  # leave-one-out takes the last item for test and one for validation, and train needs one


def movielens_100k(where: Path) -> list[Example]:
    """MovieLens 100K ratings as implicit feedback: every rating is an interaction, whatever its value.

    One example per user, ordered by user id as a number: ``items`` (item ids, strings) and
    ``timestamps`` (seconds, ints), sorted by time; ratings in the same second keep their file order.
    ``where`` is the folder holding ml-100k.inter, or that file.
    """
    file = _file(where, INTER)
    lines = read_lines(file)
    require_header(file, lines[0].split("\t") if lines else None, INTER_COLUMNS)
    histories: dict[str, list[tuple[int, str]]] = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        seconds = _number(fields[3]) if len(fields) == 4 else None
        if seconds is None or not seconds.is_integer() or not fields[0].isdigit():
            raise DataError(f"{file}, line {number}: expected a numeric user id, an item id, a rating and "
                            f"a timestamp in whole seconds, tab-separated; got {line[:80]!r}")
        histories.setdefault(fields[0], []).append((int(seconds), fields[1]))
    examples = []
    for user in sorted(histories, key=int):
        ratings = sorted(histories[user], key=lambda rating: rating[0])  # stable: ties keep file order
        if len(ratings) < MIN_HISTORY:
            raise DataError(f"{file}: user {user} has {len(ratings)} ratings; leave-one-out needs at least "
                            f"{MIN_HISTORY} per user (MovieLens 100K has 20 or more)")
        examples.append({"user": user, "items": [item for _, item in ratings],
                         "timestamps": [seconds for seconds, _ in ratings]})
    return examples


def item_titles(where: Path) -> dict[str, str]:
    """Item id → ``"Title (year)"`` from ml-100k.item (``where`` is its folder, or the file).

    The year is left out where the file has none: item 267 is ``unkonwn`` in both columns, and item
    1412's title already ends with its year.
    """
    file = _file(where, ITEM)
    try:
        lines = read_lines(file)
    except UnicodeDecodeError as err:  # RecBole's copy is UTF-8; GroupLens's own u.item is Latin-1
        raise DataError(f"{file}: not UTF-8 ({err}); give RecBole's ml-100k.item") from err
    require_header(file, lines[0].split("\t") if lines else None, ITEM_COLUMNS)
    titles = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) < len(ITEM_COLUMNS):
            raise DataError(f"{file}, line {number}: expected an item id, a title and a year, tab-separated; "
                            f"got {line[:80]!r}")
        item, title, year = fields[:3]
        titles[item] = f"{title} ({year})" if len(year) == 4 and year.isdigit() else title
    return titles


def item_genres(where: Path) -> dict[str, tuple[str, ...]]:
    """Item id → its genres, in the file's order (``("Animation", "Children's", "Comedy")``), from the
    ``class`` column of ml-100k.item (``where`` is its folder, or the file). The two items the file
    marks ``unknown`` have no genre: ``()``. MovieLens's 18 genres are single words (``Sci-Fi``,
    ``Film-Noir``, ``Children's``), so spaces separate them."""
    file = _file(where, ITEM)
    try:
        lines = read_lines(file)
    except UnicodeDecodeError as err:
        raise DataError(f"{file}: not UTF-8 ({err}); give RecBole's ml-100k.item") from err
    require_header(file, lines[0].split("\t") if lines else None, (*ITEM_COLUMNS, GENRE_COLUMN))
    genres = {}
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(ITEM_COLUMNS) + 1:
            raise DataError(f"{file}, line {number}: expected an item id, a title, a year and genres, "
                            f"tab-separated; got {line[:80]!r}")
        genres[fields[0]] = tuple(genre for genre in fields[3].split() if genre != NO_GENRE)
    return genres


def _file(where: Path, name: str) -> Path:
    """``where`` itself, or the file ``name`` in the folder ``where``."""
    if not where.is_dir():
        return where
    if not (where / name).is_file():
        raise DataError(f"movielens-100k: no {name} in '{where}'")
    return where / name


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
