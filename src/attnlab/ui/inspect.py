"""The studio's Inspect screen API: a finished run of the store, an input typed, a test example
picked or an image uploaded, and G's view of it — head and model views, rollout, and a mixture's
allocation where the program has one — as the self-contained page `attnlab inspect` writes; and
the run's faithfulness (ERASER, beside random), measured in the background and kept under ROOT.
The browser names runs by their MLflow id and images by their content hash; the server finds the
files."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request

from attnlab.errors import AttnlabError, InputError
from attnlab.train.tracking import list_runs

MAX_TEXT = 2_000  # characters of a typed input
MAX_IMAGE = 4 * 2**20  # bytes of an uploaded image
MAX_IMAGES = 200  # uploads kept: past it, the oldest goes (the folder never grows without end)
MAX_PAGE = 50  # test examples listed at once
MAX_FAITHFUL = 5_000  # test examples a faithfulness job may erase
SHOWN_TEXT = 160  # characters of a test example shown in the picker
MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpg"}
IMAGE_ID = re.compile(r"[0-9a-f]{16}\.(png|jpg)")
MAX_JOBS = 32


def _pretrained(settings: dict) -> str | None:
    name = settings.get("model.pretrained")
    return None if name in (None, "None", "") else name


def _components(program: str | None) -> int | None:
    """How many programs a mixture mixes (K), from its text; None for any other program."""
    if not program or "mix(" not in program:
        return None
    from attnlab.lang import parse
    from attnlab.lang.combinators import Mix

    try:
        parsed = parse(program)
    except AttnlabError:  # several programs (one per layer) are logged as one text: not parsed
        return None
    return len(parsed.components) if isinstance(parsed.combinator, Mix) else None


def inspectable(tracking_uri: str | None) -> list[dict]:
    """The store's finished runs whose folder is on this machine, newest first; `pretrained`
    names the model a run was fine-tuned from, `components` a mixture's K."""
    return [{"run_id": r["run_id"], "run": r["run"], "experiment": r["experiment"],
             "program": r["program"], "task": r["settings"].get("task"),
             "pretrained": _pretrained(r["settings"]), "components": _components(r["program"]),
             "started": r["started"]}
            for r in list_runs(None, tracking_uri)
            if r["status"] == "FINISHED" and r["folder"] and Path(r["folder"]).is_dir()]


def folder_of(tracking_uri: str | None, run_id: str) -> Path:
    """The folder of a finished run, found by its id in the store (never a path from a client)."""
    for r in list_runs(None, tracking_uri):
        if r["run_id"] == run_id and r["status"] == "FINISHED" and r["folder"] and \
                Path(r["folder"]).is_dir():
            return Path(r["folder"])
    raise InputError(f"no finished run {run_id!r:.40} with its folder on this machine")


def view_page(tracking_uri: str | None, run_id: str, *, text: str | None = None,
              example: int | None = None, image: Path | None = None, layer: int | None = None,
              head: int | None = None) -> str:
    """The HTML page of one input's view (`attnlab inspect RUN …`)."""
    from attnlab.inspect.views import inspect_run, page

    if text is not None and len(text) > MAX_TEXT:
        raise InputError(f"text: {len(text)} characters; at most {MAX_TEXT}")
    view = inspect_run(folder_of(tracking_uri, run_id), text=text, example=example, image=image)
    return page(view, layer, head)


# -- test examples to pick from -----------------------------------------------------------------


def examples(folder: Path, offset: int = 0, limit: int = 10) -> dict[str, Any]:
    """A page of a run's saved test examples: index, a short text (token ids for a generated
    task) or a PNG thumbnail as a data: URL for images, and the label's name where an example
    has one label. `input` says what the run reads: text, image, ids or frames (audio features,
    which only a test example gives)."""
    from attnlab.tasks import task_of
    from attnlab.train.folder import read_run

    exp = read_run(folder)
    task = task_of(exp.task)
    prepared = task.load_test(folder, exp)
    if prepared is None:
        raise InputError(f"run {exp.name} was saved without its test split: type an input instead")
    test, encoders = prepared.test, prepared.encoders
    rows = range(offset, min(offset + limit, len(test)))
    tokenizer = getattr(getattr(encoders, "base", encoders), "tokenizer", None)
    if test.inputs.dim() == 4:
        from attnlab.tasks.image import png_base64

        kind = "image"
        shown = ["data:image/png;base64," + png_base64(encoders, test.inputs[i]) for i in rows]
    elif test.inputs.is_floating_point():  # frames (N, L, F): nothing to type, only to pick
        kind = "frames"
        shown = [f"{int((~test.inputs[i].isnan().all(-1)).sum())} frames of "
                 f"{test.inputs.shape[-1]} features" for i in rows]
    elif tokenizer is not None and test.inputs.dim() == 2:
        kind = "text"
        shown = [_short(tokenizer.decode([t for t in test.inputs[i].tolist() if t != test.pad_id]))
                 for i in rows]
    else:
        kind = "ids"
        shown = [_short(" ".join(str(t) for t in test.inputs[i].reshape(-1).tolist()
                                 if t != test.pad_id)) for i in rows]
    names = test.label_names
    labels = [None if test.labels.dim() != 1 else
              (names[int(test.labels[i])] if names else str(int(test.labels[i]))) for i in rows]
    return {"input": kind, "total": len(test), "offset": offset,
            "examples": [{"index": i, kind if kind == "image" else "text": s, "label": label}
                         for i, s, label in zip(rows, shown, labels, strict=True)]}


