"""Attention objectives: each value equals its formula written here on the reference backend's
weights, gradients reach the model through an attached recorder while the forward pass stays on
the fast backends, targets are exact, mistakes in the file name their field, and a run logs
every objective."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch

import attnlab
from attnlab.data.generators import make
from attnlab.errors import ConfigError
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.objectives import Objectives, alignment_rows, parse_objective
from attnlab.tasks import task_of
from attnlab.train.config import TaskConfig, load_experiment
from attnlab.train.metrics import alignment_error_rate

PROGRAMS = ["scaled_dot ; causal ; softmax", "scaled_dot + alibi ; causal & window(5) ; softmax",
            "scaled_dot ; causal ; sparsemax", "scaled_dot ; causal ; entmax(1.5)"]


def lm(program: str, seed: int = 0, heads: int = 4) -> DecoderLM:
    torch.manual_seed(seed)
    return DecoderLM(DecoderLMConfig(vocab_size=20, d_model=32, layers=2, heads=heads,
                                     max_len=16, programs=program))


def bound(model, *entries) -> Objectives:
    return Objectives([parse_objective(e) for e in entries], model,
                      task_of(TaskConfig(name="copy")))


def reference(model, tokens, layer: int) -> torch.Tensor:
    """(B, H, N, N) weights of `layer` from the reference backend (plain recorder, detached)."""
    with attnlab.record(model) as rec:
        model(tokens)
    return rec.weights(layer)


def values(model, tokens, *entries, target=None) -> dict[str, torch.Tensor]:
    objectives = bound(model, *entries)
    with objectives.recording(model) as rec:
        model(tokens)
    return objectives.values(rec, target)


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_value_is_its_formula_on_the_reference_weights(program, seed) -> None:
    model = lm(program, seed)
    tokens = torch.randint(0, 20, (3, 11), generator=torch.Generator().manual_seed(seed))
    got = values(model, tokens, {"kind": "entropy", "layers": [1]},
                 {"kind": "entropy", "direction": "spread", "layers": [0], "heads": [1, 3]},
                 {"kind": "sparsity", "layers": [0]},
                 {"kind": "head_diversity", "layers": [1]})
    w1, w0 = reference(model, tokens, 1).double(), reference(model, tokens, 0).double()

    def entropy(w):
        return sum(-x * math.log(x) for x in w.flatten().tolist() if x > 0) / (w.numel() / w.shape[-1])

    assert got["entropy"].item() == pytest.approx(entropy(w1), rel=1e-5, abs=1e-6)
    assert got["entropy_2"].item() == pytest.approx(-entropy(w0[:, [1, 3]]), rel=1e-5, abs=1e-6)
    rows = w0.numel() / w0.shape[-1]
    assert got["sparsity"].item() == pytest.approx(float((1 - (w0 ** 2).sum(-1)).sum()) / rows,
                                                   rel=1e-5)
    pairs = list(itertools.combinations(range(4), 2))
    dots = [float((w1[:, i] * w1[:, j]).sum()) for i, j in pairs]
    assert got["head_diversity"].item() == pytest.approx(
        sum(dots) / (len(pairs) * w1.shape[0] * w1.shape[2]), rel=1e-5)


def test_z_loss_is_the_squared_log_partition_of_the_visible_scores() -> None:
    model = lm("scaled_dot ; causal & window(3) ; softmax")
    tokens = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(3))
    block = model.blocks[0].attention
    x = model.blocks[0].norm1(model.positions(model.embed(tokens)))
    q, k, _ = attnlab.nn.attention.qkv(block, x, None, None, None)
    scores = (q @ k.transpose(-1, -2)).double() / math.sqrt(q.shape[-1])
    total, count = 0.0, 0
    for b, h, i in itertools.product(range(2), range(4), range(9)):
        seen = [scores[b, h, i, j].item() for j in range(9) if i - 3 <= j <= i]  # |i - j| ≤ 3
        total += math.log(sum(math.exp(s) for s in seen)) ** 2
        count += 1
    got = values(model, tokens, {"kind": "z_loss", "layers": [0]})["z_loss"]
    assert got.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("loss", ["ce", "kl", "mse"])
def test_supervise_compares_each_row_with_its_target_distribution(loss) -> None:
    model = lm("scaled_dot ; causal ; softmax")
    tokens = torch.randint(0, 20, (2, 8), generator=torch.Generator().manual_seed(5))
    # example 0: row 5 → keys 1 and 3 (half each), row 7 → key 0; example 1: row 4 → key 4;
    # the pair (9, 0) lies outside the sequence (cut by truncation) and is left out
    pairs = torch.tensor([[[5, 1], [5, 3], [7, 0], [-1, -1]], [[4, 4], [9, 0], [-1, -1], [-1, -1]]])
    got = values(model, tokens, {"kind": "supervise", "layers": [0], "heads": [2], "loss": loss},
                 target=pairs)["supervise"]
    w = reference(model, tokens, 0)[:, 2].double()
    rows = [(0, 5, {1: 0.5, 3: 0.5}), (0, 7, {0: 1.0}), (1, 4, {4: 1.0})]
    total = 0.0
    for b, r, p in rows:
        if loss == "mse":
            total += sum((w[b, r, j].item() - p.get(j, 0.0)) ** 2 for j in range(8))
        else:
            total += -sum(pj * math.log(w[b, r, j].item()) for j, pj in p.items())
            if loss == "kl":
                total += sum(pj * math.log(pj) for pj in p.values())
    assert got.item() == pytest.approx(total / len(rows), rel=1e-5)


def test_gradients_reach_the_model_and_the_forward_pass_is_unchanged() -> None:
    model = lm("scaled_dot ; causal ; softmax")
    tokens = torch.randint(0, 20, (4, 12), generator=torch.Generator().manual_seed(0))
    plain = model(tokens)
    objectives = bound(model, {"kind": "entropy", "layers": [0]})
    with objectives.recording(model) as rec:
        recorded = model(tokens)
    assert torch.equal(plain, recorded)  # recording changes nothing the fast path computes
    objectives.loss(objectives.values(rec, None)).backward()
    block0, block1 = model.blocks[0].attention, model.blocks[1].attention
    assert block0.to_q.weight.grad.abs().sum() > 0 and block0.to_k.weight.grad.abs().sum() > 0
    assert block1.to_q.weight.grad is None  # layer 1 is not read: no gradient from the objective
    assert block0.to_v.weight.grad is None  # weights do not depend on v


def test_the_forward_pass_keeps_its_backend_while_objectives_read_the_reference(monkeypatch) -> None:
    from attnlab.exec import api

    chosen = []
    original = api.attention

    def spy(*args, **kwargs):
        chosen.append(kwargs.get("backend"))
        return original(*args, **kwargs)

    model = lm("scaled_dot ; causal ; softmax")
    model.blocks[0].attention.frozen = ("sdpa",)
    monkeypatch.setattr("attnlab.nn.attention.attention", spy)
    tokens = torch.randint(0, 20, (2, 10))
    objectives = bound(model, {"kind": "supervise", "layers": [0], "heads": [0]})
    with objectives.recording(model) as rec:
        model(tokens)
    assert chosen == ["sdpa", None]
    pairs = torch.tensor([[[3, 1]], [[4, 0]]])
    assert objectives.values(rec, pairs)["supervise"].requires_grad


def test_padding_rows_do_not_count() -> None:
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderClassifierConfig(vocab_size=20, num_classes=2, d_model=32,
                                                      layers=1, heads=2, pad_id=0, max_len=10))
    full = torch.randint(1, 20, (1, 6))
    padded = torch.cat([full, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    one = values(model, full, {"kind": "entropy"}, {"kind": "z_loss"})
    two = values(model, padded, {"kind": "entropy"}, {"kind": "z_loss"})
    for name in one:
        assert two[name].item() == pytest.approx(one[name].item(), rel=1e-5)


@pytest.mark.parametrize("name,params", [("copy", {}), ("selective_copy", {"seq_len": 40, "num_tokens": 5}),
                                         ("induction_head", {"induction_len": 3}),
                                         ("mqar", {"vocab_size": 200, "seq_len": 48, "num_kv_pairs": 6})])
def test_generated_alignments_point_at_the_answer(name, params) -> None:
    """Every scored position is aligned, and the aligned key holds the token it must put out."""
    data = make(name, "test", num_examples=64, seed=2, **params)
    pairs = data.alignments
    batch = torch.arange(len(pairs))[:, None]
    assert torch.equal(data.inputs[batch, pairs[..., 1]], data.labels[batch, pairs[..., 0]])
    assert (pairs[..., 1] < pairs[..., 0]).all()  # causal: the answer lies in the past
    scored = (data.labels != -100).sum(1)
    assert torch.equal(scored, torch.full_like(scored, pairs.shape[1]))


def test_alignment_rows_spread_weight_over_linked_keys() -> None:
    pairs = torch.tensor([[[0, 1], [0, 2], [2, 0], [-1, -1]]])
    target, rows = alignment_rows(pairs, 1, 3, 3, torch.device("cpu"))
    assert torch.equal(rows, torch.tensor([[True, False, True]]))
    assert torch.equal(target[0], torch.tensor([[0, 0.5, 0.5], [0, 0, 0], [1, 0, 0]]))
    # shift 1: each pair one row down; the pair of row 2 falls off the end
    target, rows = alignment_rows(pairs, 1, 3, 3, torch.device("cpu"), shift=1)
    assert torch.equal(rows, torch.tensor([[False, True, False]]))
    assert torch.equal(target[0], torch.tensor([[0, 0, 0], [0, 0.5, 0.5], [0, 0, 0]]))


def test_aer_is_och_and_ney() -> None:
    predicted = [{(0, 0), (1, 1), (2, 1)}, {(0, 0)}]
    sure = [{(0, 0), (1, 1)}, {(1, 0)}]
    possible = [{(0, 0), (1, 1), (2, 1)}, {(1, 0)}]
    # A = 4, S = 3; A∩S = 2; A∩P = 3
    assert alignment_error_rate(predicted, sure, possible) == pytest.approx(1 - (2 + 3) / (4 + 3))
    assert alignment_error_rate(predicted, sure) == pytest.approx(1 - (2 + 2) / (4 + 3))
    assert alignment_error_rate(sure, sure) == 0.0


BASE = {"name": "x", "task": {"name": "copy"}, "train": {"steps": 1}}


@pytest.mark.parametrize("entry,message", [
    ({"kind": "entropyy"}, "objectives.0: kind: 'entropyy' is no objective — did you mean 'entropy'?"),
    ({"kind": "entropy", "direction": "up"}, "objectives.0.direction: Input should be 'focus' or 'spread'"),
    ({"kind": "supervise", "loss": "bce"}, "objectives.0.loss"),
    ({"kind": "z_loss", "weight": 0}, "objectives.0.weight: Input should be greater than 0"),
    ({"kind": "sparsity", "heads": [-1]}, "objectives.0.heads: give all, or a list of head numbers"),
    ({"kind": "sparsity", "layers": "last"}, "objectives.0.layers: give all, or a list of layer"),
    ({"kind": "head_diversity", "on": "values"}, "objectives.0.on"),
    ("entropy", "objectives.0: an objective is a mapping"),
    ({"kind": "entropy", "directon": "focus"},
     "objectives.0: unknown key 'directon' — did you mean 'direction'?; entropy takes kind, weight"),
])
def test_mistakes_name_the_field(entry, message) -> None:
    with pytest.raises(ConfigError) as err:
        load_experiment({**BASE, "objectives": [entry]})
    assert message in str(err.value)


def test_yaml_on_is_read_as_the_key_on(tmp_path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\ntask: {name: copy}\ntrain: {steps: 1}\n"
                    "objectives:\n  - {kind: head_diversity, on: outputs}\n")
    assert load_experiment(path).objectives[0].on == "outputs"


def test_layers_and_heads_are_checked_against_the_model() -> None:
    model = lm("scaled_dot ; causal ; softmax", heads=2)
    with pytest.raises(ConfigError, match=r"objectives.0.layers: layer 5 is out of range"):
        bound(model, {"kind": "entropy", "layers": [5]})
    with pytest.raises(ConfigError, match=r"objectives.1.heads: layer 'blocks.0.attention' has 2"):
        bound(model, {"kind": "entropy"}, {"kind": "entropy", "heads": [2]})
    with pytest.raises(ConfigError, match="head_diversity compares heads, so it needs at least 2"):
        bound(model, {"kind": "head_diversity", "heads": [1]})
    linear = lm("linear(elu1) ; causal", heads=2)
    with pytest.raises(ConfigError, match=re.escape("objectives.0: z_loss reads attention scores, "
                                                    "and layer 'blocks.0.attention' approximates "
                                                    "its weights")):
        bound(linear, {"kind": "z_loss"})
    assert bound(linear, {"kind": "entropy"})  # its weights can be read


def test_a_run_logs_every_objective_and_supervision_learns_the_copy(tmp_path) -> None:
    exp = load_experiment({
        "name": "copy-objectives",
        "task": {"name": "copy", "train_examples": 1024, "val_examples": 64, "test_examples": 64},
        "model": {"d_model": 64, "layers": 2, "heads": 2},
        "attention": "causal ; softmax",
        "objectives": [{"kind": "supervise", "layers": [-1], "heads": [0]},
                       {"kind": "entropy", "weight": 0.01}, {"kind": "z_loss", "weight": 1e-4},
                       {"kind": "head_diversity", "on": "outputs", "weight": 0.01}],
        "train": {"epochs": 4, "batch_size": 32, "lr": 0.003, "seed": 0}})
    metrics = attnlab.train.train(exp, tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                                  progress=False)
    assert metrics["objectives"] == ["supervise", "entropy", "z_loss", "head_diversity"]
    assert metrics["test_supervise"] < 0.5  # the head found the copied token (ln 16 ≈ 2.8 at random)
    assert metrics["test_aer"] == metrics["test_aer_layer1_head0"] < 0.05  # it reads that place
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_entropy"] == metrics["test_entropy"]
    from attnlab.train.tracking import list_runs

    run = list_runs(tracking_uri=f"sqlite:///{tmp_path}/m.db")[0]
    assert run["objectives"].startswith("supervise ")
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/m.db")
    found = client.search_runs([client.get_experiment_by_name("copy-objectives").experiment_id])[0]
    history = client.get_metric_history(found.info.run_id, "train_supervise")
    assert len(history) == 4  # one value per epoch
    assert {"val_entropy", "val_z_loss", "val_head_diversity"} <= set(found.data.metrics)


def test_supervise_needs_a_task_with_alignments(tmp_path) -> None:
    exp = load_experiment({"name": "x", "task": {"name": "listops", "train_examples": 8,
                                                 "val_examples": 8, "test_examples": 8},
                           "objectives": [{"kind": "supervise"}], "train": {"steps": 1}})
    with pytest.raises(ConfigError, match="listops has none; copy, selective_copy"):
        attnlab.train.train(exp, tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                            progress=False)


@pytest.mark.parametrize("program", [*PROGRAMS, "scaled_dot ; causal ; softmax ; kv_heads(2)",
                                     "cosine ; causal ; softmax", "scaled_dot ; causal ; topk(3)"])
def test_weights_of_some_heads_equal_those_heads_of_all(program) -> None:
    """A head computed alone (where the program treats heads alike) or picked out of all."""
    torch.manual_seed(1)
    m = attnlab.nn.Attention(32, program, heads=4)
    with attnlab.record(m) as rec:
        m(torch.randn(2, 9, 32))
    call = rec.calls(0)[0]
    for heads in ([0], [3], [1, 2], [0, 1, 2, 3]):
        assert torch.allclose(call.weights(heads=heads), call.weights()[:, heads], atol=1e-6)


def test_early_stopping_at_a_threshold_checked_every_few_steps(tmp_path) -> None:
    exp = load_experiment({
        "name": "stop-at", "task": {"name": "copy", "train_examples": 640, "val_examples": 32,
                                    "test_examples": 32},
        "model": {"d_model": 16, "layers": 1, "heads": 2}, "attention": "causal ; softmax",
        "objectives": [{"kind": "entropy", "weight": 0.01}],
        "train": {"steps": 100, "batch_size": 32, "validate_every": 5,
                  "early_stopping": {"monitor": "val_loss", "threshold": 100.0}}})
    assert exp.train.early_stopping.mode == "min"
    metrics = attnlab.train.train(exp, tmp_path / "run", progress=False,
                                  tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert metrics["steps"] == 5  # the first validation's loss (about ln 16) is below 100


def test_eval_measures_objectives_on_a_trained_run(tmp_path) -> None:
    from typer.testing import CliRunner

    import attnlab.cli.app

    exp = load_experiment({
        "name": "measured", "task": {"name": "copy", "train_examples": 64, "val_examples": 16,
                                     "test_examples": 16},
        "model": {"d_model": 16, "layers": 1, "heads": 2}, "attention": "causal ; softmax",
        "train": {"steps": 2, "batch_size": 32}})
    attnlab.train.train(exp, tmp_path / "run", progress=False,
                        tracking_uri=f"sqlite:///{tmp_path}/m.db")
    got = attnlab.train.run.evaluate(tmp_path / "run", measure=["entropy", "head_diversity"])
    model = attnlab.models.load_model(tmp_path / "run")
    test = make("copy", "test", num_examples=16, seed=0)
    w = reference(model, test.inputs, 0).double()
    rows = w.numel() / w.shape[-1]
    entropy = float(-(w * w.clamp_min(1e-300).log()).sum()) / rows
    assert got["test_entropy"] == pytest.approx(entropy, rel=1e-5)
    assert got["test_head_diversity"] == pytest.approx(float((w[:, 0] * w[:, 1]).sum()) / (rows / 2),
                                                       rel=1e-5)
    result = CliRunner().invoke(attnlab.cli.app.app, ["eval", str(tmp_path / "run"), "--measure",
                                                      "entrpy"])
    assert result.exit_code != 0
    assert "--measure: kind: 'entrpy' is no objective — did you mean 'entropy'?" in result.output


def test_compare_shows_the_objectives_every_run_has() -> None:
    from rich.console import Console

    from attnlab.train.compare import _table

    rows = [{"program": p, "test_accuracy": a, "objectives": ["supervise", "entropy"],
             "test_supervise": s, "test_entropy": e, "train_seconds": 1.0, "params": 10}
            for p, a, s, e in (("causal", 0.9, 0.12, 1.5), ("causal & window(4)", 0.8, 0.34, 1.1))]
    console = Console(width=200, record=True)
    console.print(_table(rows))
    text = console.export_text()
    assert "supervise" in text and "entropy" in text
    assert "0.1200" in text and "1.1000" in text


@pytest.mark.parametrize("stop_at", [4, 6])
def test_a_run_with_objectives_resumed_equals_the_straight_one(stop_at, tmp_path, monkeypatch) -> None:
    """Objectives draw nothing and hold no state: a run cut at step 4 or 6 and resumed from its
    checkpoint of step 2 or 4 (mid-epoch: 5 batches an epoch) ends with the straight run's
    weights and objective values."""
    from interrupting import train_until

    data = {"name": "resume-objectives",
            "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2},
                     "train_examples": 80, "val_examples": 16, "test_examples": 16},
            "model": {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.1},
            "attention": "causal ; softmax",
            "objectives": [{"kind": "supervise", "heads": [1]}, {"kind": "entropy", "weight": 0.1}],
            "train": {"steps": 10, "batch_size": 16, "lr": 0.003, "seed": 3, "validate_every": 2}}

    def run(out, resume=False, stop=None):
        return train_until(stop, monkeypatch if stop else None, lambda: attnlab.train.train(
            load_experiment(data), out, resume=resume, progress=False,
            tracking_uri=f"sqlite:///{tmp_path}/m.db"))

    straight = run(tmp_path / "straight")
    assert run(tmp_path / "cut", stop=stop_at) is None
    resumed = run(tmp_path / "cut", resume=True)
    for key in ("test_supervise", "test_entropy", "test_loss"):
        assert resumed[key] == straight[key]
    a = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_validating_less_often_than_the_run_is_long_is_refused(tmp_path) -> None:
    exp = load_experiment({"name": "x", "task": {"name": "copy", "train_examples": 64,
                                                 "val_examples": 8, "test_examples": 8},
                           "train": {"steps": 4, "batch_size": 16, "validate_every": 5}})
    with pytest.raises(ConfigError,
                       match=re.escape("train.validate_every: 5 steps is more than the run's 4")):
        attnlab.train.train(exp, tmp_path / "run", progress=False,
                            tracking_uri=f"sqlite:///{tmp_path}/m.db")


def test_heads_of_a_mixed_layer_are_picked_across_its_groups() -> None:
    """Head groups (MixedAttention) are one layer: heads number across groups, in group order."""
    torch.manual_seed(0)
    model = DecoderLM(DecoderLMConfig(vocab_size=20, d_model=24, layers=1, heads=3, max_len=16,
                                      programs=[[("causal ; softmax", 1),
                                                 ("causal & window(2) ; sparsemax", 2)]]))
    tokens = torch.randint(0, 20, (2, 9), generator=torch.Generator().manual_seed(1))
    got = values(model, tokens, {"kind": "entropy", "heads": [0, 2]},
                 {"kind": "head_diversity", "heads": [1, 2]})
    w = reference(model, tokens, 0).double()  # (B, 3, N, N), groups in order

    def entropy(x):
        return float(-(x * x.clamp_min(1e-300).log()).sum()) / (x.numel() / x.shape[-1])

    assert got["entropy"].item() == pytest.approx(entropy(w[:, [0, 2]]), rel=1e-5)
    overlap = float((w[:, 1] * w[:, 2]).sum()) / (w.shape[0] * w.shape[2])
    assert got["head_diversity"].item() == pytest.approx(overlap, rel=1e-5, abs=1e-7)


def test_supervise_on_cross_attention_with_fewer_queries_than_keys() -> None:
    """N ≠ M: target rows of a seq2seq's cross-attention against a padded source."""
    from attnlab.models import Seq2Seq
    from attnlab.models.seq2seq import Seq2SeqConfig

    torch.manual_seed(2)
    model = Seq2Seq(Seq2SeqConfig(src_vocab=30, tgt_vocab=30, d_model=32, layers=2, heads=2))
    src = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 0, 0, 0, 0]])  # 7 keys, one row padded
    tgt = torch.tensor([[1, 12, 13, 14, 15], [1, 12, 13, 0, 0]])  # 5 queries
    pairs = torch.tensor([[[0, 6], [2, 1], [2, 3]], [[1, 2], [-1, -1], [-1, -1]]])
    objectives = Objectives([parse_objective({"kind": "supervise", "layers": [-2], "heads": [1]})],
                            model, task_of(TaskConfig(name="greek-english")))
    assert objectives.layers == [["decoder.0.cross_attention"]]
    with objectives.recording(model) as rec:
        model(src, tgt)
    got = objectives.values(rec, pairs)["supervise"]
    with attnlab.record(model) as plain:
        model(src, tgt)
    w = plain.weights("decoder.0.cross_attention")[:, 1].double()
    assert w.shape == (2, 5, 7) and float(w[1, :, 3:].abs().max()) == 0.0  # padding unseen
    expected = (-math.log(w[0, 0, 6]) - 0.5 * (math.log(w[0, 2, 1]) + math.log(w[0, 2, 3]))
                - math.log(w[1, 1, 2])) / 3
    assert got.item() == pytest.approx(expected, rel=1e-5)
