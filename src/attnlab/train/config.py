"""Experiment files: one YAML document says the task, the model, the attention programs and
how to train. Validated by pydantic; every mistake becomes a ConfigError that names the key."""

from __future__ import annotations

import copy
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from attnlab.errors import ConfigError, ProgramError, did_you_mean
from attnlab.fields import Int, Real
from attnlab.lang.program import Program, parse
from attnlab.objectives import AnyObjective


def _parse_programs(value: Any) -> Any:
    """One program, one per layer, or head groups [(program, heads), ...], parsed here once: the
    rest of attnlab receives Program objects. A ProgramError (a ValueError) keeps its caret and
    pydantic names the key."""
    if value is None or isinstance(value, Program):
        return value
    if isinstance(value, str):
        return parse(value)
    if not isinstance(value, list | tuple):
        raise ProgramError(f"expected a program, a list of one per layer, or head groups "
                           f"[[program, heads], ...], got {short(value)}")
    return [_parse_programs(v) if isinstance(v, str | Program) else
            [(_parse_programs(g[0]), g[1]) for g in _groups(v)] for v in value]


def _groups(value: Any) -> list:
    if not isinstance(value, list | tuple) or not all(
            isinstance(g, list | tuple) and len(g) == 2 and isinstance(g[0], str | Program)
            and isinstance(g[1], int) and not isinstance(g[1], bool) and g[1] >= 1 for g in value):
        raise ProgramError(f"a layer's entry is a program or head groups [[program, heads], ...] "
                           f"with heads ≥ 1, got {short(value)}")
    return list(value)


