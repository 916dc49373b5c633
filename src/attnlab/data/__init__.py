"""Data for training and probing attention: generated tasks (``make``), each a deterministic function of a
seed, and real data sets read from files that packages ship (``load``)."""

from attnlab.data.base import SPLITS, TaskData, split_seed
from attnlab.data.datasets import DATASETS, DatasetInfo, load, options_carried_over
from attnlab.data.generators import GENERATORS, GeneratorInfo, make
from attnlab.data.listops import LISTOPS_TOKENS, listops
from attnlab.data.mqar import mqar
from attnlab.data.synthetic import copy, induction_head, selective_copy

__all__ = ["DATASETS", "GENERATORS", "LISTOPS_TOKENS", "SPLITS", "DatasetInfo", "GeneratorInfo", "TaskData",
           "copy", "induction_head", "listops", "load", "make", "mqar", "options_carried_over",
           "selective_copy", "split_seed"]