def _short(text: str) -> str:
    return text if len(text) <= SHOWN_TEXT else text[:SHOWN_TEXT - 1] + "…"


# -- uploaded images: a managed folder, named by content ------------------------------------------


def save_image(images: Path, data: bytes) -> str:
    """Keep an uploaded PNG or JPEG under `images` named by its content's hash; that name is
    what the view is given back, never a path."""
    kind = next((k for magic, k in MAGIC.items() if data.startswith(magic)), None)
    if kind is None:
        raise InputError("the upload is not a PNG or JPEG image")
    name = f"{hashlib.sha256(data).hexdigest()[:16]}.{kind}"
    images.mkdir(parents=True, exist_ok=True)
    if not (images / name).exists():
        kept = sorted((p for p in images.iterdir() if IMAGE_ID.fullmatch(p.name)),
                      key=lambda p: p.stat().st_mtime)
        for old in kept[:max(0, len(kept) - MAX_IMAGES + 1)]:
            old.unlink(missing_ok=True)
        partial = images / f".{name}.{uuid.uuid4().hex[:8]}"
        partial.write_bytes(data)
        partial.replace(images / name)  # whole or absent: a view never reads half a file
    return name


def image_path(images: Path, name: str) -> Path:
    """The uploaded image a view names (by the name `save_image` gave it)."""
    if not IMAGE_ID.fullmatch(name):
        raise InputError(f"image {name!r:.40} is not the name of an uploaded image "
                         "(upload it first: PUT /api/inspect/images)")
    path = images / name
    if not path.is_file():
        raise InputError(f"no uploaded image {name}; upload it again")
    return path


# -- faithfulness, in the background ------------------------------------------------------------


def faithfulness_table(found: dict) -> dict[str, Any]:
    """The CLI's table as data: per importance, comprehensiveness then sufficiency at each k and
    AOPC, each non-random cell with its mark against random (the CLI's ✓ ~ ✗)."""
    from attnlab.cli.faithfulness import MARKS

    columns = [str(k) for k in found["ks"]] + ["aopc"]
    heads = [f"{m} {c if c == 'aopc' else c + '%'}" for m in ("comp", "suff") for c in columns]
    rows = []
    for entry in found["importances"].values():
        cells = []
        for measure in ("comprehensiveness", "sufficiency"):
            for column in columns:
                compared = entry.get(f"{measure}_vs_random", {}).get(column)
                cells.append({"value": entry[measure][column],
                              "mark": MARKS[compared["verdict"]] if compared else ""})
        rows.append({"importance": entry["label"], "cells": cells})
    return {"columns": heads, "rows": rows,
            "verdicts": [e["verdict"] for e in found["importances"].values() if "verdict" in e],
            "legend": "✓ better than random · ~ no better than random · ✗ worse than random "
                      "(paired with random example by example, 95% bootstrap CI); sufficiency: "
                      "lower is better"}


