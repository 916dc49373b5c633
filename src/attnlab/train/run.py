"""`train(experiment)`: data, model, Lightning trainer, MLflow tracking, metrics.json.

An output folder holds everything needed to resume, reload and evaluate without the data set:
experiment.yaml, best.ckpt and last.ckpt (Lightning's, for resuming), model.json and model.pt (the
model as kind, config and tensors), the task's encoders and test split, and metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from attnlab.data import SPLITS, options_carried_over
from attnlab.errors import ConfigError
from attnlab.models.base import load_model, save_model
from attnlab.tasks import task_of
from attnlab.train.checkpoints import AtomicCheckpointIO
from attnlab.train.config import Experiment, load_experiment
from attnlab.train.loaders import loader
from attnlab.train.module import TaskModule

DEFAULT_TRACKING = "sqlite:///runs/mlflow.db"

# Noise a person cannot act on: the run folder holds experiment.yaml on purpose, a
# deprecation inside Lightning itself, and Lightning's advert for its cloud logger.
for _message in (r"Checkpoint directory .* exists and is not empty",
                 r".*isinstance\(treespec, LeafSpec\).*"):
    warnings.filterwarnings("ignore", message=_message)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


def train(exp: Experiment | str | Path | dict, out: str | Path | None = None, *, resume: bool = False,
          tracking_uri: str | None = None, devices: int | None = None,
          progress: bool = True, overrides: list[str] = ()) -> dict:
    """Train one experiment; returns the metrics also written to OUT/metrics.json."""
    exp = exp if isinstance(exp, Experiment) else load_experiment(exp, overrides)
    out = Path(out or Path("runs") / exp.name)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.ckpt"
    if resume and not last.exists():
        raise ConfigError(f"--resume: no checkpoint to resume from in {out} (no last.ckpt)")
    (out / "experiment.yaml").write_text(yaml.safe_dump(exp.model_dump(mode="json"),
                                                        sort_keys=False))
    L.seed_everything(exp.train.seed, workers=True, verbose=False)
    task = task_of(exp.task)
    prepared = task.prepare(exp).head({s: exp.task.examples(s) for s in SPLITS})
    model = task.build_model(exp, prepared.train)
    cfg = exp.train
    batches = math.ceil(len(prepared.train) / cfg.batch_size)
    total = cfg.steps or (cfg.epochs * math.ceil(batches / cfg.accumulate))
    module = TaskModule(model, task, cfg, total)
    best = ModelCheckpoint(dirpath=out, filename="best", monitor=task.monitor, mode="max",
                           save_last=True, enable_version_counter=False)
    callbacks = [best]
    if cfg.early_stopping:
        es = cfg.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode))
    logger = _mlflow_logger(exp, tracking_uri)
    program = " · ".join(model.programs())  # what runs, from the model: the file's text may differ
    _log_params(logger, exp, program, task.main_metric)
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
    trainer.fit(module, loader(task, prepared.train, cfg.batch_size, True, cfg.seed),
                loader(task, prepared.validation, cfg.batch_size, False, cfg.seed),
                ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - started
    tested = trainer.test(module, loader(task, prepared.test, cfg.batch_size, False, cfg.seed),
                          ckpt_path="best", verbose=False)[0]
    metrics = {"test_accuracy": tested["test_accuracy"], "test_loss": tested["test_loss"],
               "train_seconds": round(seconds, 2),
               "params": sum(p.numel() for p in model.parameters()),
               "program": program, "main_metric": task.main_metric, "epochs": trainer.current_epoch,
               "steps": trainer.global_step, "seed": cfg.seed}
    metrics.update(task.test_scores(module.model, prepared, exp, progress))
    if trainer.is_global_zero:  # under DDP every process gets here; one writes and logs
        save_model(module.model, out)  # the best checkpoint's weights: trainer.test loaded them
        task.save(prepared, out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _log_run(logger, out, metrics)
    return metrics


def _validation_cadence(cfg, batches: int) -> dict:
    """Validate each epoch; a budget in steps is cut into equal stretches of at most an epoch
    that end on the last step, so the best checkpoint exists even for a run shorter than one."""
    if not cfg.steps:
        return {}
    updates = cfg.steps * cfg.accumulate  # in batches, the unit val_check_interval counts
    stretches = math.ceil(updates / batches)
    return {"val_check_interval": math.ceil(updates / stretches), "check_val_every_n_epoch": None}


def _mlflow_logger(exp: Experiment, tracking_uri: str | None):
    from lightning.pytorch.loggers import MLFlowLogger

    uri = tracking_uri or DEFAULT_TRACKING
    artifacts = None
    if uri.startswith("sqlite:///"):
        # artifacts beside the database, never in ./mlruns of whatever folder we run from
        db = Path(uri.removeprefix("sqlite:///"))
        db.parent.mkdir(parents=True, exist_ok=True)
        artifacts = str((db.parent / "artifacts").resolve())
    return MLFlowLogger(experiment_name=exp.name, tracking_uri=uri, artifact_location=artifacts)


def _log_params(logger, exp: Experiment, program: str, main_metric: str) -> None:
    """Every parameter, the programs that run among them: logged before training, so an
    interrupted run still says what it was."""
    logger.log_hyperparams({"program": program, "main_metric": main_metric, "seed": exp.train.seed,
                            "task": exp.task.name,
                            **{f"task.{k}": v for k, v in exp.task.params.items()},
                            **{f"model.{k}": v for k, v in exp.model.model_dump().items()},
                            **{f"train.{k}": v for k, v in exp.train.model_dump().items()}})


def _log_run(logger, out: Path, metrics: dict) -> None:
    """The experiment file and the final metrics; the run is marked finished."""
    logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    logger.experiment.log_artifact(logger.run_id, str(out / "experiment.yaml"))
    logger.experiment.log_artifact(logger.run_id, str(out / "metrics.json"))
    logger.finalize("FINISHED")


def load(out: str | Path) -> torch.nn.Module:
    """The trained model from an output folder, in eval mode, with the best checkpoint's weights,
    wrapped by its task's predictor: a text classifier's `predict(["some text"])` gives label
    names, a translator's translations. Only JSON, tokenizer files and tensors are read, so the
    data set need not be installed."""
    out = Path(out)
    exp = _experiment(out)
    task = task_of(exp.task)
    return task.predictor(load_model(out), task.load_encoders(out, exp), exp).eval()


def evaluate(out: str | Path, task: str | None = None) -> dict:
    """Test scores of a trained run, on the test split saved with it or on `task`'s: accuracy,
    and what training reported beside it (F1, BLEU, HR@10, …)."""
    out = Path(out)
    exp = _experiment(out)
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
    correct = scored = 0
    with torch.no_grad():
        for batch in loader(kind, prepared.test, exp.train.batch_size, False, exp.train.seed):
            hits, labels = kind.step(model, batch).hits()
            correct, scored = correct + int(hits), scored + int(labels)
    return {"task": exp.task.name, "examples": len(prepared.test),
            "test_accuracy": correct / max(scored, 1),
            **kind.test_scores(model, prepared, exp, progress=False)}


def _experiment(out: Path) -> Experiment:
    if not (out / "experiment.yaml").exists():
        raise ConfigError(f"{out} holds no trained run (no experiment.yaml)")
    return load_experiment(out / "experiment.yaml")
