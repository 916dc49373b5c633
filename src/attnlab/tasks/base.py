"""`Task`: one kind of task as a plugin. It owns everything that differs between kinds: turning a
data set or generator into `TaskData`, which models fit and how they are shaped, the loss, the
scores and their baselines, the main metric, the encoders saved with a run, the predictor that
`attnlab.load(...)` returns and how `attnlab predict` prints. Training, loading and the CLI only
ask the task; none of them names a kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from attnlab.data.base import TaskData
from attnlab.data.encoding import class_ids, label_ids
from attnlab.errors import ConfigError, InputError
from attnlab.ids import IGNORE_INDEX
from attnlab.runfiles import load_tensors, reading

TEST_FILE = "test.pt"  # the encoded test split, so that `attnlab eval` needs no data set


@dataclass
class Prepared:
    """A task's three splits, ready to train on, and what made their ids."""

    train: TaskData
    validation: TaskData
    test: TaskData
    encoders: Any = None  # tokenizer and label names, item catalogue, pixel statistics, …
    test_examples: list[dict] | None = None  # raw test examples some scores read (BLEU's references)

    def head(self, sizes: dict[str, int | None]) -> Prepared:
        """Each split cut to at most `sizes[split]` examples (None: the whole split)."""
        cut = {s: getattr(self, s) if n is None else getattr(self, s).head(n) for s, n in sizes.items()}
        examples = self.test_examples
        if examples is not None and sizes.get("test") is not None:
            examples = examples[: sizes["test"]]
        return replace(self, **cut, test_examples=examples)


@dataclass(frozen=True)
class Step:
    """What one batch gives the loss: logits (K, classes), their labels (K,) and extra scores."""

    logits: Tensor
    labels: Tensor
    scores: dict[str, Tensor]

    def hits(self) -> tuple[Tensor, Tensor]:
        """(correct predictions, scored labels) of the batch: accuracy is their ratio."""
        scored = self.labels != IGNORE_INDEX
        return ((self.logits.argmax(-1) == self.labels) & scored).sum(), scored.sum()


@dataclass
class Picture:
    """An image whose patches are positions of a sequence: for heatmaps over the image."""

    pixels: Any  # (H, W) numpy array, raw grey levels
    grid: int  # patches per side
    first: int  # position of the first patch in the sequence (1 after a [CLS])


@dataclass
class Inspection:
    """One input made ready to look inside: the forward pass to record, and what each position of
    each attended sequence is, so a view can label it."""

    forward: Callable[[], Any]  # runs the model once, on the example (or a batch holding it)
    sequences: dict[str, list[str]]  # name -> a label per position ("tokens", "source", ...)
    layers: dict[str, tuple[str, str]]  # attention layer name -> (query sequence, key sequence)
    shown: dict[str, list[int]] = field(default_factory=dict)  # positions worth showing (no padding);
    # a sequence not named here is shown whole
    rollout: str | None = None  # the sequence whose self-attention layers rollout runs through
    picture: Picture | None = None  # for image runs: the image and where its patches sit
    title: str = ""  # one line: the input and what the model made of it
    notes: list[str] = field(default_factory=list)  # how to read this view (labels, conventions)
    row: int = 0  # which example of the forward's batch this is


@dataclass(frozen=True)
class Axis:
    """A dimension of an exported model's input that may change size: its name, and its largest
    size where the model has one (a table of learned positions)."""

    name: str
    max: int | None = None


