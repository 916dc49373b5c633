"""The machine attnlab runs on: where its cache lives, and which CPU it has (measurements are
only valid on the machine that took them)."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path


def cache_dir() -> Path:
    """attnlab's cache: ``$ATTNLAB_CACHE``, else ``~/.cache/attnlab``."""
    return Path(os.environ.get("ATTNLAB_CACHE", Path.home() / ".cache" / "attnlab"))


@functools.cache
def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
