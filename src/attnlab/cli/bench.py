"""`attnlab bench`: time and measure attnlab against the attention a user would otherwise write."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from attnlab.bench import DEFAULT, QUICK, Report, Settings, run_cases, select
from attnlab.bench.impls import IMPLS
from attnlab.bench.kernels import Case, Result, Verdict
from attnlab.cli.serve import bench_serve_command
from attnlab.errors import InputError, did_you_mean

DEVICES = ("cpu", "cuda")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks: attnlab against the baselines.")
bench_app.command("serve")(bench_serve_command)


@bench_app.command("kernels")
def kernels_command(
    device: Annotated[str, typer.Option(help="cpu, or cuda (bf16, head_dim 128).")] = "cpu",
    threads: Annotated[int, typer.Option(min=1, help="torch threads in every worker.")] = 2,
    repeats: Annotated[int | None, typer.Option(min=5, help="Timed runs per configuration "
                                                "(default 7; 5 with --quick).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes, 5 runs: a smoke run "
                                        "(the targets are calibrated for the full sizes).")] = False,
    only: Annotated[str | None, typer.Option(help="Run the cases whose name contains this.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write every result, ratio "
                                                   "and verdict here.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds one configuration may take.")]
    = 1800.0,
) -> None:
    """Programs × N × (forward, forward+backward): attnlab's planner against naive attention,
    SDPA, FlexAttention and dense entmax15, each configuration in its own process."""
    check_device(device)
    cases = select(QUICK if quick else DEFAULT, only)
    settings = Settings.choose(device, quick=quick, threads=threads, repeats=repeats,
                               timeout_s=timeout)
    console = table_console()
    report = run_with_progress(cases, settings, Console(stderr=True, highlight=False))
    console.print(results_table(report, quick=quick))
    console.print(summary(report.all_verdicts()))
    if json_path is not None:
        report.write_json(json_path)
        console.print(f"wrote {escape(str(json_path))}", soft_wrap=True)


def table_console() -> Console:
    """Stdout; a pipe or a file gets 280 columns, since the table (a column per implementation)
    is wider than rich's default 80."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=280)


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise InputError(f"--device must be cpu or cuda, got '{device}'{did_you_mean(device, DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device cuda needs a CUDA GPU, and torch {torch.__version__} sees none; "
                         "run with --device cpu")


