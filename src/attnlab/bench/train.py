"""`attnlab bench train`: a training step of EncoderClassifier (vanilla program) against an
equally sized torch.nn.TransformerEncoder (SDPA inside), measured side by side."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from attnlab.models import EncoderClassifier, EncoderClassifierConfig


@dataclass(frozen=True)
class TrainBench:
    seq: int = 512
    batch: int = 16
    d_model: int = 256
    layers: int = 4
    heads: int = 8
    vocab: int = 1000
    classes: int = 10
    repeats: int = 7
    warmup: int = 2


class TorchEncoderClassifier(nn.Module):
    """The baseline a user would write: embeddings, nn.TransformerEncoder (pre-norm), mean pool."""

    def __init__(self, b: TrainBench) -> None:
        super().__init__()
        self.embed = nn.Embedding(b.vocab, b.d_model)
        self.pos = nn.Embedding(b.seq, b.d_model)
        layer = nn.TransformerEncoderLayer(b.d_model, b.heads, 4 * b.d_model, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, b.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(b.d_model)
        self.head = nn.Linear(b.d_model, b.classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        return self.head(self.norm(self.encoder(x)).mean(1))


def attnlab_model(b: TrainBench) -> nn.Module:
    return EncoderClassifier(EncoderClassifierConfig(
        b.vocab, b.classes, d_model=b.d_model, layers=b.layers, heads=b.heads, programs="zoo:vanilla",
        max_len=b.seq))


def step_times(model: nn.Module, b: TrainBench, seed: int = 0) -> list[float]:
    """Seconds per training step (forward, backward, AdamW) after warm-up."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, b.vocab, (b.batch, b.seq), generator=g)
    labels = torch.randint(0, b.classes, (b.batch,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(b.warmup + b.repeats):
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(tokens), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= b.warmup:
            times.append(time.perf_counter() - start)
    return times


def run(b: TrainBench) -> dict:
    """Both models, alternating runs so machine noise hits both alike; medians and the ratio."""
    torch.manual_seed(0)
    models = {"attnlab": attnlab_model(b), "torch": TorchEncoderClassifier(b)}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(3):
        for name, model in models.items():
            times[name] += step_times(model, b)
    median = {k: statistics.median(v) for k, v in times.items()}
    throughput = {k: b.batch * b.seq / median[k] for k in models}
    return {"config": b.__dict__, "params": params, "median_step_s": median,
            "tokens_per_s": throughput, "ratio": throughput["attnlab"] / throughput["torch"]}


@dataclass(frozen=True)
class ObjectiveBench(TrainBench):
    """A decoder LM's training step with one head of its last layer supervised against a target
    alignment, against the same step without the objective."""

    program: str = "scaled_dot ; causal ; softmax"


def objective_run(b: ObjectiveBench) -> dict:
    """Step times with and without `supervise` on head 0 of the last layer, in alternating
    rounds; the forward pass runs on the planner's backend either way."""
    from attnlab.models import DecoderLM, DecoderLMConfig
    from attnlab.objectives import Objectives, parse_objective
    from attnlab.tasks import task_of
    from attnlab.train.config import TaskConfig

    torch.manual_seed(0)
    model = DecoderLM(DecoderLMConfig(b.vocab, d_model=b.d_model, layers=b.layers, heads=b.heads,
                                      max_len=b.seq, programs=b.program))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, b.vocab, (b.batch, b.seq), generator=g)
    rows = torch.arange(1, b.seq).expand(b.batch, -1)  # every row aligned to a random earlier key
    keys = (torch.rand(b.batch, b.seq - 1, generator=g) * rows).long()
    pairs = torch.stack([rows, keys], dim=-1)
    objectives = Objectives([parse_objective({"kind": "supervise", "layers": [-1], "heads": [0]})],
                            model, task_of(TaskConfig(name="copy")))
    none = Objectives([], model, None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(with_objective: bool) -> float:
        start = time.perf_counter()
        used = objectives if with_objective else none
        with used.recording(model) as rec:
            logits = model(tokens)
        loss = nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        if with_objective:
            loss = loss + used.loss(used.values(rec, pairs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(3):
        for name in times:
            for i in range(b.warmup + b.repeats):
                t = step(name == "with")
                if i >= b.warmup:
                    times[name].append(t)
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"config": b.__dict__, "median_step_s": median,
            "ratio": median["with"] / median["without"]}
