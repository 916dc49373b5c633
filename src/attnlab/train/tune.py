"""Tuning with Optuna: TPE proposes settings, a median pruner stops poor trials early (through
Lightning), and the study lives in an RDB storage, so a killed study resumes and several
processes, on one machine or many, share it. Each trial is a training run and an MLflow run.

The objective is the best validation score of the task's monitor; the test score is only
reported beside it."""

from __future__ import annotations

import json
import re
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from attnlab.errors import AttnlabError, ConfigError
from attnlab.train.compare import COLUMNS, format_metric
from attnlab.train.config import RUN_NAME, clipped, load_experiment, short, yaml_value
from attnlab.train.sweep import check_builds, label, overrides_of, split_values

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
STORAGES = "sqlite:///PATH (relative to the current folder; sqlite:////abs/path) or any SQLAlchemy " \
           "URL such as postgresql://user:pass@host/db"
ACCEPTED = "int(lo,hi), int(lo,hi,log), int(lo,hi,step=k), float(lo,hi), float(lo,hi,log), " \
           "choice(a,b,c)"
STUDY_TAG, TRIAL_TAG, STATE_TAG = "optuna.study", "optuna.trial", "optuna.state"
PROCESS_ATTR = "attnlab.process"  # a trial's host, pid and process start: who runs it
HEARTBEAT_S, GRACE_S = 30, 120  # a trial on another machine whose beat stops is failed after GRACE_S
SQLITE_BUSY_S = 60  # concurrent writers to one SQLite file wait this long instead of failing
MAX_RETRIES = 3  # a trial killed again and again is given up
SHOWN_DIGITS = 4  # a proposed float as printed (tune.json keeps every digit)


