"""Reading a pickle made by code we do not have and must not run: a restricted unpickler turns each
allowed global into a plain stand-in and refuses every other one, and every persistent id.

A pickle can call any function it names (``os.system``, ``builtins.eval``) while it is read; only
the globals named in ``allowed`` can be named here, and they are ours, not the pickling program's.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from typing import Any

from attnlab.errors import DataError

Global = tuple[str, str]  # (module, name) as the pickle writes it


class Stored:
    """Stand-in for an object of a class we do not import: what the pickle gave it, as plain data.

    The pickle makes it with ``cls.__new__`` (NEWOBJ) and fills it through ``__setstate__`` (BUILD);
    ``state`` is then, for an ordinary object, the dict of its attributes.
    """

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


def stand_in(name: str) -> type[Stored]:
    """A ``Stored`` class named ``name``, so that a stand-in reads as what it replaces."""
    return type(name, (Stored,), {})


class SetItems(list):
    """Stand-in for ``ordered_set.OrderedSet``: its items, as a list. OrderedSet pickles its items
    as its state, or ``(None,)`` when it is empty."""

    def __setstate__(self, state: Any) -> None:
        self[:] = [] if state == (None,) else list(state)


class _Restricted(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: Mapping[Global, Any], where: str) -> None:
        super().__init__(io.BytesIO(data))
        self.allowed, self.where = allowed, where

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            known = ", ".join(f"{m}.{n}" for m, n in self.allowed)
            raise DataError(f"{self.where} names the global {module}.{name}, which is refused (only "
                            f"{known} are read): it is not the pickle attnlab expects")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.where} refers to data outside the pickle (persistent id {str(pid)[:60]!r}, "
                        "such as a tensor's storage), which is refused: it is not the pickle attnlab expects")


def restricted_load(data: bytes, allowed: Mapping[Global, Any], where: str) -> Any:
    """The object pickled in ``data``, where the pickle may name only the globals in ``allowed``
    (each mapped to what stands in for it). ``where`` names the pickle in messages.

    DataError for any other global, any persistent id, or a damaged pickle.
    """
    try:
        return _Restricted(data, allowed, where).load()
    except DataError:
        raise
    except Exception as err:  # a damaged pickle fails in many ways; each is a damaged file
        raise DataError(f"{where} is not a readable pickle ({type(err).__name__}: {err})") from err
