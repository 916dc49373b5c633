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

from attnlab.data import TaskData, make
from attnlab.data.datasets import DATASETS
from attnlab.data.real_tasks import TextEncoder, image_splits, text_splits
from attnlab.data.recommendation import ItemIndex, recommendation_splits
from attnlab.data.translation import TranslationEncoder, translation_splits
from attnlab.errors import ConfigError
from attnlab.lang.masks import Causal
from attnlab.lang.program import parse
from attnlab.train.checkpoints import AtomicCheckpointIO
from attnlab.train.config import Experiment, load_experiment
from attnlab.train.loaders import loader
from attnlab.train.module import TaskModule
from attnlab.train.predict import ReadsRealData, load_encoder, save_encoder, wrap

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
    # real data: what made the ids (a tokenizer, or the item catalogue), saved with the run
    encoder: TextEncoder | TranslationEncoder | ItemIndex | None = None
    test_examples: list[dict] | None = None  # translation: the test pairs, BLEU's references


def load_splits(exp: Experiment) -> Splits:
    """The experiment's three splits: generated from the seed, or read from a real data set."""
    t, seed = exp.task, exp.train.seed
    sizes = {"train": t.train_examples, "val": t.val_examples, "test": t.test_examples}
    if t.name not in DATASETS:
        return Splits(**{s: make(t.name, s, num_examples=n or GENERATED_SIZES[s], seed=seed,
                                 **t.params) for s, n in sizes.items()})
    kind, examples = DATASETS[t.name].kind, None
    if kind == "image-classification":
        made, encoder = image_splits(t.name, seed=seed, **t.params), None
    elif kind == "translation":
        made, encoder, examples = translation_splits(t.name, seed=seed, **t.params)
        examples = examples["test"][: sizes["test"]]
    elif kind == "recommendation":
        made, encoder = recommendation_splits(t.name, seed=seed, **t.params)
    else:
        made, encoder = text_splits(t.name, seed=seed, **t.params)
    splits = Splits(**{s: data if sizes[s] is None else data.head(sizes[s])
                       for s, data in made.items()}, encoder=encoder, test_examples=examples)
    names = splits.train.label_names or ()
    if t.positive is not None and t.positive not in names:
        raise ConfigError(f"task.positive: '{t.positive}' is not a label of {t.name}; its labels "
                        f"are {', '.join(names)}")
    return splits


DEFAULT_MODELS = {"lm": "decoder_lm", "classify": "encoder_classifier", "translate": "seq2seq",
                  "rank": "recommender"}
FITS = {"decoder_lm": ("lm",), "encoder_classifier": ("classify",), "seq2seq": ("translate",),
        "recommender": ("rank", "lm")}


def build_model(exp: Experiment, data: TaskData) -> torch.nn.Module:
    """The model the task needs: `model.kind`, by default the one for the task's kind."""
    from attnlab import models

    m = exp.model
    if data.images or m.kind == "vit":
        if not data.images or m.kind not in (None, "vit"):
            raise ConfigError(f"model.kind {m.kind} does not fit {exp.task.name}: images take "
                            "'vit', token sequences 'decoder_lm' or 'encoder_classifier'")
        _, channels, height, width = data.inputs.shape
        if height != width:
            raise ConfigError(f"ViT takes square images; {exp.task.name} has {height}×{width}")
        return models.ViT(height, m.patch_size, channels, data.num_classes, d_model=m.d_model,
                          layers=m.layers, heads=m.heads, kv_heads=m.kv_heads,
                          programs=exp.programs(), positions=m.positions, dropout=m.dropout,
                          pooling="cls" if m.pooling == "cls" else "mean")
    kind = m.kind or DEFAULT_MODELS[data.kind]
    if data.kind not in FITS[kind]:
        takes = " or ".join(k for k, fits in FITS.items() if data.kind in fits)
        raise ConfigError(f"model.kind {kind} does not fit {exp.task.name}, a '{data.kind}' task; "
                        f"it takes model.kind {takes}")
    max_len = m.max_len or data.inputs.shape[1]
    shape = dict(d_model=m.d_model, layers=m.layers, heads=m.heads, positions=m.positions,
                 dropout=m.dropout, max_len=max_len)
    if kind == "seq2seq":
        return models.Seq2Seq(data.vocab_size, data.target_vocab_size, pad_id=data.pad_id,
                              encoder_programs=exp.programs(),
                              decoder_programs=exp.programs("decoder_attention")
                              or with_causal(exp.programs()),
                              cross_programs=exp.programs("cross_attention") or "scaled_dot ; softmax",
                              **shape)
    if kind == "recommender":
        return models.SequentialRecommender(data.vocab_size - 1, programs=exp.programs(), **shape)
    common = dict(kv_heads=m.kv_heads, programs=exp.programs(), **shape)
    if kind == "decoder_lm":
        return models.DecoderLM(data.vocab_size, **common)
    return models.EncoderClassifier(data.vocab_size, data.num_classes, pooling=m.pooling,
                                    pad_id=data.pad_id, **common)


