"""Tasks on generated data (`attnlab.data.make`): next-token tasks such as MQAR, copying and
induction heads, and whole-sequence classification such as ListOps. Each split is a pure function
of the seed, so nothing needs saving but the test split."""

from __future__ import annotations

import inspect
from typing import Any

from attnlab.data import SPLITS, make
from attnlab.data.base import TaskData
from attnlab.ids import IGNORE_INDEX
from attnlab.tasks.alignments import position_scores
from attnlab.tasks.base import Prepared, Step, Task
from attnlab.train.metrics import classification_scores

GENERATED_SIZES = {"train": 10_000, "validation": 1_000, "test": 1_000}  # examples, unless the file says


class Generated(Task):
    """Splits from the task's generator and seed."""

    def prepare(self, exp, encoders: Any = None) -> Prepared:
        t = exp.task
        return Prepared(*(make(t.name, split, num_examples=t.examples(split) or GENERATED_SIZES[split],
                               seed=exp.train.seed, **t.params) for split in SPLITS))


class LanguageModelling(Generated):
    kind = "language-modelling"
    summary = "a target at every position, predicted from the tokens before it"
    models = ("decoder_lm", "recommender")

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        return {**super().model_settings(exp, data), "num_items": data.vocab_size - 1}

    def step(self, model, batch) -> Step:
        tokens, labels, *_ = batch
        if "select" in inspect.signature(model.forward).parameters:
            scored = labels != IGNORE_INDEX  # project onto the vocabulary only where a target is
            # (MQAR scores 4 positions of 64)
            return Step(model(tokens, select=scored), labels[scored], {})
        return super().step(model, batch)

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        if prepared.test.alignments is None:
            return {}
        # where attention looks against where the answer is (copy, MQAR, …)
        return position_scores(model, self, prepared.test, exp)


class SequenceClassification(Generated):
    kind = "sequence-classification"
    summary = "one label per generated sequence"
    models = ("encoder_classifier",)

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        return {**super().model_settings(exp, data), "num_classes": data.num_classes,
                "pad_id": data.pad_id, "pooling": exp.model.pooling}

    def test_scores(self, model, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        return classification_scores(model, prepared.test, exp.train.batch_size, None)
