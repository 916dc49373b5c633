"""Attention objectives: losses on the attention weights themselves, added to the task's loss.

An experiment names them (`objectives:` in its file); each reads, from an attached recorder
(`attnlab.record(model, attached=True)`), the weights of only the layers and heads it names,
recomputed with gradients, while the forward pass stays on the fast backends.

- `supervise`: weights against a target the task knows (alignments), by cross-entropy, KL or
  squared error (Liu et al. 2016; Garg et al. 2019).
- `entropy`: each row's entropy, lowered (`focus`) or raised (`spread`, EAR: Attanasio et al. 2022).
- `sparsity`: each row's Gini impurity 1 − Σ w², lowered (Tsallis α=2 entropy; Blondel et al. 2019).
- `head_diversity`: the mean similarity of distinct heads' weights or outputs, lowered
  (disagreement regularisation, Li et al. 2018).
- `z_loss`: the squared log-partition of each row's scores, keeping logits tame (PaLM's z-loss,
  Chowdhery et al. 2022, on attention logits; Wortsman et al. 2023).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializeAsAny
from torch import Tensor, nn

from attnlab.errors import ConfigError, InputError, did_you_mean
from attnlab.fields import Int, Real
from attnlab.nn.recorder import Call, Recorder, layer_name, record, recordable

TINY = 1e-9  # log(w) of a weight that is exactly zero (sparse normalizers, masked keys)


def _layers(value: Any) -> Any:
    if value == "all" or (isinstance(value, list) and value and all(
            isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool)) for x in value)):
        return value
    raise ValueError(f"give all, or a list of layer numbers (from 0; -1 is the last) or names, "
                     f"like [-1]; got {value!r:.60}")


def _heads(value: Any) -> Any:
    if value == "all" or (isinstance(value, list) and value and all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in value)):
        return value
    raise ValueError(f"give all, or a list of head numbers from 0, like [0, 2]; got {value!r:.60}")


Weight = Annotated[Real, Field(gt=0, le=1e6)]
Layers = Annotated[Any, BeforeValidator(_layers)]  # "all" or [index or name, ...]
Heads = Annotated[Any, BeforeValidator(_heads)]  # "all" or [head, ...]


class Objective(BaseModel):
    """One entry of `objectives:`. `layers` index (or name) the attention layers it reads, `heads`
    the heads within each; `weight` scales its value in the loss."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    kind: str
    weight: Weight = 1.0
    layers: Layers = "all"
    heads: Heads = "all"
    name: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,39}$")  # what it is logged as

    minimum_heads: ClassVar[int] = 1

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        """The objective on one recorded layer (its head groups' calls), a scalar."""
        raise NotImplementedError

    def check(self, i: int, layer: str, module: nn.Module) -> None:
        """ConfigError (naming `objectives.i`) if this objective cannot read `layer`."""

    def picked(self, calls: list[Call]) -> Tensor:
        """(B, h, N, M) float32 weights of this objective's heads (in head order), recomputed
        with gradients; only those heads are computed where the program allows."""
        if self.heads == "all":
            return torch.cat([c.weights() for c in calls], dim=1).float()
        parts, start = [], 0
        for c in calls:  # head groups of a MixedAttention, in order
            mine = [h - start for h in sorted(set(self.heads)) if start <= h < start + c.q.shape[1]]
            if mine:
                parts.append(c.weights(heads=mine))
            start += c.q.shape[1]
        return torch.cat(parts, dim=1).float()

    def layer_list(self, task, model: nn.Module) -> list[str]:
        """The layers `layers` may index: every attention layer of the model."""
        return list(recordable(model).values())


