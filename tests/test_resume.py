"""Resume is exact: a run interrupted anywhere (in-process, or by kill -9 at start, while the
MLflow store is made, mid-epoch, or during a checkpoint save) and resumed ends with the very
weights of the run that was never interrupted, bit for bit on CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import attnlab
import attnlab.train
from attnlab.train.config import load_experiment
from interrupting import train_until

# 64 examples in batches of 16: 4 batches an epoch; 6 steps are validated (and checkpointed) after
# steps 3 and 6, both mid-epoch, so a resume must restore the loader's position, not just its epoch.
# Dropout draws from torch's generator, so its state must be restored too.
EXP = {"name": "tiny-resume",
       "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2},
                "train_examples": 64, "val_examples": 16, "test_examples": 16},
       "model": {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.1},
       "attention": "causal ; softmax",
       "train": {"steps": 6, "batch_size": 16, "lr": 0.003, "seed": 5}}


def train(out: Path, tracking: str, *, resume: bool = False, stop_at: int | None = None,
          monkeypatch=None) -> dict | None:
    """Train EXP into `out`; with `stop_at`, raise out of training step `stop_at` (1-based)."""
    return train_until(stop_at, monkeypatch, lambda: attnlab.train.train(
        load_experiment(EXP), out, resume=resume, tracking_uri=tracking, progress=False))


def weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The final weights (last.ckpt) and the saved model (model.pt, the best checkpoint's)."""
    last = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    return {"last.ckpt": last["state_dict"],
            "model.pt": torch.load(out / "model.pt", map_location="cpu", weights_only=True)}


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    return max((wa[f][n] - wb[f][n]).abs().max().item() for f in wa for n in wa[f])


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """EXP trained without interruption."""
    root = tmp_path_factory.mktemp("straight")
    train(root / "run", f"sqlite:///{root / 'mlflow.db'}")
    return root / "run"


@pytest.mark.parametrize("stop_at", [2, 5], ids=["before-the-first-checkpoint", "mid-epoch"])
def test_an_interrupted_run_resumed_equals_the_straight_one(stop_at, straight, tmp_path, monkeypatch,
                                                            capsys) -> None:
    out, tracking = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert train(out, tracking, stop_at=stop_at, monkeypatch=monkeypatch) is None
    assert train(out, tracking, resume=True)["steps"] == 6
    if stop_at == 2:  # killed before any checkpoint: starts again, and says so
        assert "starting from the beginning" in capsys.readouterr().err
    difference = max_difference(straight, out)
    print(f"interrupted at step {stop_at}: max weight difference {difference}")
    assert difference == 0.0


def test_each_epoch_draws_its_own_order_and_a_restored_loader_skips_what_was_trained() -> None:
    from attnlab.tasks import task_of
    from attnlab.train.loaders import loader

    exp = load_experiment(EXP)
    task = task_of(exp.task)
    data = task.prepare(exp).train.head(64)

    def epoch_batches(made, epoch):
        made.batch_sampler.set_epoch(epoch)
        return [b[0].sum().item() for b in made]

    first = loader(task, data, 16, True, 5, resumable=True)
    orders = [epoch_batches(first, e) for e in (0, 1, 2)]
    assert orders[0] != orders[1] != orders[2]  # a new order each epoch…
    second = loader(task, data, 16, True, 5, resumable=True)
    assert epoch_batches(second, 2) == orders[2]  # …that depends on (seed, epoch) only
    third = loader(task, data, 16, True, 5, resumable=True)
    third.load_state_dict({"epoch": 1, "done": 3})
    assert epoch_batches(third, 1) == orders[1][3:]


# -- kill -9 ------------------------------------------------------------------------------------

