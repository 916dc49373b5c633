"""Fine-tuning a pretrained model from an experiment file (`model: {pretrained: ...}`), whole or
through a peft adapter: what trains, what a run saves and loads back, resume, the programs'
learnable parts, AdaLoRA's reallocation, and looking inside the run with the recorder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.cli.app
import attnlab.train
from attnlab.errors import ConfigError, RunFolderError
from attnlab.train.config import load_experiment
from attnlab.train.run import evaluate
from interrupting import train_until

pytest.importorskip("transformers")
pytest.importorskip("peft")

# 48 questions in batches of 16: 3 batches an epoch; 6 steps, validated (and checkpointed) after
# steps 3 and 6. The program has a learnable part (a relative-position table per head), and
# the model has dropout, so a resume must restore the generator as well as the weights.
EXP = {"name": "tiny-minilm",
       "task": {"name": "trec-questions", "params": {"labels": "coarse", "max_len": 16},
                "train_examples": 48, "val_examples": 16, "test_examples": 24},
       "model": {"pretrained": "all-minilm-l6-v2", "dropout": 0.1},
       "adapter": {"method": "lora", "r": 4},
       "attention": "scaled_dot + relative_bias ; window(4) ; softmax",
       "train": {"steps": 6, "batch_size": 16, "lr": 0.003, "seed": 3}}


def train(out: Path, *, resume: bool = False, stop_at: int | None = None, monkeypatch=None, **changes):
    """Train EXP (with `changes`) into `out`; with `stop_at`, raise out of that training step."""
    exp = load_experiment({**EXP, **changes})
    return train_until(stop_at, monkeypatch, lambda: attnlab.train.train(
        exp, out, resume=resume, progress=False, tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("lora") / "run"
    return out, train(out)


def saved(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_a_lora_run_trains_and_saves_only_the_adapter_the_programs_and_the_head(run) -> None:
    out, metrics = run
    state = saved(out / "model.pt")
    kinds = {"lora_A", "lora_B", "program_params", "head"}
    assert all(any(k in name for k in kinds) for name in state), sorted(state)[:5]
    # every query and value projection of the 6 layers has its two LoRA matrices; 6 tables; the head
    assert sum("lora_A" in n for n in state) == sum("lora_B" in n for n in state) == 12
    assert sum("program_params" in n for n in state) == 6
    assert metrics["trainable_params"] == sum(t.numel() for t in state.values())
    assert metrics["trainable_params"] < 0.01 * metrics["params"]
    assert metrics["program"] == "scaled_dot + relative_bias ; window(4) ; softmax"
    # checkpoints carry the same tensors (the frozen weights come back from their package)
    assert set(saved(out / "best.ckpt")["state_dict"]) == {f"model.{k}" for k in state}


def test_a_pretrained_run_loads_predicts_and_evaluates_like_the_others(run) -> None:
    out, metrics = run
    model = attnlab.load(out)
    state = saved(out / "model.pt")
    loaded = dict(model.model.state_dict())
    for name, tensor in state.items():  # the program's table and the adapter came back exactly
        assert torch.equal(loaded[name], tensor), name
    labels = model.predict(["Who wrote Hamlet?", "How far away is the moon?"])
    assert len(labels) == 2 and set(labels) <= {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
    assert evaluate(out)["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    result = CliRunner().invoke(attnlab.cli.app.app, ["predict", str(out), "Who wrote Hamlet?"])
    assert result.exit_code == 0, result.output
    assert result.output.split()[0] in model.label_names


def test_a_damaged_or_foreign_model_file_is_refused(run, tmp_path) -> None:
    from attnlab.models.base import load_model

    out, _ = run
    state = saved(out / "model.pt")
    state.pop(next(k for k in state if "lora_A" in k))
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.json").write_text((out / "model.json").read_text())
    torch.save(state, copy / "model.pt")
    with pytest.raises(RunFolderError, match="do not fit this all-minilm-l6-v2 model"):
        load_model(copy)


@pytest.mark.parametrize("stop_at", [2, 5], ids=["before-the-first-checkpoint", "mid-epoch"])
def test_a_pretrained_run_interrupted_resumes_to_the_same_weights(stop_at, run, tmp_path,
                                                                 monkeypatch) -> None:
    straight, _ = run
    out = tmp_path / "run"
    assert train(out, stop_at=stop_at, monkeypatch=monkeypatch) is None
    assert train(out, resume=True)["steps"] == 6
    for name in ("model.pt",):
        a, b = saved(straight / name), saved(out / name)
        assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    a, b = saved(straight / "last.ckpt")["state_dict"], saved(out / "last.ckpt")["state_dict"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_an_adalora_run_interrupted_while_its_ranks_move_resumes_to_the_same_weights(tmp_path,
                                                                                  monkeypatch) -> None:
    """12 steps in 2 epochs of 6 (checkpoints after 6 and 12); AdaLoRA prunes ranks from step 1 to
    10. Stopped at step 9, the resumed run must carry its importance averages across."""
    changes = {"task": {**EXP["task"], "train_examples": 24}, "adapter": {"method": "adalora", "r": 2},
               "train": {**EXP["train"], "steps": 12, "batch_size": 4}}
    straight, resumed = tmp_path / "straight" / "run", tmp_path / "resumed" / "run"
    for folder in (straight, resumed):
        folder.parent.mkdir()
    assert train(straight, **changes)["steps"] == 12
    assert train(resumed, stop_at=9, monkeypatch=monkeypatch, **changes) is None
    assert train(resumed, resume=True, **changes)["steps"] == 12
    for name, key in (("model.pt", None), ("last.ckpt", "state_dict")):
        a, b = saved(straight / name), saved(resumed / name)
        a, b = (a, b) if key is None else (a[key], b[key])
        assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    pattern = saved(straight / "last.ckpt")["model_state"]["rank_pattern"]
    assert pattern and any(not bool(v.all()) for v in pattern.values())  # some ranks were pruned


def test_the_view_and_the_recorder_work_on_a_pretrained_run(run, tmp_path) -> None:
    out, _ = run
    page = tmp_path / "view.html"
    result = CliRunner().invoke(attnlab.cli.app.app, ["inspect", str(out), "Who wrote Hamlet?",
                                                      "--out", str(page)])
    assert result.exit_code == 0, result.output
    # [CLS] who wrote hamlet ? [SEP]: 6 tokens, 12 heads, 6 layers
    assert "6 tokens × 12 heads × 6 layers" in result.output
    html = page.read_text()
    assert "hamlet" in html and "http://" not in html.replace("http://www.w3.org", "")
    result = CliRunner().invoke(attnlab.cli.app.app, ["heads", str(out), "--examples", "4",
                                                      "--out", str(tmp_path / "heads")])
    assert result.exit_code == 0, result.output
    assert "of 72 heads can be removed" in result.output  # each head masked through attnlab.hf
    model = attnlab.load(out)
    ids = model.encode(["Who wrote Hamlet?", "How far is it from Denver to Aspen?"])
    real = ids != 0
    with attnlab.record(model) as rec:
        model(ids)
    assert rec.layers[0] == "model.backbone.encoder.layer.0.attention.self" and len(rec.layers) == 6
    used = int(real.any(0).sum())  # the model runs without the padding columns after the texts
    w = rec.weights(5)
    assert w.shape == (2, 12, used, used)
    q, k = torch.arange(used)[:, None], torch.arange(used)[None, :]
    seen = ((q - k).abs() <= 4) & real[:, None, None, :used]  # window(4) & the model's padding
    assert torch.all(w.masked_select(~seen.expand_as(w)) == 0)
    rows = w.sum(-1)[real[:, None, :used].expand(-1, 12, -1)]
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_the_recorder_reads_minilms_own_attention_as_transformers_computes_it() -> None:
    """With `program_of`, the recorder's weights equal the ones eager attention returns."""
    from attnlab.hf import pretrained, program_of, use

    model, tokenizer = pretrained("all-minilm-l6-v2")
    batch = tokenizer(["a short one", "a rather longer sentence that pads the first"], padding=True,
                      return_tensors="pt")
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = model(**batch, output_attentions=True).attentions
        use(model, program_of(model))
        with attnlab.record(model) as rec:
            model(**batch)
    real = batch["attention_mask"].bool()
    for layer in (0, 5):
        ours = rec.weights(layer)
        rows = real[:, None, :, None]  # eager's rows at padded queries are not meaningful
        assert (ours - eager[layer]).masked_select(rows).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["lora", "dora", "ia3", "adalora"])
