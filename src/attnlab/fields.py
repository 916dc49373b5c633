"""Number fields the pydantic configs share (experiment files, objectives): never a boolean."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator


def not_bool(value: Any) -> Any:
    # YAML's `yes`/`true` would otherwise count as 1: a switch written where a number belongs
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Int = Annotated[int, BeforeValidator(not_bool)]
Real = Annotated[float, BeforeValidator(not_bool)]
