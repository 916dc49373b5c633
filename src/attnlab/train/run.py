"""`train(experiment)`: data, model, Lightning trainer, MLflow tracking, metrics.json.

An output folder holds everything needed to resume, reload and evaluate without the data set:
experiment.yaml, best.ckpt and last.ckpt (Lightning's, for resuming), model.json and model.pt (the
model as kind, config and tensors), the task's encoders and test split, metrics.json, and last
manifest.json, the sha256 of each of them: a folder whose files do not match is refused. Loading
reads tensors and plain data only, never pickled code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping

from attnlab.data import SPLITS, options_carried_over
from attnlab.errors import ConfigError, RunFolderError, UnsafeFileError
from attnlab.models.base import load_model, save_model
from attnlab.nn.gates import allocations
from attnlab.objectives import Objectives
from attnlab.priors.inputs import resolve_prior
from attnlab.runfiles import load_tensors
from attnlab.tasks import task_of
from attnlab.train.allocation import ALLOCATION_FILE, PICTURE_FILE, draw_allocation
from attnlab.train.checkpoints import AtomicCheckpointIO, BestCheckpoint, FolderCheckpoint
from attnlab.train.config import RUN_NAME, Experiment, load_experiment
from attnlab.train.folder import MANIFEST, clean_leftovers, locked, read_run, verify, write_manifest
from attnlab.train.loaders import loader
from attnlab.train.metrics import accuracy
from attnlab.train.module import TaskModule
from attnlab.train.tracking import log_params, log_run, mlflow_logger

# Noise a person cannot act on: the run folder holds experiment.yaml on purpose, a
# deprecation inside Lightning itself, and Lightning's advert for its cloud logger.
for _message in (r"Checkpoint directory .* exists and is not empty",
                 r".*isinstance\(treespec, LeafSpec\).*"):
    warnings.filterwarnings("ignore", message=_message)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


ALIGNED = "copy, selective_copy, induction_head, mqar and greek-english"  # tasks with alignments


def train(exp: Experiment | str | Path | dict, out: str | Path | None = None, *, resume: bool = False,
          tracking_uri: str | None = None, devices: int | None = None,
          progress: bool = True, overrides: list[str] = (), callbacks: list = (),
          tags: dict[str, str] | None = None) -> dict:
    """Train one experiment; returns the metrics also written to OUT/metrics.json. OUT is locked
    while it trains; `resume` continues the run in OUT exactly where its last checkpoint was.
    `callbacks` join Lightning's (a tuner's pruning callback, say); `tags` go on the MLflow run
    (a sweep's setting, a trial's number)."""
    exp = exp if isinstance(exp, Experiment) else load_experiment(exp, overrides)
    out = Path(out) if out is not None else default_out(exp.name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot make the output folder {out}: {e.strerror}") from None
    first = not _launched_by_ddp()
    with locked(out) if first else contextlib.nullcontext():
        if first:
            clean_leftovers(out)  # a kill during a save leaves its temporary file behind
        checkpoint = _resume_point(out, exp) if resume else None
        if first:
            _write_atomically(out / "experiment.yaml", yaml.safe_dump(exp.model_dump(mode="json"),
                                                                      sort_keys=False))
            write_manifest(out, complete=False, names=["experiment.yaml"])  # the rest changes
        return _train(exp, out, checkpoint, resume, tracking_uri, devices, progress,
                      list(callbacks), tags or {})


def _launched_by_ddp() -> bool:
    """A process Lightning's DDP launcher started for another rank: the first process holds
    the folder's lock and writes its files."""
    return os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0"


