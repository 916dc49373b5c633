"""Which heads matter: switching heads off (`masked`), their importance over a data set, the
main metric with each one masked (ablation) and with more and more masked (the pruning curve),
after Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?". `heads_report(run)`
does all three for a trained run; `attnlab heads RUN` prints and draws it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from attnlab.errors import InputError
from attnlab.inspect.analyses import head_importance
from attnlab.nn.recorder import layer_name, record, recordable
from attnlab.train.metrics import accuracy

HeadId = tuple[str, int]  # (attention layer name, head index)


@contextmanager
def masked(model: nn.Module, heads: Mapping[str | int, Sequence[int]]) -> Iterator[None]:
    """Inside the block, the heads `heads[layer]` of each layer (a name or an index into the
    model's attention layers) give a zero output; the model's weights are untouched."""
    modules = {name: module for module, name in recordable(model).items()}
    chosen: dict[nn.Module, list[int]] = {}
    for layer, off in heads.items():
        module = modules[layer_name(list(modules), layer)]
        bad = [h for h in off if not 0 <= h < module.heads]
        if bad:
            raise InputError(f"layer '{layer}' has heads 0..{module.heads - 1}; got {bad}")
        chosen.setdefault(module, []).extend(off)
    for module, off in chosen.items():
        mask = torch.ones(module.heads)
        mask[off] = 0
        module.head_mask = mask
    try:
        yield
    finally:
        for module in chosen:
            module.head_mask = None


def heads_of(model: nn.Module) -> list[HeadId]:
    """Every head of `model` as (layer name, head), in model order."""
    return [(name, h) for module, name in recordable(model).items() for h in range(module.heads)]


def importance(model: nn.Module, task, batches: Iterable, normalize: bool = True) -> dict[str, Tensor]:
    """Per attention layer, (H,) the mean over examples of |∂L/∂ξ_h|, L an example's loss and ξ_h
    a mask on head h's output, with `normalize` each layer's scores divided by their l2 norm
    (Michel et al. 2019, §4.1, eq. 2, and the layer normalisation of their pruning runs).

    `task.loss` is the mean over a batch's scored labels; times their count it is their sum, so
    each example's gradient is that of its own (summed) loss, whatever the batch size. A layer
    called several times per forward (weights shared, say) sums its calls' gradients: its mask
    multiplies every call. The model is put in eval mode (no dropout); gradients go through
    torch.autograd.grad, so its .grad stays as it was."""
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    grads: dict[str, list[Tensor]] = {name: [] for name in recordable(model).values()}
    for batch in batches:
        with record(model, grads=True) as rec, torch.enable_grad():
            step = task.step(model, batch)
            loss = task.loss(step) * step.hits()[1]
            torch.autograd.grad(loss, params, allow_unused=True)
        for name in rec.layers:
            calls = len(rec.passes.get(name, []))
            if calls:
                grads[name].append(sum(rec.head_grads(name, call=c) for c in range(calls)))
    found = {name: g for name, g in grads.items() if g}
    if not found:
        raise InputError("no batch reached an attention layer: give at least one example")
    return {name: head_importance([torch.cat(g)], normalize)[0] for name, g in found.items()}


def ablation(model: nn.Module, score: Callable[[], float], heads: Iterable[HeadId]) -> list[float]:
    """`score()` with each of `heads` alone masked, in the order given."""
    scores = []
    for layer, head in heads:
        with masked(model, {layer: [head]}):
            scores.append(score())
    return scores


def pruning_curve(model: nn.Module, score: Callable[[], float], order: Iterable[HeadId]) -> list[float]:
    """`score()` with none of `order` masked, then with its first 1, 2, … heads masked, up to all
    of them: the curve of Michel et al. 2019, §4.2, Fig. 3."""
    scores, off = [score()], {}
    for layer, head in order:
        off.setdefault(layer, []).append(head)
        with masked(model, off):
            scores.append(score())
    return scores


def least_important_first(scores: Mapping[str, Tensor]) -> list[HeadId]:
    """Every head by increasing importance; equal scores keep model order. Ranked once, on the
    whole model, as the paper's main curve is (its code recomputes importance after each pruning
    step only when asked to, `--exact_pruning`)."""
    heads = [(layer, h, float(s)) for layer, row in scores.items() for h, s in enumerate(row)]
    return [(layer, h) for layer, h, _ in sorted(heads, key=lambda x: x[2])]


def main_score(model: nn.Module, task, prepared, exp) -> float:
    """The task's main metric of `model` on `prepared.test`: accuracy from `Step.hits` as
    `attnlab eval` counts it, or the score `task.test_scores` reports under that name."""
    if task.main_metric != "test_accuracy":
        return float(task.test_scores(model, prepared, exp, progress=False)[task.main_metric])
    return accuracy(task, model, task.loader(prepared.test, exp.train.batch_size, False,
                                             torch.Generator()))


@dataclass(frozen=True)
class Head:
    """One head's row of the table: its importance, the metric with it alone masked, and the
    drop from the unpruned score (positive: the head helps)."""

    layer: str
    head: int
    importance: float
    without: float
    drop: float


@dataclass(frozen=True)
class HeadReport:
    """Head importance, ablation and the pruning curve of one model on one split."""

    metric: str  # the task's main metric, "test_accuracy" say
    split: str  # "test" or "validation"
    examples: int  # how many of the split were read
    score: float  # with every head
    heads: list[Head]  # in model order
    order: list[HeadId]  # the pruning order: least important first
    curve: list[float]  # curve[k]: the metric with the first k heads of `order` masked
    normalized: bool = True  # importance divided by its l2 norm within each layer

    def removable(self, tolerance: float) -> int:
        """How many heads, in pruning order, go before the metric first falls more than
        `tolerance` below the unpruned score."""
        for k, value in enumerate(self.curve):
            if value < self.score - tolerance:
                return k - 1
        return len(self.curve) - 1

    def as_dict(self) -> dict:
        return {"metric": self.metric, "split": self.split, "examples": self.examples,
                "score": self.score,
                "importance": "Michel et al. 2019: the mean over the split's examples of |dL(x)/dxi_h|"
                              + (", divided by its l2 norm within each layer" if self.normalized else ""),
                "pruning": PRUNING,
                "heads": [vars(h) for h in self.heads],
                "order": [list(h) for h in self.order],
                "curve": [{"removed": k, "score": v} for k, v in enumerate(self.curve)]}


SPLITS = ("test", "validation")
PRUNING = "least important first, ranked once on the whole model, as in the paper's main curve"


def heads_report(out: str | Path, split: str = "test", examples: int | None = None,
                 normalize: bool = True, progress: bool = False) -> HeadReport:
    """Head importance (Michel et al. 2019), ablation and the pruning curve of the trained run in
    `out`, on its saved test split or, re-read from the data set with the run's encoders, its
    validation split; `examples`: only the first N of the split."""
    from rich.progress import track

    from attnlab.models.base import load_model
    from attnlab.tasks import task_of
    from attnlab.train.folder import read_run

    if split not in SPLITS:
        raise InputError(f"split '{split}': heads reads the test or the validation split")
    if examples is not None and examples < 1:
        raise InputError(f"examples={examples}: give at least 1")
    out = Path(out)
    exp = read_run(out)
    task = task_of(exp.task)
    model = load_model(out).eval()
    prepared = _split(task, out, exp, split).head({"test": examples})
    if len(prepared.test) == 0:
        raise InputError(f"{out}: the {split} split holds no example")

    def score() -> float:
        return main_score(model, task, prepared, exp)

    batches = task.loader(prepared.test, exp.train.batch_size, False, torch.Generator())
    scores = importance(model, task, track(batches, "head importance", disable=not progress),
                        normalize)
    heads = [h for h in heads_of(model) if h[0] in scores]
    order = least_important_first(scores)
    without = ablation(model, score, track(heads, "one head masked", disable=not progress))
    curve = pruning_curve(model, score, track(order, "pruning", disable=not progress))
    rows = [Head(layer, h, float(scores[layer][h]), s, curve[0] - s)
            for (layer, h), s in zip(heads, without, strict=True)]
    return HeadReport(task.main_metric, split, len(prepared.test), curve[0], rows, order, curve,
                      normalize)


def pruning_plot(report: HeadReport, path: str | Path, tolerance: float, label: str,
                 title: str) -> Path:
    """The pruning curve as a PNG: `label` (the main metric) against heads removed, the unpruned
    score as a line, the band of `tolerance` below it, and a marker at the last head removed
    before the loss first passes `tolerance`."""
    from matplotlib.figure import Figure

    kept = report.removable(tolerance)
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.axhspan(report.score - tolerance, report.score, color="#3b6ea5", alpha=0.12, lw=0,
               label=f"at most {tolerance:g} below")
    ax.axhline(report.score, color="#3b6ea5", ls="--", lw=1, label=f"every head: {report.score:.4g}")
    ax.plot(range(len(report.curve)), report.curve, marker="o", ms=3, color="#333333",
            label="least important removed first")
    ax.plot([kept], [report.curve[kept]], marker="D", ms=9, color="#c0392b", ls="none",
            label=f"{kept} of {len(report.order)} removed, still in the band")
    ax.set_xlabel("heads removed")
    ax.set_ylabel(label)
    ax.set_xlim(-0.5, len(report.order) + 0.5)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _split(task, out: Path, exp, split: str):
    """The Prepared whose `test` is the split asked for."""
    if split == "test":
        saved = task.load_test(out, exp)
        if saved is not None:
            return saved
    full = task.prepare(exp, task.load_encoders(out, exp))
    if split == "test":
        return full
    if full.test_examples is not None:  # the task's scores read raw test examples (references)
        raise InputError(f"{exp.name}: {task.main_metric} is scored against the raw examples "
                         "(references) that only the test split keeps; use --split test")
    return replace(full, test=full.validation)


__all__ = ["Head", "HeadReport", "ablation", "heads_of", "heads_report", "importance",
           "least_important_first", "main_score", "masked", "pruning_curve", "pruning_plot"]
