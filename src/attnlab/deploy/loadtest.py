"""`attnlab bench serve`: a load test on loopback. The run is served by `attnlab serve` in its own
process, on a free port; `concurrency` clients send real examples from the run's saved test split,
each its next request as soon as the last is answered, until `requests` are done or `timeout`
seconds pass; latency percentiles, throughput, errors and the batches the server ran come back."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.deploy.serve import listening, load_source, service_of
from attnlab.errors import ConfigError


def load_test(source: str | Path, *, examples: str | Path | None = None, requests: int = 1000,
              concurrency: int = 32, timeout: float = 120.0,
              progress: Callable[[int], None] | None = None, **options) -> dict[str, Any]:
    """Serve `source` (a run folder or an exported file) on loopback with `attnlab serve` and
    send it `requests` requests, `concurrency` at a time, made from the saved test split of
    `examples` (a run folder; by default `source` itself); `progress(1)` after each answer.
    `options` are the server's (max_batch=…, max_wait_ms=…, threads=…)."""
    import httpx

    if requests < 1 or concurrency < 1 or timeout <= 0:
        raise ConfigError("--requests and --concurrency must be at least 1, --timeout above 0")
    loaded = load_source(source)
    service = service_of(loaded)
    given = loaded if examples is None else load_source(examples)
    if given.test is None:
        raise ConfigError(f"{given.source} is an exported file, which holds no test split to send: "
                          "give --examples RUN, the run folder it was exported from")
    test = given.test()
    bodies = service.examples(test) if test is not None else []
    if not bodies:
        raise ConfigError(f"{given.source} has no saved test examples that fit the model to send")
    with serving(source, [f"--{key.replace('_', '-')}={value}" for key, value in options.items()
                          if value is not None]) as url:
        # one request first: the first model call sets things up, which no later one pays for
        first = httpx.post(f"{url}{service.route}", json=bodies[0], timeout=timeout)
        if first.status_code != 200:
            raise ConfigError(f"the server refused a test example: {first.status_code} "
                              f"{first.text[:200]}")
        sent = asyncio.run(_send(url, service.route, bodies, requests, concurrency, timeout,
                                 progress or (lambda n: None)))
        batching = httpx.get(f"{url}/info", timeout=10).json()["batching"]
    # the warm-up request is not in the report
    batching["mean_batch"] = round((batching["items"] - 1) / max(1, batching["model_calls"] - 1), 2)
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
            "mean_batch": batching["mean_batch"], "model_calls": batching["model_calls"] - 1,
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

    async def client() -> None:
        nonlocal errors
        # a client of its own, with one connection: a pool shared by all of them costs more time
        # in finding a free connection than the server takes to answer
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as http:
            await _each(http)

    async def _each(http: httpx.AsyncClient) -> None:
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

    started = time.perf_counter()
    clients = [asyncio.create_task(client()) for _ in range(concurrency)]
    _, late = await asyncio.wait(clients, timeout=timeout)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    seconds = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "examples": examples,
            "timed_out": bool(late), "seconds": seconds}


@contextmanager
def serving(source: str | Path, options: list[str], wait_s: float = 120.0) -> Iterator[str]:
    """`attnlab serve SOURCE` in its own process on a free loopback port, as a user would run it
    (its own interpreter: the clients here do not slow it); yields its URL once /health answers,
    and stops it after."""
    with listening("127.0.0.1", 0) as sock:  # a free port, given to the server
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([sys.executable, "-m", "attnlab.cli.app", "serve", str(source),
                                   "--port", str(port), "--quiet", *options],
                                  stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _wait_for(url, server, log, wait_s)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_for(url: str, server: subprocess.Popen, log, wait_s: float) -> None:
    """Until `url`/health answers; a ConfigError with the server's last words if it never does."""
    import httpx

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            said = log.read().decode(errors="replace").strip().splitlines()[-3:]
            raise ConfigError(f"attnlab serve did not come up on {url} within {wait_s:.0f} s"
                              + (f": {' / '.join(said)}" if said else ""))
        time.sleep(0.1)