def with_causal(programs):
    """The same programs with `causal` added to each mask: the encoder's attention, made fit for
    a decoder (head groups keep their sizes)."""
    if isinstance(programs, str):
        program = parse(programs)
        mask = program.mask
        return str(program.replace(mask=Causal() if mask is None else mask & Causal()))
    return [with_causal(p) if isinstance(p, str) else [(with_causal(t), h) for t, h in p]
            for p in programs]


# The validation score the best checkpoint is chosen by (accuracy unless said here)
MONITOR = {"rank": "val_ndcg10"}


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
    splits = load_splits(exp)
    model = build_model(exp, splits.train)
    cfg = exp.train
    batches = math.ceil(len(splits.train) / cfg.batch_size)
    total = cfg.steps or (cfg.epochs * math.ceil(batches / cfg.accumulate))
    module = TaskModule(model, splits.train.kind, cfg, total)
    monitor = MONITOR.get(splits.train.kind, "val_accuracy")
    best = ModelCheckpoint(dirpath=out, filename="best", monitor=monitor, mode="max",
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
        log_every_n_steps=min(50, batches),
        num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(module, loader(splits.train, cfg.batch_size, True, cfg.seed),
                loader(splits.val, cfg.batch_size, False, cfg.seed),
                ckpt_path=str(last) if resume else None)
    seconds = time.perf_counter() - started
    tested = trainer.test(module, loader(splits.test, cfg.batch_size, False, cfg.seed),
                          ckpt_path="best", verbose=False)[0]
    metrics = {"test_accuracy": tested["test_accuracy"], "test_loss": tested["test_loss"],
               "train_seconds": round(seconds, 2),
               "params": sum(p.numel() for p in model.parameters()),
               "program": _program_text(exp), "epochs": trainer.current_epoch,
               "steps": trainer.global_step, "seed": cfg.seed}
    metrics.update(_task_scores(exp, module.model, splits, progress))
    if trainer.is_global_zero:  # under DDP every process gets here; one writes and logs
        if splits.encoder is not None:  # what load() and predict() need to read real data
            save_encoder(splits.encoder, out, splits.train.label_names)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        _log_run(logger, out, metrics)
    return metrics


def _task_scores(exp: Experiment, model: torch.nn.Module, splits: Splits, progress: bool) -> dict:
    """What the task's kind reports beyond accuracy, each beside its baseline."""
    from attnlab.train import metrics

    test, batch = splits.test, exp.train.batch_size
    if test.kind == "classify":
        return metrics.classification_scores(model, test, batch, exp.task.positive)
    if test.kind == "rank" and test.candidates is not None:
        return {**metrics.model_ranking_scores(model, test, batch),
                **metrics.popularity_scores(splits.encoder.popularity, test)}
    if test.kind == "translate":
        from attnlab.train.predict import Translator

        translator = Translator(model, splits.encoder, exp.decode).eval()
        outputs = translator.translate_ids(test.inputs, progress=progress)
        return metrics.translation_scores(outputs, splits.test_examples)
    return {}


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
        raise ConfigError(f"{out} holds no trained run (no experiment.yaml)")
    exp = load_experiment(out / "experiment.yaml")
    ckpt = out / "best.ckpt" if (out / "best.ckpt").exists() else out / "last.ckpt"
    saved = load_encoder(out, exp)
    if saved is None and exp.task.name in DATASETS:  # real images: small, read them again
        data = load_splits(exp).val
    elif saved is None:
        data = make(exp.task.name, "val", num_examples=1, seed=exp.train.seed, **exp.task.params)
    else:  # the model's shape, without reading the data set again
        encoder, data = saved
    model = build_model(exp, data)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    if saved is not None:
        model = wrap(model, encoder, data, exp)
    return model.eval()


def evaluate(out: str | Path, task: str | None = None) -> dict:
    """Test scores of a trained run, on its own task's test split or on `task`'s: accuracy, and
    for real data sets what training reported beside it (F1, BLEU, HR@10, …)."""
    out = Path(out)
    model = load(out)
    model = model.model if isinstance(model, ReadsRealData) else model  # scored on ids
    exp = load_experiment(out / "experiment.yaml")
    if task is not None and task != exp.task.name:
        exp = exp.model_copy(update={"task": exp.task.model_copy(update={"name": task})})
    splits = load_splits(exp) if exp.task.name in DATASETS else None
    data = splits.test if splits else make(
        exp.task.name, "test", num_examples=exp.task.test_examples or GENERATED_SIZES["test"],
        seed=exp.train.seed, **exp.task.params)
    result = {"task": exp.task.name, "examples": len(data)}
    if data.kind in ("lm", "classify"):
        correct = scored = 0
        with torch.no_grad():
            for tokens, labels in loader(data, exp.train.batch_size, False, exp.train.seed):
                logits = model(tokens)
                mask = labels != -100
                correct += int(((logits.argmax(-1) == labels) & mask).sum())
                scored += int(mask.sum())
        result["test_accuracy"] = correct / max(scored, 1)
    if splits is not None:
        result.update(_task_scores(exp, model, splits, progress=False))
    return result
