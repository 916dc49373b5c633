"""The studio's Compare screen API: the runs of the MLflow store, filtered by experiment, task
and program, with the settings that differ among the runs shown; each run's main metric beside
its task's trivial baseline; and a run's metric curves."""

from __future__ import annotations

from typing import Any

from attnlab.errors import InputError
from attnlab.train.compare import BASELINES, COLUMNS
from attnlab.train.tracking import differing_keys, list_runs, open_store

CURVES = ("val_", "train_loss_epoch")  # the metrics drawn per epoch: every validation one, the loss


def runs(tracking_uri: str | None, *, experiment: str | None = None, task: str | None = None,
         program: str | None = None) -> dict[str, Any]:
    """The store's runs that match (program: any part of its text), newest first, the keys
    that differ among them, and every experiment and task of the store (the filters' choices)."""
    every = list_runs(None, tracking_uri)
    rows = [r for r in every
            if (experiment is None or r["experiment"] == experiment)
            and (task is None or r["settings"].get("task") == task)
            and (program is None or program in (r["program"] or ""))]
    differs = differing_keys([r["settings"] for r in rows])
    return {"differs": differs, "runs": [_row(r, differs) for r in rows],
            "experiments": sorted({r["experiment"] for r in every}),
            "tasks": sorted({t for r in every if (t := r["settings"].get("task"))})}


def _row(r: dict, differs: list[str]) -> dict[str, Any]:
    main = r["settings"].get("main_metric", "test_accuracy")
    metrics = r.get("metrics") or {}
    baseline = BASELINES.get(main)
    pretrained = r["settings"].get("model.pretrained")
    # no folder: the browser names a run by its id, never by a path of this machine
    return {"run_id": r["run_id"], "run": r["run"], "experiment": r["experiment"],
            "task": r["settings"].get("task"), "status": r["status"], "program": r["program"],
            "differs": {k: r["settings"].get(k) for k in differs},
            "pretrained": None if pretrained in (None, "None", "") else pretrained,
            "main_metric": main, "label": COLUMNS.get(main, main), "score": metrics.get(main),
            "baseline_metric": baseline, "baseline": metrics.get(baseline) if baseline else None,
            "baseline_label": COLUMNS.get(baseline, baseline) if baseline else None,
            "train_seconds": r["train_seconds"], "started": r["started"]}


def curves(tracking_uri: str | None, run_id: str) -> dict[str, list[dict[str, float]]]:
    """A run's per-epoch metrics (validation scores, the epoch's training loss) by step."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=open_store(tracking_uri, create=False))
    try:
        keys = client.get_run(run_id).data.metrics
    except MlflowException:
        raise InputError(f"no run {run_id!r:.40} in the store") from None
    return {key: [{"step": m.step, "value": m.value} for m in client.get_metric_history(run_id, key)]
            for key in sorted(keys) if key.startswith(CURVES)}


def routes(tracking_uri: str | None):
    """The Compare screen's routes, to include in the studio app."""
    from fastapi import APIRouter

    router = APIRouter(prefix="/api/store")

    @router.get("/runs")
    def listed(experiment: str | None = None, task: str | None = None,
               program: str | None = None) -> dict:
        return runs(tracking_uri, experiment=experiment, task=task, program=program)

    @router.get("/runs/{run_id}/curves")
    def drawn(run_id: str) -> dict:
        return curves(tracking_uri, run_id)

    return router
