"""Checkpoints that are never half-written (write beside, fsync, then rename over) and that are
read as tensors and plain data only, so a planted checkpoint cannot run code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from attnlab.runfiles import load_tensors


class AtomicCheckpointIO(TorchCheckpointIO):
    """A kill -9 at any moment leaves either the old checkpoint or the new one, whole. Every
    checkpoint Lightning reads (resume, `trainer.test(ckpt_path=...)`) is loaded weights-only:
    what Lightning writes is tensors, numbers, strings, lists and dicts, so nothing is lost."""

    def load_checkpoint(self, path: str | Path, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        checkpoint = load_tensors(path)
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            from attnlab.errors import RunFolderError

            raise RunFolderError(f"{path} is not a training checkpoint (no state_dict)")
        return checkpoint

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary output
            os.replace(tmp, path)  # atomic on POSIX within one file system
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class FolderCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that resumes in a run folder that was moved or copied since it was saved:
    the paths it remembers are taken to be in the folder where it is now (Lightning would drop
    the best score instead, and the next validation would overwrite best.ckpt whatever its score)."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        if old is not None and self.dirpath is not None and old != self.dirpath:
            def here(path):
                return os.path.join(self.dirpath, os.path.basename(path)) if path else path

            state_dict = {**state_dict, "dirpath": self.dirpath,
                          **{k: here(state_dict.get(k)) for k in (
                              "best_model_path", "kth_best_model_path", "last_model_path")},
                          "best_k_models": {here(k): v for k, v in
                                            state_dict.get("best_k_models", {}).items()}}
        super().load_state_dict(state_dict)


class BestCheckpoint(FolderCheckpoint):
    """ModelCheckpoint whose ties go to the lower `tie_break` (the validation loss): accuracy
    stops moving long before a model stops improving, and the first epoch to reach the top
    accuracy is rarely the best one."""

    def __init__(self, *args: Any, tie_break: str = "val_loss", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tie_break = tie_break
        self.best_tie: float = float("inf")  # the tie-break value of the kept checkpoint

    def check_monitor_top_k(self, trainer, current: torch.Tensor | None = None) -> bool:
        if current is not None and self.best_k_models and self.save_top_k == 1:
            best = self.best_k_models[self.kth_best_model_path]
            tie = trainer.callback_metrics.get(self.tie_break)
            if tie is not None and bool(torch.eq(current.cpu(), best.cpu())):
                return trainer.strategy.reduce_boolean_decision(float(tie) < self.best_tie)
        return super().check_monitor_top_k(trainer, current)

    def _update_best_and_save(self, current, trainer, monitor_candidates) -> None:
        tie = monitor_candidates.get(self.tie_break)
        self.best_tie = float(tie) if tie is not None else float("inf")  # before the save stores it
        super()._update_best_and_save(current, trainer, monitor_candidates)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_tie": self.best_tie}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_tie = float(state_dict.get("best_tie", float("inf")))
