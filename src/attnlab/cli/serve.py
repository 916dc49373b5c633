"""`attnlab serve` (a trained run as an HTTP JSON API) and `attnlab bench serve` (its load test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from attnlab.deploy.serve import MAX_BATCH, MAX_BODY, MAX_WAIT_MS
from attnlab.tasks.service import MAX_ITEMS

Source = Annotated[Path, typer.Argument(help="A run folder, or a file attnlab export wrote "
                                        "(.onnx, .pt2).")]
MaxBatch = Annotated[int, typer.Option(min=1, help="Items one model call holds, gathered from "
                                       "requests that arrive together.")]
MaxWait = Annotated[float, typer.Option(min=0, help="Milliseconds the first request of a batch "
                                        "waits for others.")]
MaxItems = Annotated[int, typer.Option(min=1, help="Items one request may hold.")]
Threads = Annotated[int | None, typer.Option(min=1, help="torch threads for the model calls "
                                             "(default: torch's).")]


def serve_command(
    source: Source,
    host: Annotated[str, typer.Option(help="Interface to listen on; anything but loopback lets "
                                      "other machines in (there is no authentication).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_batch: MaxBatch = MAX_BATCH,
    max_wait_ms: MaxWait = MAX_WAIT_MS,
    max_items: MaxItems = MAX_ITEMS,
    threads: Threads = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Log warnings only, not each request.")]
    = False,
) -> None:
    """Serve a trained run over HTTP: its task's endpoint (classify, translate or recommend),
    /health and /info; requests that arrive together share one model call."""
    from attnlab.deploy.serve import server

    served = server(source, host, port, threads=threads, quiet=quiet, max_batch=max_batch,
                    max_wait_ms=max_wait_ms, max_items=max_items, max_body=MAX_BODY)
    out, err = Console(highlight=False), Console(stderr=True, highlight=False)
    if served.warning:
        err.print(f"[bold yellow]warning:[/] {escape(served.warning)}", soft_wrap=True)
    out.print(f"serving {escape(str(source))} on {served.url}  (Ctrl-C stops)", soft_wrap=True)
    for endpoint in served.endpoints:
        method, route = endpoint.split(" ", 1)
        out.print(f"  {method:<4} {served.url}{route}", soft_wrap=True)
    served.run()


def bench_serve_command(
    source: Source,
    examples: Annotated[Path | None, typer.Option(help="The run folder whose saved test split "
                                                  "makes the requests (default: RUN; needed for "
                                                  "an exported file).")] = None,
    requests: Annotated[int, typer.Option(min=1, help="Requests to send.")] = 1000,
    concurrency: Annotated[int, typer.Option(min=1, help="Clients sending at once.")] = 32,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds the whole test may take; "
                                           "requests unanswered by then are errors.")] = 120.0,
    max_batch: MaxBatch = MAX_BATCH,
    max_wait_ms: MaxWait = MAX_WAIT_MS,
    threads: Threads = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Load-test `attnlab serve` (started in its own process on a free loopback port) with real
    examples from the run's saved test split: p50/p99 latency, throughput, errors and the mean
    batch the server ran."""
    from attnlab.deploy.loadtest import load_test

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"POST to {escape(source.name)}", total=requests)
        report = load_test(source, examples=examples, requests=requests,
                           concurrency=concurrency, timeout=timeout,
                           progress=lambda n: bar.advance(task, n), max_batch=max_batch,
                           max_wait_ms=max_wait_ms, threads=threads)
    out = Console(highlight=False)
    out.print(f"{report['route']} on loopback: {report['requests']} requests, "
              f"{report['concurrency']} at a time, {report['distinct_bodies']} distinct test "
              "examples", soft_wrap=True)
    for label, value in (
            ("latency p50", f"{report['p50_ms']} ms"), ("latency p99", f"{report['p99_ms']} ms"),
            ("throughput", f"{report['throughput_rps']} requests/s over {report['seconds']} s"),
            ("errors", str(report["errors"]) + (" (timed out)" if report["timed_out"] else "")),
            ("mean batch", f"{report['mean_batch']} items per model call ({report['model_calls']} "
                           f"calls, largest {report['largest_batch']}, max {report['max_batch']})")):
        out.print(f"  {label:<12} {value}", soft_wrap=True)
    for example in report["error_examples"]:
        out.print(f"  [red]error:[/] {escape(example)}", soft_wrap=True)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
        out.print(f"wrote {escape(str(json_path))}", soft_wrap=True)
    if report["errors"]:
        raise typer.Exit(2)  # as any attnlab error: the test failed
