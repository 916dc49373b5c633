"""The studio's Run screen API: the experiments a person may start (shipped, uploaded YAML kept
in a managed folder, or an experiment the server makes around an uploaded data set), trainings
started per program through `attnlab.train.jobs`, their live events as server-sent events, the
queue, and cancelling. The browser names experiments, data sets and jobs, never a file path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import yaml
from fastapi import Request  # a route's annotation: resolved at module level
from pydantic import BaseModel, ConfigDict, Field

from attnlab.errors import AttnlabError, ConfigError
from attnlab.train.config import RUN_NAME, load_experiment
from attnlab.train.jobs import Job, Jobs
from attnlab.ui.data import DataSets
from attnlab.ui.design import read_program

MAX_UPLOAD = 64_000  # bytes of one uploaded experiment file
MAX_UPLOADS = 200  # experiment files kept in the managed folder
MAX_PROGRAMS = 8  # programs one request may start


class Upload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(max_length=MAX_UPLOAD)


class OwnData(BaseModel):
    """A data set uploaded to the studio, its format (default: guessed) and the format's options."""
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=64)
    format: str | None = Field(None, min_length=1, max_length=32)
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=16)


class Start(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    experiment: str | None = Field(None, min_length=1, max_length=128)
    data: OwnData | None = None
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


def checked(data: dict, overrides: list[str] = (), path: Path | None = None):
    """The experiment, refused when it would read a server file or download: the browser names
    experiments and uploads, never a path. `path`: the one the server filled in for an uploaded
    data set, which the overrides may not change."""
    exp = load_experiment(data, list(overrides))
    for option, does in _REACHING.items():
        value = exp.task.params.get(option)
        if option == "path" and path is not None and value == str(path):
            continue
        if value:
            raise ConfigError(f"task.params.{option} {does}: the studio runs experiments on shipped "
                              "data sets, generated tasks and data sets uploaded to it (Run → your "
                              "own data); the server fills in their path")
    if path is not None and exp.task.params.get("path") != str(path):
        raise ConfigError("task.params.path: the studio fills it in with the uploaded data set")
    return exp


# What an experiment on a person's own data starts from, by the kind of task its format makes:
# small enough to train in a minute or two on a laptop, overridable with `set`.
TEXT_START = {"params": {"vocab_size": 2000, "max_len": 64},
              "model": {"d_model": 32, "layers": 1, "heads": 2, "pooling": "mean", "dropout": 0.1},
              "train": {"epochs": 5, "batch_size": 16, "lr": 0.003, "warmup_steps": 10, "seed": 0}}
IMAGE_START = {"params": {"size": 32},
               "model": {"d_model": 48, "layers": 2, "heads": 4, "pooling": "cls", "dropout": 0.1},
               "train": {"epochs": 10, "batch_size": 32, "lr": 0.002, "warmup_steps": 20, "seed": 0}}
OWN_FORMATS = ("csv", "tsv", "jsonl", "parquet", "image-folder")


def own_experiment(data_sets: DataSets, own: OwnData) -> tuple[dict, Path]:
    """The experiment the server makes around an uploaded data set, and the path it filled in."""
    for option in _REACHING:
        if option in own.params:
            raise ConfigError(f"data.params.{option}: the studio fills in where an uploaded data "
                              "set is; give the format's other options only")
    guessed, path = data_sets.source(own.name)
    fmt = own.format or guessed
    if fmt not in OWN_FORMATS:
        raise ConfigError(f"data.format {fmt!r:.40}: the studio trains on {', '.join(OWN_FORMATS)}")
    if (fmt == "image-folder") != (guessed == "image-folder"):
        what = "a folder of images" if guessed == "image-folder" else "a table"
        raise ConfigError(f"the data set {own.name!r} is {what}, not {fmt}: give format {guessed}")
    start = IMAGE_START if fmt == "image-folder" else TEXT_START
    params = {**start["params"], **own.params, "path": str(path)}
    model = dict(start["model"])
    if fmt == "image-folder":  # patches that tile the image, at least 4 a side
        size = params.get("size")
        side = size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 32
        model["patch_size"] = next(p for p in (8, 4, 2, 1) if (side % p == 0 and side // p >= 4)
                                   or p == 1)
    return {"name": own.name, "task": {"name": fmt, "params": params}, "model": model,
            "attention": "scaled_dot ; softmax", "train": dict(start["train"])}, path


def _mapping(text: str) -> dict:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"the experiment is not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError("an experiment is a YAML mapping (name:, task:, train:, …)")
    return data


def start(jobs: Jobs, experiments: Experiments, data_sets: DataSets,
          request: Start) -> list[dict[str, Any]]:
    """One job per program (or one with the experiment's own): each checked before any starts;
    on an uploaded data set, its data are read once here, so that a wrong column or a label seen
    once is this request's answer rather than a failed job."""
    if (request.experiment is None) == (request.data is None):
        raise ConfigError("give an experiment (its name) or data (an uploaded data set), not "
                          f"{'both' if request.experiment else 'neither'}")
    path = None
    if request.data is not None:
        data, path = own_experiment(data_sets, request.data)
    else:
        data = experiments.data(request.experiment)
    overrides = list(request.set)
    runs = [[*overrides, f"attention={json.dumps(text)}"] for text in request.programs] or [overrides]
    for text in request.programs:
        read_program(text)  # the caret message, before anything is queued; text programs only
    exps = [checked(data, each, path) for each in runs]
    if path is not None:
        from attnlab.tasks.base import read_examples

        try:
            read_examples(exps[0])
        except AttnlabError as err:  # named by the data set, not by where the server keeps it
            raise type(err)(hide_paths(str(err), data_sets.folder)) from None
    return [shown(jobs.submit(data, each), data_sets.folder) for each in runs]


def hide_paths(text: str | None, folder: Path) -> str | None:
    """A message without the server's folders: ROOT/data/NAME/file.csv reads NAME/file.csv."""
    if text is None:
        return None
    for prefix in (str(folder.absolute()) + "/", str(folder) + "/"):
        text = text.replace(prefix, "")
    return text


def shown(job: Job, folder: Path) -> dict[str, Any]:
    """What the browser sees of a job: its summary with the program it trains, the run folder
    left out and data paths hidden in its error."""
    summary = job.summary()
    summary.pop("out", None)
    attention = job.experiment.get("attention")
    summary["program"] = attention if isinstance(attention, str) else json.dumps(attention)
    summary["error"] = hide_paths(summary["error"], folder)
    return summary


async def events(jobs: Jobs, job_id: str, folder: Path, poll_s: float = 0.2, after: int = 0):
    """The job's events as server-sent events (`data: {...}`), then an `end` event when it is
    done; a client that reconnects with Last-Event-ID goes on from there (`after`)."""
    job = jobs.get(job_id)
    sent = after
    while True:
        for event in jobs.events(job_id, after=sent):
            if event.get("error"):
                event = {**event, "error": hide_paths(event["error"], folder)}
            yield f"id: {event['n']}\ndata: {json.dumps(event)}\n\n"
            sent = event["n"] + 1
        if job.done and sent >= len(job.events):
            yield f"event: end\ndata: {json.dumps(shown(job, folder))}\n\n"
            return
        await asyncio.sleep(poll_s)


def routes(jobs: Jobs, experiments: Experiments, data_sets: DataSets):
    """The Run screen's routes, to include in the studio app."""
    from fastapi import APIRouter
    from fastapi.responses import StreamingResponse

    folder = data_sets.folder

    router = APIRouter(prefix="/api")

    @router.get("/experiments")
    async def listed() -> list[dict[str, str]]:
        return experiments.names()

    @router.post("/experiments")
    async def uploaded(body: Upload) -> dict[str, str]:
        return experiments.upload(body.text)

    @router.post("/runs")
    async def started(body: Start) -> dict[str, list]:
        # reading an uploaded data set up front takes a moment: off the event loop
        return {"jobs": await asyncio.to_thread(start, jobs, experiments, data_sets, body)}

    @router.get("/runs")
    async def running() -> list[dict]:
        return [shown(job, folder) for job in jobs.list()]

    @router.get("/queue")
    async def queue() -> dict[str, int]:
        return jobs.counts()

    @router.get("/runs/{job_id}")
    async def one(job_id: str) -> dict:
        job = jobs.get(job_id)
        return {**shown(job, folder), "events": [
            {**e, "error": hide_paths(e["error"], folder)} if e.get("error") else e
            for e in job.events]}

    @router.get("/runs/{job_id}/events")
    async def stream(job_id: str, request: Request) -> StreamingResponse:
        jobs.get(job_id)  # an unknown job is a 4xx now, not an empty stream
        last = request.headers.get("last-event-id", "")
        after = int(last) + 1 if last.isdigit() and len(last) < 10 else 0
        return StreamingResponse(events(jobs, job_id, folder, after=after),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @router.post("/runs/{job_id}/cancel")
    async def cancelled(job_id: str) -> dict:
        return shown(await asyncio.to_thread(jobs.cancel, job_id), folder)

    return router

