"""Runs tracked in MLflow (a SQLite store under runs/ by default): the store made once under a lock,
a run that a resume continues, a killed run that shows as killed, and reading runs back."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import warnings
from contextlib import closing, contextmanager, suppress
from datetime import datetime
from pathlib import Path

from attnlab.errors import ConfigError

DEFAULT_TRACKING = "sqlite:///runs/mlflow.db"
RUN_FILE = "tracking.json"  # in the run folder: the MLflow run a resume continues
ACCEPTED = ("sqlite:///PATH (a local store; sqlite:////abs/path for an absolute one) or "
            "http(s)://HOST:PORT (an MLflow tracking server)")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PROCESS_TAGS = ("attnlab.host", "attnlab.pid", "attnlab.process_start")
FOLDER_TAG = "attnlab.folder"  # the run's output folder, for `attnlab runs`


# -- the store --------------------------------------------------------------------------------------


def open_store(tracking_uri: str | None, *, create: bool = True) -> str:
    """The tracking URI, checked: a SQLite store is made whole before anyone uses it (or repaired
    when a kill left it half-made and it holds no runs); a server must answer. Returns the URI with
    a SQLite path made absolute, so a run folder names its store wherever it is resumed from."""
    uri = tracking_uri or DEFAULT_TRACKING
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    check = _SCHEMES.get(scheme)
    if check is None:
        raise ConfigError(f"tracking URI '{uri}' is not one attnlab accepts: give {ACCEPTED}")
    return check(uri, create)


def _sqlite_store(uri: str, create: bool) -> str:
    if not uri.startswith("sqlite:///") or uri == "sqlite:///" or "?" in uri:
        raise ConfigError(f"tracking URI '{uri}' is not one attnlab accepts: give {ACCEPTED}")
    db = Path(uri.removeprefix("sqlite:///")).expanduser().absolute()
    uri = f"sqlite:///{db}"
    if db.is_dir():
        raise ConfigError(f"tracking store {db} is a folder: give the path of a file, "
                          f"e.g. sqlite:///{db / 'mlflow.db'}")
    if not db.exists() and not create:
        return uri  # nothing tracked there yet: reading must not leave a store behind
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot make the folder of tracking store {db} ({err.strerror}): "
                          f"give --tracking-uri sqlite:///PATH in a folder you can write") from None
    if create and not os.access(db if db.exists() else db.parent, os.W_OK):
        raise ConfigError(f"cannot write tracking store {db}: give --tracking-uri sqlite:///PATH "
                          f"in a folder you can write")
    with store_lock(db):
        _make_whole(db, uri)
    return uri


def _http_server(uri: str, create: bool) -> str:
    """MLflow retries an unreachable server for minutes; one quick connection says it at once."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "", port), timeout=5):
            pass
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot reach the MLflow tracking server at {uri} ({err}): start it, or "
                          f"leave --tracking-uri out to track in {DEFAULT_TRACKING}") from None
    return uri


_SCHEMES = {"sqlite": _sqlite_store, "http": _http_server, "https": _http_server}


