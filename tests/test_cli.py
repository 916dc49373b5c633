"""The `attnlab` command line (explain, show, zoo, showcase, how it reports bad programs) and the
library it prints: attnlab.inspect.explain and attnlab.inspect.showcase."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import attnlab
from attnlab.cli.app import app
from attnlab.inspect.explain import explain_program, part_doc
from attnlab.inspect.showcase import Showcase, draw_program, head_group_panels

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BAD_PROGRAMS = ["scaled_dot ; causl", "window(0)", "heads(8) + kv_heads(3)"]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def brute_density(visible_fn, n: int) -> float:
    """Visible share of an n×n mask written out directly, independent of Mask.density."""
    q, k = torch.arange(n).view(-1, 1), torch.arange(n).view(1, -1)
    return visible_fn(q, k).float().mean().item()


# -- program explain --------------------------------------------------------------------------------


@pytest.mark.parametrize(("program", "seq", "expected"), [
    ("zoo:causal", 1024, (1024 + 1) / (2 * 1024)),
    ("zoo:longformer", 1024,
     brute_density(lambda q, k: ((q - k).abs() <= 256) | (q < 4) | (k < 4), 1024)),
    ("zoo:sliding-window", 2048,
     brute_density(lambda q, k: (k <= q) & (q - k <= 256), 2048)),
])
def test_explain_prints_canonical_string_and_density(program, seq, expected):
    result = invoke("program", "explain", program, "--seq", str(seq))
    assert result.exit_code == 0, result.output
    assert str(attnlab.parse(program)) in result.output
    assert f"density (seq {seq})" in result.output
    assert f"{expected:.4f}" in result.output


def test_explain_reports_layout_parameters_and_call_time_inputs():
    result = invoke("program", "explain", "general ; document & causal ; softmax ; heads(8) + "
                    "kv_heads(2)", "--head-dim", "16")
    assert result.exit_code == 0, result.output
    assert "GQA, groups of 4" in result.output
    assert "score.w (8, 16, 16)" in result.output  # the learnable W of `general`
    assert "depends on call-time inputs: segments=" in result.output
    assert "and (&)" in result.output


def test_explain_without_mask_and_block_counts():
    vanilla = invoke("program", "explain", "zoo:vanilla")
    assert "1.0000 (no mask)" in vanilla.output
    # causal at seq 256 in 128-blocks: one of the four blocks lies wholly above the diagonal
    causal = invoke("program", "explain", "causal", "--seq", "256", "--block", "128")
    assert "1 empty of 4 → 25.0% skippable (1 full, 2 partial)" in causal.output


# -- program show -----------------------------------------------------------------------------------


def test_show_writes_mask_png(tmp_path):
    out = tmp_path / "mask.png"
    result = invoke("program", "show", "causal & window(8)", "--seq", "32", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert is_png(out)
    assert not (tmp_path / "mask-weights.png").exists()


def test_show_weights_with_gqa_and_call_time_inputs(tmp_path):
    out = tmp_path / "doc.png"
    result = invoke("program", "show", "document & padding ; entmax(1.5) ; heads(4) + kv_heads(2)",
                    "--seq", "24", "--out", str(out), "--weights")
    assert result.exit_code == 0, result.output
    assert is_png(out) and is_png(tmp_path / "doc-weights.png")
    assert "segments: two documents" in result.output
    assert "key_lengths: 18 real keys of 24" in result.output


def test_explain_program_gives_the_facts_as_data():
    ex = explain_program("alibi ; causal ; entmax(1.5) ; kv_heads(2)", seq=256, block=128)
    assert (ex.heads, ex.kv_heads, ex.head_dim) == (8, 2, 64)  # kv_heads from the program, rest defaults
    assert ex.head_sharing == "GQA, groups of 4"
    assert (ex.blocks.full, ex.blocks.partial, ex.blocks.empty) == (1, 2, 1)
    assert ex.density == pytest.approx(257 / 512)
    assert ex.parameters == {} and ex.needs == frozenset() and not ex.training
    assert "backend   tiled" in ex.plan
    doc = explain_program("document ; heads(2) + head_dim(4)", seq=8)
    assert doc.density is None and doc.blocks is None and doc.mask_needs == {"segments"}
    assert part_doc(attnlab.parse("causal").mask) == "Key position ≤ query position"


def test_draw_program_makes_up_call_time_inputs(tmp_path):
    drawing = draw_program("padding ; heads(12)", tmp_path / "m.png", seq=16, weights=True)
    assert drawing.files == [tmp_path / "m.png", tmp_path / "m-weights.png"]
    assert all(map(is_png, drawing.files))
    assert drawing.notes == ["key_lengths: 12 real keys of 16 (the rest is padding)"]
    assert (drawing.groups_drawn, drawing.kv_heads) == (8, 12)


def test_head_group_panels_average_the_heads_sharing_a_kv_head():
    weights = torch.arange(4.0).view(4, 1, 1).expand(4, 2, 3)  # head h has every weight = h
    panels, titles = head_group_panels(weights, kv_heads=2)
    assert titles == ["heads 0–1", "heads 2–3"]
    assert torch.equal(panels[:, 0, 0], torch.tensor([0.5, 2.5]))
    many, names = head_group_panels(torch.rand(12, 2, 2), kv_heads=12)
    assert many.shape[0] == 8 and names[0] == "head 0"


# -- zoo -----------------------------------------------------------------------------------------


def test_zoo_lists_every_entry():
    result = invoke("zoo")
    assert result.exit_code == 0
    for name in attnlab.zoo:
        assert name in result.output


def test_zoo_entry_shows_canonical_string():
    result = invoke("zoo", "linear")
    assert result.exit_code == 0
    assert str(attnlab.zoo["linear"]) in result.output
    assert attnlab.zoo.description("linear")[:30] in result.output


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", BAD_PROGRAMS)
def test_bad_program_exits_2_with_message(program):
    result = invoke("program", "explain", program)
    assert result.exit_code == 2
    assert result.output.startswith("error: ")
    assert program in result.output  # the caret display shows the text
    assert "^" in result.output
    assert "Traceback" not in result.output
    if "causl" in program:
        assert "did you mean 'causal'" in result.output


def test_layout_option_conflicting_with_program_is_an_error():
    result = invoke("program", "explain", "causal ; softmax ; heads(8)", "--heads", "4")
    assert result.exit_code == 2
    assert "heads=4 disagrees with the program, which says heads(8)" in result.output
    result = invoke("program", "explain", "causal", "--kv-heads", "3")
    assert result.exit_code == 2
    assert "kv_heads=3 must divide heads=8" in result.output


def test_installed_script_reports_errors_without_traceback_and_debug_shows_one():
    script = Path(sys.executable).with_name("attnlab")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "attnlab.cli.app"]
    plain = subprocess.run([*command, "program", "explain", BAD_PROGRAMS[0]], capture_output=True,
                           text=True)
    assert plain.returncode == 2
    assert "error: unknown name 'causl' — did you mean 'causal'?" in plain.stderr
    assert "Traceback" not in plain.stderr + plain.stdout
    debug = subprocess.run([*command, "--debug", "program", "explain", BAD_PROGRAMS[0]],
                           capture_output=True, text=True)
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "ProgramError" in debug.stderr


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert attnlab.__version__ in result.output


# -- showcase ------------------------------------------------------------------------------------


def test_showcase_writes_its_pictures(tmp_path):
    result = invoke("showcase", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    names = ["masks.png"] + [f"{stem}-{kind}.png"
                             for stem in ("longformer", "bigbird", "entmax-local")
                             for kind in ("mask", "weights")]
    for name in names:
        assert is_png(tmp_path / name), name
    assert "entmax-local" in result.output
    assert "fwd+bwd" in result.output


def test_showcase_runs_as_a_library(tmp_path):
    heard = []
    showcase = Showcase(names=("vanilla", "sliding-window"), seq=64, weights_seq=16, block=16)
    runs = showcase.run(on_run=heard.append)
    assert heard == runs and [run.name for run in runs] == ["vanilla", "sliding-window"]
    assert runs[0].density == 1.0 and runs[0].skippable == 0.0 and runs[0].zero_fraction == 0.0
    assert runs[1].density < 1 and runs[1].out_shape == (1, 4, 64, 32) and runs[1].max_error < 1e-5
    files = showcase.draw(tmp_path)
    assert [f.name for f in files] == ["masks.png", "vanilla-mask.png", "vanilla-weights.png",
                                       "sliding-window-mask.png", "sliding-window-weights.png"]
    with pytest.raises(attnlab.ConfigError, match="seq must be ≥ 1"):
        Showcase(seq=0)


def test_explain_shows_the_plan_for_training():
    result = invoke("program", "explain", "alibi ; causal & window(64) ; entmax(1.5)", "--seq", "2048",
                    "--train")
    assert result.exit_code == 0, result.output
    assert "plan (training)" in result.output
    assert "backend   tiled" in result.output
    assert "FlexAttention computes softmax only" in result.output
