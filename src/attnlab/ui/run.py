"""The studio's Run screen API: the experiments a person may start (shipped, or uploaded YAML kept
in a managed folder), trainings started per program through `attnlab.train.jobs`, their live
events as server-sent events, and cancelling. The browser names experiments and jobs, never a
file path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from attnlab.errors import ConfigError
from attnlab.lang.program import parse
from attnlab.train.config import RUN_NAME, load_experiment
from attnlab.train.jobs import Jobs

MAX_UPLOAD = 64_000  # bytes of one uploaded experiment file
MAX_UPLOADS = 200  # experiment files kept in the managed folder
MAX_PROGRAMS = 8  # programs one request may start


class Upload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(max_length=MAX_UPLOAD)


class Start(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    experiment: str = Field(min_length=1, max_length=128)
    programs: list[str] = Field(default_factory=list, max_length=MAX_PROGRAMS)
    set: list[str] = Field(default_factory=list, max_length=32)


class Experiments:
    """Experiments by name: the shipped ones (a folder of YAML files) and uploads (another folder
    the studio manages); an upload never replaces a shipped experiment."""

    def __init__(self, shipped: Path | None, uploads: Path) -> None:
        self.shipped, self.uploads = shipped, uploads

    def names(self) -> list[dict[str, str]]:
        found = {}
        for source, folder in (("uploaded", self.uploads), ("shipped", self.shipped)):
            for path in sorted(folder.glob("*.yaml")) if folder and folder.is_dir() else ():
                found[path.stem] = {"name": path.stem, "source": source}
        return sorted(found.values(), key=lambda e: (e["source"] != "shipped", e["name"]))

    def data(self, name: str) -> dict:
        for folder in (self.shipped, self.uploads):
            path = folder / f"{name}.yaml" if folder and RUN_NAME.fullmatch(name) else None
            if path is not None and path.is_file():
                return yaml.safe_load(path.read_text())
        known = ", ".join(e["name"] for e in self.names()) or "none yet: upload one"
        raise ConfigError(f"no experiment {name!r:.60}; known: {known}")

    def upload(self, text: str) -> dict[str, str]:
        """Check an experiment file and keep it under its own name; returns its entry."""
        exp = checked(_mapping(text))  # every mistake, named, before anything is kept
        if self.shipped and (self.shipped / f"{exp.name}.yaml").exists():
            raise ConfigError(f"{exp.name} is a shipped experiment: give the upload another name")
        self.uploads.mkdir(parents=True, exist_ok=True)
        if len(list(self.uploads.glob("*.yaml"))) >= MAX_UPLOADS and \
                not (self.uploads / f"{exp.name}.yaml").exists():
            raise ConfigError(f"{MAX_UPLOADS} uploaded experiments are kept already")
        (self.uploads / f"{exp.name}.yaml").write_text(text)
        return {"name": exp.name, "source": "uploaded"}


# Task options that reach outside the studio: a file on this machine, a package download.
_REACHING = {"path": "names a file on the server", "download": "installs a package"}


def checked(data: dict, overrides: list[str] = ()):
    """The experiment, refused when it would read a server file or download: the browser names
    experiments and uploads, never a path."""
    exp = load_experiment(data, list(overrides))
    for option, does in _REACHING.items():
        if exp.task.params.get(option):
            raise ConfigError(f"task.params.{option} {does}: the studio runs experiments on shipped "
                              "data sets and generated tasks; train your own files with attnlab train")
    return exp


def _mapping(text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"the experiment is not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError("an experiment is a YAML mapping (name:, task:, train:, …)")
    return data


def start(jobs: Jobs, experiments: Experiments, request: Start) -> list[dict[str, Any]]:
    """One job per program (or one with the experiment's own): each checked before any starts."""
    data = experiments.data(request.experiment)
    overrides = list(request.set)
    if not request.programs:
        checked(data, overrides)
        return [jobs.submit(data, overrides).summary()]
    for text in request.programs:
        parse(text)  # the caret message, before anything is queued
        checked(data, [*overrides, f"attention={json.dumps(text)}"])
    return [jobs.submit(data, [*overrides, f"attention={json.dumps(text)}"]).summary()
            for text in request.programs]


async def events(jobs: Jobs, job_id: str, poll_s: float = 0.2):
    """The job's events as server-sent events (`data: {...}`), then an `end` event when it is
    done; a client that reconnects with Last-Event-ID goes on from there."""
    job = jobs.get(job_id)
    sent = 0
    while True:
        for event in jobs.events(job_id, after=sent):
            yield f"id: {event['n']}\ndata: {json.dumps(event)}\n\n"
            sent = event["n"] + 1
        if job.done and sent >= len(job.events):
            yield f"event: end\ndata: {json.dumps(job.summary())}\n\n"
            return
        await asyncio.sleep(poll_s)


def routes(jobs: Jobs, experiments: Experiments):
    """The Run screen's routes, to include in the studio app."""
    from fastapi import APIRouter
    from fastapi.responses import StreamingResponse

    router = APIRouter(prefix="/api")

    @router.get("/experiments")
    async def listed() -> list[dict[str, str]]:
        return experiments.names()

    @router.post("/experiments")
    async def uploaded(body: Upload) -> dict[str, str]:
        return experiments.upload(body.text)

    @router.post("/runs")
    async def started(body: Start) -> dict[str, list]:
        return {"jobs": start(jobs, experiments, body)}

    @router.get("/runs")
    async def running() -> list[dict]:
        return [job.summary() for job in jobs.list()]

    @router.get("/runs/{job_id}")
    async def one(job_id: str) -> dict:
        job = jobs.get(job_id)
        return {**job.summary(), "events": job.events}

    @router.get("/runs/{job_id}/events")
    async def stream(job_id: str) -> StreamingResponse:
        jobs.get(job_id)  # an unknown job is a 4xx now, not an empty stream
        return StreamingResponse(events(jobs, job_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @router.post("/runs/{job_id}/cancel")
    async def cancelled(job_id: str) -> dict:
        return (await asyncio.to_thread(jobs.cancel, job_id)).summary()

    return router

