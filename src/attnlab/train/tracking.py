"""Reading tracked runs back from MLflow (a SQLite store under runs/ by default)."""

from __future__ import annotations

from datetime import datetime


def list_runs(experiment: str | None = None, tracking_uri: str | None = None) -> list[dict]:
    """One dict per run: experiment, run, status, program, final metrics, start time; newest
    first. A run killed before it finished stays 'RUNNING' in MLflow."""
    import mlflow

    from attnlab.train.run import DEFAULT_TRACKING

    client = mlflow.MlflowClient(tracking_uri=tracking_uri or DEFAULT_TRACKING)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()
                   if experiment is None or e.name == experiment}
    if not experiments:
        return []
    rows = []
    for run in client.search_runs(list(experiments), order_by=["attributes.start_time DESC"]):
        m, p = run.data.metrics, run.data.params
        rows.append({"experiment": experiments[run.info.experiment_id],
                     "run": run.info.run_id[:8], "status": run.info.status,
                     "program": p.get("program"),
                     "test_accuracy": m.get("test_accuracy"),
                     "score": _main_score(m, p.get("main_metric", "test_accuracy")),
                     "train_seconds": m.get("train_seconds"),
                     "params": int(m["params"]) if "params" in m else None,
                     "started": datetime.fromtimestamp(run.info.start_time / 1000).strftime(
                         "%Y-%m-%d %H:%M")})
    return rows


def _main_score(metrics: dict, name: str) -> str | None:
    """A run's main metric as 'BLEU 12.34' (None for a run that never finished)."""
    from attnlab.train.compare import COLUMNS, format_metric

    return f"{COLUMNS.get(name, name)} {format_metric(name, metrics[name])}" if name in metrics else None
