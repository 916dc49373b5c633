"""A run folder is data people share: loading it never runs code, its files are tied together by
a manifest of hashes, one training holds it at a time, and every way it can be broken or swapped
gives one attnlab error that names the file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab.errors import AttnlabError, ConfigError, RunFolderError, UnsafeFileError
from attnlab.train.config import load_experiment
from attnlab.train.folder import MANIFEST, locked, write_manifest
from attnlab.train.run import default_out, evaluate

EXP = {"name": "tiny-safety",
       "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2},
                "train_examples": 64, "val_examples": 16, "test_examples": 16},
       "model": {"d_model": 16, "layers": 1, "heads": 2},
       "attention": "causal ; softmax",
       "train": {"steps": 2, "batch_size": 32, "seed": 1}}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    attnlab.train.train(load_experiment(EXP), root / "run", tracking_uri=f"sqlite:///{root / 'm.db'}",
                        progress=False)
    return root / "run"


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A fresh copy of the finished run, to break."""
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def cli(*args: str):
    return CliRunner().invoke(attnlab.cli.app.app, [str(a) for a in args])


def one_error_line(done) -> str:
    """The CLI's answer to a bad folder: exit 2, one `error:` line, no traceback."""
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.output
    assert "Traceback" not in done.output
    return lines[0]


# -- no code runs -------------------------------------------------------------------------------

class Planted:
    """Unpickling this writes a marker file: the proof that loading ran code."""

    marker: Path

    def __reduce__(self):
        return (Path.write_text, (self.marker, "planted code ran"))


# which command reads which file: with the manifest re-signed, only these reach torch.load
READS = {"load": {"model.pt"}, "eval": {"model.pt", "test.pt"}, "predict": {"model.pt"},
         "resume": {"last.ckpt", "best.ckpt"}}


@pytest.mark.parametrize("name", ["best.ckpt", "last.ckpt", "model.pt", "test.pt"])
@pytest.mark.parametrize("resigned", [False, True], ids=["manifest-kept", "manifest-resigned"])
def test_a_planted_pickle_never_runs(name, resigned, run, tmp_path) -> None:
    marker = tmp_path / "MARKER"
    planted = Planted()
    planted.marker = marker
    torch.save({"state_dict": {}, "planted": planted}, run / name)
    if resigned:  # whoever planted it also rewrote the manifest: the loader itself must refuse
        write_manifest(run, complete=True)
    tracking = f"sqlite:///{tmp_path / 'm.db'}"
    commands = {
        "load": lambda: attnlab.load(run),
        "eval": lambda: evaluate(run),
        "predict": lambda: one_error_line(cli("predict", run, "a b c")),
        "resume": lambda: attnlab.train.train(load_experiment(EXP), run, resume=True,
                                              tracking_uri=tracking, progress=False),
    }
    for command, call in commands.items():
        if resigned and name not in READS[command]:
            continue  # that command never opens the file: nothing to refuse
        if command == "predict":
            assert name in call()
        else:
            with pytest.raises(RunFolderError, match=re.escape(name)) as caught:
                call()
            assert resigned is isinstance(caught.value, UnsafeFileError), caught.value
        assert not marker.exists(), f"{command} ran the planted code in {name}"


# -- the manifest ties the files together -------------------------------------------------------

def test_a_finished_run_has_a_manifest_of_every_file(run) -> None:
    manifest = json.loads((run / MANIFEST).read_text())
    assert manifest["complete"] is True
    assert set(manifest["sha256"]) >= {"experiment.yaml", "model.json", "model.pt", "test.pt",
                                       "metrics.json", "best.ckpt", "last.ckpt"}