def test_each_adapter_trains_only_itself_the_programs_and_the_head(method) -> None:
    from attnlab.hf.classifier import PretrainedClassifier, PretrainedClassifierConfig

    adapter = {"method": method, "r": 4, "alpha": None, "dropout": 0.0, "targets": None}
    model = PretrainedClassifier(PretrainedClassifierConfig(
        "all-minilm-l6-v2", 3, programs="scaled_dot + relative_bias ; softmax", max_len=16,
        adapter=adapter, steps=20))
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    marks = {"lora": "lora_", "dora": "lora_", "ia3": "ia3_l", "adalora": "lora_"}[method]
    assert all(marks in n or "program_params" in n or n.startswith("head.") for n in trained)
    assert any(marks in n for n in trained) and sum("program_params" in n for n in trained) == 6
    if method == "dora":
        assert any("lora_magnitude_vector" in n for n in trained)
    ids = torch.tensor([[101, 2040, 2626, 7658, 1029, 102], [101, 2129, 2521, 102, 0, 0]])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for step in range(20):
        loss = torch.nn.functional.cross_entropy(model(ids), torch.tensor([0, 2])) + model.penalty()
        loss.backward()
        opt.step()
        model.after_step(step)
        opt.zero_grad()
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    if method == "adalora":  # ranks were reallocated towards r=4 and the budget fixed at the end
        assert model._adapter.tuner.peft_config["default"].rank_pattern
        assert float(model.penalty().detach()) > 0
    assert set(model.saved_state()) == trained | ({n for n in model.state_dict() if "ranknum" in n}
                                                   if method == "adalora" else set())