@dataclass(frozen=True)
class Param:
    """One tuned key: an integer or float range, or a choice of values."""

    key: str
    kind: str  # int, float, choice
    low: Any = None
    high: Any = None
    log: bool = False
    step: Any = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        suggest = trial.suggest_int if self.kind == "int" else trial.suggest_float
        step = {"step": self.step} if self.step is not None else {}
        return suggest(self.key, self.low, self.high, log=self.log, **step)

    def extremes(self) -> list:
        """The values checked against the experiment before any trial."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


_SPEC = re.compile(r"\s*(int|float|choice)\s*\((.*)\)\s*", re.DOTALL)


def parse_param(key: str, spec: str) -> Param:
    """`int(4,64,log)`, `float(1e-4,1e-2,log)`, `choice(2,4,8)`, … for the override key `key`."""
    def bad(problem: str) -> ConfigError:
        return ConfigError(f"--param {clipped(key, 60)}={clipped(spec, 80)}: {problem}; accepted: "
                           f"{ACCEPTED}")

    match = _SPEC.fullmatch(spec)
    if not match:
        raise bad("not a parameter spec")
    kind, args = match.group(1), split_values(match.group(2))
    if not all(args):
        raise bad("an empty argument")
    values = [yaml_value(a, f"--param {key}: the value {short(a)}") for a in args]
    if kind == "float":  # YAML 1.1 reads 1e-4 as text
        values = [_float(v) for v in values]
    if kind == "choice":
        if any(not isinstance(v, str | int | float | bool) for v in values):
            raise bad("a choice is among numbers, words, programs or true/false")
        if len(set(map(json.dumps, values))) < len(values):
            raise bad("a value is given twice")
        return Param(key, kind, choices=tuple(values))
    number = int if kind == "int" else (int, float)
    if len(values) < 2 or not all(isinstance(v, number) and not isinstance(v, bool)
                                  for v in values[:2]):
        raise bad(f"{kind}(lo,hi) takes two {'integers' if kind == 'int' else 'numbers'} first")
    low, high, options = values[0], values[1], args[2:]
    if low > high:
        raise bad(f"lo {low} is above hi {high}")
    log = options == ["log"]
    step = None
    if len(options) == 1 and options[0].replace(" ", "").startswith("step="):
        step = yaml_value(options[0].split("=", 1)[1], f"--param {key}: the step")
        step = _float(step) if kind == "float" else step
        if not isinstance(step, number) or isinstance(step, bool) or step <= 0:
            raise bad("step=k takes a number above 0")
    elif options and not log:
        raise bad(f"after lo,hi comes 'log' or 'step=k', got {short(','.join(options))}")
    if log and low <= 0:
        raise bad("a log range starts above 0")
    return Param(key, kind, low if kind == "int" else float(low),
                 high if kind == "int" else float(high), log, step)


def _float(value: Any) -> Any:
    """`1e-4` as a number; anything else as it was (to be refused with the spec's message)."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if abs(number) < float("inf") else value
    return value


def parse_params(items: list[str]) -> dict[str, str]:
    """`--param KEY=SPEC` items as {key: spec}."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, spec = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--param takes KEY=SPEC (e.g. attention.w=int(4,64,log)), got "
                              f"{short(item)}; accepted specs: {ACCEPTED}")
        if key in params:
            raise ConfigError(f"--param {key} is given twice")
        params[key] = spec
    return params


def tune(experiment: str | Path | dict, params: dict[str, str], trials: int,
         storage: str | None = None, study: str | None = None, out: str | Path | None = None,
         overrides: list[str] = (), seed: int = 0, prune: bool = True,
         console: Console | None = None, tracking_uri: str | None = None, *,
         progress: bool = True, pruner=None) -> dict:
    """Run trials of `experiment` with `params` (override key → spec) until the study holds
    `trials` finished (complete or pruned) trials, each trained into OUT/trial-<number> (OUT:
    runs/tune-STUDY by default, the study named after the experiment by default); print
    and return the best value, parameters, folder and test score; write OUT/history.png,
    OUT/importances.png and OUT/tune.json. `pruner` replaces the median pruner."""
    import optuna
    from optuna.trial import TrialState

    console = console or Console(highlight=False)
    specs = {key: parse_param(key, spec) for key, spec in params.items()}
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials: give a number of trials ≥ 1, got {short(trials)}")
    name = _check(experiment, specs, list(overrides)).name  # every extreme value, before training
    study_name = study or name
    if out is None and not RUN_NAME.fullmatch(study_name):
        raise ConfigError(f"--study {short(study_name)} cannot name the folder runs/tune-STUDY: "
                          f"give --out, or a study name of letters, digits, '-', '_' and '.'")
    out = Path(out) if out is not None else Path("runs") / f"tune-{study_name}"
    url = storage or DEFAULT_STORAGE
    store = open_storage(url)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        the_study = optuna.create_study(
            study_name=study_name, storage=store, load_if_exists=True, direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1))
    if the_study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(f"study {study_name} in {url} minimises: give another --study")
    _check_folders(out, the_study)
    _recover(the_study, console)
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    left = trials - len(the_study.get_trials(deepcopy=False, states=counted))
    objective = _Objective(experiment, specs, list(overrides), out, study_name, prune,
                           console, tracking_uri, progress)
    if left > 0:
        console.print(f"study {escape(study_name)} in {escape(url)}: {trials - left} of {trials} "
                      f"trials finished or running; running up to {left} here")
        with warnings.catch_warnings():  # the pruning callback reports once per epoch: a second
            # validation in one epoch (train.validate_every) is reported once, which is fine
            warnings.filterwarnings("ignore", message=".*is already reported.*")
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # RUNNING counts: another process's trial in flight will bring the study to N
            the_study.optimize(objective, n_trials=left, gc_after_trial=False, callbacks=[
                optuna.study.MaxTrialsCallback(trials, states=counted),
                lambda s, t: _progress(s, t, trials, console)])
    result = summary(the_study, url, out)
    _print_summary(result, console)
    (out / "tune.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "tune.json").write_text(json.dumps(result, indent=2))
    console.print(f"wrote {escape(str(out / 'tune.json'))}")
    return result


def open_storage(url: str):
    """Optuna's RDB storage at `url`: SQLite's folder made and concurrent writers made to wait;
    a heartbeat fails a trial whose process stopped beating (another machine's), and such a
    trial is queued again."""
    import sqlalchemy.exc
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from attnlab.train.tracking import store_lock

    kwargs, lock = {}, nullcontext()
    if url.lower().startswith("sqlite:"):
        if not url.startswith("sqlite:///") or url == "sqlite:///" or "?" in url:
            raise ConfigError(f"--storage {short(url)}: give {STORAGES}")
        db = Path(url.removeprefix("sqlite:///")).expanduser()
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--storage {url}: cannot make {db.parent} ({err.strerror})") from None
        kwargs = {"connect_args": {"timeout": SQLITE_BUSY_S}}
        lock = store_lock(db.absolute())  # two processes must not make the tables at once
    elif "://" not in url:
        raise ConfigError(f"--storage {short(url)}: give {STORAGES}")
    try:
        with lock, warnings.catch_warnings():  # the heartbeat is experimental in optuna 5.0
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                              grace_period=GRACE_S,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                                  max_retry=MAX_RETRIES))
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--storage {url}: cannot open it ({clipped(first, 160)}); give "
                          f"{STORAGES}") from None


def _check(experiment, specs: dict[str, Param], overrides: list[str]):
    """Load the experiment with each parameter at each of its extremes (the others at their
    first): a key the experiment lacks or a value it refuses fails now, not at trial 9."""
    first = {key: p.extremes()[0] for key, p in specs.items()}
    exp, prepared = None, {}
    for key, p in specs.items():
        for value in p.extremes():
            where = f"--param {key} at {short(value)}"
            try:
                exp = load_experiment(experiment, [*overrides, *overrides_of({**first, key: value})])
            except AttnlabError as err:
                raise type(err)(f"{where}: {err}") from None
            check_builds([exp], where, prepared)
    return exp if exp is not None else load_experiment(experiment, overrides)


def _check_folders(out: Path, study) -> None:
    """OUT/trial-N of another study would be trained over: refuse before any trial."""
    # the folders first: a trial is in the study before its folder is made
    folders = sorted(out.glob("trial-*")) if out.is_dir() else []
    numbers = {t.number for t in study.get_trials(deepcopy=False)}
    for folder in folders:
        number = folder.name.removeprefix("trial-")
        if number.isdigit() and int(number) not in numbers and (folder / "experiment.yaml").exists():
            raise ConfigError(f"{folder} holds a run that study {study.study_name} has no trial "
                              f"for (another study's?): give another --out or --study")


def _recover(study, console: Console) -> None:
    """Trials left RUNNING by a process of this machine that is gone (killed) are failed and
    their parameters queued again; other machines' are left to the storage's heartbeat."""
    import optuna
    from optuna.trial import TrialState

    from attnlab.train.tracking import process_gone

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        process = trial.user_attrs.get(PROCESS_ATTR)
        # a retried trial carries its predecessor's attributes until it records its own
        if not isinstance(process, dict) or process.get("trial") != trial.number or \
                not process_gone(process):
            continue
        try:  # as optuna's own fail_stale_trials: of two processes that see it, one fails it
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        _end_run(trial.user_attrs.get("folder"))
        console.print(f"trial {trial.number}: its process {process.get('attnlab.pid')} is gone; "
                      f"marked failed, its parameters queued again")


class _Objective:
    """One trial: the proposed values as overrides, trained into OUT/trial-<number>, scored by
    the best validation value of the task's monitor."""

    def __init__(self, experiment, specs, overrides, out, study_name, prune, console,
                 tracking_uri, progress) -> None:
        self.experiment, self.specs, self.overrides, self.out = experiment, specs, overrides, out
        self.study_name, self.prune, self.console = study_name, prune, console
        self.tracking_uri, self.progress = tracking_uri, progress

    def __call__(self, trial) -> float:
        import optuna
        from optuna_integration import PyTorchLightningPruningCallback

        from attnlab.tasks import task_of
        from attnlab.train.run import train
        from attnlab.train.tracking import process_tags

        trial.set_user_attr(PROCESS_ATTR, {"trial": trial.number, **process_tags()})
        values = {key: p.suggest(trial) for key, p in self.specs.items()}
        folder = self.out / f"trial-{trial.number}"
        trial.set_user_attr("folder", str(folder))
        self.console.print(f"[bold](trial {trial.number})[/] {escape(label(values, SHOWN_DIGITS))}")
        try:
            exp = load_experiment(self.experiment, [*self.overrides, *overrides_of(values)])
        except AttnlabError as err:  # a value inside a range that the experiment refuses
            raise type(err)(f"trial {trial.number} ({label(values)}): {err}") from None
        callbacks = [PyTorchLightningPruningCallback(trial, monitor=task_of(exp.task).monitor)] \
            if self.prune else []
        try:
            metrics = train(exp, folder, tracking_uri=self.tracking_uri, callbacks=callbacks,
                            progress=self.progress, tags={STUDY_TAG: self.study_name,
                                                          TRIAL_TAG: str(trial.number)})
            for callback in callbacks:
                callback.check_pruned()  # under DDP the pruning decision arrives here
        except optuna.TrialPruned:
            _tag_run(folder, "PRUNED")  # Lightning ended the run as FAILED
            raise
        _tag_run(folder, "COMPLETE")
        main = metrics["main_metric"]
        trial.set_user_attr("main_metric", main)
        trial.set_user_attr(main, metrics[main])
        return metrics[f"best_{metrics['monitor']}"]


def _tag_run(folder: Path, state: str) -> None:
    """optuna.state on the trial's MLflow run (recorded in OUT/tracking.json)."""
    found = _mlflow_run(folder)
    if found is not None:
        client, run_id = found
        client.set_tag(run_id, STATE_TAG, state)


def _end_run(folder: str | None) -> None:
    """A killed trial's MLflow run, still RUNNING, is marked KILLED (when it got as far as one)."""
    found = _mlflow_run(Path(folder)) if folder else None
    if found is not None:
        client, run_id = found
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")
        client.set_tag(run_id, STATE_TAG, "FAIL")


def _mlflow_run(folder: Path):
    """(client, run id) of the MLflow run recorded in OUT/tracking.json; None before there is one."""
    import mlflow

    from attnlab.train.tracking import RUN_FILE

    try:
        recorded = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return mlflow.MlflowClient(tracking_uri=recorded["tracking_uri"]), recorded["run_id"]


def _progress(study, trial, trials: int, console: Console) -> None:
    from optuna.trial import TrialState

    done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    value = f"value {trial.value:.4f}" if trial.value is not None else ""
    console.print(f"[bold]({done}/{trials})[/] trial {trial.number} {trial.state.name.lower()} "
                  f"{value} {escape(label(trial.params, SHOWN_DIGITS))}")


def summary(study, url: str, out: Path) -> dict:
    """The study as plain data: every trial, the best one, and the plots drawn from them."""
    from optuna.trial import TrialState

    rows = [{"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
             "folder": t.user_attrs.get("folder"),
             "test": {t.user_attrs["main_metric"]: t.user_attrs[t.user_attrs["main_metric"]]}
             if "main_metric" in t.user_attrs else None}
            for t in study.get_trials(deepcopy=False)]
    complete = [r for r in rows if r["state"] == TrialState.COMPLETE.name]
    best = max(complete, key=lambda r: r["value"]) if complete else None
    history = draw_history(rows, out / "history.png", title=study.study_name)
    importances, note = draw_importances(study, complete, out / "importances.png")
    return {"study": study.study_name, "storage": url, "direction": "maximize",
            "finished": sum(r["state"] in ("COMPLETE", "PRUNED") for r in rows),
            "best_value": best and best["value"], "best_params": best and best["params"],
            "best_trial": best and best["number"], "best_folder": best and best["folder"],
            "best_test": best and best["test"], "history": str(history),
            "importances": str(importances) if importances else None,
            "importances_note": note, "trials": rows}


def draw_history(rows: list[dict], path: Path, *, title: str) -> Path:
    """Each complete trial's value, the best so far as a line, pruned trials marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    done = [r for r in rows if r["state"] == "COMPLETE"]
    ax.scatter([r["number"] for r in done], [r["value"] for r in done], color="#3b6ea5", s=18,
               label="complete trial", zorder=3)
    best, line = float("-inf"), []
    for r in done:
        best = max(best, r["value"])
        line.append((r["number"], best))
    if line:
        ax.step(*zip(*line, strict=True), where="post", color="#c0504d", label="best so far")
    pruned = [r for r in rows if r["state"] == "PRUNED" and r["value"] is not None]
    if pruned:  # at the last validation value it reported
        ax.scatter([r["number"] for r in pruned], [r["value"] for r in pruned], marker="x",
                   color="#999999", label="pruned (last validation)")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective (best validation value)")
    ax.set_title(f"{title}: optimisation history")
    ax.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def draw_importances(study, complete: list[dict], path: Path) -> tuple[Path | None, str | None]:
    """Optuna's parameter importances as bars; (None, why) when there is too little to say."""
    import optuna
    from matplotlib.figure import Figure

    varying = [k for k in {k for r in complete for k in r["params"]}
               if len({json.dumps(r["params"].get(k)) for r in complete}) > 1]
    if len(complete) < 2 or not varying:
        return None, (f"parameter importances need 2 complete trials with a parameter that "
                      f"varies; the study has {len(complete)} complete")
    try:
        with warnings.catch_warnings():  # (trials that all score the same: equal importances)
            warnings.simplefilter("ignore", UserWarning)
            importances = optuna.importance.get_param_importances(study)
    except (ValueError, RuntimeError) as err:
        return None, f"parameter importances could not be computed: {err}"
    fig = Figure(figsize=(7, 0.5 * len(importances) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    names = list(importances)
    ax.barh(range(len(names)), [importances[n] for n in names], color="#3b6ea5")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("importance (share of the objective's variation)")
    ax.set_title(f"{study.study_name}: parameter importances")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path, None


def _print_summary(result: dict, console: Console) -> None:
    table = Table(title=f"study {result['study']}: {result['finished']} finished trials",
                  title_justify="left")
    for column in ("trial", "state", "params", "value", "test"):
        table.add_column(column, justify="right" if column in ("trial", "value") else "left",
                         overflow="fold")
    for r in result["trials"]:
        test = _scores(r["test"]) if r["test"] else ""
        table.add_row(str(r["number"]), r["state"].lower(), Text(label(r["params"], SHOWN_DIGITS)),
                      "" if r["value"] is None else f"{r['value']:.4f}", test)
    console.print(table)
    if result["best_trial"] is None:
        console.print("no trial completed yet: no best parameters")
    else:
        console.print(f"best value {result['best_value']:.4f} (trial {result['best_trial']}): "
                      f"{escape(label(result['best_params'], SHOWN_DIGITS))}")
        console.print(f"best run {escape(str(result['best_folder']))}: "
                      f"{_scores(result['best_test'])}")
    console.print(f"wrote {escape(result['history'])}"
                  + (f" and {escape(result['importances'])}" if result["importances"] else
                     f"; {result['importances_note']}"))


def _scores(test: dict) -> str:
    """'test accuracy 0.8125': a trial's test score, reported beside (never as) its value."""
    return ", ".join(f"{COLUMNS.get(k, k)} {format_metric(k, v)}" for k, v in test.items())