@contextmanager
def store_lock(db: Path):
    """One process at a time makes, checks or repairs the store, and creates experiments in it."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): MLflow's own, unlocked creation
        yield
        return
    lock = db.with_name(db.name + ".lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115 - held for the whole block
    except OSError:
        yield  # a store we may only read: nothing will be made or repaired there
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_whole(db: Path, uri: str) -> None:
    """Under the lock: the store at `db` holds MLflow's whole schema when this returns.

    MLflow makes its tables in place over some 1,700 statements that SQLite commits one by one; a
    kill among them leaves a store every later migration trips on ('duplicate column name: step').
    So the store is made in a file beside it and renamed into place only when complete."""
    for leftover in db.parent.glob(f"{db.name}.init-*"):
        leftover.unlink(missing_ok=True)  # a creation killed before its rename; we hold the lock
    if db.exists():
        runs, problem = _store_state(db)
        if problem is None:
            return
        if runs:
            raise ConfigError(f"tracking store {db} holds {runs} runs but {problem}: back it up, "
                              f"then run `mlflow db upgrade {uri}`, or move it away to start a "
                              f"new store")
        warnings.warn(f"tracking store {db} held no runs and {problem}: made it again",
                      stacklevel=4)
        for path in (db, *(db.with_name(db.name + s) for s in ("-journal", "-wal", "-shm"))):
            path.unlink(missing_ok=True)
    from mlflow.store.db.utils import _initialize_tables, _verify_schema, create_sqlalchemy_engine

    tmp = db.with_name(f"{db.name}.init-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    engine = create_sqlalchemy_engine(f"sqlite:///{tmp}")
    try:
        _initialize_tables(engine)
        _verify_schema(engine)
    finally:
        engine.dispose()
    os.replace(tmp, db)


def _store_state(db: Path) -> tuple[int, str | None]:
    """(runs it holds, what is wrong with it or None) for the SQLite file `db`."""
    from mlflow.store.db.utils import Base, _get_latest_schema_revision  # Base with every table

    with open(db, "rb") as f:
        header = f.read(len(_SQLITE_MAGIC))
    if header and header != _SQLITE_MAGIC:
        raise ConfigError(f"tracking store {db} is not a SQLite file: give {ACCEPTED}, or move "
                          f"the file away")
    try:
        with closing(sqlite3.connect(db)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            runs = con.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
            revision = (con.execute("SELECT version_num FROM alembic_version").fetchone()
                        if "alembic_version" in tables else None)
    except sqlite3.DatabaseError as err:
        raise ConfigError(f"tracking store {db} cannot be read ({err}): move it away to start a "
                          f"new store") from None
    head = _get_latest_schema_revision()
    revision = revision[0] if revision else None
    if revision != head:
        return runs, f"its schema is at revision {revision}, not MLflow's {head} (half made, or " \
                     f"made by another MLflow version)"
    if not set(Base.metadata.tables) <= tables:
        return runs, "some of MLflow's tables are missing (half made)"
    return runs, None


# -- one training run -------------------------------------------------------------------------------


def mlflow_logger(exp, tracking_uri: str | None, out: Path, resume: bool = False,
                  tags: dict[str, str] | None = None):
    """Lightning's MLflow logger for a run in `out`: a resume continues the run recorded in
    OUT/tracking.json; a new run records itself there. The run is tagged with its process, so
    `list_runs` can tell a killed run from a running one, with its folder, and with `tags`."""
    from lightning.pytorch.loggers import MLFlowLogger
    from lightning.pytorch.utilities import rank_zero_only

    uri = open_store(tracking_uri)
    artifacts = None
    if uri.startswith("sqlite:///"):
        # artifacts beside the database, never in ./mlruns of whatever folder we run from
        artifacts = str(Path(uri.removeprefix("sqlite:///")).parent / "artifacts")
    if getattr(rank_zero_only, "rank", 0) != 0:  # under DDP only rank zero logs
        return MLFlowLogger(experiment_name=exp.name, tracking_uri=uri, artifact_location=artifacts)
    run_id = _start_run(uri, exp.name, artifacts, out, resume, tags or {})
    return MLFlowLogger(experiment_name=exp.name, tracking_uri=uri, run_id=run_id)


def _start_run(uri: str, experiment: str, artifacts: str | None, out: Path, resume: bool,
               tags: dict[str, str]) -> str:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    previous = _recorded_run(client, uri, out) if resume else None
    if previous is not None:
        client.update_run(previous, status="RUNNING")
        for key, value in {**process_tags(), **tags}.items():
            client.set_tag(previous, key, value)
        return previous
    with _lock_for(uri):  # two runs starting at once must not both create the experiment
        found = client.get_experiment_by_name(experiment)
        if found is None:
            experiment_id = client.create_experiment(experiment, artifact_location=artifacts)
        else:  # a deleted experiment keeps its name: bring it back rather than fail to create it
            experiment_id = found.experiment_id
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
    run = client.create_run(experiment_id, tags={**process_tags(), FOLDER_TAG: str(out.absolute()),
                                                 **tags})
    _write_json(out / RUN_FILE, {"tracking_uri": uri, "run_id": run.info.run_id})
    return run.info.run_id


def _recorded_run(client, uri: str, out: Path) -> str | None:
    """The run id in OUT/tracking.json, if it names a run in this store."""
    try:
        recorded = json.loads((out / RUN_FILE).read_text())
        run_id = recorded["run_id"] if recorded["tracking_uri"] == uri else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if run_id is None:
        warnings.warn(f"--resume: the run was tracked in {recorded['tracking_uri']}, not {uri}; "
                      f"logging the rest as a new run", stacklevel=4)
        return None
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException:
        warnings.warn(f"--resume: run {run_id} is not in {uri}; logging the rest as a new run",
                      stacklevel=4)
        return None
    return run_id


def _lock_for(uri: str):
    if uri.startswith("sqlite:///"):
        return store_lock(Path(uri.removeprefix("sqlite:///")))
    return _no_lock()


@contextmanager
def _no_lock():
    yield


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def log_params(logger, exp, program: str, main_metric: str) -> None:
    """Every parameter, the programs that run among them: logged before training, so an
    interrupted run still says what it was. A resume (whose experiment cannot differ) logs only
    what the run does not hold yet."""
    from lightning.pytorch.utilities import rank_zero_only

    from attnlab.data.files import source_params

    params = {"program": program, "main_metric": main_metric, "seed": exp.train.seed,
              "task": exp.task.name,
              **{f"task.{k}": v for k, v in exp.task.params.items()},
              **source_params(exp.task),  # a user's file: its format and content sha256
              **{f"model.{k}": v for k, v in exp.model.model_dump().items()},
              **{f"train.{k}": v for k, v in exp.train.model_dump().items()},
              **objective_params(exp)}
    if getattr(rank_zero_only, "rank", 0) == 0:
        logged = logger.experiment.get_run(logger.run_id).data.params
        params = {k: v for k, v in params.items() if k not in logged}
    logger.log_hyperparams(params)


def objective_params(exp) -> dict[str, str]:
    """`objectives` (the logged names, for `attnlab runs`) and each objective's settings."""
    from attnlab.objectives import logged_names

    if not exp.objectives:
        return {}
    names = logged_names(exp.objectives)
    return {"objectives": ",".join(names),
            **{f"objective.{n}": json.dumps(o.model_dump(exclude={"name"}), sort_keys=True)
               for n, o in zip(names, exp.objectives, strict=True)}}


