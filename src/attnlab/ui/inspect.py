"""The studio's Inspect screen API: a finished run of the store, an input typed or a test example
picked, and G's view of it — head and model views, rollout, and a mixture's allocation where the
program has one — as the self-contained page `attnlab inspect` writes. The browser names runs by
their MLflow id; the server finds the folder."""

from __future__ import annotations

from pathlib import Path

from attnlab.errors import InputError
from attnlab.train.tracking import list_runs

MAX_TEXT = 2_000  # characters of a typed input


def inspectable(tracking_uri: str | None) -> list[dict]:
    """The store's finished runs whose folder is on this machine, newest first."""
    return [{"run_id": r["run_id"], "run": r["run"], "experiment": r["experiment"],
             "program": r["program"], "task": r["settings"].get("task")}
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
              example: int | None = None, layer: int | None = None, head: int | None = None) -> str:
    """The HTML page of one input's view (`attnlab inspect RUN …`)."""
    from attnlab.inspect.views import inspect_run, page

    if text is not None and len(text) > MAX_TEXT:
        raise InputError(f"text: {len(text)} characters; at most {MAX_TEXT}")
    view = inspect_run(folder_of(tracking_uri, run_id), text=text, example=example)
    return page(view, layer, head)


def routes(tracking_uri: str | None):
    """The Inspect screen's routes, to include in the studio app."""
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse

    router = APIRouter(prefix="/api/inspect")

    @router.get("/runs")
    def runs() -> list[dict]:
        return inspectable(tracking_uri)

    @router.get("/runs/{run_id}/view", response_class=HTMLResponse)
    def view(run_id: str, text: str | None = None, example: int | None = None,
             layer: int | None = None, head: int | None = None) -> HTMLResponse:
        return HTMLResponse(view_page(tracking_uri, run_id, text=text, example=example,
                                      layer=layer, head=head))

    return router
