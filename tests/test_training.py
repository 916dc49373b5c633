"""Training end to end on tiny tasks: metrics.json, load, eval, runs, resume."""

from __future__ import annotations

import json

import pytest
import torch

import attnlab
import attnlab.train
from attnlab.train.config import load_experiment
from attnlab.train.tracking import list_runs

TINY = {"name": "tiny-mqar",
        "task": {"name": "mqar", "params": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 2},
                 "train_examples": 256, "val_examples": 64, "test_examples": 64},
        "model": {"d_model": 32, "layers": 1, "heads": 2},
        "attention": "causal ; softmax",
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.003, "seed": 3}}


@pytest.fixture
def tracking(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_train_writes_metrics_and_loads(tmp_path, tracking) -> None:
    out = tmp_path / "run"
    metrics = attnlab.train.train(load_experiment(TINY), out, tracking_uri=tracking,
                                  progress=False)
    written = json.loads((out / "metrics.json").read_text())
    assert written == metrics
    assert set(metrics) >= {"test_accuracy", "train_seconds", "params", "program"}
    assert metrics["program"] == "scaled_dot ; causal ; softmax"
    assert (out / "best.ckpt").exists() and (out / "last.ckpt").exists()
    model = attnlab.load(out)
    assert not model.training
    logits = model(torch.randint(0, 64, (3, 16)))
    assert logits.shape == (3, 16, 64)
    from attnlab.train.run import evaluate

    assert evaluate(out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    rows = list_runs("tiny-mqar", tracking)
    assert len(rows) == 1 and rows[0]["program"] == metrics["program"]
    assert rows[0]["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert rows[0]["score"] == f"test accuracy {metrics['test_accuracy']:.4f}"


def test_resume_continues_from_the_last_checkpoint(tmp_path, tracking, monkeypatch) -> None:
    """Stop after one epoch of two, resume: the same steps and result as two epochs straight
    through (tests/test_resume.py interrupts anywhere, kill -9 included)."""
    from attnlab.train.module import TaskModule

    straight = attnlab.train.train(load_experiment(TINY), tmp_path / "a", tracking_uri=tracking,
                                   progress=False)

    def interrupted(self):
        raise SystemError("interrupted")  # after the epoch's validation wrote its checkpoint

    monkeypatch.setattr(TaskModule, "on_train_epoch_end", interrupted, raising=False)
    with pytest.raises(SystemError):
        attnlab.train.train(load_experiment(TINY), tmp_path / "b", tracking_uri=tracking,
                            progress=False)
    monkeypatch.undo()
    resumed = attnlab.train.train(load_experiment(TINY), tmp_path / "b", resume=True,
                                  tracking_uri=tracking, progress=False)
    assert resumed["steps"] == straight["steps"]
    assert resumed["test_accuracy"] == straight["test_accuracy"]


def test_resume_without_a_checkpoint_says_so(tmp_path) -> None:
    from attnlab import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        attnlab.train.train(load_experiment(TINY), tmp_path / "none", resume=True)


def test_compare_cli_trains_each_program_and_draws_the_chart(tmp_path, monkeypatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from attnlab.cli.app import app

    monkeypatch.chdir(tmp_path)  # the default MLflow store lands under tmp_path/runs
    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 1}}))
    result = CliRunner().invoke(app, ["compare", str(exp), "--programs", "causal",
                                      "causal & window(2)", "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["program"] for r in rows] == ["scaled_dot ; causal ; softmax",
                                            "scaled_dot ; causal & window(2) ; softmax"]
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = CliRunner().invoke(app, ["compare", str(exp)])
    assert missing.exit_code == 2 and "give the programs to compare" in missing.output


def test_demo_trains_each_program_and_writes_a_self_contained_report(tmp_path, tracking) -> None:
    """The demo's machinery on a tiny experiment (the real one trains for ~3 minutes)."""
    import base64
    import re

    from rich.console import Console

    from attnlab.train.demo import DEMO_EXPERIMENT, DEMO_PROGRAMS, run_demo

    tiny = {**TINY, "train": {**TINY["train"], "epochs": 1}}
    programs = ("causal ; softmax", "causal & window(2) ; softmax", "linear(elu1) ; causal")
    with open(tmp_path / "log.txt", "w") as log:
        report = run_demo(tmp_path, Console(file=log), tracking_uri=tracking, experiment=tiny,
                          programs=programs)
    page = report.read_text()
    for text in ("scaled_dot ; causal ; softmax", "scaled_dot ; causal &amp; window(2) ; softmax",
                 "linear(elu1) ; causal"):
        # its table row, its mask's caption, its attention row (one layer) and picture's caption
        assert page.count(f"<code>{text}</code>") == 4
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 7  # the chart, three masks and three attention maps, embedded
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "window(2)" in page and "density 0.1" in page  # a window of 2 in 16 tokens
    rows = json.loads((tmp_path / "runs" / "compare.json").read_text())
    assert [r["program"] for r in rows] == [str(attnlab.parse(p)) for p in programs]
    assert '<h2 id="attention">What each program attends to</h2>' in page
    shown = json.loads((tmp_path / "attention.json").read_text())
    for row, numbers, folder in zip(rows, shown, ("scaled-dot-causal-softmax",
                                                  "scaled-dot-causal-window-2-softmax",
                                                  "linear-elu1-causal"), strict=True):
        value_on_key, on_key, on_value = recall_shares(tmp_path / "runs" / folder)
        assert numbers["program"] == row["program"]
        assert numbers["value_on_key"] == pytest.approx([value_on_key], abs=1e-6)
        assert numbers["on_key"] == pytest.approx([on_key], abs=1e-6)
        assert numbers["on_value"] == pytest.approx([on_value], abs=1e-6)
        assert f"<td>{value_on_key:.1%}</td><td>{on_key:.1%}</td><td>{on_value:.1%}</td>" in page
    # a window of 2 cannot reach the pairs: no weight lands on them, and the text says so
    assert shown[1]["on_key"] == [0.0] and shown[1]["hidden"] == 2
    assert "hides the pair from 2 of its 2 queries" in page
    # the shipped demo is the issue's: MQAR, softmax vs window(8) vs linear attention
    assert DEMO_EXPERIMENT["task"]["name"] == "mqar"
    assert DEMO_PROGRAMS == ("causal ; softmax", "causal & window(8) ; softmax",
                             "linear(elu1) ; causal")
    load_experiment(DEMO_EXPERIMENT)  # valid


def recall_shares(run) -> tuple[float, float, float]:
    """Test example 0 of an MQAR run, recorded, heads averaged: the share of each value's
    attention on the key before it (averaged over pairs), and of each query's on its matching
    key and on the value right after it (averaged over queries)."""
    model = attnlab.load(run)
    test = torch.load(run / "test.pt", weights_only=True)
    tokens, labels = test["inputs"][0], test["labels"][0]
    with attnlab.record(model) as rec, torch.no_grad():
        model(tokens[None])
    w = rec.weights(0)[0]  # (heads, N, N)
    heads = w.shape[0]
    queries = [i for i in range(len(tokens)) if labels[i] != -100]
    value_on_key = sum(w[h, j + 1, j].item() for h in range(heads)
                       for j in range(0, 2 * len(queries), 2)) / heads / len(queries)
    on_key = on_value = 0.0
    for q in queries:
        key = next(i for i in range(0, 2 * len(queries), 2) if tokens[i] == tokens[q])
        on_key += sum(w[h, q, key].item() for h in range(heads)) / heads / len(queries)
        on_value += sum(w[h, q, key + 1].item() for h in range(heads)) / heads / len(queries)
    return value_on_key, on_key, on_value


def test_a_classification_run_reports_the_majority_rate_beside_accuracy(tmp_path, tracking):
    exp = {"name": "tiny-listops",
           "task": {"name": "listops", "params": {"min_length": 20, "max_length": 40, "max_depth": 3},
                    "train_examples": 64, "val_examples": 32, "test_examples": 64},
           "model": {"d_model": 16, "layers": 1, "heads": 2},
           "train": {"steps": 3, "batch_size": 16}}  # shorter than an epoch (4 batches)
    metrics = attnlab.train.train(load_experiment(exp), tmp_path / "run", tracking_uri=tracking,
                                  progress=False)
    test = attnlab.data.make("listops", "test", num_examples=64, seed=0, min_length=20,
                             max_length=40, max_depth=3)
    counts = torch.bincount(test.labels, minlength=10)
    assert metrics["test_majority_rate"] == pytest.approx(counts.max().item() / 64)
    assert metrics["steps"] == 3 and (tmp_path / "run" / "best.ckpt").exists()  # validated at 3
    assert model_kind(tmp_path / "run") == "EncoderClassifier"


def model_kind(out) -> str:
    return type(attnlab.load(out)).__name__


def test_bf16_autocast_trains_on_cpu(tmp_path, tracking) -> None:
    """Linear layers compute in bfloat16 under autocast (so bf16 really ran); the weights the
    optimiser keeps stay float32."""
    exp = load_experiment(TINY, ["train.precision=bf16", "train.epochs=1"])
    dtypes: set[torch.dtype] = set()

    def record(module, args, output) -> None:
        if isinstance(module, torch.nn.Linear) and module.training:
            dtypes.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        metrics = attnlab.train.train(exp, tmp_path / "run", tracking_uri=tracking, progress=False)
    finally:
        hook.remove()
    assert dtypes == {torch.bfloat16}
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] == metrics["test_loss"]
    state = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())


