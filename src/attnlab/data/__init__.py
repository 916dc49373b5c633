"""Generated tasks for training and probing attention, each a deterministic function of a seed."""

from attnlab.data.base import IGNORE_INDEX, SPLITS, TaskData, split_seed
from attnlab.data.listops import LISTOPS_TOKENS, listops
from attnlab.data.mqar import mqar
from attnlab.data.registry import TASKS, TaskInfo, make
from attnlab.data.synthetic import copy, induction_head, selective_copy

__all__ = ["IGNORE_INDEX", "LISTOPS_TOKENS", "SPLITS", "TASKS", "TaskData", "TaskInfo", "copy",
           "induction_head", "listops", "make", "mqar", "selective_copy", "split_seed"]
