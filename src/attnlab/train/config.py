"""Experiment files: one YAML document says the task, the model, the attention programs and
how to train. Validated by pydantic; every mistake becomes a ConfigError that names the key."""

from __future__ import annotations

import copy
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
    model_validator,
)

from attnlab.errors import ConfigError, ProgramError, did_you_mean
from attnlab.lang.program import Program, parse


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
                           f"[[program, heads], ...], got {value!r}")
    return [_parse_programs(v) if isinstance(v, str | Program) else
            [(parse(g[0]), g[1]) for g in _groups(v)] for v in value]


def _groups(value: Any) -> list:
    if not isinstance(value, list | tuple) or not all(
            isinstance(g, list | tuple) and len(g) == 2 and isinstance(g[1], int) for g in value):
        raise ProgramError(f"a layer's entry is a program or head groups [[program, heads], ...], "
                           f"got {value!r}")
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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


class TaskConfig(_Strict):
    """Which generated task or data set, its parameters, and how many examples per split."""

    name: str
    kind: str | None = None  # the task kind (attnlab.tasks); default: the data set's or generator's
    params: dict[str, Any] = Field(default_factory=dict)
    # generated tasks: how many to generate (default 10,000 / 1,000 / 1,000); real data sets:
    # the whole split unless a number caps it
    train_examples: int | None = Field(None, ge=1)
    val_examples: int | None = Field(None, ge=1)
    test_examples: int | None = Field(None, ge=1)
    positive: str | None = None  # classification: the class whose F1 is reported (test_f1)

    def examples(self, split: str) -> int | None:
        """How many examples of `split` (train, validation, test) to use; None: the default."""
        return {"train": self.train_examples, "validation": self.val_examples,
                "test": self.test_examples}[split]


class ModelConfig(_Strict):
    """Model size and shape; `kind` defaults to what the task needs."""

    kind: Literal["decoder_lm", "encoder_classifier", "vit", "seq2seq", "recommender"] | None = None
    d_model: int = Field(64, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    kv_heads: int | None = Field(None, ge=1)
    positions: Literal["learned", "sinusoidal", "rotary", "none"] = "learned"
    max_len: int | None = Field(None, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    pooling: Literal["mean", "cls", "first"] = "mean"
    patch_size: int = Field(4, ge=1)  # ViT: image patches of patch_size × patch_size pixels


class DecodeConfig(_Strict):
    """How a translation run decodes its test split (and `predict`)."""

    beam_size: int = Field(4, ge=1)  # 1 is greedy
    length_penalty: float = Field(1.0, ge=0)
    max_len: int | None = Field(None, ge=1)  # new tokens at most; default the task's max_len


class EarlyStopping(_Strict):
    monitor: str = "val_accuracy"
    patience: int = Field(3, ge=1)
    mode: Literal["max", "min"] = "max"


class TrainConfig(_Strict):
    """How to optimise: budget, batch, learning rate and schedule, regularisation, seed."""

    epochs: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    precision: Literal["32", "bf16"] = "32"
    accumulate: int = Field(1, ge=1)
    clip: float | None = Field(1.0, gt=0)
    early_stopping: EarlyStopping | None = None
    seed: int = 0
    devices: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _budget(self) -> TrainConfig:
        if self.epochs is None and self.steps is None:
            raise ValueError("give train.epochs or train.steps")
        return self


class Experiment(_Strict):
    """The whole experiment file."""

    name: str
    task: TaskConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    attention: Programs = Field("scaled_dot ; softmax", validate_default=True)
    # seq2seq only: the decoder's self-attention (default: `attention` with `causal` added to its
    # mask, so one program is compared throughout) and the cross-attention (default softmax)
    decoder_attention: Programs = None
    cross_attention: Programs = None
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    train: TrainConfig


def load_experiment(source: str | Path | dict, overrides: list[str] = ()) -> Experiment:
    """An Experiment from a YAML file (or dict), with `key.path=value` overrides applied."""
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.exists():
            raise ConfigError(f"no experiment file at {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    data = copy.deepcopy(data)
    for item in overrides:
        apply_override(data, item)
    try:
        return Experiment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(explain_validation(e)) from None


def apply_override(data: dict, item: str) -> None:
    """`train.lr=3e-4` sets data['train']['lr'] (the value read as YAML: numbers, lists, …)."""
    if "=" not in item:
        raise ConfigError(f"--set takes key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    value = yaml.safe_load(raw) if raw.strip() else ""
    node[parts[-1]] = value


def explain_validation(error: ValidationError) -> str:
    """pydantic's errors as lines a person can act on, with the nearest valid key."""
    lines = []
    for err in error.errors():
        path = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parent = _model_at(err["loc"][:-1])
            known = list(parent.model_fields) if parent else []
            hint = did_you_mean(str(err["loc"][-1]), known)
            lines.append(f"unknown key '{path}'{hint}" + (f" (keys: {', '.join(known)})"
                                                          if not hint and known else ""))
        elif err["type"] == "missing":
            lines.append(f"missing key '{path}'")
        else:
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {message}" if path else message)
    return "experiment: " + "\n  ".join(lines)


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
