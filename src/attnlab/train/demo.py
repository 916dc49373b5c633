"""`attnlab demo`: multi-query associative recall trained with three attention programs side by
side, and an HTML report of what came out.

The question is Zoology's (Arora et al., 2024): how much recall survives when attention is made
cheaper? Full softmax attention, a sliding window of 8 and linear attention train on the same
data with the same budget; the window cannot see pairs more than 8 tokens back, and linear
attention squeezes every pair into one fixed-size state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from rich.console import Console
from rich.markup import escape
from torch import Tensor

from attnlab.ids import IGNORE_INDEX
from attnlab.lang import MaskInputs
from attnlab.lang.program import parse
from attnlab.nn.recorder import record
from attnlab.tasks import task_of
from attnlab.train.compare import compare, folder_name
from attnlab.train.folder import read_run
from attnlab.train.run import load

DEMO_PROGRAMS = ("causal ; softmax", "causal & window(8) ; softmax", "linear(elu1) ; causal")

# Zoology's MQAR (vocabulary 8192, 4 key-value pairs), shrunk until two CPU cores train each
# program in about a minute. Recall switches on suddenly (an induction circuit forms); at seq 32,
# d_model 32 with rotary positions that happened after 1,000-1,500 steps for every seed we tried,
# with learned positions anywhere from 750 to over 3,000, and at seq 64, d_model 64 after ~3,000.
DEMO_EXPERIMENT = {
    "name": "demo-mqar",
    "task": {"name": "mqar", "params": {"vocab_size": 8192, "seq_len": 32, "num_kv_pairs": 4},
             "train_examples": 160_000, "val_examples": 500, "test_examples": 1_000},
    "model": {"d_model": 32, "layers": 2, "heads": 2, "positions": "rotary"},
    "attention": DEMO_PROGRAMS[0],
    "train": {"epochs": 1, "batch_size": 64, "lr": 3e-3, "schedule": "constant",
              "warmup_steps": 100, "weight_decay": 0.1, "seed": 0},
}


def run_demo(out: str | Path, console: Console, *, tracking_uri: str | None = None,
             experiment: dict = DEMO_EXPERIMENT, programs: tuple[str, ...] = DEMO_PROGRAMS) -> Path:
    """Train the programs, print the comparison, write OUT/report.html; return its path."""
    from attnlab.inspect.pictures import draw_mask
    from attnlab.inspect.report import ReportEntry, write_report

    out = Path(out)
    started = time.perf_counter()
    task = experiment["task"]
    console.print(f"[bold]attnlab demo[/]: MQAR ({task['params']['num_kv_pairs']} key-value "
                  f"pairs, seq {task['params']['seq_len']}, {task['train_examples']:,} training "
                  f"examples) with {len(programs)} attention programs, same model and "
                  "budget\n", soft_wrap=True)
    rows = compare(experiment, list(programs), out / "runs", console=console,
                   tracking_uri=tracking_uri)
    seq = task["params"]["seq_len"]
    entries = []
    for row in rows:
        visible = parse(row["program"]).visible(MaskInputs(1, 1, seq, seq))[0, 0]
        png = draw_mask(visible, out / f"mask-{len(entries) + 1}.png", title=row["program"])
        entries.append(ReportEntry(row["program"], row, png, visible.float().mean().item()))
    views = [recall_view(out / "runs" / folder_name(row["program"]), row["program"]) for row in rows]
    attention = attention_section(views, out)
    seconds = time.perf_counter() - started
    report = write_report(
        out / "report.html", title="attnlab demo: associative recall, three attention programs",
        lede=_lede(experiment, rows), entries=entries, chart_png=out / "runs" / "compare.png",
        attention=attention,
        experiment_yaml=yaml.safe_dump({**experiment, "attention": "(each program in turn)"},
                                       sort_keys=False),
        footer=f"attnlab demo, {seconds:.0f} s in all. Runs: {out / 'runs'}; tracked in MLflow "
               "(attnlab runs --experiment demo-mqar).")
    console.print(f"\nfinished in {seconds:.0f} s · report: [bold]{escape(str(report))}[/]",
                  soft_wrap=True)
    return report


def _lede(experiment: dict, rows: list[dict]) -> str:
    params = experiment["task"]["params"]
    parts = ", ".join(f"{r['program']} {r['test_accuracy']:.1%}" for r in rows)
    return (f"Each sequence shows {params['num_kv_pairs']} key-value pairs, then queries every key "
            f"once within {params['seq_len']} tokens; test accuracy is the fraction of queries "
            "answered with the right value. Recall switches on suddenly, when the model forms an "
            "induction circuit: a program that has not formed one within the budget stays near "
            f"chance. Test accuracy: {parts}.")


# -- what each program attends to ----------------------------------------------------------------


@dataclass(frozen=True)
class RecallView:
    """One trained program's attention on one MQAR test example, read with the recorder."""

    program: str
    tokens: list[int]
    layers: list[Tensor]  # per layer, (N, N) weights averaged over heads
    queries: list[int]  # the positions where the model must answer, in order
    keys: list[int]  # each query's matching key position; its value sits right after it
    visible: Tensor  # (N, N) what the program's mask lets each query see
    on_key: list[float]  # per layer: a query's share of attention on its matching key, mean
    on_value: list[float]  # per layer: the same on the value right after that key
    value_on_key: list[float]  # per layer: a value's attention on the key before it, mean
    uniform: float  # what on_key + on_value would be if each query spread evenly over what it sees

    @property
    def hidden(self) -> int:
        """Queries whose key and value the mask hides: they cannot be answered by looking."""
        return sum(not bool(self.visible[q, k] or self.visible[q, k + 1])
                   for q, k in zip(self.queries, self.keys, strict=True))

    def labels(self) -> list[str]:
        """k1 v1 k2 v2 … at the pairs, q1 … at the queries (q1 asks for v1), · elsewhere."""
        names = ["·"] * len(self.tokens)
        for j in range(len(self.keys)):
            names[2 * j], names[2 * j + 1] = f"k{j + 1}", f"v{j + 1}"
        for q, k in zip(self.queries, self.keys, strict=True):
            names[q] = f"q{k // 2 + 1}"
        return names


