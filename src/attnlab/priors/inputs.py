"""The priors a model computes on each batch: ListOps parse trees and item genres as attention
inputs (`distances=`, `graph=`), registered in the models' knowledge registry.

Each kind is a module `prior(tokens, pad) -> {input: tensor}` built from the model config's
`prior` entry; `resolve(spec, prepared, exp)` fills in, once, what the entry needs from the
task's data (a genre table over the catalogue), so the saved config rebuilds the prior alone.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from attnlab.errors import ConfigError
from attnlab.models.knowledge import knowledge
from attnlab.priors.genres import GenreTable, genre_distances, genre_table
from attnlab.priors.trees import listops_parents, tree_distances, tree_neighbours

USES = ("distances", "neighbours")


class Prior(nn.Module):
    """What every prior kind has: the attention inputs it gives, and how a spec is completed."""

    kind: ClassVar[str]
    gives: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, spec: dict[str, Any], prepared: Any, exp: Any) -> dict[str, Any]:
        """`spec` completed with what it needs from the task's data (most need nothing)."""
        return spec

    @classmethod
    def wrap_encoders(cls, encoders: Any, spec: dict[str, Any]) -> Any:
        """The task's encoders as this prior needs its inputs made (most leave them be)."""
        return encoders


@knowledge("listops_tree")
class ListOpsTree(Prior):
    """ListOps' own parse tree (Nangia & Bowman, 2018), from the token ids: `use: distances`
    gives each pair's path length in the tree (for `graph_distance`), `use: neighbours` a
    graph where a token sees itself, its parent, its children and its siblings (for `graph`)."""

    def __init__(self, use: str = "distances") -> None:
        super().__init__()
        if use not in USES:
            raise ConfigError(f"prior listops_tree: use must be {' or '.join(USES)}, got {use!r}")
        self.use = use
        self.gives = ("distances",) if use == "distances" else ("graph",)

    def forward(self, tokens: Tensor, pad: Tensor | None) -> dict[str, Tensor]:
        parse = listops_parents(tokens)
        if self.use == "distances":
            return {"distances": tree_distances(parse.parents, parse.pad)}
        return {"graph": tree_neighbours(parse.parents, parse.pad)}

    def extra_repr(self) -> str:
        return f"use={self.use}"


@knowledge("item_genres")
class ItemGenres(Prior):
    """MovieLens genres as distances between the items of a history: 0 on the diagonal, 1 where
    two items share a genre, 2 where they share none, −1 at padding; `graph_distance(2)`
    then learns a same-genre bias per head. `genres` lists each model id's genre numbers
    (id 0, padding, none), filled in from the item file by `resolve`."""

    gives = ("distances",)

    def __init__(self, genres: list[list[int]] | None = None, names: list[str] | None = None) -> None:
        super().__init__()
        if genres is None or names is None:
            raise ConfigError("prior item_genres needs the genre table: train it on a "
                              "recommendation task whose items have genres (movielens-100k)")
        table = torch.zeros(len(genres), len(names), dtype=torch.bool)
        for i, row in enumerate(genres):
            table[i, row] = True
        self.register_buffer("table", table, persistent=False)  # rebuilt from the config
        self.names = tuple(names)

    @classmethod
    def resolve(cls, spec: dict[str, Any], prepared: Any, exp: Any) -> dict[str, Any]:
        from attnlab.data.datasets import movielens_genres

        catalogue = getattr(prepared.encoders, "items", None)
        if catalogue is None or exp.task.name != "movielens-100k":
            raise ConfigError(f"prior item_genres reads MovieLens-100k's genres; task "
                              f"{exp.task.name} has none")
        table = genre_table(catalogue, movielens_genres())
        rows = [torch.nonzero(r).flatten().tolist() for r in table.table]
        return {**spec, "genres": rows, "names": list(table.names)}

    def forward(self, tokens: Tensor, pad: Tensor | None) -> dict[str, Tensor]:
        return {"distances": genre_distances(tokens, GenreTable(self.table, self.names))}


def resolve_prior(spec: dict[str, Any] | None, prepared: Any, exp: Any) -> dict[str, Any] | None:
    """The model config's `prior` entry, completed from the task's data."""
    from attnlab.models.knowledge import KNOWLEDGE, build_prior

    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("kind") not in KNOWLEDGE:
        build_prior(spec)  # raises the error that names the kinds
    return KNOWLEDGE[spec["kind"]].resolve(dict(spec), prepared, exp)
