"""attnlab's exceptions: every user-facing problem is one of these, with a message a person can act on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AttnlabError(Exception):
    """Base of every error attnlab raises on purpose."""


class ProgramError(AttnlabError, ValueError):
    """An attention program is malformed: a bad name, argument, combination or string."""


class ConfigError(AttnlabError, ValueError):
    """An experiment, task or model setting is wrong: a bad key, value, name or combination."""


class InputError(AttnlabError, ValueError):
    """The tensors or call-time inputs given to attention do not fit the program."""


class DataError(AttnlabError):
    """A real data set cannot be read: its source is missing, altered, or an option is wrong."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' — did you mean 'x'?' for the nearest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


class RunFolderError(ConfigError):
    """A run folder cannot be used: a file is missing, damaged, altered, unsafe, or in use."""


class UnsafeFileError(RunFolderError):
    """A run-folder file holds more than tensors and plain data: loading it could run code, so it
    is refused unopened."""


class ExportError(AttnlabError):
    """A model cannot be exported, its export does not compute what it computes, or a file is
    not an attnlab export (attnlab.deploy)."""