class Faithfulness:
    """Faithfulness jobs, one at a time in a thread of their own (the server stays free), their
    results kept in ROOT/faithfulness per (run, examples, seed)."""

    def __init__(self, root: Path) -> None:
        self.cache = root / "faithfulness"
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-faithfulness")

    def start(self, run_id: str, folder: Path, examples: int, seed: int) -> dict[str, Any]:
        """A job id; done at once when the cache holds the answer, the same job when one with
        these settings is already running. A run faithfulness cannot measure is refused here."""
        from attnlab.tasks import task_of
        from attnlab.tasks.base import TEST_FILE
        from attnlab.train.folder import read_run

        exp = read_run(folder)
        task_of(exp.task).erasing()  # a task whose inputs cannot be erased says so
        if not (folder / TEST_FILE).is_file():
            raise InputError(f"run {exp.name} was saved without its test split; faithfulness "
                             "erases test examples")
        key = f"{run_id}-{examples}-{seed}"
        cached = self.cache / f"{key}.json"
        with self.lock:
            for job, state in self.jobs.items():
                if state["key"] == key and state["state"] == "running":
                    return {"job": job, **state}
            self._forget_old()
            job = uuid.uuid4().hex[:12]
            if cached.is_file():
                self.jobs[job] = {"key": key, "state": "done", "cached": True,
                                  "result": json.loads(cached.read_text()), "finished": time.time()}
                return {"job": job, **self.jobs[job]}
            self.jobs[job] = {"key": key, "state": "running", "started": time.time()}
        self.pool.submit(self._run, job, run_id, folder, examples, seed, cached)
        return {"job": job, **self.jobs[job]}

    def _forget_old(self) -> None:
        if len(self.jobs) < MAX_JOBS:
            return
        done = sorted((j for j, v in self.jobs.items() if v["state"] != "running"),
                      key=lambda j: self.jobs[j]["finished"])
        for old in done[:MAX_JOBS // 2]:
            del self.jobs[old]
        if len(self.jobs) >= MAX_JOBS:
            raise InputError("too many faithfulness jobs running; wait for one to finish")

    def _run(self, job: str, run_id: str, folder: Path, examples: int, seed: int,
             cached: Path) -> None:
        from attnlab.inspect.faithfulness import faithfulness

        try:
            found = faithfulness(folder, examples=examples, seed=seed)
            # the run by its id: the browser never sees a folder
            result = {**found, "run": run_id, "table": faithfulness_table(found)}
            self.cache.mkdir(parents=True, exist_ok=True)
            partial = cached.with_suffix(f".{uuid.uuid4().hex[:8]}")
            partial.write_text(json.dumps(result, ensure_ascii=False))
            partial.replace(cached)
            update = {"state": "done", "cached": False, "result": result}
        except AttnlabError as e:
            update = {"state": "error", "error": (str(e).splitlines() or ["failed"])[0]}
        except Exception as e:  # a bug: said in one line, not a traceback in the browser
            update = {"state": "error", "error": f"faithfulness failed unexpectedly "
                                                 f"({type(e).__name__}); this is a bug"}
        with self.lock:
            self.jobs[job].update(update, finished=time.time())

    def close(self) -> None:
        """Drop the jobs that wait; one already erasing runs to its end (a thread cannot be
        stopped), and its answer is still cached."""
        self.pool.shutdown(wait=False, cancel_futures=True)

    def poll(self, job: str) -> dict[str, Any]:
        with self.lock:
            if job not in self.jobs:
                raise InputError(f"no faithfulness job {job!r:.40}")
            return {"job": job, **self.jobs[job]}


class Measure(BaseModel):
    """What a faithfulness job erases: the first `examples` test examples, random draws seeded."""

    examples: int = Field(100, ge=1, le=MAX_FAITHFUL)
    seed: int = Field(0, ge=0, le=2**31 - 1)


def routes(tracking_uri: str | None, root: str | Path = "runs/studio",
           jobs: Faithfulness | None = None):
    """The Inspect screen's routes, to include in the studio app (uploads and faithfulness
    results go under `root`; faithfulness runs in `jobs`, which the app closes when it stops)."""
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse

    router = APIRouter(prefix="/api/inspect")
    images = Path(root) / "images"
    jobs = jobs or Faithfulness(Path(root))

    @router.get("/runs")
    def runs() -> list[dict]:
        return inspectable(tracking_uri)

    @router.get("/runs/{run_id}/view", response_class=HTMLResponse)
    def view(run_id: str, text: str | None = None, example: int | None = None,
             image: str | None = None, layer: int | None = None,
             head: int | None = None) -> HTMLResponse:
        picture = None if image is None else image_path(images, image)
        return HTMLResponse(view_page(tracking_uri, run_id, text=text, example=example,
                                      image=picture, layer=layer, head=head))

    @router.get("/runs/{run_id}/examples")
    def listed(run_id: str, offset: int = 0, limit: int = 10) -> dict:
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise InputError(f"offset ≥ 0 and limit 1..{MAX_PAGE}, please")
        return examples(folder_of(tracking_uri, run_id), offset, limit)

    @router.put("/images")
    async def upload(request: Request) -> dict:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_IMAGE:
            raise _too_big()
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_IMAGE:
                raise _too_big()
        return {"image": save_image(images, bytes(data))}

    @router.post("/runs/{run_id}/faithfulness", status_code=202)
    def measure(run_id: str, body: Measure) -> dict:
        return jobs.start(run_id, folder_of(tracking_uri, run_id), body.examples, body.seed)

    @router.get("/faithfulness/{job}")
    def polled(job: str) -> dict:
        return jobs.poll(job)

    return router


def _too_big():
    from starlette.exceptions import HTTPException

    return HTTPException(413, f"the image is over {MAX_IMAGE // 2**20} MB; send a smaller one")
