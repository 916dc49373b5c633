"""`attnlab serve`: a trained run (or an exported file) as an HTTP JSON API.

The endpoint is the run's task kind's (`Task.service`: classify, translate, recommend); `/health`
and `/info` are every run's. Requests that arrive together are answered by one model call
(`MicroBatcher`), run in a worker thread so the event loop keeps taking requests. Bad input is a
4xx with one line, `{"error": "texts[2]: expected a string"}`, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

import attnlab
from attnlab.errors import ConfigError, InputError
from attnlab.tasks import KINDS, task_of
from attnlab.tasks.base import Task
from attnlab.tasks.service import MAX_ITEMS, Service

LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXPORTED = (".onnx", ".pt2")  # files `attnlab export` writes
MAX_BATCH = 64  # items one model call holds
MAX_WAIT_MS = 5.0  # how long the first request of a batch waits for others
MAX_BODY = 8 * 2**20  # bytes of one request body (64 photos as base64 JPEG fit)


@dataclass
class Loaded:
    """A run made ready to serve: its predictor (what `attnlab.load` returns), its experiment,
    where it came from and its metrics; `test()` reads its saved test split (the load test's
    requests) only when asked."""

    predictor: Any
    exp: Any
    source: str
    metrics: dict
    test: Callable[[], Any] | None = None


def load_source(source: str | Path) -> Loaded:
    """A run folder, or a file `attnlab export` wrote (.onnx, .pt2), ready to serve."""
    path = Path(source)
    if path.suffix.lower() in EXPORTED:
        # imported here: an export needs onnxruntime or torch.export, a run folder neither
        import yaml

        from attnlab.deploy.exported import rebuild
        from attnlab.train.config import load_experiment

        predictor, _, saved = rebuild(path)  # the predictor, and the metadata that travelled
        exp = load_experiment(yaml.safe_load(saved["experiment"]))
        return Loaded(predictor, exp, str(path), saved.get("metrics") or {})
    from attnlab.models.base import load_model
    from attnlab.runfiles import read_json
    from attnlab.train.folder import read_run

    exp = read_run(path)  # refuses a folder that holds no run, or whose files do not match
    task = task_of(exp.task)
    # what attnlab.train.run.load returns, without importing Lightning with it (4 s of startup)
    predictor = task.predictor(load_model(path), task.load_encoders(path, exp), exp).eval()
    return Loaded(predictor, exp, str(path), read_json(path / "metrics.json"),
                  lambda: task.load_test(path, exp))


def serving_kinds() -> list[str]:
    """The task kinds whose runs `attnlab serve` serves: those that describe a service."""
    return [name for name, task in KINDS.items() if type(task).service is not Task.service]


def service_of(loaded: Loaded) -> Service:
    task = task_of(loaded.exp.task)
    service = task.service(loaded.predictor, loaded.exp)
    if service is None:
        raise ConfigError(f"{loaded.exp.name} is a {task.kind} run, which has no raw input to serve; "
                          f"attnlab serve serves {', '.join(serving_kinds())} runs")
    return service


class MicroBatcher:
    """Answers the items of requests that arrive together with one call of `run` in a worker
    thread: the first request of a batch waits at most `max_wait_s` for others; a batch holds at
    most `max_batch` items, and a request is never split between batches."""

    def __init__(self, run: Callable[[list], list], max_batch: int = MAX_BATCH,
                 max_wait_s: float = MAX_WAIT_MS / 1000) -> None:
        self.run, self.max_batch, self.max_wait_s = run, max_batch, max_wait_s
        self.calls = self.items = 0
        self.sizes: deque[int] = deque(maxlen=1000)  # items per model call, the latest
        self._loop = self._queue = self._worker = self._held = None

    async def submit(self, items: list) -> list:
        """The answers to `items`, in their order, once the batch holding them has run."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker.done():  # a test client may bring a new loop
            self._loop, self._queue, self._held = loop, asyncio.Queue(), None
            self._worker = loop.create_task(self._work())
        answered = loop.create_future()
        self._queue.put_nowait((items, answered))
        return await answered

    def stats(self) -> dict[str, Any]:
        sizes = list(self.sizes)
        return {"model_calls": self.calls, "items": self.items,
                "mean_batch": round(self.items / self.calls, 2) if self.calls else None,
                "largest_batch": max(sizes, default=None), "latest_batches": sizes[-20:]}

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._answer(batch)
            except Exception as err:  # a bug in a kind's `run`: every waiting request learns it
                for _, answered in batch:
                    if not answered.done():
                        answered.set_exception(err)

    async def _collect(self) -> list[tuple[list, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        if self._held is not None:
            first, self._held = self._held, None
        else:
            first = await self._queue.get()
        batch, count = [first], len(first[0])
        deadline = loop.time() + self.max_wait_s
        while count < self.max_batch:
            try:
                if self._queue.empty():
                    request = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                else:
                    request = self._queue.get_nowait()
            except TimeoutError:
                break
            if count + len(request[0]) > self.max_batch:
                self._held = request  # the next batch starts with it
                break
            batch.append(request)
            count += len(request[0])
        return batch

    async def _answer(self, batch: list[tuple[list, asyncio.Future]]) -> None:
        items = [item for request, _ in batch for item in request]
        self.calls, self.items = self.calls + 1, self.items + len(items)
        self.sizes.append(len(items))
        answers = await asyncio.to_thread(self._call, items)
        start = 0
        for request, answered in batch:
            if not answered.done():  # a client that went away cancelled its future
                answered.set_result(answers[start:start + len(request)])
            start += len(request)

    def _call(self, items: list) -> list:
        with torch.inference_mode():  # grad mode is per thread: set it in the worker's
            return self.run(items)


class Refused(Exception):
    """A request answered with `status` and one line, `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def build_app(loaded: Loaded, *, max_items: int = MAX_ITEMS, max_batch: int = MAX_BATCH,
              max_wait_ms: float = MAX_WAIT_MS, max_body: int = MAX_BODY):
    """The FastAPI app serving `loaded`: its task's endpoint, /health and /info."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    if max_items > max_batch:
        raise ConfigError(f"--max-items {max_items} is more than --max-batch {max_batch}: one "
                          "request must fit in one model call")
    service = service_of(loaded)
    task = task_of(loaded.exp.task)
    batcher = MicroBatcher(service.run, max_batch, max_wait_ms / 1000)
    endpoints = ["GET /health", "GET /info", f"POST {service.route}"]
    limits = {"items_per_request": max_items if service.counted else 1, "body_bytes": max_body,
              **service.limits}
    app = FastAPI(title=f"attnlab: {loaded.exp.name}", version=attnlab.__version__)
    app.state.batcher, app.state.service, app.state.endpoints = batcher, service, endpoints

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/info")
    async def info() -> dict:
        return {"experiment": loaded.exp.name, "program": _program(loaded), "task": loaded.exp.task.name,
                "kind": task.kind, "metrics": loaded.metrics, "attnlab": attnlab.__version__,
                "source": loaded.source, "endpoints": endpoints, "limits": limits,
                "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, **batcher.stats()}}

    async def answer(request: Request) -> JSONResponse:
        body = _validated(service, await _json(request, max_body))
        if service.counted:
            count = len(getattr(body, service.counted))
            if count > max_items:
                raise Refused(413, f"{service.counted}: {count} items; at most {max_items} per "
                                   "request, so split them")
            if count == 0:
                raise Refused(422, f"{service.counted}: empty; give at least one")
        # a response made here: FastAPI's encoder would walk every answer again
        return JSONResponse(service.reply(body, await batcher.submit(service.items(body))))

    answer.__annotations__.update({"request": Request, "return": JSONResponse})  # not strings
    app.post(service.route, openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": service.request.model_json_schema()}}}})(answer)

    def refused(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(Refused)
    async def on_refused(request, err: Refused):
        return refused(err.status, err.message)

    @app.exception_handler(InputError)
    async def on_input(request, err: InputError):
        return refused(422, str(err).splitlines()[0])

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, err: RequestValidationError):
        return refused(422, _first_error(err.errors()))

    @app.exception_handler(HTTPException)
    async def on_http(request, err: HTTPException):
        if err.status_code == 404:
            return refused(404, f"no route {request.method} {request.url.path}; this server has "
                                f"{', '.join(endpoints)}")
        if err.status_code == 405:
            return refused(405, f"{request.method} {request.url.path} is not allowed; this server "
                                f"has {', '.join(endpoints)}")
        return refused(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def on_bug(request, err: Exception):  # the server's log has the traceback
        return refused(500, f"attnlab failed unexpectedly ({type(err).__name__}); this is a bug: "
                            "the server's log has the traceback")

    return app


def _program(loaded: Loaded) -> str:
    found = loaded.metrics.get("program")
    model = getattr(loaded.predictor, "model", None)
    if found is None and hasattr(model, "programs"):
        found = " · ".join(model.programs())
    return found or ""


async def _json(request, max_body: int) -> Any:
    """The request's body as JSON, read no further than `max_body` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body:
        raise Refused(413, f"the body is {declared} bytes; at most {max_body} are read")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise Refused(413, f"the body is over {max_body} bytes, the most that is read")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are both
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Refused(400, f"the body is not JSON ({reason})") from None


def _validated(service: Service, data: Any):
    if not isinstance(data, dict):
        fields = ", ".join(service.request.model_fields)
        raise Refused(422, f"body: expected a JSON object with {fields}, got "
                           f"{_json_type(data)}")
    try:
        return service.request.model_validate(data)
    except ValidationError as err:
        raise Refused(422, _first_error(err.errors(), service.request.model_fields)) from None


_EXPECTED = {"string_type": "a string", "float_type": "a number", "int_type": "a whole number",
             "list_type": "a list", "dict_type": "a JSON object", "model_type": "a JSON object",
             "model_attributes_type": "a JSON object", "bool_type": "true or false"}


def _first_error(errors: list[dict], fields=()) -> str:
    """One line for pydantic's errors: where the first is ('texts[2]') and what was wrong."""
    # an unknown field first: it is most often a misspelt one, which also shows as missing
    errors = sorted(errors, key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0]
    loc = [part for part in first.get("loc", ()) if part != "body"]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"
    kind = first.get("type", "")
    if kind in _EXPECTED:
        what = f"expected {_EXPECTED[kind]}, got {_json_type(first.get('input'))}"
    elif kind == "missing":
        what = "missing; this endpoint takes " + ", ".join(fields) if fields else "missing"
    elif kind == "extra_forbidden":
        what = "not a field of this endpoint" + (f"; it takes {', '.join(fields)}" if fields else "")
    else:
        what = first.get("msg", "invalid").lower()
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {what}{more}"


def _json_type(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


@dataclass
class Server:
    """A served run, ready to start: `run()` blocks until the server is stopped (Ctrl-C)."""

    app: Any
    config: Any  # uvicorn.Config
    url: str
    endpoints: list[str]
    warning: str | None  # said before it starts: a host others can reach has no authentication

    def run(self) -> None:
        import uvicorn

        with listening(self.config.host, self.config.port) as sock:
            uvicorn.Server(self.config).run(sockets=[sock])


def listening(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port (port 0: a free one) for uvicorn, bound here so that a port
    in use is one line rather than uvicorn's exit."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a socket that says it is
    # TCP; without it each answer's second write waited for a delayed ACK, 40 ms a request
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror}); give another "
                          "--port, or --host") from None
    return sock


def server(source: str | Path, host: str = "127.0.0.1", port: int = 8000, *,
           threads: int | None = None, quiet: bool = False, **limits) -> Server:
    """`attnlab serve`: `source` (a run folder or an exported file) served on host:port, the
    loopback interface unless told otherwise; `threads` for torch's model calls (None: torch's
    default); `quiet` logs warnings only, not each request; `limits` are build_app's."""
    import uvicorn

    if threads is not None:
        torch.set_num_threads(threads)
    app = build_app(load_source(source), **limits)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning" if quiet else "info",
                            access_log=not quiet)
    shown = f"[{host}]" if ":" in host else host
    warning = None if host in LOOPBACK else (
        f"listening on {host}, which other machines can reach: the API has no authentication, so "
        "anyone who reaches it can use the model; put it behind a proxy that checks who calls")
    return Server(app, config, f"http://{shown}:{port}", app.state.endpoints, warning)
