"""The studio's FastAPI app: static page, one router per screen, and the guards every request
passes (a Host header naming the bound address, a token when one is set, 4xx JSON for mistakes)."""

from __future__ import annotations

import ipaddress
import secrets
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from attnlab.errors import AttnlabError, ConfigError
from attnlab.train.jobs import Jobs
from attnlab.ui import compare, data, design, inspect, run

COOKIE = "attnlab_studio_token"
STATIC = resources.files("attnlab.ui") / "static"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _error(status: int, message: str, **extra: object) -> JSONResponse:
    first = (str(message).strip().splitlines() or ["bad request"])[0]
    return JSONResponse({"error": first, **extra}, status_code=status)


def create_app(*, token: str | None = None, host: str = "127.0.0.1", port: int = 8765,
               tracking_uri: str | None = None, root: str | Path = "runs/studio",
               experiments: str | Path | None = "experiments", jobs: int = 1) -> FastAPI:
    """The studio bound to ``host:port``. Off loopback a ``token`` is required: every request
    carries it as ``Authorization: Bearer …``, ``?token=`` (first page load) or the cookie set then.
    Trainings started from it run `jobs` at a time into ROOT, from the shipped `experiments`
    folder, uploads kept in ROOT/uploads or data sets uploaded to ROOT/data, tracked in
    `tracking_uri` (whose runs it compares and inspects)."""
    if not is_loopback(host) and not token:
        raise ConfigError(f"the studio on {host} (not loopback) needs a token; "
                          "`attnlab studio` makes one")
    names = {host, *(("127.0.0.1", "localhost") if is_loopback(host) else ())}
    # DNS rebinding: a page elsewhere that resolves its own name to us still sends its own Host.
    allowed = {f"{name}:{port}" for name in names} | ({*names} if port == 80 else set())
    # Bound to every address (0.0.0.0, ::), clients name the machine as they know it; the token,
    # required there, is the guard.
    anywhere = _unspecified(host)
    root = Path(root)
    trainings = Jobs(root, tracking_uri=tracking_uri, limit=jobs)
    faithful = inspect.Faithfulness(root)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        trainings.close()  # a studio that stops cancels what it started
        faithful.close()

    app = FastAPI(title="attnlab studio", docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lifespan)
    app.state.jobs = trainings

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not anywhere and request.headers.get("host", "") not in allowed:
            return _error(421, "this studio answers only to " + " or ".join(sorted(allowed)))
        if token is not None:
            given = _token_of(request)
            if given is None or not secrets.compare_digest(given, token):
                return _error(401, "a token is needed: open the URL `attnlab studio` printed, "
                                   "or send Authorization: Bearer <token>")
        response: Response = await call_next(request)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        problems = err.errors()
        if not problems:
            return _error(422, "bad request")
        p = problems[0]
        where = ".".join(str(x) for x in p.get("loc", ()) if x != "body") or "body"
        return _error(422, f"{where}: {p.get('msg', 'invalid')}")

    @app.exception_handler(AttnlabError)
    async def _attnlab(request: Request, err: AttnlabError) -> JSONResponse:
        return _error(422, str(err), detail=str(err))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"the studio failed unexpectedly ({type(err).__name__}); this is a bug")

    app.include_router(design.router)
    shipped = Path(experiments) if experiments is not None else None
    data_sets = data.DataSets(root / "data")
    app.state.experiments = run.Experiments(shipped, root / "uploads")
    app.include_router(run.routes(trainings, app.state.experiments, data_sets))
    app.include_router(data.routes(data_sets, lambda name: any(
        not job.done and data_sets.reads(job.experiment, name) for job in trainings.list())))
    app.include_router(compare.routes(tracking_uri))
    app.include_router(inspect.routes(tracking_uri, root, faithful))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "studio.html"))

    return app


def _token_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token") or request.cookies.get(COOKIE)