@pytest.mark.parametrize("name", ["experiment.yaml", "model.json", "model.pt", "test.pt"])
def test_a_swapped_file_is_refused_by_name(name, run) -> None:
    if name == "experiment.yaml":  # another program, the same parameter shapes: would mis-predict
        text = (run / name).read_text().replace("causal ; softmax", "causal & window(2) ; softmax")
        assert text != (run / name).read_text()
        (run / name).write_text(text)
    else:
        data = bytearray((run / name).read_bytes())
        data[-40] ^= 1
        (run / name).write_bytes(bytes(data))
    for call in (lambda: attnlab.load(run), lambda: evaluate(run)):
        with pytest.raises(RunFolderError, match=re.escape(f"{name} was changed")):
            call()
    assert name in one_error_line(cli("predict", run, "x"))
    assert name in one_error_line(cli("eval", run))


def test_a_folder_without_manifest_or_unfinished_is_refused(run) -> None:
    write_manifest(run, complete=False)
    with pytest.raises(RunFolderError, match="did not finish"):
        attnlab.load(run)
    (run / MANIFEST).unlink()
    with pytest.raises(RunFolderError, match=r"no manifest\.json"):
        attnlab.load(run)
    assert "no manifest.json" in one_error_line(cli("eval", run))


# -- broken files: one line each -----------------------------------------------------------------

