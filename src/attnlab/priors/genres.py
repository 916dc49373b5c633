"""Item genres as structure for attention: a multi-hot genre table over a recommender's model ids,
and for a batch of item histories the "same genre" distances a ``graph_distance`` bias reads.

The compact form is the table, (n + 1, G) bool: ``genre_distances`` expands a batch (B, L) of model
ids to (B, L, L) when attention needs it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlab.errors import DataError, InputError
from attnlab.ids import PAD_ID

SAME, DIFFERENT = 1, 2  # the distances of two items that share a genre, and of two that do not


@dataclass(frozen=True)
class GenreTable:
    """``table[i, g]``: model id i has genre ``names[g]``; row 0 (padding) has none. Model ids are the
    recommendation task's: ``catalogue[i - 1]`` is the data set's id of model id i."""

    table: Tensor  # (n + 1, G) bool
    names: tuple[str, ...]


def genre_table(catalogue: Sequence[str], genres: Mapping[str, Sequence[str]]) -> GenreTable:
    """The genres of each model id 1…n, where ``catalogue[i - 1]`` is the data set's id of model id i
    (``ItemIndex.items`` of the recommendation task) and ``genres`` maps data-set ids to genres
    (``attnlab.data.datasets.movielens_genres()``). Genres are sorted by name. DataError naming the
    items ``genres`` lacks: the catalogue and the genre file would be of different sets."""
    missing = [item for item in catalogue if item not in genres]
    if missing:
        raise DataError(f"no genres for {len(missing)} of the catalogue's {len(catalogue)} items "
                        f"({', '.join(missing[:5])}); are the genres of the same data set?")
    names = tuple(sorted({genre for item in catalogue for genre in genres[item]}))
    column = {name: g for g, name in enumerate(names)}
    table = torch.zeros((len(catalogue) + 1, len(names)), dtype=torch.bool)
    for i, item in enumerate(catalogue, 1):
        table[i, [column[genre] for genre in genres[item]]] = True
    return GenreTable(table, names)


def genre_distances(items: Tensor, genres: GenreTable, pad_id: int = PAD_ID) -> Tensor:
    """(B, L, L) long for a batch of model ids (B, L): 0 on the diagonal, 1 (``SAME``) where the two
    items share at least one genre, 2 (``DIFFERENT``) where they share none (an item without a genre
    shares none, not even with itself at another position), and -1 wherever either is padding
    (``pad_id``). So a ``graph_distance`` bias learns a same-genre bonus in its row 1."""
    if not isinstance(items, Tensor) or items.dim() != 2 or items.is_floating_point():
        got = getattr(items, "shape", type(items).__name__)
        raise InputError(f"items must be model ids (B, L), got {got}")
    size = genres.table.shape[0]
    if items.numel() and (int(items.min()) < 0 or int(items.max()) >= size):
        raise InputError(f"model ids run from 0 to {size - 1} in this genre table, got {int(items.min())} "
                         f"to {int(items.max())}")
    hot = genres.table.to(items.device, torch.float32)[items]  # (B, L, G)
    shared = torch.bmm(hot, hot.transpose(1, 2)) > 0
    distance = torch.where(shared, SAME, DIFFERENT)
    distance.diagonal(dim1=1, dim2=2).zero_()
    pad = items == pad_id
    return distance.masked_fill_(pad.unsqueeze(2) | pad.unsqueeze(1), -1)


def genre_coverage(genres: Mapping[str, Sequence[str]]) -> dict[str, float | int | dict[str, int]]:
    """How well genres cover the items: ``items``, ``without`` (no genre), ``several`` (two or more),
    ``mean`` genres an item, and ``per_genre`` (items of each genre, most first)."""
    counts = [len(found) for found in genres.values()]
    per_genre = Counter(genre for found in genres.values() for genre in found)
    return {"items": len(counts), "without": sum(c == 0 for c in counts),
            "several": sum(c >= 2 for c in counts), "mean": sum(counts) / max(1, len(counts)),
            "per_genre": dict(per_genre.most_common())}