def run_with_progress(cases: tuple[Case, ...], settings: Settings, console: Console) -> Report:
    """run_cases with a progress bar naming the configuration running, and a line per result."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("starting", total=None)

        def on_start(i: int, total: int, case: Case, impl: str) -> None:
            progress.update(task, total=total, completed=i,
                            description=f"{escape(case.name)} · {escape(impl)}")

        def on_done(case: Case, result: Result) -> None:
            progress.advance(task)
            progress.console.print(f"[dim]{escape(case.name)} · {escape(result.impl)}:[/] "
                                   f"{cell(result).replace(chr(10), ' · ')}", soft_wrap=True)

        return run_cases(cases, settings, on_start=on_start, on_done=on_done)


# -- the table ----------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def cell(result: Result | None) -> str:
    """Median time, peak memory (and the planner's backend) of one result, as table markup."""
    if result is None:
        return "[dim]—[/]"
    if result.error:
        return f"[red]error[/]\n[red]{escape(result.error)}[/]"
    if result.first_call_s is not None:
        lines = [f"{result.first_call_s:.2f} s warm"]
        if result.second_call_s is not None:
            lines.append(f"[dim]then {result.second_call_s:.2f} s[/]")
        if result.cold_call_s is not None:
            lines.append(f"[dim]{result.cold_call_s:.2f} s cold[/]")
    else:
        time = f"{_ms(result.median_ms)} ms"
        lines = [f"[yellow]{time}*[/]" if result.noisy else time, f"[dim]{result.peak_mb:,.1f} MB[/]"]
    if result.backend:
        lines.append(f"[dim]via {escape(result.backend)}[/]")
    return "\n".join(lines)


def verdict_text(verdict: Verdict) -> str:
    if verdict.met is None:
        return f"[yellow]n/a[/] ({verdict.bound})"
    return f"[green]met[/] ({verdict.bound})" if verdict.met else f"[red]NOT met[/] ({verdict.bound})"


def results_table(report: Report, *, quick: bool = False) -> Table:
    """One row per case: each implementation's median and peak, the target ratios and verdicts."""
    s, m = report.settings, report.machine
    impls = [i for i in IMPLS if any(i in report.results[c.name] for c in report.cases)]
    table = Table(title=f"attnlab bench kernels — {escape(m['device_name'])}, torch {m['torch']}, "
                        f"{s.threads} threads, {s.dtype}, B={s.batch} H={s.heads} D={s.head_dim}, "
                        f"median of {s.repeats}", title_justify="left",
                  caption=caption(report, quick), caption_justify="left")
    table.add_column("case", style="bold", no_wrap=True)
    table.add_column("N", justify="right")
    table.add_column("mode")
    for impl in impls:
        table.add_column(impl, justify="right")
    table.add_column("ratio")
    table.add_column("target")
    for case in report.cases:
        verdicts = report.verdicts(case)
        row = [escape(case.name), str(case.n), case.mode]
        row += [cell(report.results[case.name].get(impl)) for impl in impls]
        row += ["\n".join(escape(v.text) for v in verdicts), "\n".join(map(verdict_text, verdicts))]
        table.add_row(*row, end_section=True)
    return table


def caption(report: Report, quick: bool) -> str | None:
    notes = ["quick sizes: verdicts check the plumbing, not the targets"] if quick else []
    if any(r.noisy for per_case in report.results.values() for r in per_case.values()):
        notes.append("*: the slowest timed run took over 2× the fastest (a busy machine?)")
    return "\n".join(notes) or None


def summary(verdicts: list[Verdict]) -> str:
    met = sum(v.met is True for v in verdicts)
    missing = sum(v.met is None for v in verdicts)
    return f"targets met: {met} of {len(verdicts)}" + (f" ({missing} n/a)" if missing else "")


@bench_app.command("train")
def train_command(
    seq: Annotated[int, typer.Option(min=1)] = 512,
    batch: Annotated[int, typer.Option(min=1)] = 16,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 2,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """A training step of EncoderClassifier (vanilla) vs torch.nn.TransformerEncoder."""
    import json

    from attnlab.bench.train import TrainBench, run

    torch.set_num_threads(threads)
    result = run(TrainBench(seq=seq, batch=batch))
    console = table_console()
    table = Table(title=f"training step, seq {seq}, batch {batch}, {threads} threads, "
                        "median of 21 (3 alternating rounds of 7)", title_justify="left")
    for column in ("model", "params", "step", "tokens/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in ("attnlab", "torch"):
        table.add_row(name, f"{result['params'][name]:,}",
                      f"{result['median_step_s'][name] * 1000:.0f} ms",
                      f"{result['tokens_per_s'][name]:,.0f}")
    console.print(table)
    verdict = "met" if result["ratio"] >= 0.95 else "NOT met"
    console.print(f"attnlab / torch throughput = {result['ratio']:.3f}× ({verdict}: ≥ 0.95×)")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))


@bench_app.command("objectives")
def objectives_command(
    seq: Annotated[int, typer.Option(min=2)] = 512,
    batch: Annotated[int, typer.Option(min=1)] = 16,
    threads: Annotated[int, typer.Option(min=1, help="torch threads")] = 2,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """A decoder LM's training step with one supervised head vs the same step without it."""
    import json

    from attnlab.bench.train import ObjectiveBench, objective_run

    torch.set_num_threads(threads)
    result = objective_run(ObjectiveBench(seq=seq, batch=batch))
    console = table_console()
    table = Table(title=f"training step, decoder LM, seq {seq}, batch {batch}, {threads} threads, "
                        "median of 21 (3 alternating rounds of 7)", title_justify="left")
    for column in ("step", "median"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for name, label in (("without", "task loss only"), ("with", "+ supervise head 0, last layer")):
        table.add_row(label, f"{result['median_step_s'][name] * 1000:.0f} ms")
    console.print(table)
    verdict = "met" if result["ratio"] <= 1.3 else "NOT met"
    console.print(f"with / without = {result['ratio']:.3f}× ({verdict}: ≤ 1.3×)")
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