def default_out(name: str) -> Path:
    """runs/NAME. The experiment file already checked NAME; an Experiment copied with another
    name skips that check, so the same rule is applied here, where the folder is made."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ConfigError(f"experiment name {name!r:.80} is not a plain folder name (no '/', '..' or "
                          "absolute path): the run is written to runs/NAME")
    return Path("runs") / name


def _resume_point(out: Path, exp: Experiment) -> Path | None:
    """The checkpoint to resume from: OUT's last.ckpt, once OUT is known to hold this very
    experiment; None (start again) for a run killed before its first checkpoint."""
    saved_file, last = out / "experiment.yaml", out / "last.ckpt"
    if not saved_file.exists():
        raise ConfigError(f"--resume: no checkpoint to resume from in {out} (no run was started "
                          "there)")
    if (out / MANIFEST).exists() or last.exists():
        verify(out, complete=False)
    saved = load_experiment(saved_file)
    changes = differences(saved.model_dump(mode="json"), exp.model_dump(mode="json"))
    if changes:
        raise ConfigError(f"--resume: the experiment differs from the one {out} was started with "
                          f"({'; '.join(changes)}); resume with the same file and --set, or "
                          "train into another --out")
    if not last.exists():
        print(f"note: {out} has no checkpoint yet (the run stopped before its first); "
              "starting from the beginning", file=sys.stderr)
        return None
    try:
        load_tensors(last)
    except UnsafeFileError:
        raise
    except RunFolderError as e:  # damaged: any whole checkpoint resumes the run exactly
        if _loads(out / "best.ckpt"):
            warnings.warn(f"{e}; resuming from best.ckpt instead (an earlier point of the same "
                          "run)", stacklevel=3)
            return out / "best.ckpt"
        raise
    return last


def _loads(path: Path) -> bool:
    try:
        load_tensors(path)
    except RunFolderError:
        return False
    return True


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'train.lr: 0.001 → 0.003' for each dotted key whose value differs."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: {a!r} → {b!r}")
    return lines


def _train(exp: Experiment, out: Path, checkpoint: Path | None, resume: bool,
           tracking_uri: str | None, devices: int | None, progress: bool, extra: list,
           tags: dict[str, str]) -> dict:
    L.seed_everything(exp.train.seed, workers=True, verbose=False)
    task = task_of(exp.task)
    prepared = task.prepare(exp).head({s: exp.task.examples(s) for s in SPLITS})
    cfg = exp.train
    batches = math.ceil(len(prepared.train) / cfg.batch_size)
    total = cfg.steps or (cfg.epochs * math.ceil(batches / cfg.accumulate))
    if cfg.validate_every and cfg.validate_every > total:
        raise ConfigError(f"train.validate_every: {cfg.validate_every} steps is more than the run's "
                          f"{total}, so it would never validate (nor keep a best checkpoint)")
    if exp.model.prior is not None:  # completed from the data, so the model config rebuilds it
        exp = exp.model_copy(update={"model": exp.model.model_copy(update={
            "prior": resolve_prior(exp.model.prior, prepared, exp)})})
    model = task.build_model(exp, prepared.train, total)
    if exp.model.prior is not None and getattr(model, "prior", None) is None:
        raise ConfigError(f"model.prior: a {type(model).__name__} takes no prior; the encoder "
                          "classifier and the recommender do")
    objectives = Objectives(exp.objectives, model, task)
    if objectives.supervised and prepared.train.alignments is None:
        raise ConfigError(f"objectives: supervise reads the task's alignments, and "
                          f"{exp.task.name} has none; {ALIGNED} do")
    module = TaskModule(model, task, cfg, total, objectives)
    best = BestCheckpoint(dirpath=out, filename="best", monitor=task.monitor, mode="max",
                          enable_version_counter=False, tie_break="val_loss")
    # last.ckpt at every validation: Lightning's save_last writes it only when best.ckpt improved,
    # so a resume would replay everything since the last improvement
    last = FolderCheckpoint(dirpath=out, filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False)
    callbacks = [best, last, *extra]
    if cfg.early_stopping:
        es = cfg.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode,
                                       stopping_threshold=es.threshold))
    logger = mlflow_logger(exp, tracking_uri, out, resume, tags)
    program = " · ".join(model.programs())  # what runs, from the model: the file's text may differ
    log_params(logger, exp, program, task.main_metric)
    n_devices = devices or cfg.devices
    trainer = L.Trainer(**_validation_cadence(cfg, batches),
        max_epochs=cfg.epochs or -1, max_steps=cfg.steps or -1, accelerator="auto",
        devices=n_devices, strategy="ddp" if n_devices > 1 else "auto",
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        accumulate_grad_batches=cfg.accumulate, gradient_clip_val=cfg.clip,
        callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress, enable_model_summary=False, deterministic=False,
        log_every_n_steps=min(50, batches),
        num_sanity_val_steps=0)
    started = time.perf_counter()
    # one process: the loader's position goes into checkpoints (under DDP Lightning shards it)
    trainer.fit(module, loader(task, prepared.train, cfg.batch_size, True, cfg.seed,
                               resumable=n_devices == 1),
                loader(task, prepared.validation, cfg.batch_size, False, cfg.seed),
                ckpt_path=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    tested = _test(trainer, module, loader(task, prepared.test, cfg.batch_size, False, cfg.seed),
                   out)
    metrics = {"test_accuracy": tested["test_accuracy"], "test_loss": tested["test_loss"],
               "train_seconds": round(seconds, 2),
               "params": model.num_parameters(),
               "trainable_params": model.num_parameters(trainable_only=True),
               "program": program, "main_metric": task.main_metric,
               # the validation score that chose best.ckpt: what a tuner may optimise (never test)
               "monitor": task.monitor, **_best_validation(best, task.monitor),
               "epochs": trainer.current_epoch,
               "steps": trainer.global_step, "seed": cfg.seed,
               **({"objectives": objectives.names} if objectives else {}),
               **{f"test_{n}": tested[f"test_{n}"] for n in objectives.names},
               **({"allocation": allocations(module.model)} if module.gated else {})}
    metrics.update(task.test_scores(module.model, prepared, exp, progress))
    if trainer.is_global_zero:  # under DDP every process gets here; one writes and logs
        save_model(module.model, out)  # the best checkpoint's weights: trainer.test loaded them
        task.save(prepared, out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if module.allocation_history:  # what the gates chose at each validation
            (out / ALLOCATION_FILE).write_text(json.dumps(module.allocation_history, indent=1))
            draw_allocation(module.allocation_history, out / PICTURE_FILE, title=exp.name)
        write_manifest(out, complete=True)  # last: it vouches for every file above
        log_run(logger, out, metrics)
    return metrics


def _best_validation(best: BestCheckpoint, monitor: str) -> dict[str, float]:
    """{'best_<monitor>': value} of the best checkpoint, or {} when it never validated."""
    score = best.best_model_score
    return {} if score is None else {f"best_{monitor}": float(score)}


def _test(trainer: L.Trainer, module: TaskModule, batches, out: Path) -> dict:
    """Test with the best checkpoint; a damaged best.ckpt falls back to last.ckpt, with a warning."""
    try:  # this folder's best.ckpt: the callback's remembered path may be where the folder was
        return trainer.test(module, batches, ckpt_path=str(out / "best.ckpt"), verbose=False)[0]
    except UnsafeFileError:
        raise
    except RunFolderError as e:
        if not (out / "last.ckpt").exists():
            raise
        warnings.warn(f"{e}; testing with last.ckpt instead", stacklevel=2)
        return trainer.test(module, batches, ckpt_path=str(out / "last.ckpt"), verbose=False)[0]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _validation_cadence(cfg, batches: int) -> dict:
    """Validate each epoch, or every `validate_every` steps; a budget in steps is cut into equal
    stretches of at most an epoch that end on the last step, so the best checkpoint exists even
    for a run shorter than one."""
    if cfg.validate_every:
        return {"val_check_interval": cfg.validate_every * cfg.accumulate,
                "check_val_every_n_epoch": None}
    if not cfg.steps:
        return {}
    updates = cfg.steps * cfg.accumulate  # in batches, the unit val_check_interval counts
    stretches = math.ceil(updates / batches)
    return {"val_check_interval": math.ceil(updates / stretches), "check_val_every_n_epoch": None}


def load(out: str | Path) -> torch.nn.Module:
    """The trained model from an output folder, in eval mode, with the best checkpoint's weights,
    wrapped by its task's predictor: a text classifier's `predict(["some text"])` gives label
    names, a translator's translations. Only JSON, tokenizer files and tensors are read, so the
    data set need not be installed."""
    out = Path(out)
    exp = read_run(out)
    task = task_of(exp.task)
    return task.predictor(load_model(out), task.load_encoders(out, exp), exp).eval()


def evaluate(out: str | Path, task: str | None = None, measure: list[str] = ()) -> dict:
    """Test scores of a trained run, on the test split saved with it or on `task`'s: accuracy,
    and what training reported beside it (F1, BLEU, HR@10, …); `measure` names attention
    objectives (`attnlab.objectives`: entropy, head_diversity, …) whose value on the test split
    is reported too, each over every layer and head (`test_<kind>`)."""
    out = Path(out)
    exp = read_run(out)
    kind = task_of(exp.task)
    model = load_model(out)
    prepared = kind.load_test(out, exp) if task in (None, exp.task.name) else None
    if prepared is None:
        if task is not None:
            # only the test split is scored: a generator need not make the other two in full
            exp = exp.model_copy(update={"task": exp.task.model_copy(update={
                "name": task, "params": options_carried_over(exp.task.params, exp.task.name, task),
                "train_examples": 1, "val_examples": 1})})
            if task_of(exp.task) is not kind:
                raise ConfigError(f"--task {task} is a {task_of(exp.task).kind} task; the run was "
                                  f"trained on {kind.kind}")
        prepared = kind.prepare(exp, kind.load_encoders(out, exp)).head(
            {"test": exp.task.examples("test")})
    batches = loader(kind, prepared.test, exp.train.batch_size, False, exp.train.seed)
    measured = objective_measures(model, kind, batches, measure)
    return {"task": exp.task.name, "examples": len(prepared.test),
            "test_accuracy": accuracy(kind, model, batches),
            **kind.test_scores(model, prepared, exp, progress=False), **measured}


def objective_measures(model, task, batches, kinds: list[str]) -> dict[str, float]:
    """`test_<kind>` for each objective kind named, with its default settings over all layers."""
    from attnlab.objectives import measure, parse_objective

    entries = []
    for kind in kinds:
        try:
            entries.append(parse_objective({"kind": kind, "layers": "all", "heads": "all"}))
        except ValueError as err:
            raise ConfigError(f"--measure: {err}") from None
    return {f"test_{name}": value for name, value in measure(model, task, batches, entries).items()}


