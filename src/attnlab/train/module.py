"""The Lightning module: a model, its task's loss and accuracy, AdamW with a schedule."""

from __future__ import annotations

import inspect
import math

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.train.config import TrainConfig
from attnlab.train.metrics import ranking_scores


class TaskModule(L.LightningModule):
    """Trains any attnlab model on its kind of task (`TaskData.kind`): 'lm' and 'rank' (a target
    per position, −100 ignored), 'classify' (one label per sequence) or 'translate' (source and
    target ids, teacher-forced). Rank batches with candidates also log HR@10 and NDCG@10."""

    def __init__(self, model: nn.Module, kind: str, train: TrainConfig, total_steps: int) -> None:
        super().__init__()
        self.model, self.kind, self.cfg, self.total_steps = model, kind, train, total_steps

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def _logits(self, batch: tuple[Tensor, ...], stage: str) -> tuple[Tensor, Tensor]:
        """Logits and the labels they are scored against, flattened to (N, classes) and (N,)."""
        tokens, labels, *candidates = batch
        if self.kind == "translate":
            src, tgt = _trim(tokens), _trim(labels)  # padding every row has costs time, not loss
            target = tgt[:, 1:].masked_fill(tgt[:, 1:] == 0, -100)
            return self.model(src, tgt[:, :-1]).flatten(0, 1), target.flatten()
        if self.kind == "lm" and _selects(self.model):
            scored = labels != -100  # the vocabulary projection only where a target is
            return self.model(tokens, select=scored), labels[scored]
        logits = self.model(tokens)
        if candidates:  # rank the held-out item among its candidates, at the last position
            hit, ndcg = ranking_scores(logits[:, -1].gather(1, candidates[0]))
            self.log(f"{stage}_hr10", hit.mean(), on_epoch=True, sync_dist=True)
            self.log(f"{stage}_ndcg10", ndcg.mean(), prog_bar=True, on_epoch=True, sync_dist=True)
        if self.kind == "classify":
            return logits, labels
        return logits.flatten(0, 1), labels.flatten()

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        logits, labels = self._logits(batch, stage)
        loss = F.cross_entropy(logits.float(), labels, ignore_index=-100)
        scored = labels != -100
        correct = (logits.argmax(-1) == labels) & scored
        accuracy = correct.sum() / scored.sum().clamp(min=1)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=on_step, on_epoch=True,
                 sync_dist=True)
        self.log(f"{stage}_accuracy", accuracy, prog_bar=stage != "train", on_step=on_step,
                 on_epoch=True, sync_dist=True)
        return loss

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        self._step(batch, "val")

    def test_step(self, batch, _):
        self._step(batch, "test")

    def configure_optimizers(self):
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2]
        keep = [p for n, p in self.named_parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                 {"params": keep, "weight_decay": 0.0}], lr=self.cfg.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(self.cfg, self.total_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _trim(ids: Tensor) -> Tensor:
    """Right-padded ids without the trailing columns that are padding (0) in every row."""
    used = ids.ne(0).any(0).nonzero()
    return ids[:, : int(used.max()) + 1] if used.numel() else ids[:, :1]


def _selects(model: nn.Module) -> bool:
    return "select" in inspect.signature(model.forward).parameters


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
