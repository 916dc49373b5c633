"""How far to trust an attention map as an explanation: erase the inputs it ranks highest and see
whether the prediction cares (ERASER: DeYoung et al. 2020, "ERASER: A Benchmark to Evaluate
Rationalized NLP Models", §4), beside a random ranking, which every explanation must beat.

For each example and each importance, r is its top k% of units (tokens, patches; never [CLS] or
padding) and ŷ the class predicted on the whole input:
comprehensiveness = p(ŷ|x) − p(ŷ|x∖r) (higher: r mattered), sufficiency = p(ŷ|x) − p(ŷ|r)
(lower: r alone was enough). How a unit is erased is the task's (`Task.erase`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from attnlab.errors import InputError
from attnlab.inspect.analyses import grad_attention, rollout
from attnlab.nn.recorder import record

KS = (1, 5, 10, 20)  # percent of an example's units
IMPORTANCES = {"attention": "raw attention (last layer)", "rollout": "rollout",
               "grad_attention": "gradient × attention", "random": "random"}
MEASURES = ("comprehensiveness", "sufficiency")
GRADIENT = "of the predicted class's logit (Chefer et al. 2021)"
NOT_BETTER = "no better than random"


@dataclass
class Erasures:
    """Per example (N, K): comprehensiveness and sufficiency of each importance at each k; random's
    are the mean over its draws."""

    ks: tuple[int, ...]
    comprehensiveness: dict[str, Tensor]
    sufficiency: dict[str, Tensor]
    skipped: int = 0  # examples with no unit to erase (an empty text), left out

    def measure(self, name: str) -> dict[str, Tensor]:
        return self.comprehensiveness if name == "comprehensiveness" else self.sufficiency


def unit_counts(units: Tensor, percent: int) -> Tensor:
    """(B,) how many units are the top `percent`%: ⌈percent · n / 100⌉ of the example's n units
    (at least one; integers, so 5% of 20 is exactly 1)."""
    n = units.sum(1)
    return ((n * percent + 99) // 100).clamp(min=1).minimum(n)


def top_units(scores: Tensor, units: Tensor, count: Tensor) -> Tensor:
    """(B, S) bool: the `count` (B,) highest-scoring units of each example (ties: earlier first)."""
    ranked = scores.float().masked_fill(~units, -math.inf).argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(scores.shape[1], device=scores.device).expand_as(ranked)
    rank = torch.empty_like(ranked).scatter_(1, ranked, positions)
    return (rank < count[:, None]) & units


def importances(model: nn.Module, task, inputs: Tensor) -> dict[str, Tensor]:
    """(B, S) scores over the attention sequence from the recorded weights, read from the rows
    the classifier reads (`task.readout`), heads averaged: the last layer's raw attention,
    rollout over all layers, and gradient × attention with the gradient of the predicted class's
    logit (Chefer et al. 2021, who back-propagate the one-hot predicted class's score)."""
    readout = task.readout(model, inputs)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.enable_grad(), record(model, grads=True) as rec:
        logits = model(inputs)
        score = logits.gather(1, logits.argmax(-1, keepdim=True)).sum()  # examples independent
        # through autograd.grad, so the model's own .grad stays as it was
        torch.autograd.grad(score, params, allow_unused=True)
        weights = [rec.weights(layer) for layer in rec.layers]
        grads = [rec.weight_grads(layer) for layer in rec.layers]
    return {name: (readout[:, None, :].to(m.dtype) @ m).squeeze(1).detach()
            for name, m in (("attention", weights[-1].mean(1)), ("rollout", rollout(weights)),
                            ("grad_attention", grad_attention(weights, grads)))}


@torch.no_grad()
def probabilities(model: nn.Module, inputs: Tensor, classes: Tensor, batch: int = 512,
                  trim=lambda x: x) -> Tensor:
    """(B,) p(classes | inputs), in chunks of `batch`, each cut by `trim` first."""
    return torch.cat([model(trim(x)).float().softmax(-1).gather(1, c[:, None]).squeeze(1)
                      for x, c in zip(inputs.split(batch), classes.split(batch), strict=True)])


def erase_by(model: nn.Module, task, inputs: Tensor, rankings: Sequence[Tensor],
             ks: Sequence[int] = KS) -> tuple[Tensor, Tensor]:
    """Comprehensiveness and sufficiency, each (R, B, K), of erasing the top k% of units by each
    ranking (B, S) in `rankings`, ŷ being the class predicted on `inputs`. The erased inputs run
    stacked, in chunks that `task.trim` cuts."""
    units = task.units(model, inputs)
    with torch.no_grad():
        predicted = model(inputs).argmax(-1)
    full = probabilities(model, inputs, predicted)
    erased = []
    for scores in rankings:
        for k in ks:
            top = top_units(scores, units, unit_counts(units, k))
            erased += [task.erase(model, inputs, ~top), task.erase(model, inputs, top)]
    p = probabilities(model, torch.cat(erased), predicted.repeat(len(erased)),
                      trim=lambda x: task.trim(model, x))
    drop = (full - p.view(len(rankings), len(ks), 2, -1)).permute(0, 3, 1, 2)  # (R, B, K, 2)
    return drop[..., 0], drop[..., 1]


def erase_batch(model: nn.Module, task, inputs: Tensor, ks: Sequence[int] = KS, draws: int = 10,
                generator: torch.Generator | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """Per importance: (comprehensiveness, sufficiency), each (B, K), on one batch; random is the
    mean over `draws` seeded random rankings."""
    model.eval()
    inputs = task.trim(model, inputs)
    found = importances(model, task, inputs)
    shape = task.units(model, inputs).shape
    rankings = [*found.values(), *(torch.rand(shape, generator=generator) for _ in range(draws))]
    comp, suff = erase_by(model, task, inputs, rankings, ks)
    named = {name: (comp[i], suff[i]) for i, name in enumerate(found)}
    named["random"] = (comp[len(found):].mean(0), suff[len(found):].mean(0))
    return named


def erasures(model: nn.Module, task, inputs: Tensor, ks: Sequence[int] = KS, draws: int = 10,
             seed: int = 0, batch: int = 64, progress: bool = False) -> Erasures:
    """Comprehensiveness and sufficiency of every importance on every example of `inputs`, in
    their order (run in batches of `batch` of similar length; a progress bar with `progress`).
    Examples without a unit (an empty text) are skipped."""
    from rich.console import Console
    from rich.progress import track

    if len(inputs) == 0:
        raise InputError("faithfulness needs at least one example")
    if draws < 1 or not all(isinstance(k, int) and 0 < k <= 100 for k in ks):
        raise InputError(f"faithfulness needs at least one random draw and k's that are whole "
                         f"percents from 1 to 100; got draws={draws}, ks={list(ks)}")
    counts = task.units(model, inputs).sum(1)
    some = counts.nonzero().squeeze(1)
    if len(some) == 0:
        raise InputError("no example has a unit to erase (every input is empty)")
    order = some[counts[some].argsort(stable=True)]  # similar lengths together: trimmed alike
    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[tuple[Tensor, Tensor]]] = {name: [] for name in IMPORTANCES}
    steps = track(order.split(batch), description="erasing", disable=not progress,
                  console=Console(stderr=True), transient=True)  # stdout keeps only the results
    for chosen in steps:
        for name, pair in erase_batch(model, task, inputs[chosen], ks, draws, generator).items():
            parts[name].append(pair)
    back = order.argsort()  # the examples' own order
    return Erasures(tuple(ks), *({name: torch.cat([p[i] for p in pairs])[back]
                                  for name, pairs in parts.items()} for i in (0, 1)),
                    len(inputs) - len(some))


def bootstrap_ci(differences: Tensor, seed: int = 0, resamples: int = 2000) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `differences` (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(differences), (resamples, len(differences)), generator=generator)
    means = differences.double()[picks].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


def verdict(low: float, high: float, lower_is_better: bool = False) -> str:
    """What a 95% interval of (importance − random) says: better than random only when the whole
    interval is on the good side of 0."""
    good, bad = (-high, -low) if lower_is_better else (low, high)
    if good > 0:
        return "better than random"
    return f"{NOT_BETTER} (worse)" if bad < 0 else NOT_BETTER


def summary(found: Erasures, seed: int = 0) -> dict:
    """Means per importance, measure and k (and AOPC: the mean over the k's), each non-random
    importance compared with random example by example, and one sentence per importance."""
    columns = [str(k) for k in found.ks] + ["aopc"]
    table: dict[str, dict] = {}
    for name, label in IMPORTANCES.items():
        entry: dict = {"label": label}
        for measure in MEASURES:
            values = _with_aopc(found.measure(measure)[name])
            entry[measure] = {c: float(values[:, i].mean()) for i, c in enumerate(columns)}
            if name == "random":
                continue
            paired = values - _with_aopc(found.measure(measure)["random"])
            compared = {}
            for i, column in enumerate(columns):
                low, high = bootstrap_ci(paired[:, i], seed)
                compared[column] = {"difference": float(paired[:, i].mean()), "ci95": [low, high],
                                    "verdict": verdict(low, high, measure == "sufficiency")}
            entry[f"{measure}_vs_random"] = compared
        if name != "random":
            entry["verdict"] = _sentence(entry)
        table[name] = entry
    return {"ks": list(found.ks), "examples": len(found.sufficiency["random"]),
            "skipped": found.skipped, "seed": seed, "importances": table}


def _with_aopc(values: Tensor) -> Tensor:
    """(N, K + 1): the values per k and their mean over the k's (AOPC-style, DeYoung et al. §4)."""
    return torch.cat([values, values.mean(1, keepdim=True)], dim=1)


def _sentence(entry: dict) -> str:
    comp, suff = entry["comprehensiveness_vs_random"]["aopc"], entry["sufficiency_vs_random"]["aopc"]
    return (f"{entry['label']} is {comp['verdict']} by comprehensiveness "
            f"(AOPC {comp['difference']:+.3f} vs random, 95% CI {_interval(comp)}) and "
            f"{suff['verdict']} by sufficiency (AOPC {suff['difference']:+.3f} vs random, lower is "
            f"better, 95% CI {_interval(suff)})")


def _interval(compared: dict) -> str:
    low, high = compared["ci95"]
    return f"[{low:+.3f}, {high:+.3f}]"


def faithfulness(run: str | Path, examples: int | None = None, seed: int = 0, draws: int = 10,
                 batch: int = 64, progress: bool = False) -> dict:
    """ERASER comprehensiveness and sufficiency of raw attention, rollout, gradient × attention
    and random on a trained classification run's saved test split (its first `examples`), with
    the comparison with random; the dict `attnlab inspect faithfulness` prints and writes."""
    from attnlab.models.base import load_model
    from attnlab.tasks import task_of
    from attnlab.train.folder import read_run

    run = Path(run)
    exp = read_run(run)
    task = task_of(exp.task)
    task.erasing()  # a task whose inputs cannot be erased says so before anything loads
    prepared = task.load_test(run, exp)
    if prepared is None:
        raise InputError(f"{run} was saved without its test split; train it again to measure "
                         "faithfulness")
    inputs = prepared.test.inputs[:examples]
    model = load_model(run).eval()
    started = time.perf_counter()
    found = erasures(model, task, inputs, draws=draws, seed=seed, batch=batch, progress=progress)
    return {"run": str(run), "task": task.kind, "erasing": task.erasing(), "gradient": GRADIENT,
            "random_draws": draws, **summary(found, seed),
            "seconds": round(time.perf_counter() - started, 1)}


__all__ = ["KS", "Erasures", "bootstrap_ci", "erase_batch", "erase_by", "erasures", "faithfulness",
           "importances", "summary", "top_units", "unit_counts", "verdict"]