class Supervise(Objective):
    """Cross-entropy (`ce`), KL or squared error (`mse`) between each supervised row's weights and
    the target's distribution (uniform over the keys the target links that row to). `layers`
    index the layers the target is defined on (translation: the cross-attention layers)."""

    kind: Literal["supervise"]
    target: Literal["alignment"] = "alignment"
    loss: Literal["ce", "kl", "mse"] = "ce"
    layers: Layers = [-1]
    heads: Heads = [0]
    # the target's rows move `shift` rows down: in translation, 1 supervises the row that reads
    # a target token rather than the one that puts it out (Shift-Att, Chen et al. 2020)
    shift: Annotated[Int, Field(ge=0, le=16)] = 0

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        w = self.picked(calls)
        p, rows = alignment_rows(target, w.shape[0], w.shape[2], w.shape[3], w.device,
                                 shift=self.shift)
        p = p[:, None]  # the same target for every head
        if self.loss == "mse":
            per_row = (w - p).square().sum(-1)
        else:
            per_row = -(p * w.clamp_min(TINY).log()).sum(-1)
            if self.loss == "kl":
                per_row = per_row + (p * p.clamp_min(TINY).log()).sum(-1)
        counted = rows[:, None].expand(per_row.shape)
        return (per_row * counted).sum() / counted.sum().clamp(min=1)

    def layer_list(self, task, model: nn.Module) -> list[str]:
        return task.aligned_layers(model)


class Entropy(Objective):
    """Mean entropy −Σ w log w of the rows, lowered (`focus`) or raised (`spread`)."""

    kind: Literal["entropy"]
    direction: Literal["focus", "spread"] = "focus"

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        w = self.picked(calls)
        h = -(w * w.clamp_min(TINY).log()).sum(-1)
        return row_mean(h, calls[0], live(w)) * (1 if self.direction == "focus" else -1)


class Sparsity(Objective):
    """Mean Gini impurity 1 − Σ w² of the rows (0 when a row puts all its weight on one key)."""

    kind: Literal["sparsity"]

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        w = self.picked(calls)
        return row_mean(1 - w.square().sum(-1), calls[0], live(w))


class HeadDiversity(Objective):
    """Mean similarity of each pair of distinct heads, per row: the dot product of their weight
    rows (`weights`), or the cosine of their outputs (`outputs`)."""

    kind: Literal["head_diversity"]
    on: Literal["weights", "outputs"] = "weights"
    minimum_heads: ClassVar[int] = 2

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        if self.on == "weights":
            x = self.picked(calls)
        else:
            x = pick(torch.cat([c.out for c in calls], dim=1), self.heads)
            x = torch.nn.functional.normalize(x.float(), dim=-1)
        pairs = list(itertools.combinations(range(x.shape[1]), 2))
        i, j = (torch.tensor(side, device=x.device) for side in zip(*pairs, strict=True))
        sim = (x[:, i] * x[:, j]).sum(-1)  # (B, pairs, N)
        return row_mean(sim, calls[0])


class ZLoss(Objective):
    """Mean squared log-partition (log Σ exp s)² of each row's visible scores."""

    kind: Literal["z_loss"]

    def check(self, i: int, layer: str, module: nn.Module) -> None:
        programs = getattr(module, "programs", None) or [getattr(module, "program", None)]
        if any(p is not None and p.approximation is not None for p in programs):
            raise ConfigError(f"objectives.{i}: z_loss reads attention scores, and layer "
                              f"'{layer}' approximates its weights without them; leave it out "
                              "of layers")

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        parts = []
        for call in calls:
            scores, visible = call.scores()
            if visible is not None:
                scores = scores.masked_fill(~visible, float("-inf"))
            parts.append(scores.float())
        scores = pick(torch.cat(parts, dim=1), self.heads)
        empty = scores.isneginf().all(-1)  # a row that sees no key has no partition
        z = scores.masked_fill(empty[..., None], 0.0).logsumexp(-1)
        return row_mean(z.square(), calls[0], ~empty)


class Sink(Objective):
    """Mean weight the rows put on the first key: the attention sink (Xiao et al., 2024), which a
    head with nothing to read dumps its weight on. Row 0 is left out (under `causal` it sees only
    that key). As a measure (`attnlab eval RUN --measure sink`) it is the sink's share; as an
    objective it discourages the sink."""

    kind: Literal["sink"]

    def value(self, calls: list[Call], target: Tensor | None) -> Tensor:
        w = self.picked(calls)
        counted = live(w)
        counted[:, :, 0] = False
        return row_mean(w[..., 0], calls[0], counted)


