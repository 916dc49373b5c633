"""`attnlab bench serve`: a load test on loopback. The run is served in this process (uvicorn in a
thread, on a free port); `concurrency` clients send real examples from the run's saved test split,
each its next request as soon as the last is answered, until `requests` are done or `timeout`
seconds pass; latency percentiles, throughput, errors and the batches the server ran come back."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.deploy.serve import build_app, load_source, service_of
from attnlab.errors import ConfigError


def load_test(source: str | Path, *, requests: int = 1000, concurrency: int = 32,
              timeout: float = 120.0, progress: Callable[[int], None] | None = None,
              **limits) -> dict[str, Any]:
    """Serve `source` (a run folder or an exported file) on loopback and send it `requests`
    requests, `concurrency` at a time; `progress(1)` after each answer. `limits` are
    `build_app`'s (max_batch, max_wait_ms, …)."""
    import httpx

    if requests < 1 or concurrency < 1 or timeout <= 0:
        raise ConfigError("--requests and --concurrency must be at least 1, --timeout above 0")
    loaded = load_source(source)
    service = service_of(loaded)
    test = loaded.test() if loaded.test is not None else None
    bodies = service.examples(test) if test is not None else []
    if not bodies:
        raise ConfigError(f"{source} has no saved test examples that fit the model to send; "
                          "load-test a run folder that training wrote")
    app = build_app(loaded, **limits)
    with running(app) as url:
        sent = asyncio.run(_send(url, service.route, bodies, requests, concurrency, timeout,
                                 progress or (lambda n: None)))
        batching = httpx.get(f"{url}/info", timeout=10).json()["batching"]
    latencies = np.array(sent["latencies"]) * 1000
    answered = len(latencies)
    return {"source": str(source), "route": f"POST {service.route}", "requests": requests,
            "concurrency": concurrency, "answered": answered,
            "errors": requests - answered, "failed": sent["errors"],  # errors: also those unsent
            "error_examples": sent["examples"], "timed_out": sent["timed_out"],
            "seconds": round(sent["seconds"], 3),
            "throughput_rps": round(answered / sent["seconds"], 1) if sent["seconds"] else 0.0,
            "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
            "mean_ms": round(float(latencies.mean()), 2) if answered else None,
            "mean_batch": batching["mean_batch"], "model_calls": batching["model_calls"],
            "largest_batch": batching["largest_batch"], "max_batch": batching["max_batch"],
            "max_wait_ms": batching["max_wait_ms"], "distinct_bodies": len(bodies)}


def _percentile(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if len(values) else None


async def _send(url: str, route: str, bodies: list[dict], requests: int, concurrency: int,
                timeout: float, progress: Callable[[int], None]) -> dict[str, Any]:
    """Each of `concurrency` clients sends its next request when its last is answered."""
    import httpx

    latencies: list[float] = []
    errors, examples = 0, []
    numbers = iter(range(requests))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        for i in numbers:
            started = time.perf_counter()
            try:
                response = await http.post(route, json=bodies[i % len(bodies)])
                ok, why = response.status_code == 200, f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as err:
                ok, why = False, f"{type(err).__name__}: {err}"
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
                if len(examples) < 3:
                    examples.append(why)
            progress(1)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
        started = time.perf_counter()
        clients = [asyncio.create_task(client(http)) for _ in range(concurrency)]
        _, late = await asyncio.wait(clients, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        seconds = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "examples": examples,
            "timed_out": bool(late), "seconds": seconds}


@contextmanager
def running(app, host: str = "127.0.0.1", wait_s: float = 30.0) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free port of `host`; yields its URL once /health
    answers, and stops the server after."""
    import httpx
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))  # the system picks a free port, held until the server takes the socket
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="attnlab-serve")
    thread.start()
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"the server on {url} did not come up within {wait_s:.0f} s")
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
