"""Trainings as jobs: queued, each run by `train()` in a worker process of its own, at most
`limit` at once, with live progress events and a cancel that leaves the run folder resumable and
the MLflow run marked cancelled. What the studio's Run screen (and any other front door) drives."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# mlflow now, once: a server's threads importing it at once for the first time (a cancel beside
# a look at the store) deadlock on its circular imports (_DeadlockError)
import mlflow
from lightning.pytorch.callbacks import Callback

from attnlab.errors import ConfigError, InputError
from attnlab.train.config import load_experiment

STATES = ("queued", "running", "finished", "failed", "cancelled")
CANCEL_TAG = "attnlab.cancelled"  # on a cancelled run's MLflow run, beside status KILLED
EVERY_S = 0.5  # at most one progress event per this many seconds (validation always reports)
GRACE_S = 2.0  # a worker dead this long without saying how it ended failed


@dataclass
class Job:
    """One training: its experiment, folder, state and the events it has sent so far."""

    id: str
    experiment: dict  # the experiment as plain data, overrides applied
    out: Path
    state: str = "queued"
    events: list[dict] = field(default_factory=list)
    metrics: dict | None = None
    error: str | None = None
    process: Any = None  # the worker, while it runs
    gone: float = 0.0  # when its worker was first seen dead without a word
    run_id: str | None = None  # its MLflow run, once the worker has made it

    @property
    def done(self) -> bool:
        return self.state in ("finished", "failed", "cancelled")

    def summary(self) -> dict:
        """What a front door shows: no process, no event list."""
        progress = next((e for e in reversed(self.events) if e["kind"] == "step"), None)
        return {"id": self.id, "name": self.experiment["name"], "state": self.state,
                "out": str(self.out), "progress": progress, "metrics": self.metrics,
                "error": self.error, "run_id": self.run_id}


class Jobs:
    """A queue of trainings run in worker processes, at most `limit` at once; each job trains
    into ROOT/<id>-<name>, tracked in `tracking_uri`. Workers run `nice` steps below the parent's
    priority, so that a server answering a person stays quick while they train."""

    def __init__(self, root: str | Path, *, tracking_uri: str | None = None, limit: int = 1,
                 nice: int = 10) -> None:
        if limit < 1:
            raise ConfigError(f"a job limit is at least 1, got {limit}")
        self.root, self.tracking_uri, self.limit, self.nice = Path(root), tracking_uri, limit, nice
        self._jobs: dict[str, Job] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        self._events = self._context.Queue()
        self._closed = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._listener = threading.Thread(target=self._listen, daemon=True, name="attnlab-jobs")
        self._listener.start()

    def submit(self, experiment: str | Path | dict, overrides: list[str] = ()) -> Job:
        """Queue a training; a mistake in the experiment is a ConfigError now, not in the worker."""
        exp = load_experiment(experiment, list(overrides))
        with self._lock:
            if self._closed.is_set():
                raise ConfigError("these jobs are closed (the studio is stopping): start a new queue")
            number = next(self._numbers)
            job = Job(f"{number}", exp.model_dump(mode="json"), self.root / f"{number}-{exp.name}")
            self._jobs[job.id] = job
            self._start_queued()
        return job

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise InputError(f"no job {job_id!r:.40}; jobs: {', '.join(self._jobs) or 'none'}") from None

    def list(self) -> list[Job]:
        return list(self._jobs.values())

    def cancel(self, job_id: str) -> Job:
        """Stop a queued or running job. A running worker is killed: training writes each file
        atomically, so the folder stays a run that `--resume` continues; its MLflow run is marked
        KILLED and tagged cancelled."""
        job = self.get(job_id)
        with self._lock:
            if job.done:
                return job
            process, job.state = job.process, "cancelled"
            self._changed.notify_all()
        if process is not None:
            process.kill()
            process.join()
            _mark_cancelled(job.out)
        with self._lock:
            self._start_queued()
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job is done (or `timeout` seconds pass); returns it."""
        job = self.get(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not job.done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
        return job

    def counts(self) -> dict[str, int]:
        """The queue at a glance: how many run, how many wait, and the limit."""
        with self._lock:
            states = [j.state for j in self._jobs.values()]
        return {"running": states.count("running"), "queued": states.count("queued"),
                "limit": self.limit}

    def events(self, job_id: str, after: int = 0) -> list[dict]:
        """The job's events from number `after` on (each event carries its number `n`)."""
        return self.get(job_id).events[after:]

    def close(self) -> None:
        """Cancel every job that is not done and stop listening."""
        with self._lock:
            self._closed.set()  # first, so that a cancel frees no slot for a queued job
        for job in self.list():
            self.cancel(job.id)
        self._listener.join(timeout=2)
        # Give the queue's semaphores back now: a server stopped by SIGTERM exits on the signal,
        # without the finalizers that would, and the resource tracker reports them as leaked.
        if self._events is not None:
            self._events.close()
            self._events.join_thread()
            self._events = None

    # -- inside --------------------------------------------------------------------------------

    def _start_queued(self) -> None:
        """Under the lock: start queued jobs while fewer than `limit` run (none once closed)."""
        if self._closed.is_set():
            return
        running = sum(j.state == "running" for j in self._jobs.values())
        for job in self._jobs.values():
            if running >= self.limit:
                return
            if job.state == "queued":
                job.state = "running"
                job.process = self._context.Process(
                    target=_work, args=(job.id, job.experiment, str(job.out), self.tracking_uri,
                                        self._events, self.nice), daemon=True, name=f"attnlab-job-{job.id}")
                job.process.start()
                running += 1

    def _listen(self) -> None:
        while not self._closed.is_set():
            self._reap()
            try:
                job_id, event = self._events.get(timeout=0.2)
            except queue.Empty:
                continue
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None or job.state == "cancelled":
                    continue
                event["n"] = len(job.events)
                job.events.append(event)
                job.run_id = event.get("run_id") or job.run_id
                if event["kind"] in ("finished", "failed"):
                    job.state, job.process = event["kind"], None
                    job.metrics, job.error = event.get("metrics"), event.get("error")
                    self._start_queued()
                self._changed.notify_all()

    def _reap(self) -> None:
        """A worker that died without a word (killed from outside, out of memory) failed."""
        with self._lock:
            for job in self._jobs.values():
                if job.state != "running" or job.process is None or job.process.is_alive():
                    continue
                # its last words may still be in the pipe: give them a moment to arrive
                job.gone = job.gone or time.monotonic()
                if time.monotonic() - job.gone > GRACE_S:
                    code, job.state, job.process = job.process.exitcode, "failed", None
                    job.error = f"the worker process ended without finishing (exit code {code})"
                    job.events.append({"n": len(job.events), "kind": "failed", "error": job.error})
                    self._start_queued()
                    self._changed.notify_all()


class Progress(Callback):
    """Sends (job id, event) for the start (with the MLflow run id, so a front door can link to
    the run before it ends), training steps (at most every EVERY_S seconds) and validations."""

    def __init__(self, job_id: str, events, out: str | Path | None = None) -> None:
        self.job_id, self.events, self.last, self.out = job_id, events, 0.0, out

    def on_train_start(self, trainer, module) -> None:
        monitor = getattr(getattr(module, "task", None), "monitor", None)  # what the chart draws
        self.events.put((self.job_id, {"kind": "started", "run_id": _run_id(self.out),
                                       "total": trainer.estimated_stepping_batches,
                                       "monitor": monitor}))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        now = time.monotonic()
        if now - self.last < EVERY_S:
            return
        self.last = now
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.events.put((self.job_id, {
            "kind": "step", "step": trainer.global_step, "total": trainer.estimated_stepping_batches,
            "epoch": trainer.current_epoch, "loss": float(loss) if loss is not None else None}))

    def on_validation_end(self, trainer, module) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        self.events.put((self.job_id, {"kind": "validation", "step": trainer.global_step,
                                       "epoch": trainer.current_epoch, "metrics": metrics}))


def _work(job_id: str, experiment: dict, out: str, tracking_uri: str | None, events,
          nice: int) -> None:
    """A worker process: train, then say how it ended."""
    from attnlab.train.run import train

    if nice and hasattr(os, "nice"):
        os.nice(nice)
    try:
        metrics = train(experiment, out, tracking_uri=tracking_uri, progress=False,
                        callbacks=[Progress(job_id, events, out)])
        events.put((job_id, {"kind": "finished", "metrics": json.loads(json.dumps(metrics)),
                             "run_id": _run_id(out)}))
    except Exception as err:  # the job's failure, told to the parent in one line
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        events.put((job_id, {"kind": "failed", "error": f"{type(err).__name__}: {first}"}))


def _run_id(out: str | Path | None) -> str | None:
    """The MLflow run id train() recorded in OUT/tracking.json, if it has yet."""
    from attnlab.train.tracking import RUN_FILE

    try:
        return json.loads((Path(out) / RUN_FILE).read_text())["run_id"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _mark_cancelled(out: Path) -> None:
    """The killed worker's MLflow run (named in OUT/tracking.json): KILLED, tagged cancelled."""
    from attnlab.train.tracking import RUN_FILE

    try:
        recorded = json.loads((out / RUN_FILE).read_text())
    except (OSError, ValueError):
        return  # killed before its run was made
    client = mlflow.MlflowClient(tracking_uri=recorded["tracking_uri"])
    client.set_tag(recorded["run_id"], CANCEL_TAG, "true")
    client.set_terminated(recorded["run_id"], "KILLED")