def test_fine_tuning_the_whole_model_saves_all_of_it() -> None:
    from attnlab.hf.classifier import PretrainedClassifier, PretrainedClassifierConfig

    model = PretrainedClassifier(PretrainedClassifierConfig("all-minilm-l6-v2", 2, max_len=16))
    assert all(p.requires_grad for p in model.parameters())
    assert set(model.saved_state()) == {n for n, _ in model.named_parameters()}


def test_mistakes_in_a_pretrained_experiment_are_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="adapter: an adapter fine-tunes a pretrained model"):
        load_experiment({**EXP, "model": {"d_model": 32}})
    with pytest.raises(ConfigError, match="layers: a pretrained model has its own size and shape"):
        load_experiment({**EXP, "model": {"pretrained": "all-minilm-l6-v2", "layers": 3}})
    bad = [({"model": {"pretrained": "all-minilm-l7"}}, "unknown pretrained model 'all-minilm-l7'"),
           ({"model": {"pretrained": "all-minilm-l6-v2", "pooling": "cls"}}, "brings its own"),
           ({"adapter": {"method": "lora", "targets": ["q_proj"]}}, "adapter.targets names modules"),
           ({"task": {"name": "digits"}}, "cannot start from a pretrained model"),
           ({"attention": ["scaled_dot ; softmax"] * 5}, "has 6 attention layers: give one program")]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            attnlab.train.train(load_experiment({**EXP, **change}), tmp_path / "bad", progress=False,
                                tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