def test_ddp_on_two_cpu_processes(tmp_path) -> None:
    """`--devices 2`: Lightning launches a second process (gloo); each sees half the batches."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    exp = tmp_path / "tiny.yaml"
    exp.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 1}}))
    attnlab_cli = Path(sys.executable).parent / "attnlab"
    done = subprocess.run([str(attnlab_cli), "train", str(exp), "--devices", "2", "--out",
                           str(tmp_path / "run"), "--tracking-uri",
                           f"sqlite:///{tmp_path / 'mlflow.db'}"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 4  # 256 examples, batch 32, two processes: 4 steps each
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stderr + done.stdout


def test_a_comparison_shows_each_kind_of_task_by_its_main_metric(tmp_path) -> None:
    from rich.console import Console

    from attnlab.train.compare import _table, bar_chart, main_metric

    base = {"program": "scaled_dot ; softmax", "train_seconds": 12.0, "params": 1000,
            "test_accuracy": 0.41}
    translation = {**base, "main_metric": "test_bleu", "test_bleu": 12.345, "test_chrf": 40.1,
                   "test_copy_bleu": 0.4, "test_copy_chrf": 18.6}
    ranking = {**base, "main_metric": "test_ndcg10", "test_ndcg10": 0.4374, "test_hr10": 0.7116,
               "test_popular_ndcg10": 0.2236, "test_popular_hr10": 0.3913}
    assert main_metric(translation) == ("test_bleu", "BLEU")
    assert main_metric(ranking) == ("test_ndcg10", "NDCG@10")
    assert main_metric(base) == ("test_accuracy", "test accuracy")
    console = Console(width=200, record=True)
    console.print(_table([translation]))
    console.print(_table([ranking]))
    text = console.export_text()
    assert "BLEU" in text and "12.35" in text and "copy chrF" in text and "18.60" in text
    assert "NDCG@10" in text and "0.4374" in text and "popular HR@10" in text
    assert "test accuracy" not in text  # a translation's token accuracy is not what it is judged by
    chart = bar_chart([translation], tmp_path / "c.png", title="t", metric="test_bleu")
    assert chart.read_bytes()[:4] == b"\x89PNG"
