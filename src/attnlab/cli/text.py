"""Printing what a person or a data set wrote, literally: never read as Rich markup or emoji codes,
and control characters shown as escapes (\\x1b) instead of reaching the terminal."""

from __future__ import annotations

import re

from rich.text import Text

# C0 and C1 controls except tab and newline (which the CLI's own layouts use), DEL, and the
# bidirectional overrides that make a terminal show text in another order than it is
_HIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """`text` with each control character written as its escape: \\x1b, \\r, \\u202e."""
    return _HIDDEN.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def literal(text: str, style: str = "") -> Text:
    """`text` as Rich prints it character for character (a Text is never parsed for markup)."""
    return Text(shown(text), style=style)
