"""How far to trust a map: ERASER comprehensiveness and sufficiency (attnlab.inspect.faithfulness),
the tasks' erasing, and `attnlab inspect faithfulness` on tiny trained runs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import attnlab.cli.app
import attnlab.train
from attnlab import tasks
from attnlab.errors import InputError
from attnlab.inspect.faithfulness import (
    Erasures,
    bootstrap_ci,
    erase_batch,
    erase_by,
    erasures,
    faithfulness,
    importances,
    summary,
    top_units,
    unit_counts,
    verdict,
)
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.models.vit import ViT, ViTConfig
from attnlab.tasks.base import pooled_rows
from attnlab.train.config import load_experiment

TEXT, IMAGE = tasks.kind("text-classification"), tasks.kind("image-classification")
SPAM = {"name": "tiny-spam",
        "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 16},
                 "train_examples": 128, "val_examples": 32, "test_examples": 24},
        "model": {"d_model": 16, "layers": 2, "heads": 2},
        "train": {"steps": 4, "batch_size": 32}}
LM = {"name": "tiny-lm", "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 16,
                                                           "num_kv_pairs": 2},
                                "train_examples": 32, "val_examples": 16, "test_examples": 16},
      "model": {"d_model": 16, "layers": 1, "heads": 2}, "attention": "causal ; softmax",
      "train": {"steps": 1, "batch_size": 16}}
DIGITS = {"name": "tiny-digits", "task": {"name": "digits", "train_examples": 256,
                                          "val_examples": 32, "test_examples": 16},
          "model": {"d_model": 16, "layers": 2, "heads": 2, "patch_size": 4},
          "train": {"steps": 4, "batch_size": 64}}


def text_model(pooling: str = "mean") -> EncoderClassifier:
    torch.manual_seed(0)
    return EncoderClassifier(EncoderClassifierConfig(vocab_size=12, num_classes=3, d_model=16,
                                                     layers=2, heads=2, pooling=pooling,
                                                     max_len=6, pad_id=0)).eval()


# [CLS]=2 first, padding 0 after: 3 and 5 units
TOKENS = torch.tensor([[2, 5, 6, 7, 0, 0], [2, 8, 9, 10, 11, 3]])


def p(model, rows: list[list[int]], classes: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor(rows)).softmax(-1).gather(1, classes[:, None]).squeeze(1)


def test_erasing_a_made_up_importance_by_hand_on_a_tiny_model() -> None:
    """Scores (B, S) over the sequence; k=20% is ⌈0.6⌉ = 1 unit of 3 and ⌈1.0⌉ = 1 of 5, k=50%
    is ⌈1.5⌉ = 2 and ⌈2.5⌉ = 3 units. Comprehensiveness drops them (the rest packed, padded at the end),
    sufficiency keeps only them and [CLS]."""
    model = text_model()
    scores = torch.tensor([[9.0, 0.1, 0.7, 0.3, 5.0, 5.0],  # [CLS] and padding score high: ignored
                           [0.0, 0.2, 0.9, 0.4, 0.8, 0.1]])
    comp, suff = erase_by(model, TEXT, TOKENS, [scores], ks=(20, 50))
    with torch.no_grad():
        yhat = model(TOKENS).argmax(-1)
    full = p(model, TOKENS.tolist(), yhat)
    # 20%: token 6 (score 0.7) and token 9 (0.9); 50%: 6, 7 and 9, 11, 10
    without = p(model, [[2, 5, 7, 0, 0, 0], [2, 8, 10, 11, 3, 0]], yhat)
    only = p(model, [[2, 6, 0, 0, 0, 0], [2, 9, 0, 0, 0, 0]], yhat)
    without2 = p(model, [[2, 5, 0, 0, 0, 0], [2, 8, 3, 0, 0, 0]], yhat)
    only2 = p(model, [[2, 6, 7, 0, 0, 0], [2, 9, 10, 11, 0, 0]], yhat)
    torch.testing.assert_close(comp[0], torch.stack([full - without, full - without2], dim=1))
    torch.testing.assert_close(suff[0], torch.stack([full - only, full - only2], dim=1))


def test_units_exclude_cls_and_padding_and_readout_follows_pooling() -> None:
    mean, cls = text_model("mean"), text_model("cls")
    assert TEXT.units(mean, TOKENS).tolist() == [[False, True, True, True, False, False],
                                                 [False, True, True, True, True, True]]
    # a learned [CLS] is prepended: one more position, never a unit
    assert TEXT.units(cls, TOKENS).tolist() == [[False, False, True, True, True, False, False],
                                                [False, False, True, True, True, True, True]]
    torch.testing.assert_close(TEXT.readout(mean, TOKENS)[0], torch.tensor([1 / 4] * 4 + [0.0] * 2))
    torch.testing.assert_close(TEXT.readout(mean, TOKENS)[1], torch.full((6,), 1 / 6))
    assert TEXT.readout(cls, TOKENS).tolist() == [[1.0] + [0.0] * 6] * 2
    # a decoder's head reads its last real token (SmolLM2 runs)
    last = pooled_rows(SimpleNamespace(pooling="last"), TOKENS != 0)
    assert last.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0, 0.0], [0.0] * 5 + [1.0]]
    # erasing never drops [CLS]; everything erased leaves [CLS] then padding
    assert TEXT.erase(mean, TOKENS, torch.zeros(2, 6, dtype=torch.bool)).tolist() == [
        [2, 0, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0]]
    assert TEXT.erase(cls, TOKENS, torch.ones(2, 7, dtype=torch.bool)).tolist() == TOKENS.tolist()


def test_trailing_padding_is_trimmed_without_changing_anything() -> None:
    model = text_model()
    short = torch.tensor([[2, 5, 0, 0, 0, 0], [2, 6, 7, 0, 0, 0]])
    assert TEXT.trim(model, short).tolist() == [[2, 5, 0], [2, 6, 7]]
    assert TEXT.trim(model, TOKENS).tolist() == TOKENS.tolist()
    with torch.no_grad():
        torch.testing.assert_close(model(TEXT.trim(model, short)), model(short))
    # batches of examples of similar length, trimmed, give each example what it gets alone
    texts = torch.tensor([[2, 8, 9, 10, 11, 3], [2, 5, 0, 0, 0, 0], [2, 0, 0, 0, 0, 0],
                          [2, 6, 7, 4, 0, 0]])
    alone, together = (erasures(model, TEXT, texts, draws=1, batch=b) for b in (1, 4))
    assert alone.skipped == together.skipped == 1  # [CLS] alone: nothing to erase
    for name in ("attention", "rollout", "grad_attention"):
        torch.testing.assert_close(together.comprehensiveness[name], alone.comprehensiveness[name])
        torch.testing.assert_close(together.sufficiency[name], alone.sufficiency[name])
    torch.testing.assert_close(together.comprehensiveness["rollout"][0],
                               erase_batch(model, TEXT, texts[:1], draws=1)["rollout"][0][0])


def test_image_units_are_patches_and_erased_patches_become_the_training_mean() -> None:
    vit = ViT(ViTConfig(image_size=4, patch_size=2, channels=1, num_classes=2, d_model=8, layers=1,
                        heads=2, pooling="cls"))
    images = torch.arange(1.0, 33.0).view(2, 1, 4, 4)
    assert IMAGE.units(vit, images).tolist() == [[False] + [True] * 4] * 2
    keep = torch.tensor([[True, True, False, True, False], [True, False, True, True, True]])
    erased = IMAGE.erase(vit, images, keep)
    expected = images.clone()
    expected[0, 0, :2, 2:] = 0  # patch 1: top right
    expected[0, 0, 2:, 2:] = 0  # patch 3: bottom right
    expected[1, 0, :2, :2] = 0  # patch 0: top left
    assert torch.equal(erased, expected)
    mean_pooled = ViT(ViTConfig(image_size=4, patch_size=2, channels=1, d_model=8, layers=1,
                                heads=2, pooling="mean"))
    assert IMAGE.readout(mean_pooled, images).tolist() == [[0.25] * 4] * 2


def test_k_rounds_up_to_at_least_one_unit_and_top_units_skip_non_units() -> None:
    n = torch.tensor([1, 3, 20, 64, 100, 101])
    units = torch.arange(101)[None, :] < n[:, None]
    assert unit_counts(units, 1).tolist() == [1, 1, 1, 1, 1, 2]
    assert unit_counts(units, 5).tolist() == [1, 1, 1, 4, 5, 6]
    assert unit_counts(units, 10).tolist() == [1, 1, 2, 7, 10, 11]
    assert unit_counts(units, 20).tolist() == [1, 1, 4, 13, 20, 21]
    scores = torch.tensor([[5.0, 1.0, 3.0, 3.0, 2.0]])
    unit = torch.tensor([[False, True, True, True, True]])
    # position 0 scores highest but is no unit; the tie of 2 and 3 goes to the earlier
    assert top_units(scores, unit, torch.tensor([1])).tolist() == [[False, False, True, False, False]]
    assert top_units(scores, unit, torch.tensor([3])).tolist() == [[False, False, True, True, True]]


def test_the_verdict_reads_the_paired_interval_in_the_right_direction() -> None:
    assert verdict(0.01, 0.2) == "better than random"
    assert verdict(-0.01, 0.2) == "no better than random"
    assert verdict(-0.3, -0.1) == "no better than random (worse)"
    assert verdict(-0.3, -0.1, lower_is_better=True) == "better than random"
    assert verdict(0.1, 0.3, lower_is_better=True) == "no better than random (worse)"
    # the bootstrap interval of a mean is about mean ± 1.96 · sd / √n
    diffs = torch.randn(400, generator=torch.Generator().manual_seed(1)) + 0.5
    low, high = bootstrap_ci(diffs, seed=3)
    half = 1.96 * float(diffs.std()) / 400 ** 0.5
    assert low == pytest.approx(float(diffs.mean()) - half, abs=0.25 * half)
    assert high == pytest.approx(float(diffs.mean()) + half, abs=0.25 * half)
    assert bootstrap_ci(diffs, seed=3) == (low, high) and bootstrap_ci(torch.full((9,), 0.2)) == (
        pytest.approx(0.2), pytest.approx(0.2))


def test_the_summary_compares_each_importance_with_random_example_by_example() -> None:
    gen = torch.Generator().manual_seed(0)
    rand_c, rand_s = torch.rand(50, 2, generator=gen), torch.rand(50, 2, generator=gen)
    noise = torch.randn(50, 2, generator=gen)
    found = Erasures((5, 10),
                     {"attention": rand_c + noise, "rollout": rand_c + 0.1, "grad_attention": rand_c,
                      "random": rand_c},
                     {"attention": rand_s, "rollout": rand_s - 0.1, "grad_attention": rand_s + 0.2,
                      "random": rand_s})
    table = summary(found)["importances"]
    assert table["random"]["comprehensiveness"]["aopc"] == pytest.approx(float(rand_c.mean()))
    assert table["rollout"]["comprehensiveness"]["10"] == pytest.approx(float(rand_c[:, 1].mean() + 0.1))
    rollout = table["rollout"]["comprehensiveness_vs_random"]["aopc"]
    assert rollout["difference"] == pytest.approx(0.1) and rollout["verdict"] == "better than random"
    assert table["rollout"]["sufficiency_vs_random"]["5"]["verdict"] == "better than random"
    assert table["grad_attention"]["sufficiency_vs_random"]["aopc"]["verdict"] == (
        "no better than random (worse)")
    noisy = table["attention"]["comprehensiveness_vs_random"]["aopc"]
    low, high = noisy["ci95"]
    assert noisy["difference"] == pytest.approx(float(noise.mean()))
    assert (low < 0 < high) == (noisy["verdict"] == "no better than random")
    assert table["rollout"]["verdict"].startswith("rollout is better than random by comprehensiveness")
    assert table["grad_attention"]["verdict"].startswith(
        "gradient × attention is no better than random by comprehensiveness (AOPC +0.000")
    assert "and no better than random (worse) by sufficiency" in table["grad_attention"]["verdict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny text run, a tiny ViT on digits and a tiny language model, trained once for the
    module (seconds)."""
    tmp = tmp_path_factory.mktemp("faith")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ATTNLAB_CACHE", str(tmp / "cache"))
        for name, exp in (("text", SPAM), ("image", DIGITS), ("lm", LM)):
            attnlab.train.train(load_experiment(exp), tmp / name, progress=False,
                                tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    return tmp


def cli(*args: str):
    """`attnlab inspect faithfulness ARGS`, as a person types it."""
    return CliRunner().invoke(attnlab.cli.app.app, ["inspect", "faithfulness", *args],
                              env={"COLUMNS": "200"})


def test_the_command_prints_the_table_and_verdicts_and_writes_json(runs, tmp_path) -> None:
    out = tmp_path / "faith.json"
    result = cli(str(runs / "text"), "--examples", "10", "--out", str(out))
    assert result.exit_code == 0, result.output
    found = json.loads(out.read_text())
    assert found["examples"] + found["skipped"] == 10 and found["ks"] == [1, 5, 10, 20]
    for name, entry in found["importances"].items():
        row = [entry[m][c] for m in ("comprehensiveness", "sufficiency")
               for c in ("1", "5", "10", "20", "aopc")]
        assert f"{entry['label']} " in result.output and f"{row[4]:.3f}" in result.output
        # AOPC is the mean over k, computed in float32: near zero its relative error is large
        assert row[4] == pytest.approx(sum(row[:4]) / 4, rel=1e-5, abs=1e-7)
        assert row[9] == pytest.approx(sum(row[5:9]) / 4, rel=1e-5, abs=1e-7)
        if name != "random":
            assert f"• {entry['verdict']}" in result.output.replace("\n", " ")
    assert "removed" in found["erasing"] and "comp aopc" in result.output


def test_an_image_run_is_erased_by_patches(runs) -> None:
    found = faithfulness(runs / "image", examples=8, draws=3, seed=1)
    assert found["task"] == "image-classification" and found["examples"] == 8
    assert "training split's mean" in found["erasing"]
    for entry in found["importances"].values():
        for measure in ("comprehensiveness", "sufficiency"):
            assert all(-1 <= v <= 1 for v in entry[measure].values())
    assert faithfulness(runs / "image", examples=8, draws=3, seed=1)["importances"] == found[
        "importances"]  # seeded


def test_runs_that_are_not_classifiers_are_refused_in_one_line(runs) -> None:
    with pytest.raises(InputError, match=r"^faithfulness needs a classification run .*"
                                          r"language-modelling, has none$"):
        faithfulness(runs / "lm")
    result = cli(str(runs / "lm"))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: faithfulness needs a classification run")
    for kind in ("translation", "recommendation", "sequence-classification"):
        with pytest.raises(InputError, match="faithfulness needs a classification run"):
            tasks.kind(kind).units(None, torch.zeros(1, 3))


def test_importances_leave_the_models_gradients_as_they_were() -> None:
    model = text_model()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    importances(model, tasks.kind("text-classification"), TOKENS)
    assert all((p.grad == 7).all() for p in model.parameters())