class Task:
    """Base of the task kinds; the defaults fit token ids with one label per example or per
    position. A kind overrides what differs."""

    kind: ClassVar[str]  # the registry name: data sets and generators name their kind with it
    summary: ClassVar[str]
    models: ClassVar[tuple[str, ...]]  # model kinds that fit (`model.kind`); the first is the default
    pretrained_model: ClassVar[str | None] = None  # the kind `model.pretrained` asks for, if any
    main_metric: ClassVar[str] = "test_accuracy"  # what compare and runs show a run by
    monitor: ClassVar[str] = "val_accuracy"  # the validation score that picks the best checkpoint
    scores: ClassVar[tuple[str, ...]] = ()  # the extra scores its Step carries on validation
    # the kind's own task.params (whole numbers: a length, a vocabulary) and their defaults; the
    # rest of task.params are the data set's or file format's options (`read_examples`)
    settings: ClassVar[dict[str, int]] = {}

    def validation_metrics(self) -> tuple[str, ...]:
        """What validation logs: the names early stopping and the best checkpoint may watch."""
        return ("val_loss", "val_accuracy", *(f"val_{name}" for name in self.scores))

    # -- data ---------------------------------------------------------------------------------

    def prepare(self, exp, encoders: Any = None) -> Prepared:
        """The experiment's three splits. With `encoders` (a trained run's), real data is
        encoded with them instead of learning new ones."""
        raise NotImplementedError

    def loader(self, data: TaskData, batch: int, shuffle: bool, generator: torch.Generator) -> DataLoader:
        """Batches of (inputs, labels[, candidates][, alignments]); a shuffled loader draws from
        `generator`."""
        return DataLoader(TensorDataset(*data.tensors()), batch_size=batch, shuffle=shuffle,
                          generator=generator)

    # -- model --------------------------------------------------------------------------------

    def model_settings(self, exp, data: TaskData) -> dict[str, Any]:
        """What the data decides about a model (vocabulary, classes, padding, length, programs);
        the experiment's `model` section fills in the rest."""
        return {"vocab_size": data.vocab_size, "max_len": data.inputs.shape[1],
                "programs": exp.attention}

    def model_kind(self, exp) -> str:
        """The model kind the experiment asks for: `model.kind`, or the task's default (its
        pretrained one with `model.pretrained`)."""
        pretrained = exp.model.pretrained
        if pretrained and self.pretrained_model is None:
            raise ConfigError(f"model.pretrained: {exp.task.name} is {_article(self.kind)} {self.kind} "
                              "task, which cannot start from a pretrained model yet (text "
                              "classification can)")
        kind = exp.model.kind or (self.pretrained_model if pretrained else self.models[0])
        if kind not in self.models:
            raise ConfigError(f"model.kind {kind} does not fit {exp.task.name}, {_article(self.kind)} "
                              f"{self.kind} task; it takes model.kind {' or '.join(self.models)}")
        if (kind == self.pretrained_model) != bool(pretrained):
            raise ConfigError(f"model.kind {kind} " + ("starts from a pretrained model: give model."
                              "pretrained" if pretrained is None else "is trained from scratch: "
                              "leave out model.pretrained, or model.kind"))
        return kind

    def with_prior(self, exp, encoders: Any) -> Any:
        """`encoders` as the model's prior needs its inputs made (K-BERT inserts knowledge into
        texts); unchanged without a prior."""
        from attnlab.models.knowledge import KNOWLEDGE

        spec = exp.model.prior
        kind = KNOWLEDGE.get(spec.get("kind")) if isinstance(spec, dict) else None
        return encoders if kind is None or encoders is None else kind.wrap_encoders(encoders, spec)

    def build_model(self, exp, data: TaskData, steps: int = 0):
        """The model `exp.model.kind` names (by default this task's), shaped for `data`; `steps`
        is the run's optimiser steps (an AdaLoRA adapter plans over them)."""
        from attnlab.models import model_class

        given = {k: v for k, v in exp.model.model_dump().items() if v is not None and k != "kind"}
        run = {"adapter": exp.adapter.model_dump() if exp.adapter else None, "steps": steps,
               "seed": exp.train.seed}
        return model_class(self.model_kind(exp)).from_settings({
            **run, **given, **self.model_settings(exp, data),
            **({"max_len": exp.model.max_len} if exp.model.max_len else {})})

    # -- training -----------------------------------------------------------------------------

    def step(self, model: nn.Module, batch: tuple[Tensor, ...]) -> Step:
        """Logits and labels of one batch, flattened to (K, classes) and (K,)."""
        tokens, labels, *_ = batch
        logits = model(tokens)
        if labels.dim() == 1:
            return Step(logits, labels, {})
        return Step(logits.flatten(0, 1), labels.flatten(), {})

    def loss(self, step: Step) -> Tensor:
        return F.cross_entropy(step.logits.float(), step.labels, ignore_index=IGNORE_INDEX)

    def aligned_layers(self, model: nn.Module) -> list[str]:
        """The attention layers whose (query, key) positions the data's alignments are given in:
        for one sequence attending to itself, every layer."""
        return attention_layers(model)

    def test_scores(self, model: nn.Module, prepared: Prepared, exp, progress: bool) -> dict[str, float]:
        """Scores beyond loss and accuracy, each beside the baseline that says what it is worth."""
        return {}

    # -- saving and predicting ----------------------------------------------------------------

    def save(self, prepared: Prepared, out: Path) -> None:
        """What `load` and `evaluate` need besides the model: the encoders and the test split."""
        test = prepared.test
        torch.save({"inputs": test.inputs, "labels": test.labels, "candidates": test.candidates,
                    "alignments": test.alignments, "fields": json.dumps(_fields(test))},
                   out / TEST_FILE)
        self.save_encoders(prepared.encoders, out)

    def save_encoders(self, encoders: Any, out: Path) -> None:
        """Files that turn raw input into ids (a generated task has none)."""

    def load_encoders(self, out: Path, exp) -> Any:
        return None

    def load_test(self, out: Path, exp) -> Prepared | None:
        """The saved test split (and encoders), or None for a run saved without one."""
        if not (out / TEST_FILE).exists():
            return None
        saved = load_tensors(out / TEST_FILE)
        with reading(out / TEST_FILE):
            test = TaskData(saved["inputs"], saved["labels"], candidates=saved["candidates"],
                            alignments=saved.get("alignments"), **json.loads(saved["fields"]))
        # only the test split is saved; it stands in for the other two, which nothing reads here
        return Prepared(test, test, test, self.load_encoders(out, exp), self.load_test_examples(out))

    def load_test_examples(self, out: Path) -> list[dict] | None:
        return None

    def predictor(self, model: nn.Module, encoders: Any, exp) -> nn.Module:
        """What `attnlab.load` returns: the model, wrapped with what reads raw input if any."""
        return model

    def print_predictions(self, predictor: nn.Module, inputs: list[str], exp, echo, *, k: int) -> None:
        """`attnlab predict`: one line (or a few) per input, through `echo(text)`."""
        raise InputError(f"{exp.name} was trained on a generated task ({self.kind}), which has no "
                         "text to read; predict needs a run on a real data set (attnlab data list)")

    # -- export (attnlab.deploy) ------------------------------------------------------------------

    def export_inputs(self, batch: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """What the model's forward takes for one loader batch, as `step` gives it: token ids
        (B, N) by default."""
        return (batch[0],)

    def export_axes(self, model: nn.Module) -> tuple[dict[int, Axis], ...]:
        """Per input of `export_inputs`, the dims an export leaves free: batch and length."""
        return ({0: Axis("batch"), 1: Axis("seq", longest(model))},)

    def compare_exported(self, eager: nn.Module, exported: nn.Module, prepared: Prepared,
                         exp) -> dict[str, Any]:
        """What an export's check compares beyond the forward's outputs, between the predictor
        of the model and that of its export (a translator's translations); nothing by default."""
        return {}

    # -- serving (attnlab.deploy.serve) -----------------------------------------------------------

    def service(self, predictor: nn.Module, exp) -> Any:
        """What `attnlab serve` offers for a run of this kind: an `attnlab.tasks.service.Service`
        (route, request body, batched answers); None for a kind with no raw input to serve."""
        return None

    # -- looking inside -------------------------------------------------------------------------

    def inspection(self, model: nn.Module, encoders: Any, exp, *, text: str | None = None,
                   image: Any = None, example: Tensor | None = None) -> Inspection:
        """`attnlab inspect`: one input (`text`, an `image` array, or `example`, a row (1, ...)
        of the saved test split) made ready to record. The default reads token ids: the text
        is whitespace-separated ids, and every position is labelled by its id."""
        if image is not None:
            raise InputError(f"{exp.name} reads token ids, not images: give text or --example N")
        if example is None:
            example = _ids_from_text(text, self.kind)
        ids = example[:1]
        vocab = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab is not None and int(ids.max()) >= vocab:
            raise InputError(f"token id {int(ids.max())} is outside the run's vocabulary of {vocab}")
        labels = [str(i) for i in ids[0].tolist()]
        pad = getattr(model, "pad_id", None)
        real = [i for i, t in enumerate(ids[0].tolist()) if t != pad]
        if getattr(model, "cls", None) is not None:  # the model puts a learned [CLS] in front
            labels, real = ["[CLS]", *labels], [0, *(i + 1 for i in real)]
        return Inspection(lambda: model(ids), {"tokens": labels},
                          {name: ("tokens", "tokens") for name in attention_layers(model)},
                          shown={"tokens": real}, rollout="tokens",
                          title=f"{exp.name}: {ids.shape[1]} token ids",
                          notes=["tokens are shown as their ids" + (f"; padding ({pad}) is left out"
                                                                     if pad is not None else "")])

    # -- faithfulness: what an explanation ranks and how erasing works (classifiers only) -------

    def units(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """(B, S) bool over the model's attention sequence: the input units an explanation ranks
        and erasing removes (tokens, patches); never [CLS] or padding."""
        raise self._not_erasable()

    def readout(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """(B, S): the rows of the last layer the classifier reads (its pooling), as weights that
        sum to one per example."""
        raise self._not_erasable()

    def erase(self, model: nn.Module, inputs: Tensor, keep: Tensor) -> Tensor:
        """`inputs` with each unit where `keep` (B, S, over the attention sequence) is False
        erased; positions that are not units are never erased."""
        raise self._not_erasable()

    def erasing(self) -> str:
        """How `erase` erases, in words, for reports."""
        raise self._not_erasable()

    def trim(self, model: nn.Module, inputs: Tensor) -> Tensor:
        """`inputs` without what cannot change the model's output, so that erased inputs run
        faster (by default: as they are)."""
        return inputs

    def _not_erasable(self) -> InputError:
        return InputError(f"faithfulness needs a classification run whose inputs can be erased "
                          f"(text or images); this run's task kind, {self.kind}, has none")


class Classifier(nn.Module):
    """A trained classifier (`.model`) with its encoder, which makes raw inputs (texts, images,
    frames) into the model's: `predict(inputs)` gives label names. Called on encoded inputs it is
    the bare model: logits (B, classes). A kind says how its raw inputs are encoded (`encode`)."""

    def __init__(self, model: nn.Module, encoder: Any) -> None:
        super().__init__()
        self.model, self.encoder, self.label_names = model, encoder, encoder.label_names

    def forward(self, inputs: Tensor) -> Tensor:
        return self.model(inputs)

    def encode(self, inputs: Any) -> Tensor:
        """Raw inputs as the model's batch."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_proba(self, inputs: Any) -> Tensor:
        """Class probabilities (N, classes), in the order of `label_names`."""
        return self.model(self.encode(inputs)).softmax(-1)

    def predict(self, inputs: Any) -> list[str]:
        """The most probable label name for each input."""
        return [self.label_names[i] for i in self.predict_proba(inputs).argmax(-1).tolist()]

    def print_best(self, inputs: Any, shown: list[str], echo: Callable[[str], None]) -> None:
        """`attnlab predict`: `label<TAB>probability<TAB>input` per input, `shown` naming each."""
        for name, row in zip(shown, self.predict_proba(inputs), strict=True):
            best = int(row.argmax())
            echo(f"{self.label_names[best]}\t{row[best]:.3f}\t{name}")


@dataclass(frozen=True)
class Examples:
    """A real data set's splits as the experiment asks for them."""

    splits: dict[str, list[dict]]  # train / validation / test examples
    options: dict[str, Any]  # the data set's own options (what a cached tokenizer is keyed by)
    settings: dict[str, Any]  # the task's own parameters, defaults filled in


def read_examples(exp) -> Examples:
    """`exp.task.params` split into the task kind's settings (`Task.settings`, defaults filled in)
    and the data set's or file format's options, and the data read with those options."""
    from attnlab.data.datasets import LOAD_OPTIONS, dataset, load
    from attnlab.data.files import FORMATS
    from attnlab.tasks import task_of

    defaults = task_of(exp.task).settings
    options = dict(exp.task.params)
    settings = {key: options.pop(key, default) for key, default in defaults.items()}
    for key, value in settings.items():  # every task setting is a count: a length, a vocabulary
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**31:
            raise ConfigError(f"task.params.{key}: a whole number from 1 (default {defaults[key]}), "
                              f"got {value!r:.60}")
    source = FORMATS.get(exp.task.name) or dataset(exp.task.name)
    source.check_options(options, beside=(*LOAD_OPTIONS, *defaults))  # lists them all
    return Examples(load(exp.task.name, seed=exp.train.seed, **options), options, settings)


def class_labels(task_config, splits: dict[str, list[dict]], encoders: Any,
                 fit: Callable[[tuple[str, ...]], Any]) -> tuple[Any, dict[str, Tensor]]:
    """A classifier's encoders and each split's labels as class ids. Without `encoders` (a trained
    run's), the classes are the training split's labels and `fit(label names)` makes the encoders;
    `task.positive` (the class whose F1 is reported) must be one of them."""
    name = task_config.name
    if encoders is None:
        names, labels = class_ids(name, splits)
        encoders = fit(names)
    else:
        labels = {s: label_ids(name, s, ex, encoders.label_names) for s, ex in splits.items()}
    names, positive = encoders.label_names, task_config.positive
    if positive is not None and positive not in names:
        raise ConfigError(f"task.positive: '{positive}' is not a label of {name}; its labels "
                          f"are {', '.join(names)}")
    return encoders, labels


def attention_layers(model: nn.Module) -> list[str]:
    """The names of the model's attention layers (what `attnlab.record` records), in order."""
    from attnlab.nn.recorder import recordable

    return list(recordable(model).values())


def longest(model: nn.Module) -> int | None:
    """The longest sequence the model reads (its `config.max_len`), or None."""
    return getattr(getattr(model, "config", None), "max_len", None)


def _ids_from_text(text: str | None, kind: str) -> Tensor:
    """(1, N) ids from "3 14 15 9" (a generated task has no tokenizer)."""
    words = (text or "").replace(",", " ").split()
    if not words or not all(w.isdigit() for w in words):
        raise InputError(f"a {kind} run reads token ids: give them as numbers separated by spaces "
                         f"(\"3 14 15\"), or --example N; got {text!r:.60}")
    return torch.tensor([[int(w) for w in words]])

def with_learned_cls(model: nn.Module, per_input: Tensor) -> Tensor:
    """(B, S) from (B, L) per input position: a False column first where the model prepends a
    learned [CLS] (EncoderClassifier and ViT with pooling='cls'), whose row is no input."""
    if getattr(model, "cls", None) is None:
        return per_input
    return torch.cat([per_input.new_zeros(per_input.shape[0], 1), per_input], dim=1)


def pooled_rows(model: nn.Module, pooled: Tensor) -> Tensor:
    """(B, S) weights of the rows a classifier's head reads, `pooled` (B, S bool) being the rows
    its pooling may read: the model's own pooling rule applied to the identity."""
    from attnlab.models.base import pool

    identity = torch.eye(pooled.shape[1], device=pooled.device).expand(len(pooled), -1, -1)
    return pool(identity, pooled, model.pooling)


def _fields(data: TaskData) -> dict[str, Any]:
    """TaskData's plain fields (not its tensors), for JSON."""
    return {"vocab_size": data.vocab_size, "num_classes": data.num_classes, "pad_id": data.pad_id,
            "label_names": list(data.label_names) if data.label_names else None,
            "target_vocab_size": data.target_vocab_size}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"