KINDS: dict[str, type[Objective]] = {c.model_fields["kind"].annotation.__args__[0]: c for c in
                                     (Supervise, Entropy, Sparsity, HeadDiversity, ZLoss, Sink)}


def parse_objective(value: Any) -> Any:
    """A dict (or an Objective) as the Objective its `kind` names; a ValueError naming the kinds."""
    if isinstance(value, Objective) or not isinstance(value, dict):
        return value if isinstance(value, Objective) else _refuse(value)
    if True in value:  # YAML 1.1 (PyYAML) reads the key `on` as true
        value = {("on" if key is True else key): v for key, v in value.items()}
    kind = value.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        hint = did_you_mean(kind, KINDS) if isinstance(kind, str) else ""
        raise ValueError(f"kind: {kind!r:.40} is no objective{hint}; kinds are {', '.join(KINDS)}")
    for key in value:
        if key not in cls.model_fields:
            hint = did_you_mean(str(key), cls.model_fields)
            raise ValueError(f"unknown key {str(key)[:40]!r}{hint}; {kind} takes "
                             f"{', '.join(cls.model_fields)}")
    return cls.model_validate(value)


def _refuse(value: Any) -> None:
    raise ValueError(f"an objective is a mapping like {{kind: entropy, weight: 0.01}}, got "
                     f"{type(value).__name__}")


def pick(x: Tensor, heads: Literal["all"] | list[int]) -> Tensor:
    """The heads `heads` names out of x (B, H, ...)."""
    return x if heads == "all" else x[:, heads]


def live(w: Tensor) -> Tensor:
    """(B, h, N) bool: rows of w (B, h, N, M) with weight to give (a fully masked row has none)."""
    return w.detach().abs().sum(-1) > 0


def row_mean(per_row: Tensor, call: Call, counted: Tensor | None = None) -> Tensor:
    """Mean of per_row (B, h, N) over the rows that count: real query rows (never padding),
    and `counted` (B, h, N) where given."""
    counted = torch.ones_like(per_row, dtype=torch.bool) if counted is None else counted
    real = call.real_queries()
    if real is not None:
        counted = counted & real[:, None].to(counted.device)
    return (per_row * counted).sum() / counted.sum().clamp(min=1)


def alignment_rows(pairs: Tensor | None, b: int, n: int, m: int, device: torch.device,
                   shift: int = 0) -> tuple[Tensor, Tensor]:
    """From (B, P, 2) (query, key) pairs padded with -1: the target distribution (B, N, M),
    uniform over each row's linked keys, and (B, N) bool of the rows that have a link; each
    pair's row moved `shift` rows down. Pairs outside N × M (cut by truncation) are left out."""
    if pairs is None:
        raise ConfigError("supervise needs the task's alignment targets, and this batch has none")
    pairs = pairs.to(device).long()
    q, k = pairs[..., 0], pairs[..., 1]
    inside = (q >= 0) & (k >= 0) & (q + shift < n) & (k < m)
    q = q + shift
    target = torch.zeros(b, n, m, device=device)
    batch = torch.arange(b, device=device)[:, None].expand_as(q)
    target[batch[inside], q[inside], k[inside]] = 1.0
    links = target.sum(-1)
    return target / links.clamp(min=1)[..., None], links > 0