def _texts(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, Program):
        return str(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return [str(value[0]), value[1]]
    return [_texts(v) for v in value]


# One program, or one per layer (a layer's entry may be head groups); Programs inside, text outside.
Programs = Annotated[Any, BeforeValidator(_parse_programs), PlainSerializer(_texts)]


# Numbers (attnlab.fields): never a boolean; floats are finite (the models forbid inf and nan),
# every field has a range.
MANY = 10**9  # examples, steps: more than any run here will take
WIDE = 2**16  # widths, heads, layers, lengths, batches: far beyond what fits in memory

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
SEED_LIMIT = 2**32  # numpy and Lightning seed with 32 bits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                              allow_inf_nan=False)


class TaskConfig(_Strict):
    """Which generated task or data set, its parameters, and how many examples per split."""

    name: str = Field(min_length=1)
    kind: str | None = Field(None, min_length=1)  # the task kind (attnlab.tasks); default: the
    # data set's or generator's
    params: dict[str, Any] = Field(default_factory=dict)
    # generated tasks: how many to generate (default 10,000 / 1,000 / 1,000); real data sets:
    # the whole split unless a number caps it
    train_examples: Int | None = Field(None, ge=1, le=MANY)
    val_examples: Int | None = Field(None, ge=1, le=MANY)
    test_examples: Int | None = Field(None, ge=1, le=MANY)
    positive: str | None = Field(None, min_length=1)  # classification: the class whose F1 is
    # reported (test_f1)

    def examples(self, split: str) -> int | None:
        """How many examples of `split` (train, validation, test) to use; None: the default."""
        return {"train": self.train_examples, "validation": self.val_examples,
                "test": self.test_examples}[split]


class ModelConfig(_Strict):
    """Model size and shape; `kind` defaults to what the task needs. `pretrained` starts from a
    pretrained model (attnlab.hf.PRETRAINED), which brings its own size and shape."""

    kind: Literal["decoder_lm", "encoder_classifier", "vit", "seq2seq", "recommender",
                  "pretrained_classifier"] | None = None
    pretrained: str | None = Field(None, min_length=1)
    d_model: Int = Field(64, ge=1, le=WIDE)
    layers: Int = Field(2, ge=1, le=1024)
    heads: Int = Field(4, ge=1, le=WIDE)
    kv_heads: Int | None = Field(None, ge=1, le=WIDE)
    positions: Literal["learned", "sinusoidal", "rotary", "none"] = "learned"
    max_len: Int | None = Field(None, ge=1, le=2**24)
    dropout: Real = Field(0.0, ge=0, lt=1)
    pooling: Literal["mean", "cls", "first", "last"] = "mean"
    patch_size: Int = Field(4, ge=1, le=WIDE)  # ViT: image patches of patch_size × patch_size pixels
    # knowledge made attention inputs per batch: {kind: listops_tree, use: distances}, … (priors)
    prior: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _pretrained_has_its_shape(self) -> ModelConfig:
        # (a saved experiment.yaml holds every default: those are not the user's)
        shaped = sorted(k for k in _SHAPE if getattr(self, k) != type(self).model_fields[k].default)
        if self.pretrained and shaped:
            raise ValueError(f"{shaped[0]}: a pretrained model has its own size and shape; leave "
                             f"out {', '.join(shaped)}")
        return self


_SHAPE = {"d_model", "layers", "heads", "kv_heads", "positions", "patch_size"}


class AdapterConfig(_Strict):
    """Fine-tune a pretrained model through a peft adapter instead of all its weights."""

    method: Literal["lora", "dora", "ia3", "adalora"] = "lora"
    r: Int = Field(8, ge=1, le=4096)  # rank (AdaLoRA: the average rank it prunes down to)
    alpha: Real | None = Field(None, gt=0, le=1e6)  # LoRA's scale is alpha / r; default 2r
    dropout: Real = Field(0.0, ge=0, lt=1)
    targets: list[str] | None = None  # module names; default: peft's for the model family


class DecodeConfig(_Strict):
    """How a translation run decodes its test split (and `predict`)."""

    beam_size: Int = Field(4, ge=1, le=1024)  # 1 is greedy
    length_penalty: Real = Field(1.0, ge=0, le=100)
    max_len: Int | None = Field(None, ge=1, le=2**24)  # new tokens at most; default the task's max_len


class EarlyStopping(_Strict):
    """Stop when `monitor` (a validation metric the task logs) has not improved for `patience`
    validations, or once it passes `threshold` (above it for max, below for min); `mode`
    defaults to min for a loss, max for a score."""

    monitor: str = "val_accuracy"
    patience: Int = Field(3, ge=1, le=MANY)
    mode: Literal["max", "min"]
    threshold: Real | None = Field(None, ge=-1e12, le=1e12)  # stop once monitor passes it

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mode" not in data:
            return {**data, "mode": "min" if _is_loss(data.get("monitor", "")) else "max"}
        return data

    @model_validator(mode="after")
    def _mode_fits_monitor(self) -> EarlyStopping:
        wanted = "min" if _is_loss(self.monitor) else "max"
        if self.mode != wanted:  # the other way round stops at the first validation
            raise ValueError(f"{self.monitor} {'falls' if wanted == 'min' else 'rises'} as the "
                             f"model improves: give mode: {wanted} (or leave mode out)")
        return self


def _is_loss(monitor: Any) -> bool:
    return isinstance(monitor, str) and monitor.endswith("loss")


class TrainConfig(_Strict):
    """How to optimise: budget, batch, learning rate and schedule, regularisation, seed."""

    epochs: Int | None = Field(None, ge=1, le=MANY)
    steps: Int | None = Field(None, ge=1, le=MANY)
    batch_size: Int = Field(64, ge=1, le=WIDE)
    lr: Real = Field(1e-3, gt=0, le=10)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: Int = Field(0, ge=0, le=MANY)
    weight_decay: Real = Field(0.1, ge=0, le=10)
    precision: Literal["32", "bf16"] = "32"
    accumulate: Int = Field(1, ge=1, le=WIDE)
    clip: Real | None = Field(1.0, gt=0, le=1e6)
    early_stopping: EarlyStopping | None = None
    seed: Int = Field(0, ge=0, lt=SEED_LIMIT)
    devices: Int = Field(1, ge=1, le=1024)
    validate_every: Int | None = Field(None, ge=1, le=MANY)  # optimiser steps; default each epoch

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.epochs is None and self.steps is None:
            raise ValueError("give train.epochs or train.steps")
        return self


class Experiment(_Strict):
    """The whole experiment file."""

    name: str  # the run's folder is runs/NAME: a plain name, never a path
    task: TaskConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    attention: Programs = Field("scaled_dot ; softmax", validate_default=True)
    # seq2seq only: the decoder's self-attention (default: `attention` with `causal` added to its
    # mask, so one program is compared throughout) and the cross-attention (default softmax)
    decoder_attention: Programs = None
    cross_attention: Programs = None
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    adapter: AdapterConfig | None = None  # with model.pretrained: train a peft adapter only
    objectives: list[AnyObjective] = Field(default_factory=list)  # losses on the attention itself
    train: TrainConfig

    @model_validator(mode="after")
    def _adapter_needs_pretrained(self) -> Experiment:
        if self.adapter is not None and not self.model.pretrained:
            raise ValueError("adapter: an adapter fine-tunes a pretrained model (model.pretrained); "
                             "a model trained from scratch has no weights worth freezing")
        return self

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if not RUN_NAME.fullmatch(name):
            raise ValueError(f"{short(name)} is not a run name: it names the folder runs/NAME, so "
                             "it is letters, digits, '-', '_' and '.' (up to 128, starting with a "
                             "letter or digit), never a path")
        return name


# An experiment is a few hundred bytes; these bounds keep a hostile file (a YAML alias bomb, a
# list nested ten thousand deep, /dev/zero) from taking the time or memory of a whole machine.
MAX_FILE_BYTES = 1_000_000
MAX_NODES = 100_000
MAX_DEPTH = 64


def load_experiment(source: str | Path | dict, overrides: list[str] = ()) -> Experiment:
    """An Experiment from a YAML file (or dict), with `key.path=value` overrides applied."""
    data = _read(source) if isinstance(source, str | Path) else source
    if not isinstance(data, dict):
        raise ConfigError(f"an experiment is a YAML mapping (name:, task:, train:, …), got "
                          f"{_kind(data)}")
    _check_size(data, "the experiment")
    data = copy.deepcopy(data)
    # placeholders are filled last, in the programs the other overrides leave: `--set
    # attention.w=4` goes with a program from `compare --programs` or `sweep --grid attention=…`
    fills = [item for item in overrides if _fills_placeholder(item)]
    for item in [*(item for item in overrides if item not in fills), *fills]:
        apply_override(data, item)
    check_placeholders(data)
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(explain_validation(e)) from None
    check_task(exp)
    return exp


def _read(source: str | Path) -> Any:
    """The YAML document of an experiment file; every way a file can be wrong is a ConfigError."""
    path = Path(source)
    try:
        problem = (f"no experiment file at {path}" if not path.exists() else
                   f"{path} is a folder; give an experiment YAML file" if path.is_dir() else
                   # a FIFO or a device would be read forever
                   f"{path} is not a regular file; give an experiment YAML file"
                   if not path.is_file() else
                   f"{path} is over {MAX_FILE_BYTES:,} bytes: not an experiment file"
                   if path.stat().st_size > MAX_FILE_BYTES else None)
        raw = None if problem else path.read_bytes()
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise ConfigError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if problem:
        raise ConfigError(problem)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    return yaml_value(text, str(path))


def yaml_value(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)  # PyYAML's own message spans lines
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{where} is not valid YAML: {getattr(e, 'problem', None) or e}{at}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply") from None


def _check_size(data: Any, what: str) -> None:
    """Refuse documents past MAX_NODES values (aliases counted each time they are used) or
    MAX_DEPTH levels, walking without recursion."""
    stack, nodes = [(data, 0)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ConfigError(f"{what} holds over {MAX_NODES:,} values: not an experiment")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{what} is nested over {MAX_DEPTH} levels deep: not an experiment")
        children = (list(node.keys()) + list(node.values()) if isinstance(node, dict) else
                    node if isinstance(node, list | tuple) else ())
        stack.extend((child, depth + 1) for child in children)


def _kind(value: Any) -> str:
    return "an empty file" if value is None else f"a {type(value).__name__}: {short(value)}"


def short(value: Any) -> str:
    """repr(value) cut to a line: messages quote what was given, never a megabyte of it."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxdict = 3, 60, 60, 6, 6


def check_task(exp: Experiment) -> None:
    """What only the task knows, checked before anything is written or trained: that it exists,
    its generator's parameter types, and that early stopping watches a metric it logs (a wrong
    name would otherwise fail after a whole epoch)."""
    from attnlab.data import GENERATORS  # data and tasks import train's metrics: import here
    from attnlab.tasks import task_of

    task = task_of(exp.task)
    generator = GENERATORS.get(exp.task.name) if exp.task.kind in (None, task.kind) else None
    for key, value in exp.task.params.items() if generator else ():
        default = generator.params.get(key)  # an unknown key: `make` names the ones it takes
        allowed = _SAME_KIND.get(type(default))
        if allowed and not _fits(value, allowed, default):
            raise ConfigError(f"task.params.{key}: {exp.task.name} takes {_KIND_NAMES[allowed]} "
                              f"here (default {default!r}), got {short(value)}")
    es = exp.train.early_stopping
    logged = task.validation_metrics()
    if es is not None and es.monitor not in logged:
        raise ConfigError(f"train.early_stopping.monitor: {exp.task.name} logs "
                          f"{', '.join(logged)} on validation, not {short(es.monitor)}"
                          f"{did_you_mean(es.monitor, logged)}")


# A generator's parameter takes values of its default's kind (an int where 8192 is, a bool for
# a switch); a default of another type (None, say) takes anything.
def _fits(value: Any, allowed: tuple[type, ...], default: Any) -> bool:
    if not isinstance(value, allowed) or isinstance(value, bool) != isinstance(default, bool):
        return False
    return not isinstance(value, int | float) or isinstance(value, bool) or (
        math.isfinite(value) and abs(value) < 2**31)


_SAME_KIND = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
_KIND_NAMES = {(bool,): "true or false", (int,): "an integer below 2**31",
               (int, float): "a finite number below 2**31",
               (str,): "text"}


def apply_override(data: dict, item: str) -> None:
    """`train.lr=3e-4` sets data['train']['lr'] (the value read as YAML: numbers, lists, …);
    `attention.w=16` fills the placeholder `$w` in the program `attention`."""
    if "=" not in item:
        raise ConfigError(f"--set takes key.path=value, got {short(item)}")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {short(key)}: a key is names joined by '.', like train.lr")
    if parts[0] in PROGRAM_FIELDS and len(parts) > 1:
        _fill_placeholder(data, parts, raw)
        return
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    value = yaml_value(raw, f"--set {key}: the value") if raw.strip() else ""
    _check_size(value, f"--set {key}")
    node[parts[-1]] = value


# -- placeholders: `causal & window($w)` is filled by `--set attention.w=16` ------------------------

PROGRAM_FIELDS = ("attention", "decoder_attention", "cross_attention")
PLACEHOLDER = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def placeholders(value: Any) -> list[str]:
    """The placeholder names in a program field's texts (one program, one per layer, head
    groups), in order of first appearance."""
    names: dict[str, None] = {}
    for text in _program_texts(value):
        names.update(dict.fromkeys(PLACEHOLDER.findall(text)))
    return list(names)


def _program_texts(value: Any) -> list[str]:
    stack, texts = [value], []
    while stack:  # iterative: a hostile document may nest deeply (it is size-checked already)
        node = stack.pop()
        if isinstance(node, str):
            texts.append(node)
        elif isinstance(node, list | tuple):
            stack.extend(reversed(node))
    return texts


def _substitute(value: Any, name: str, text: str) -> Any:
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: text if m.group(1) == name else m.group(0), value)
    if isinstance(value, list | tuple):
        return [_substitute(v, name, text) for v in value]
    return value


def _fill_placeholder(data: dict, parts: list[str], raw: str) -> None:
    field, key = parts[0], ".".join(parts)
    if len(parts) > 2:
        raise ConfigError(f"--set {short(key)}: '{field}' is not a section: it is a program, and "
                          f"{field}.NAME fills its placeholder $NAME")
    name = parts[1]
    have = placeholders(data.get(field))
    if name not in have:
        if have:
            listed = ", ".join(f"${p}" for p in have)
            raise ConfigError(f"--set {short(key)}: {field} has no placeholder ${clipped(name, 40)}"
                              f"{did_you_mean(name, have)} (its placeholders: {listed})")
        raise ConfigError(f"--set {short(key)}: '{field}' is not a section, and its program has "
                          f"no placeholders to fill (write one as $NAME, e.g. "
                          f"'causal & window($w)')")
    value = yaml_value(raw, f"--set {key}: the value") if raw.strip() else ""
    if isinstance(value, bool) or not isinstance(value, int | float | str) or value == "":
        raise ConfigError(f"--set {short(key)}: a placeholder takes a number or a word, got "
                          f"{short(raw)}")
    # as written: 16 stays `16`, 0.5 stays `0.5` (YAML read 1e-3 as text already)
    data[field] = _substitute(data[field], name, str(value))


def _fills_placeholder(item: Any) -> bool:
    parts = str(item).split("=", 1)[0].strip().split(".")
    return "=" in str(item) and parts[0] in PROGRAM_FIELDS and len(parts) > 1


def check_placeholders(data: dict) -> None:
    """A program left with an unfilled `$name` is one error saying how to fill it."""
    for field in PROGRAM_FIELDS:
        missing = placeholders(data.get(field))
        if len(missing) == 1:
            raise ConfigError(f"{field}: placeholder ${missing[0]} has no value: give it with "
                              f"--set {field}.{missing[0]}=VALUE (or --grid / --param)")
        if missing:
            sets = " ".join(f"--set {field}.{m}=VALUE" for m in missing)
            raise ConfigError(f"{field}: placeholders {', '.join('$' + m for m in missing)} have "
                              f"no values: give them with {sets} (or --grid / --param)")


def explain_validation(error: ValidationError) -> str:
    """pydantic's errors as lines a person can act on, with the nearest valid key."""
    lines = []
    for err in error.errors():
        path = clipped(".".join(str(p) for p in err["loc"]))
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            known = list(parent.model_fields) if parent else []
            hint = did_you_mean(clipped(str(err["loc"][-1])), known)
            lines.append(f"unknown key '{path}'{hint}" + (f" (keys: {', '.join(known)})"
                                                          if not hint and known else ""))
        elif err["type"] == "missing":
            lines.append(f"missing key '{path}'")
        else:
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {message}" if path else message)
    return "experiment: " + "\n  ".join(lines)


def clipped(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Experiment
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None)
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)),
                     None)
        if model is None:
            return None
    return model