def recall_view(run: Path, program: str, example: int = 0) -> RecallView:
    """Test example `example` of an MQAR run through its trained model, every attention layer
    recorded: where each query looks, and how much of it lands on its key and the value after.

    MQAR puts K pairs k1 v1 … kK vK first and scores exactly K positions, each a repeat of a
    key whose value is the answer (attnlab.data.mqar)."""
    exp = read_run(run)
    test = task_of(exp.task).load_test(run, exp).test
    tokens, labels = test.inputs[example], test.labels[example]
    queries = (labels != IGNORE_INDEX).nonzero().flatten().tolist()
    keys = [next(2 * j for j in range(len(queries)) if tokens[2 * j] == tokens[q])
            for q in queries]
    model = load(run)
    with record(model) as rec, torch.no_grad():
        model(tokens[None])
    layers = [rec.weights(layer)[0].mean(0) for layer in rec.layers]
    n = len(tokens)
    visible = parse(program).visible(MaskInputs(1, 1, n, n))[0, 0]
    q, k = torch.tensor(queries), torch.tensor(keys)
    pair_seen = visible[q, k].float() + visible[q, k + 1].float()
    return RecallView(program, tokens.tolist(), layers, queries, keys, visible,
                      on_key=[w[q, k].mean().item() for w in layers],
                      on_value=[w[q, k + 1].mean().item() for w in layers],
                      value_on_key=[w[k + 1, k].mean().item() for w in layers],
                      uniform=(pair_seen / visible[q].sum(-1)).mean().item())


def attention_section(views: list[RecallView], out: Path):
    """The report's attention section: a heatmap per program (one panel per layer, the pairs
    and the queries labelled, each query's key and value ringed), a table of the shares, a
    paragraph read off them; OUT/attention.json keeps the numbers."""
    from attnlab.inspect.pictures import draw_weights
    from attnlab.inspect.report import AttentionSection

    figures = []
    for i, view in enumerate(views, 1):
        marks = [(q, k + d) for q, k in zip(view.queries, view.keys, strict=True) for d in (0, 1)]
        marks += [(k + 1, k) for k in view.keys]  # each value's row: the key it belongs to
        png = draw_weights(torch.stack(view.layers), out / f"attention-{i}.png",
                           titles=[f"layer {layer} (heads averaged)"
                                   for layer in range(len(view.layers))],
                           mask=view.visible, marks=marks, labels=view.labels(),
                           suptitle=view.program)
        figures.append((view.program, png))
    rows = [[view.program, str(layer), f"{view.value_on_key[layer]:.1%}",
             f"{view.on_key[layer]:.1%}", f"{view.on_value[layer]:.1%}", f"{view.uniform:.1%}",
             f"{view.hidden} of {len(view.queries)}"]
            for view in views for layer in range(len(view.layers))]
    (out / "attention.json").write_text(json.dumps(
        [{"program": v.program, "queries": v.queries, "keys": v.keys, "on_key": v.on_key,
          "on_value": v.on_value, "value_on_key": v.value_on_key, "uniform": v.uniform,
          "hidden": v.hidden} for v in views],
        indent=2))
    return AttentionSection(
        text=_what_to_look_for(views),
        header=["program", "layer", "a value on its key", "a query on its key",
                "a query on the value after it", "query on key or value if spread evenly",
                "queries whose pair is hidden"],
        rows=rows, figures=figures)


def _what_to_look_for(views: list[RecallView]) -> str:
    """One paragraph; every number in it is read off the views."""
    def best(v: RecallView) -> int:  # the layer whose queries look most at their pairs
        return max(range(len(v.layers)), key=lambda layer: v.on_key[layer] + v.on_value[layer])

    def share(v: RecallView) -> float:
        return v.on_key[best(v)] + v.on_value[best(v)]

    def copying(v: RecallView) -> int:  # the layer whose values look most at their keys
        return max(range(len(v.layers)), key=lambda layer: v.value_on_key[layer])

    shares = "; ".join(
        f"{v.program}: a query {share(v):.1%} in layer {best(v)} (spread evenly: "
        f"{v.uniform:.1%}), a value {v.value_on_key[copying(v)]:.1%} in layer {copying(v)}"
        for v in sorted(views, key=share, reverse=True))
    text = (f"One test example ({len(views[0].tokens)} tokens) through each trained model, every "
            "layer recorded. Rows are queries, columns keys; k1 v1 … are the pairs and q1 … the "
            "positions that must recall v1 …. Red rings mark, on each query's row, its key and "
            "the value right after it, and on each value's row the key before it: a recall "
            "circuit puts its weight there, one layer letting each value look at its key (so the "
            "value's position learns which key it answers) and a later one letting the query "
            "find that value. Share of attention on the ringed cells, at the layer that puts "
            f"most there: {shares}.")
    blind = [f"{v.program} hides the pair from {v.hidden} of its {len(v.queries)} queries"
             for v in views if v.hidden]
    if blind:
        text += (" " + "; ".join(blind) + ": its mask does not reach that far back, so no weight "
                 "can land there.")
    return text


__all__ = ["DEMO_EXPERIMENT", "DEMO_PROGRAMS", "RecallView", "attention_section", "recall_view",
           "run_demo"]