def log_run(logger, out: Path, metrics: dict) -> None:
    """The experiment file and the final metrics; the run is marked finished."""
    logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    logger.experiment.log_artifact(logger.run_id, str(out / "experiment.yaml"))
    logger.experiment.log_artifact(logger.run_id, str(out / "metrics.json"))
    logger.finalize("FINISHED")


# -- processes --------------------------------------------------------------------------------------


def process_tags(pid: int | None = None) -> dict[str, str]:
    pid = pid or os.getpid()
    return dict(zip(_PROCESS_TAGS, (socket.gethostname(), str(pid), _process_start(pid) or ""),
                    strict=True))


def _process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, Linux), so a reused pid is not taken
    for the run's process; None where /proc does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ')' may hold spaces


def process_gone(tags: dict) -> bool:
    """Whether the process a run's tags name has ended (False when they name none, or another host)."""
    if tags.get("attnlab.host") != socket.gethostname() or not tags.get("attnlab.pid", "").isdigit():
        return False
    pid, recorded = int(tags["attnlab.pid"]), tags.get("attnlab.process_start", "")
    if Path("/proc/self/stat").exists():
        now = _process_start(pid)
        return now is None or (recorded != "" and now != recorded)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


# -- reading runs back ------------------------------------------------------------------------------


def list_runs(experiment: str | None = None, tracking_uri: str | None = None) -> list[dict]:
    """One dict per run: experiment, run, status, program, final metrics, start time, folder,
    every logged setting, and `differs` ('model.heads=4 train.seed=1': the settings that tell the
    listed runs apart); newest first. A run whose process is gone without finishing is marked
    KILLED in the store."""
    uri = open_store(tracking_uri, create=False)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()
                   if experiment is None or e.name == experiment}
    if not experiments:
        return []
    rows = []
    for run in client.search_runs(list(experiments), order_by=["attributes.start_time DESC"]):
        m, p = run.data.metrics, run.data.params
        status = run.info.status
        if status == "RUNNING" and process_gone(run.data.tags):
            status = "KILLED"
            with suppress(MlflowException, OSError):  # a store we may only read: shown, not set
                client.set_terminated(run.info.run_id, status)
        rows.append({"experiment": experiments[run.info.experiment_id],
                     "run": run.info.run_id[:8], "run_id": run.info.run_id, "status": status,
                     "program": p.get("program"),
                     "test_accuracy": m.get("test_accuracy"),
                     "score": _main_score(m, p.get("main_metric", "test_accuracy")),
                     "objectives": _objectives(m, p.get("objectives")),
                     "train_seconds": m.get("train_seconds"),
                     "params": int(m["params"]) if "params" in m else None,
                     "started": datetime.fromtimestamp(run.info.start_time / 1000).strftime(
                         "%Y-%m-%d %H:%M"),
                     "folder": run.data.tags.get(FOLDER_TAG),
                     "settings": dict(p), "metrics": dict(m)})
    differs = differing_keys([r["settings"] for r in rows])
    for r in rows:
        r["differs"] = " ".join(f"{k}={_shown(r['settings'].get(k))}" for k in differs) or None
    return rows


