"""`train(experiment)`: data, model, Lightning trainer, MLflow tracking, metrics.json.

An output folder holds everything needed to resume and to reload: experiment.yaml,
best.ckpt, last.ckpt and metrics.json.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from attnlab.data import TaskData, make
from attnlab.data.datasets import DATASETS
from attnlab.data.real_tasks import TEXT_MAX_LEN, TextEncoder, image_splits, text_splits
from attnlab.errors import SpecError
from attnlab.spec.program import parse
from attnlab.train.checkpoints import AtomicCheckpointIO
from attnlab.train.config import Experiment, load_experiment
from attnlab.train.module import TaskModule

DEFAULT_TRACKING = "sqlite:///runs/mlflow.db"

# Noise a person cannot act on: the run folder holds experiment.yaml on purpose, a
# deprecation inside Lightning itself, and Lightning's advert for its cloud logger.
for _message in (r"Checkpoint directory .* exists and is not empty",
                 r".*isinstance\(treespec, LeafSpec\).*"):
    warnings.filterwarnings("ignore", message=_message)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage())


GENERATED_SIZES = {"train": 10_000, "val": 1_000, "test": 1_000}


@dataclass
class Splits:
    train: TaskData
    val: TaskData
    test: TaskData
    encoder: TextEncoder | None = None  # real text: the tokenizer that made the token ids


def load_splits(exp: Experiment) -> Splits:
    """The experiment's three splits: generated from the seed, or read from a real data set."""
    t, seed = exp.task, exp.train.seed
    sizes = {"train": t.train_examples, "val": t.val_examples, "test": t.test_examples}
    if t.name not in DATASETS:
        return Splits(**{s: make(t.name, s, num_examples=n or GENERATED_SIZES[s], seed=seed,
                                 **t.params) for s, n in sizes.items()})
    if DATASETS[t.name].kind == "image-classification":
        made, encoder = image_splits(t.name, seed=seed, **t.params), None
    else:
        made, encoder = text_splits(t.name, seed=seed, **t.params)
    splits = Splits(**{s: data if sizes[s] is None else data.head(sizes[s])
                       for s, data in made.items()}, encoder=encoder)
    names = splits.train.label_names
    if t.positive is not None and t.positive not in names:
        raise SpecError(f"task.positive: '{t.positive}' is not a label of {t.name}; its labels "
                        f"are {', '.join(names)}")
    return splits


def build_model(exp: Experiment, data: TaskData) -> torch.nn.Module:
    """The model the task needs (decoder LM for 'lm' tasks, classifier otherwise)."""
    from attnlab import models

    m = exp.model
    if data.images or m.kind == "vit":
        if not data.images or m.kind not in (None, "vit"):
            raise SpecError(f"model.kind {m.kind} does not fit {exp.task.name}: images take "
                            "'vit', token sequences 'decoder_lm' or 'encoder_classifier'")
        _, channels, height, width = data.inputs.shape
        if height != width:
            raise SpecError(f"ViT takes square images; {exp.task.name} has {height}×{width}")
        return models.ViT(height, m.patch_size, channels, data.num_classes, d_model=m.d_model,
                          layers=m.layers, heads=m.heads, kv_heads=m.kv_heads,
                          programs=exp.programs(), positions=m.positions, dropout=m.dropout,
                          pooling="cls" if m.pooling == "cls" else "mean")
    kind = m.kind or ("decoder_lm" if data.kind == "lm" else "encoder_classifier")
    common = dict(d_model=m.d_model, layers=m.layers, heads=m.heads, kv_heads=m.kv_heads,
                  programs=exp.programs(), positions=m.positions, dropout=m.dropout,
                  max_len=m.max_len or data.inputs.shape[1])
    if kind == "decoder_lm":
        return models.DecoderLM(data.vocab_size, **common)
    if data.num_classes is None:
        raise SpecError(f"model.kind {kind} needs a classification task; '{exp.task.name}' "
                        "gives per-token labels")
    return models.EncoderClassifier(data.vocab_size, data.num_classes, pooling=m.pooling,
                                    pad_id=data.pad_id, **common)


