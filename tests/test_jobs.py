"""Trainings as jobs: each in a worker process, queued under a limit, with live progress, results
equal to metrics.json, and a cancel that marks the MLflow run and leaves a resumable folder."""

from __future__ import annotations

import json
import os
import time

import mlflow
import pytest

from attnlab.errors import ConfigError, InputError
from attnlab.train.jobs import CANCEL_TAG, Jobs
from attnlab.train.run import train
from attnlab.train.tracking import RUN_FILE

TINY = {"name": "tiny-jobs",
        "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 8, "num_kv_pairs": 2},
                 "train_examples": 64, "val_examples": 32, "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "attention": "causal ; softmax",
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.003, "seed": 3}}
LONG = {**TINY, "name": "long-jobs", "task": {**TINY["task"], "train_examples": 3000},
        "train": {**TINY["train"], "epochs": 3}}


@pytest.fixture
def jobs(tmp_path):
    queue = Jobs(tmp_path / "jobs", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", limit=1)
    yield queue
    queue.close()


def test_jobs_run_in_turn_report_progress_and_end_as_train_does(jobs, tmp_path) -> None:
    first = jobs.submit(TINY)
    second = jobs.submit(TINY, ["train.seed=4"])
    assert (first.state, second.state) == ("running", "queued")  # the limit is one at a time
    jobs.wait(first.id, timeout=120)
    assert first.state == "finished", first.error
    assert second.state in ("running", "finished")  # started when the first ended
    jobs.wait(second.id, timeout=120)
    assert second.state == "finished", second.error
    for job in (first, second):
        saved = json.loads((job.out / "metrics.json").read_text())
        assert job.metrics == saved
        kinds = [e["kind"] for e in job.events]
        assert kinds.count("validation") == 2 and kinds[-1] == "finished"
        assert [e["n"] for e in job.events] == list(range(len(job.events)))
        assert jobs.events(job.id, after=len(job.events) - 1) == job.events[-1:]
    assert first.out != second.out and second.metrics["seed"] == 4
    assert [j.id for j in jobs.list()] == [first.id, second.id]
    assert first.summary()["state"] == "finished" and "process" not in first.summary()


def test_a_cancelled_job_is_marked_in_mlflow_and_its_folder_resumes(jobs, tmp_path) -> None:
    job = jobs.submit(LONG)
    waiting = jobs.submit(TINY)
    deadline = time.monotonic() + 120
    while not any(e["kind"] == "validation" for e in job.events):  # one epoch and its checkpoint
        assert time.monotonic() < deadline and job.state == "running", job.error
        time.sleep(0.1)
    steps = [e for e in job.events if e["kind"] == "step"]
    assert steps and steps[0]["total"] == 3 * 188 and 0 <= steps[0]["step"] <= steps[-1]["step"]
    # the worker trains below the parent's priority (a server answering a person stays quick)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, job.process.pid) == min(mine + jobs.nice, 19)
    jobs.cancel(job.id)
    assert job.state == "cancelled" and job.process is not None and not job.process.is_alive()
    recorded = json.loads((job.out / RUN_FILE).read_text())
    run = mlflow.MlflowClient(tracking_uri=recorded["tracking_uri"]).get_run(recorded["run_id"])
    assert run.info.status == "KILLED" and run.data.tags[CANCEL_TAG] == "true"
    assert waiting.state == "running"  # the freed slot went to the next job
    jobs.cancel(waiting.id)
    assert jobs.cancel(job.id) is job  # cancelling twice is harmless
    # the folder is a run that --resume continues to its end
    metrics = train(LONG, job.out, resume=True, progress=False,
                    tracking_uri=recorded["tracking_uri"])
    assert metrics["epochs"] == 3 and (job.out / "metrics.json").exists()


def test_mistakes_are_refused_before_a_worker_starts(jobs) -> None:
    with pytest.raises(ConfigError, match="batchsize"):
        jobs.submit({**TINY, "train": {"epochs": 1, "batchsize": 8}})
    with pytest.raises(InputError, match="no job '7'"):
        jobs.get("7")
    assert jobs.list() == []


def test_a_closed_queue_refuses_new_jobs_and_closes_once(tmp_path) -> None:
    queue = Jobs(tmp_path / "jobs", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    running, waiting = queue.submit(LONG), queue.submit(TINY)
    queue.close()
    # closing cancels both; the running one's slot is not handed to the waiting one on the way
    assert running.state == waiting.state == "cancelled" and waiting.process is None
    queue.close()  # a second close is harmless
    with pytest.raises(ConfigError, match="closed"):
        queue.submit(TINY)
    assert queue.list() == [running, waiting]