# Shown in columns of their own, or logged twice ('seed' is train.seed), so never repeated among
# the keys that differ.
_OWN_COLUMNS = ("program", "main_metric", "objectives", "seed")


def differing_keys(settings: list[dict[str, str]]) -> list[str]:
    """The logged keys whose values are not the same in every run (absent counts as a value):
    what tells the runs apart, sorted. Nothing for fewer than two runs."""
    if len(settings) < 2:
        return []
    keys = set().union(*settings) - set(_OWN_COLUMNS)
    # a setting left at None and one never logged are the same; a dict is logged key by key
    # (model.prior/kind), and None as model.prior itself
    return sorted(k for k in keys if len({_shown(s.get(k)) for s in settings}) > 1)


def _shown(value: str | None) -> str:
    return "—" if value in (None, "None") else value


def _objectives(metrics: dict, names: str | None) -> str | None:
    """A run's attention objectives with their test values: 'supervise 0.0123, entropy 1.02'."""
    if not names:
        return None
    return ", ".join(f"{n} {metrics[f'test_{n}']:.4g}" if f"test_{n}" in metrics else n
                     for n in names.split(","))


def _main_score(metrics: dict, name: str) -> str | None:
    """A run's main metric as 'BLEU 12.34' (None for a run that never finished)."""
    from attnlab.train.compare import COLUMNS, format_metric

    return f"{COLUMNS.get(name, name)} {format_metric(name, metrics[name])}" if name in metrics else None


# -- the web UI -------------------------------------------------------------------------------------


def web_ui(tracking_uri: str | None = None, host: str = "127.0.0.1", port: int = 5000):
    """Start MLflow's web UI on the store (`mlflow server`, from the full `mlflow` package that
    `pip install 'attnlab[ui]'` adds: mlflow-skinny has no server); returns (process, url).
    The caller waits on the process and stops it."""
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    uri = open_store(tracking_uri, create=False)
    if not uri.startswith("sqlite:///"):
        raise ConfigError(f"{uri} is an MLflow tracking server already: open it in a browser")
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        raise ConfigError(f"no runs are tracked in {db} yet: train one first, or give "
                          "--tracking-uri sqlite:///PATH of the store to open")
    try:
        version("mlflow")
    except PackageNotFoundError:
        raise ConfigError("the MLflow web UI needs the full mlflow package (mlflow-skinny, which "
                          "attnlab needs, has no server): pip install 'attnlab[ui]'") from None
    with socket.socket() as probe:  # mlflow's own message for a taken port is a page of log
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot serve the web UI on {host}:{port} ({err.strerror}): give "
                              "another --port") from None
    url = f"http://{host}:{port}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
               "--default-artifact-root", str(db.parent / "artifacts"),
               "--host", host, "--port", str(port), "--workers", "1"]
    return subprocess.Popen(command), url