def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BREAKAGES = {
    "model.json not JSON": ("model.json", lambda p: p.write_text("{")),
    "model.json wrong config": ("model.json", lambda p: p.write_text(
        json.dumps({"model": "decoder_lm", "config": {"no_such": 1}}))),
    "model.pt truncated": ("model.pt", truncate),
    "model.pt empty": ("model.pt", lambda p: p.write_bytes(b"")),
    "model.pt other shapes": ("model.pt", lambda p: torch.save({"w": torch.zeros(2)}, p)),
    "test.pt truncated": ("test.pt", truncate),
    "model.pt missing": ("model.pt", lambda p: p.unlink()),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_a_broken_file_gives_one_error_naming_it(case, run) -> None:
    name, breaking = BREAKAGES[case]
    breaking(run / name)
    if (run / name).exists():
        write_manifest(run, complete=True)  # damage the hashes vouch for: the reader must cope
    with pytest.raises(RunFolderError, match=re.escape(name)):
        evaluate(run)
    assert name in one_error_line(cli("eval", run))


@pytest.mark.parametrize("name", ["labels.json", "tokenizer.json"])
def test_broken_text_encoders_give_one_error(name, tmp_path) -> None:
    from attnlab.tasks import kind

    (tmp_path / "labels.json").write_text(json.dumps({"labels": ["a", "b"], "max_len": 8}))
    (tmp_path / "tokenizer.json").write_text('{"not": "a tokenizer"}')
    if name == "labels.json":
        (tmp_path / "labels.json").write_text("[1, 2")
    with pytest.raises(RunFolderError, match=re.escape(name)):
        kind("text-classification").load_encoders(tmp_path, None)


def test_a_damaged_last_checkpoint_resumes_from_best_with_a_warning(run, tmp_path) -> None:
    write_manifest(run, complete=False, names=["experiment.yaml"])  # as a killed run leaves it
    truncate(run / "last.ckpt")
    with pytest.warns(UserWarning, match=r"last.ckpt is damaged.*resuming from best.ckpt"):
        attnlab.train.train(load_experiment(EXP), run, resume=True,
                            tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", progress=False)
    (run / "last.ckpt").write_bytes(b"")
    (run / "best.ckpt").write_bytes(b"")
    write_manifest(run, complete=False, names=["experiment.yaml"])
    with pytest.raises(RunFolderError, match=r"last\.ckpt is damaged"):
        attnlab.train.train(load_experiment(EXP), run, resume=True,
                            tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", progress=False)


# -- the best checkpoint ------------------------------------------------------------------------

def test_best_checkpoint_breaks_a_tie_in_accuracy_on_the_validation_loss(tmp_path) -> None:
    from types import SimpleNamespace

    from attnlab.train.checkpoints import BestCheckpoint

    best = BestCheckpoint(dirpath=tmp_path, filename="best", monitor="val_accuracy", mode="max")
    best.best_k_models, best.kth_best_model_path = {"best.ckpt": torch.tensor(0.9)}, "best.ckpt"
    best.best_tie = 0.5
    trainer = SimpleNamespace(callback_metrics={"val_loss": torch.tensor(0.4)},
                              strategy=SimpleNamespace(reduce_boolean_decision=lambda d: d))
    assert best.check_monitor_top_k(trainer, torch.tensor(0.9))  # same accuracy, lower loss
    trainer.callback_metrics["val_loss"] = torch.tensor(0.6)
    assert not best.check_monitor_top_k(trainer, torch.tensor(0.9))  # same accuracy, higher loss
    assert best.check_monitor_top_k(trainer, torch.tensor(0.95))  # better accuracy wins anyway
    assert not best.check_monitor_top_k(trainer, torch.tensor(0.85))
    assert BestCheckpoint(monitor="val_accuracy").state_dict()["best_tie"] == float("inf")


def test_the_best_score_survives_a_move_of_the_run_folder(tmp_path) -> None:
    """Checkpoints remember their folder's path; resumed where it was copied to, the best score
    still counts (else the next validation would replace best.ckpt whatever its score)."""
    from attnlab.train.checkpoints import BestCheckpoint

    saved = BestCheckpoint(dirpath=tmp_path / "a", filename="best", monitor="val_accuracy", mode="max")
    path = str(tmp_path / "a" / "best.ckpt")
    saved.best_k_models, saved.kth_best_model_path = {path: torch.tensor(0.9)}, path
    saved.best_model_path, saved.best_model_score, saved.best_tie = path, torch.tensor(0.9), 0.25
    moved = BestCheckpoint(dirpath=tmp_path / "b", filename="best", monitor="val_accuracy", mode="max")
    moved.load_state_dict(saved.state_dict())
    assert moved.best_model_score == torch.tensor(0.9) and moved.best_tie == 0.25
    assert moved.best_model_path == str(tmp_path / "b" / "best.ckpt")
    assert list(moved.best_k_models) == [str(tmp_path / "b" / "best.ckpt")]


def test_a_run_keeps_the_epoch_with_the_lower_loss_among_equal_accuracies(finished) -> None:
    checkpoint = torch.load(finished / "best.ckpt", weights_only=True)
    states = [v for k, v in checkpoint["callbacks"].items() if k.startswith("BestCheckpoint")]
    assert len(states) == 1 and states[0]["best_tie"] < float("inf")


# -- one training per folder, nothing left behind, nowhere else -----------------------------------

def test_a_second_training_on_a_locked_folder_is_refused_naming_the_holder(tmp_path) -> None:
    import os

    out = tmp_path / "run"
    out.mkdir()
    holder = re.escape(f"in use by another training (pid {os.getpid()})")
    with locked(out), pytest.raises(RunFolderError, match=holder):
        attnlab.train.train(load_experiment(EXP), out, progress=False)


def test_leftover_temporary_files_are_cleaned_on_the_next_start(run, tmp_path) -> None:
    leftover = run / ".best.ckpt.x1y2z3.tmp"
    leftover.write_bytes(b"")
    changed = load_experiment(EXP, ["train.lr=0.5"])
    with pytest.raises(ConfigError, match=r"train.lr: 0.001 → 0.5"):
        attnlab.train.train(changed, run, resume=True, progress=False)
    assert not leftover.exists()


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", "..", ".", ""])
def test_an_experiment_name_cannot_send_the_run_outside_runs(name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="plain folder name"):
        default_out(name)
    exp = load_experiment(EXP).model_copy(update={"name": name})
    with pytest.raises(AttnlabError):
        attnlab.train.train(exp, progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == []  # nothing written anywhere


def test_resume_with_no_run_in_the_folder_stays_an_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        attnlab.train.train(load_experiment(EXP), tmp_path / "none", resume=True)