class Objectives:
    """An experiment's objectives bound to a model and task: which layers to record, and their
    values on a recorded batch."""

    def __init__(self, objectives: Sequence[Objective], model: nn.Module, task) -> None:
        self.objectives = list(objectives)
        self.names = logged_names(self.objectives)
        self.layers: list[list[str]] = []
        for i, o in enumerate(self.objectives):
            self.layers.append(resolve_layers(o, i, task, model))
            check_layers(o, i, model, self.layers[-1])
        self.recorded = sorted({name for names in self.layers for name in names})

    def __bool__(self) -> bool:
        return bool(self.objectives)

    @property
    def supervised(self) -> bool:
        """Whether one reads the task's alignment targets (so batches must carry them)."""
        return any(isinstance(o, Supervise) for o in self.objectives)

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[Recorder | None]:
        """Record the layers the objectives read, attached, while the block runs."""
        if not self.objectives:
            yield None
            return
        with record(model, layers=self.recorded, attached=True) as rec:
            yield rec

    def values(self, rec: Recorder, target: Tensor | None) -> dict[str, Tensor]:
        """Each objective's value (averaged over its layers), by logged name."""
        out = {}
        for name, o, layers in zip(self.names, self.objectives, self.layers, strict=True):
            out[name] = torch.stack([o.value(rec.calls(layer), target) for layer in layers]).mean()
        return out

    def loss(self, values: dict[str, Tensor]) -> Tensor:
        """Σ weight · value."""
        return sum(o.weight * values[n] for n, o in zip(self.names, self.objectives, strict=True))


@torch.no_grad()
def measure(model: nn.Module, task, batches, objectives: Sequence[Objective]) -> dict[str, float]:
    """Each objective's value on a trained model over `batches` (eval mode; alignments read
    from each batch's last tensor when one supervises): the mean over batches, weighted by
    their size."""
    bound = Objectives(objectives, model, task)
    model.eval()
    totals = dict.fromkeys(bound.names, 0.0)
    seen = 0
    for batch in batches:
        with bound.recording(model) as rec:
            task.step(model, batch)
        size = len(batch[0])
        for name, value in bound.values(rec, batch[-1] if bound.supervised else None).items():
            totals[name] += float(value) * size
        seen += size
    return {name: total / max(seen, 1) for name, total in totals.items()}


def logged_names(objectives: Sequence[Objective]) -> list[str]:
    """`name`, or the kind; a kind that repeats is numbered (entropy, entropy_2)."""
    names, seen = [], set()
    for o in objectives:
        base = o.name or o.kind
        name, i = base, 1
        while name in seen:
            i += 1
            name = f"{base}_{i}"
        seen.add(name)
        names.append(name)
    return names


def resolve_layers(o: Objective, i: int, task, model: nn.Module) -> list[str]:
    """The layer names objective `i` reads; ConfigError naming `objectives.i.layers` otherwise."""
    allowed = o.layer_list(task, model)
    if not allowed:
        raise ConfigError(f"objectives.{i}: {o.kind} has no attention layer to read in this model")
    if o.layers == "all":
        return allowed
    try:
        return list(dict.fromkeys(layer_name(allowed, x) for x in o.layers))
    except InputError as err:  # said for the experiment file
        raise ConfigError(f"objectives.{i}.layers: {err}") from None


def check_layers(o: Objective, i: int, model: nn.Module, layers: list[str]) -> None:
    """Every head `heads` names exists in every layer read, there are enough of them, and the
    objective can read each layer's program."""
    modules = {name: m for m, name in recordable(model).items()}
    for layer in layers:
        o.check(i, layer, modules[layer])
        heads = int(getattr(modules[layer], "heads", 0) or 0)
        chosen = heads if o.heads == "all" else len(o.heads)
        if o.heads != "all" and heads and max(o.heads) >= heads:
            raise ConfigError(f"objectives.{i}.heads: layer '{layer}' has {heads} heads "
                              f"(0 … {heads - 1}); {max(o.heads)} is not one")
        if chosen < o.minimum_heads:
            raise ConfigError(f"objectives.{i}.heads: {o.kind} compares heads, so it needs at "
                              f"least {o.minimum_heads}; layer '{layer}' gives it {chosen}")


AnyObjective = Annotated[SerializeAsAny[Objective], BeforeValidator(parse_objective)]

__all__ = ["KINDS", "AnyObjective", "Entropy", "HeadDiversity", "Objective", "Objectives",
           "Sparsity", "Supervise", "ZLoss", "alignment_rows", "measure", "parse_objective"]