def _loader(data: TaskData, batch: int, shuffle: bool, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(data.inputs, data.labels), batch_size=batch, shuffle=shuffle,
                      generator=gen)


def train(exp: Experiment | str | Path | dict, out: str | Path | None = None, *, resume: bool = False,
          tracking_uri: str | None = None, devices: int | None = None,
          progress: bool = True, overrides: list[str] = ()) -> dict:
    """Train one experiment; returns the metrics also written to OUT/metrics.json."""
    exp = exp if isinstance(exp, Experiment) else load_experiment(exp, overrides)
    out = Path(out or Path("runs") / exp.name)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.ckpt"
    if resume and not last.exists():
        raise SpecError(f"--resume: no checkpoint to resume from in {out} (no last.ckpt)")
    (out / "experiment.yaml").write_text(yaml.safe_dump(exp.model_dump(mode="json"),
                                                        sort_keys=False))
    L.seed_everything(exp.train.seed, workers=True, verbose=False)
    splits = load_splits(exp)
    model = build_model(exp, splits.train)
    cfg = exp.train
    batches = math.ceil(len(splits.train) / cfg.batch_size)
    total = cfg.steps or (cfg.epochs * math.ceil(batches / cfg.accumulate))
    module = TaskModule(model, splits.train.kind, cfg, total)
    best = ModelCheckpoint(dirpath=out, filename="best", monitor="val_accuracy", mode="max",
                           save_last=True, enable_version_counter=False)
    callbacks = [best]
    if cfg.early_stopping:
        es = cfg.early_stopping
        callbacks.append(EarlyStopping(monitor=es.monitor, patience=es.patience, mode=es.mode))
    logger = _mlflow_logger(exp, tracking_uri)
    _log_params(logger, exp)
    n_devices = devices or cfg.devices
    trainer = L.Trainer(**_validation_cadence(cfg, batches),
        max_epochs=cfg.epochs or -1, max_steps=cfg.steps or -1, accelerator="auto",
        devices=n_devices, strategy="ddp" if n_devices > 1 else "auto",
        precision="bf16-mixed" if cfg.precision == "bf16" else "32-true",
        accumulate_grad_batches=cfg.accumulate, gradient_clip_val=cfg.clip,
        callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()],
        enable_progress_bar=progress, enable_model_summary=False, deterministic=False,
        num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(module, _loader(splits.train, cfg.batch_size, True, cfg.seed),
                _loader(splits.val, cfg.batch_size, False, cfg.seed),
                ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - started
    tested = trainer.test(module, _loader(splits.test, cfg.batch_size, False, cfg.seed),
                          ckpt_path="best", verbose=False)[0]
    metrics = {"test_accuracy": tested["test_accuracy"], "test_loss": tested["test_loss"],
               "train_seconds": round(seconds, 2),
               "params": sum(p.numel() for p in model.parameters()),
               "program": _program_text(exp), "epochs": trainer.current_epoch,
               "steps": trainer.global_step, "seed": cfg.seed}
    if splits.test.kind == "classify":
        metrics.update(_classification_scores(exp, model, splits.test))
    if trainer.is_global_zero:  # under DDP every process gets here; one writes and logs
        if splits.encoder is not None:  # what predict() needs to read text
            splits.encoder.tokenizer.save(str(out / "tokenizer.json"))
            (out / "labels.json").write_text(json.dumps(list(splits.train.label_names)))
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _log_run(logger, out, metrics)
    return metrics


def _classification_scores(exp: Experiment, model: torch.nn.Module, test: TaskData) -> dict:
    """Majority rate (the bar: always guess the commonest class), macro F1, and the F1 of
    `task.positive` as test_f1."""
    from attnlab.train.predict import f1_scores, predictions

    f1 = f1_scores(predictions(model, test, exp.train.batch_size), test.labels, test.num_classes)
    scores = {"test_majority_rate": max(test.label_distribution().values()),
              "test_macro_f1": sum(f1) / len(f1)}
    if exp.task.positive is not None:
        scores["test_f1"] = f1[test.label_names.index(exp.task.positive)]
    return scores


def _validation_cadence(cfg, batches: int) -> dict:
    """Validate each epoch; a budget in steps is cut into equal stretches of at most an epoch
    that end on the last step, so the best checkpoint exists even for a run shorter than one."""
    if not cfg.steps:
        return {}
    updates = cfg.steps * cfg.accumulate  # in batches, the unit val_check_interval counts
    stretches = math.ceil(updates / batches)
    return {"val_check_interval": math.ceil(updates / stretches), "check_val_every_n_epoch": None}


def _program_text(exp: Experiment) -> str:
    a = exp.attention
    if isinstance(a, str):
        return str(parse(a))
    return " | ".join(str(parse(p)) if isinstance(p, str) else
                      "[" + ", ".join(f"{parse(t)} ×{h}" for t, h in p) + "]" for p in a)


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


def _log_params(logger, exp: Experiment) -> None:
    """Every parameter, the program's canonical string among them: logged before training, so
    an interrupted run still says what it was."""
    logger.log_hyperparams({"program": _program_text(exp), "seed": exp.train.seed,
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
    """The trained model from an output folder, in eval mode (best checkpoint). A model trained
    on real text comes with its tokenizer: `model.predict(["some text"])` gives label names."""
    out = Path(out)
    if not (out / "experiment.yaml").exists():
        raise SpecError(f"{out} holds no trained run (no experiment.yaml)")
    exp = load_experiment(out / "experiment.yaml")
    ckpt = out / "best.ckpt" if (out / "best.ckpt").exists() else out / "last.ckpt"
    encoder = _saved_encoder(out, exp)
    if encoder is None and exp.task.name in DATASETS:  # real images: small, read them again
        data = load_splits(exp).val
    elif encoder is None:
        data = make(exp.task.name, "val", num_examples=1, seed=exp.train.seed, **exp.task.params)
    else:  # the model's shape, without reading the data set again
        names = tuple(json.loads((out / "labels.json").read_text()))
        data = TaskData(torch.zeros(0, encoder.max_len, dtype=torch.long),
                        torch.zeros(0, dtype=torch.long), kind="classify",
                        vocab_size=encoder.vocab_size, num_classes=len(names), pad_id=0,
                        label_names=names)
    model = build_model(exp, data)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    if encoder is not None:
        from attnlab.train.predict import TextClassifier

        model = TextClassifier(model, encoder, data.label_names)
    return model.eval()


def _saved_encoder(out: Path, exp: Experiment) -> TextEncoder | None:
    if not (out / "tokenizer.json").exists():
        return None
    from tokenizers import Tokenizer

    max_len = exp.task.params.get("max_len", TEXT_MAX_LEN)
    return TextEncoder(Tokenizer.from_file(str(out / "tokenizer.json")), max_len)


def evaluate(out: str | Path, task: str | None = None) -> dict:
    """Test accuracy of a trained run, on its own task's test split or on `task`'s."""
    out = Path(out)
    model = load(out)
    exp = load_experiment(out / "experiment.yaml")
    if task is not None and task != exp.task.name:
        exp = exp.model_copy(update={"task": exp.task.model_copy(update={"name": task})})
    data = load_splits(exp).test if exp.task.name in DATASETS else make(
        exp.task.name, "test", num_examples=exp.task.test_examples or GENERATED_SIZES["test"],
        seed=exp.train.seed, **exp.task.params)
    correct = scored = 0
    with torch.no_grad():
        for tokens, labels in _loader(data, exp.train.batch_size, False, exp.train.seed):
            logits = model(tokens)
            mask = labels != -100
            correct += int(((logits.argmax(-1) == labels) & mask).sum())
            scored += int(mask.sum())
    return {"task": exp.task.name, "test_accuracy": correct / max(scored, 1), "examples": len(data)}
