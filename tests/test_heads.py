"""Switching heads off (masked), head importance, ablation and the pruning curve, each against a
loop written by hand or a finite difference."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from attnlab import tasks
from attnlab.cli.app import app
from attnlab.data import TaskData
from attnlab.errors import InputError
from attnlab.ids import IGNORE_INDEX
from attnlab.inspect.heads import (
    HeadReport,
    ablation,
    heads_of,
    heads_report,
    importance,
    least_important_first,
    masked,
    pruning_curve,
)
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.models.vit import ViT, ViTConfig
from attnlab.nn import Attention, MixedAttention
from attnlab.nn.recorder import recordable
from attnlab.tasks.base import Task
from attnlab.train import load_experiment, train


def test_a_masked_head_contributes_nothing_and_the_mask_goes_away() -> None:
    torch.manual_seed(0)
    m = Attention(16, "causal ; softmax", heads=4).eval()
    x = torch.randn(2, 5, 16)
    seen = []  # what to_out reads: the heads' outputs side by side, (B, N, heads·head_dim)
    m.to_out.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad():
        plain = m(x)
        with masked(m, {0: [1, 3]}):
            off = m(x)
    heads_plain, heads_off = (t.unflatten(-1, (4, 4)) for t in seen)
    assert (heads_off[:, :, [1, 3]] == 0).all()
    torch.testing.assert_close(heads_off[:, :, [0, 2]], heads_plain[:, :, [0, 2]])
    torch.testing.assert_close(off, m.to_out(heads_off.flatten(2)))
    assert m.head_mask is None
    torch.testing.assert_close(m(x), plain)


def test_masks_reach_layers_by_name_and_index_in_models_and_groups() -> None:
    torch.manual_seed(0)
    model = DecoderLM(DecoderLMConfig(vocab_size=20, d_model=16, layers=2, heads=2)).eval()
    tokens = torch.randint(0, 20, (2, 6))
    with torch.no_grad():
        plain = model(tokens)
        with masked(model, {0: [0], "blocks.1.attention": []}):
            assert not torch.allclose(model(tokens), plain)
    mixed = MixedAttention(24, [("causal ; softmax", 1), ("causal ; sparsemax", 2)])
    with masked(mixed, {0: [0, 1, 2]}), torch.no_grad():
        torch.testing.assert_close(mixed(torch.randn(1, 3, 24)),
                                   mixed.to_out.bias.expand(1, 3, 24))


def test_mistakes_name_what_exists() -> None:
    m = Attention(16, "causal", heads=2)
    with pytest.raises(InputError, match=r"heads 0\.\.1"), masked(m, {0: [2]}):
        pass
    with pytest.raises(InputError, match="out of range"), masked(m, {4: [0]}):
        pass
    with pytest.raises(InputError, match="no attention layer 'x'"), masked(m, {"x": [0]}):
        pass


# -- importance, ablation, the pruning curve ---------------------------------------------------

def classifier(seed: int = 0) -> tuple[nn.Module, Task, TaskData]:
    """A tiny untrained encoder classifier, its task and six examples."""
    torch.manual_seed(seed)
    model = EncoderClassifier(EncoderClassifierConfig(vocab_size=12, num_classes=3, d_model=16,
                                                      layers=2, heads=2, max_len=8)).eval()
    g = torch.Generator().manual_seed(seed)
    data = TaskData(torch.randint(1, 12, (6, 8), generator=g), torch.randint(0, 3, (6,), generator=g),
                    vocab_size=12, num_classes=3)
    return model, tasks.kind("sequence-classification"), data


def language_model() -> tuple[nn.Module, Task, TaskData]:
    """A tiny decoder LM scored at a varying number of positions per example."""
    torch.manual_seed(1)
    model = DecoderLM(DecoderLMConfig(vocab_size=10, d_model=16, layers=2, heads=2, max_len=8)).eval()
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 10, (6, 8), generator=g)
    labels[torch.rand(6, 8, generator=g) < 0.5] = IGNORE_INDEX
    labels[:, -1] = 3  # every example scores at least one position
    return model, tasks.kind("language-modelling"), TaskData(torch.randint(0, 10, (6, 8), generator=g),
                                                             labels, vocab_size=10)


def vit() -> tuple[nn.Module, Task, TaskData]:
    torch.manual_seed(2)
    model = ViT(ViTConfig(image_size=8, patch_size=4, channels=1, num_classes=3, d_model=16,
                          layers=2, heads=2)).eval()
    g = torch.Generator().manual_seed(2)
    return model, tasks.kind("image-classification"), TaskData(
        torch.randn(6, 1, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g), num_classes=3)


def batches(task: Task, data: TaskData, size: int):
    return task.loader(data, size, False, torch.Generator())


@pytest.mark.parametrize("make", [classifier, language_model, vit])
def test_importance_does_not_depend_on_the_batch_size(make) -> None:
    """I_h = (1/n) Σ_x |∂L(x)/∂ξ_h|, L(x) the summed loss of example x: the same in batches of 1
    and of 4, though the task's loss is a mean over each batch's scored labels."""
    model, task, data = make()
    one, four = (importance(model, task, batches(task, data, size), normalize=False)
                 for size in (1, 4))
    assert list(one) == list(four) == list(recordable(model).values())
    for layer in one:
        torch.testing.assert_close(one[layer], four[layer], rtol=1e-4, atol=1e-7)
        assert (one[layer] > 0).all()
    normalized = importance(model, task, batches(task, data, 4))
    for layer, raw in four.items():
        torch.testing.assert_close(normalized[layer], raw / raw.norm())


def test_importance_is_the_mean_absolute_finite_difference_of_each_example_loss() -> None:
    """|∂L(x)/∂ξ_h| ≈ |L(x; ξ_h = 1 + ε) - L(x; ξ_h = 1 - ε)| / 2ε, per example, in float64."""
    model, task, data = classifier()
    model.double()
    got = importance(model, task, batches(task, data, 4), normalize=False)
    eps = 1e-6
    for module, layer in recordable(model).items():
        for h in range(module.heads):
            diffs = []
            for x in range(len(data)):
                losses = []
                for sign in (1, -1):
                    module.head_mask = torch.ones(module.heads, dtype=torch.float64)
                    module.head_mask[h] += sign * eps
                    with torch.no_grad():
                        logits = model(data.inputs[x:x + 1])
                    losses.append(F.cross_entropy(logits, data.labels[x:x + 1]).item())
                module.head_mask = None
                diffs.append(abs(losses[0] - losses[1]) / (2 * eps))
            assert got[layer][h].item() == pytest.approx(sum(diffs) / len(diffs), rel=1e-5)


def test_importance_leaves_the_model_gradients_alone() -> None:
    model, task, data = classifier()
    importance(model, task, batches(task, data, 3))
    assert all(p.grad is None for p in model.parameters())


def accuracy(model: nn.Module, data: TaskData) -> float:
    with torch.no_grad():
        return (model(data.inputs).argmax(-1) == data.labels).double().mean().item()


def test_ablation_masks_one_head_at_a_time() -> None:
    model, _, data = classifier()
    heads = heads_of(model)
    assert heads == [("blocks.0.attention", 0), ("blocks.0.attention", 1),
                     ("blocks.1.attention", 0), ("blocks.1.attention", 1)]
    calls = []

    def score() -> float:  # what the model gives with whatever is masked now
        with torch.no_grad():
            calls.append(model(data.inputs))
        return calls[-1].sum().item()

    got = ablation(model, score, heads)
    for (layer, head), value, seen in zip(heads, got, calls, strict=True):
        with masked(model, {layer: [head]}), torch.no_grad():
            assert value == model(data.inputs).sum().item()
        assert not torch.equal(seen, model(data.inputs))  # something was masked


def test_the_pruning_curve_masks_heads_in_order_until_none_is_left() -> None:
    model, _, data = classifier()
    scores = {"blocks.0.attention": torch.tensor([0.3, 0.1]),
              "blocks.1.attention": torch.tensor([0.2, 0.3])}
    order = least_important_first(scores)
    assert order == [("blocks.0.attention", 1), ("blocks.1.attention", 0),
                     ("blocks.0.attention", 0), ("blocks.1.attention", 1)]  # a tie: model order

    def score() -> float:
        with torch.no_grad():
            return model(data.inputs).sum().item()

    curve = pruning_curve(model, score, order)
    assert len(curve) == len(order) + 1
    for k, value in enumerate(curve):  # k heads removed: the first k of the order
        off = {}
        for layer, head in order[:k]:
            off.setdefault(layer, []).append(head)
        with masked(model, off):
            assert value == score()
    with torch.no_grad():  # every head off: only the rest of the model speaks
        nothing = model(data.inputs)
        with masked(model, {"blocks.0.attention": [0, 1], "blocks.1.attention": [0, 1]}):
            assert curve[-1] == model(data.inputs).sum().item() != nothing.sum().item()


def test_removable_counts_heads_until_the_loss_first_passes_the_tolerance() -> None:
    def report(curve):
        return HeadReport("test_accuracy", "test", 10, curve[0], [], [], curve)

    assert report([0.80, 0.80, 0.795, 0.78, 0.80]).removable(0.01) == 2
    assert report([0.80, 0.81, 0.795]).removable(0.01) == 2
    assert report([0.80, 0.70, 0.80]).removable(0.01) == 0


# -- attnlab heads RUN ---------------------------------------------------------------------------

LISTOPS = {"name": "tiny-listops",
           "task": {"name": "listops", "params": {"max_depth": 3, "max_args": 3, "min_length": 5,
                                                  "max_length": 24},
                    "train_examples": 192, "val_examples": 32, "test_examples": 48},
           "model": {"d_model": 16, "layers": 2, "heads": 2},
           "train": {"epochs": 1, "batch_size": 16, "lr": 0.003}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("heads")
    train(load_experiment(LISTOPS), tmp / "run", progress=False,
          tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    return tmp / "run"


def test_heads_prints_the_table_and_writes_the_curve(run, tmp_path) -> None:
    result = CliRunner().invoke(app, ["heads", str(run), "--out", str(tmp_path / "h"),
                                      "--examples", "40"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "h" / "heads.json").read_text())
    assert saved["metric"] == "test_accuracy" and saved["examples"] == 40
    assert saved["score"] == pytest.approx(evaluate_first(run, 40))
    assert [(h["layer"], h["head"]) for h in saved["heads"]] == [
        (f"blocks.{layer}.attention", h) for layer in (0, 1) for h in (0, 1)]
    for h in saved["heads"]:
        assert h["drop"] == pytest.approx(saved["score"] - h["without"])
    assert [p["removed"] for p in saved["curve"]] == list(range(5))
    assert saved["curve"][0]["score"] == saved["score"]
    k = saved["removable"]
    assert all(p["score"] >= saved["score"] - 0.01 for p in saved["curve"][:k + 1])
    assert k == 4 or saved["curve"][k + 1]["score"] < saved["score"] - 0.01
    assert f"{k} of 4 heads can be removed at ≤ 1 point loss" in result.output
    assert "blocks.1.attention" in result.output and "importance" in result.output
    assert (tmp_path / "h" / "pruning.png").read_bytes()[:4] == b"\x89PNG"


def evaluate_first(run: Path, n: int) -> float:
    """Accuracy of the run's model on the first n saved test examples, counted here."""
    from attnlab.models.base import load_model

    saved = torch.load(run / "test.pt")
    model = load_model(run).eval()
    with torch.no_grad():
        logits = model(saved["inputs"][:n])
    return (logits.argmax(-1) == saved["labels"][:n]).double().mean().item()


def test_heads_mistakes_are_one_line(run, tmp_path) -> None:
    for args, message in ((["heads", str(tmp_path)], "holds no trained run"),
                          (["heads", str(run), "--split", "train", "--out", str(tmp_path / "o")],
                           "test or the validation split")):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and message in result.output
        assert "Traceback" not in result.output


def test_heads_reads_the_validation_split_again_from_the_data(run) -> None:
    """The run saves only its test split; validation is made again from the experiment."""
    report = heads_report(run, split="validation", examples=20)
    assert (report.split, report.examples) == ("validation", 20)
    validation = tasks.kind("sequence-classification").prepare(
        load_experiment(LISTOPS)).validation.head(20)
    from attnlab.models.base import load_model

    model = load_model(run).eval()
    assert report.score == pytest.approx(accuracy(model, validation))