# Run `attnlab train` in a child that kills itself (SIGKILL: no cleanup, no atexit) at one point.
KILLER = textwrap.dedent("""
    import os, signal, sys

    point, experiment, out, tracking = sys.argv[1:5]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "start":  # after experiment.yaml is written, before anything trains
        import lightning
        lightning.Trainer.fit = die
    elif point == "store":  # while MLflow makes its tables
        import mlflow.store.db.utils as db
        db._initialize_tables = die
    elif point == "mid-epoch":  # in the fifth training step, after the checkpoint of step 3
        from attnlab.train.module import TaskModule
        original, calls = TaskModule.training_step, [0]
        def step(self, batch, index):
            calls[0] += 1
            if calls[0] == 5:
                die()
            return original(self, batch, index)
        TaskModule.training_step = step
    elif point == "save":  # the third checkpoint is written and synced, not yet renamed
        import attnlab.train.checkpoints as checkpoints
        replace, saves = os.replace, [0]
        def renaming(src, dst):
            if str(dst).endswith(".ckpt"):
                saves[0] += 1
                if saves[0] == 3:
                    die()
            return replace(src, dst)
        checkpoints.os.replace = renaming
    from attnlab.cli.app import app
    app(["train", experiment, "--out", out, "--tracking-uri", tracking], standalone_mode=False)
""")

KILL_POINTS = ["start", "store", "mid-epoch", "save"]  # ~10 s each: all in the default suite


@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_then_resume_equals_the_straight_run(point, straight, tmp_path) -> None:
    script, experiment = tmp_path / "killer.py", tmp_path / "exp.yaml"
    script.write_text(KILLER)
    experiment.write_text(yaml.safe_dump(EXP))
    out, tracking = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the child imports this attnlab, whatever the working folder (PYTHONPATH may be relative)
    source = str(Path(attnlab.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(script), point, str(experiment), str(out), tracking],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    if point == "save":
        assert list(out.glob(".*.ckpt.*.tmp")), "the kill should leave a half-made checkpoint"
    metrics = attnlab.train.train(load_experiment(experiment), out, resume=True, tracking_uri=tracking,
                                  progress=False)
    assert metrics["steps"] == 6
    assert not list(out.glob(".*.tmp"))  # the leftover of the kill was cleaned
    difference = max_difference(straight, out)
    print(f"kill -9 at {point}: max weight difference {difference}")
    assert difference == 0.0


def test_resume_refuses_a_changed_experiment_and_says_what_changed(straight, tmp_path) -> None:
    from attnlab import ConfigError

    out = tmp_path / "run"
    shutil.copytree(straight, out)
    changed = load_experiment(EXP, ["train.lr=0.01", "task.train_examples=128"])
    with pytest.raises(ConfigError, match=r"task.train_examples: 64 → 128; train.lr: 0.003 → 0.01"):
        attnlab.train.train(changed, out, resume=True, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                            progress=False)


def test_a_resume_inside_a_gradient_accumulation_equals_the_straight_run(tmp_path, monkeypatch) -> None:
    """Accumulating 3 batches a step over 4-batch epochs with a budget of 3 steps validates every
    3 batches: the checkpoint after the 6th batch falls after 2 of epoch 1's batches, inside an
    accumulation, so the partial gradient must travel in the checkpoint."""
    global EXP
    saved, EXP = EXP, {**EXP, "train": {**EXP["train"], "steps": 3, "accumulate": 3}}
    try:
        straight_out = tmp_path / "straight"
        train(straight_out, f"sqlite:///{tmp_path / 'a.db'}")
        out = tmp_path / "run"
        assert train(out, f"sqlite:///{tmp_path / 'b.db'}", stop_at=7, monkeypatch=monkeypatch) is None
        train(out, f"sqlite:///{tmp_path / 'b.db'}", resume=True)
    finally:
        EXP = saved
    # the budget ends between validations: the last step is validated and checkpointed all the same
    last = torch.load(straight_out / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3
    difference = max_difference(straight_out, out)
    print(f"interrupted inside an accumulation: max weight difference {difference}")
    assert difference == 0.0
