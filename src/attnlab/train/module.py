"""The Lightning module: a model, its task's loss and scores, attention objectives, AdamW with a
schedule."""

from __future__ import annotations

import math
import random

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from attnlab.nn.gates import allocation_metrics, auxiliary_loss, gates_of, reset_gates
from attnlab.objectives import Objectives
from attnlab.tasks import Task
from attnlab.train.config import TrainConfig


class TaskModule(L.LightningModule):
    """Trains any attnlab model on its task: the task (`attnlab.tasks`) turns a batch into logits
    and labels and says the loss, to which training adds the attention objectives' (each logged
    under its name, on validation too); this logs loss, accuracy and the task's batch scores."""

    def __init__(self, model: nn.Module, task: Task, train: TrainConfig, total_steps: int,
                 objectives: Objectives | None = None) -> None:
        super().__init__()
        self.model, self.task, self.cfg, self.total_steps = model, task, train, total_steps
        self.objectives = objectives or Objectives([], model, task)
        self.allocation_history: list[dict] = []  # each validation's allocation_metrics
        self._history_to_restore: list[dict] | None = None

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        with self.objectives.recording(self.model) as rec:
            step = self.task.step(self.model, batch)
        loss = self.task.loss(step)
        if self.objectives:
            # alignments, when the data has them, are the batch's last tensor (TaskData.tensors)
            values = self.objectives.values(rec, batch[-1] if self.objectives.supervised else None)
            for name, value in values.items():
                self.log(f"{stage}_{name}", value, on_step=False, on_epoch=True, sync_dist=True)
            if stage == "train":
                loss = loss + self.objectives.loss(values)
        if stage == "train":
            balance = auxiliary_loss(self.model)
            if balance is not None:
                self.log("train_load_balance", balance, on_step=False, on_epoch=True, sync_dist=True)
            loss = loss + self.model.penalty()
        correct, scored = step.hits()
        accuracy = correct / scored.clamp(min=1)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True,
                 sync_dist=True)
        self.log(f"{stage}_accuracy", accuracy, prog_bar=stage != "train", on_step=on_step,
                 on_epoch=True, sync_dist=True)
        for name, value in step.scores.items():
            self.log(f"{stage}_{name}", value, prog_bar=f"{stage}_{name}" == self.task.monitor,
                     on_epoch=True, sync_dist=True)
        return loss

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    # Gates tally what they allocate while the model evaluates: one figure per epoch each
    def on_validation_epoch_start(self) -> None:
        reset_gates(self.model)

    def on_validation_epoch_end(self) -> None:
        metrics = allocation_metrics(self.model)
        if metrics:
            self.log_dict(metrics, on_epoch=True, sync_dist=True)
            self.allocation_history.append({"epoch": self.current_epoch,
                                            "step": self.global_step, **metrics})

    def on_test_epoch_start(self) -> None:
        reset_gates(self.model)

    @property
    def gated(self) -> bool:
        return bool(gates_of(self.model))

    def on_train_batch_end(self, *_) -> None:
        # a `steps` budget can end between validations; stopping says "validate now", so the
        # final weights are scored and checkpointed rather than lost
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # the step's gradients are still there (Lightning zeroes them in the next step's closure)
        self.model.after_step(self.global_step)

    # Checkpoints hold what the model saves (`Model.saved_state`): a pretrained model's frozen
    # weights come back from their package, not from every checkpoint.
    def state_dict(self, *args, **kwargs) -> dict:
        if args or kwargs:
            return super().state_dict(*args, **kwargs)
        return {f"model.{k}": v for k, v in self.model.saved_state().items()}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self.model.load_saved({k.removeprefix("model."): v for k, v in state_dict.items()})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng"] = rng_state()
        checkpoint["model_state"] = self.model.training_state()
        checkpoint["allocation_history"] = list(self.allocation_history)
        # a validation can fall inside a gradient accumulation: the partial sum travels too
        checkpoint["grads"] = {n: p.grad.clone() for n, p in self.named_parameters()
                               if p.grad is not None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.model.load_training_state(checkpoint.get("model_state", {}))
        # a resumed run goes on with its history; testing the best checkpoint keeps the whole one
        self._history_to_restore = list(checkpoint.get("allocation_history", []))
        # applied when training starts: restoring the model must not be followed by draws
        self._to_restore = checkpoint.get("rng"), checkpoint.get("grads", {})

    def on_train_start(self) -> None:
        if self._history_to_restore is not None:
            self.allocation_history, self._history_to_restore = self._history_to_restore, None
        (state, grads), self._to_restore = getattr(self, "_to_restore", (None, {})), (None, {})
        if state is not None:
            set_rng_state(state)
        for name, p in self.named_parameters():
            if name in grads:
                p.grad = grads[name].to(p.device)

    def configure_optimizers(self):
        trained = [p for p in self.parameters() if p.requires_grad]  # not a frozen pretrained model
        decay = [p for p in trained if p.dim() >= 2]
        keep = [p for p in trained if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                 {"params": keep, "weight_decay": 0.0}], lr=self.cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(self.cfg, self.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _schedule(cfg: TrainConfig, total: int):
    """Learning-rate multiplier per optimiser step: linear warm-up, then the schedule."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        done = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))
        if cfg.schedule == "linear":
            return max(0.0, 1 - done)
        return 1.0

    return factor


def rng_state() -> dict:
    """Every generator a training step may draw from (torch's, for dropout and gumbel; numpy's and
    Python's, for anything else), as tensors and plain lists: a checkpoint stays weights-only."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                       "has_gauss": has_gauss, "gauss": gauss},
             "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Put back what `rng_state` took."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
