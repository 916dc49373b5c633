"""The language: three spellings that round-trip, validation that teaches, the catalogue."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings

import attnlab
from attnlab import Program, ProgramError, parse, zoo
from attnlab import lang as S
from strategies import programs


@settings(max_examples=300, deadline=None)
@given(programs())
def test_string_dict_string_round_trip(program: Program) -> None:
    text = str(program)
    again = parse(text)
    assert again == program
    via_dict = Program.from_dict(again.to_dict())
    assert via_dict == program
    assert str(via_dict) == text
    assert Program.from_yaml(program.to_yaml()) == program
    assert hash(via_dict) == hash(program)


@pytest.mark.parametrize("text, canonical", [
    ("causal", "scaled_dot ; causal ; softmax"),
    ("entmax(1.5)", "scaled_dot ; entmax(1.5)"),
    ("alibi ; causal", "scaled_dot + alibi ; causal ; softmax"),
    ("linear(elu1) ; causal", "linear(elu1) ; causal"),
    ("causal ; linear(elu1)", "linear(elu1) ; causal"),
    ("scaled_dot + alibi ; causal & (window(256) | global_tokens(4)) ; softmax",
     "scaled_dot + alibi ; causal & (window(256) | global_tokens(4)) ; softmax"),
    ("softmax ; (causal)", "scaled_dot ; causal ; softmax"),
    ("a_b" if False else "~(causal | prefix(2)) & window(3)",
     "scaled_dot ; ~(causal | prefix(2)) & window(3) ; softmax"),
    ("random_blocks(p=0.5, block=64, seed=0)", "scaled_dot ; random_blocks(0.5) ; softmax"),
    ("sigmoid(bias=-2)", "scaled_dot ; sigmoid(bias=-2.0)"),
    ("dropout(0.1) + heads(8) ; sparsemax", "scaled_dot ; sparsemax ; heads(8) + dropout(0.1)"),
    ("", "scaled_dot ; softmax"),
])
def test_sections_are_recognised_by_kind(text: str, canonical: str) -> None:
    assert str(parse(text)) == canonical


def test_python_objects_equal_their_string() -> None:
    built = Program(mods=(S.Alibi(),), mask=S.Causal() & (S.Window(256) | S.GlobalTokens(4)))
    assert built == parse("alibi ; causal & (window(256) | global_tokens(4))")
    assert (S.Causal() & S.Window(2)) & S.Prefix(1) == S.Causal() & (S.Window(2) & S.Prefix(1))
    assert Program(mask="causal & window(8)", normalizer="entmax(1.5)") == parse(
        "causal & window(8) ; entmax(1.5)")


def test_programs_are_immutable_and_hashable() -> None:
    p = parse("causal ; sparsemax")
    with pytest.raises(AttributeError):
        p.mask = None  # type: ignore[misc]
    assert len({p, parse("scaled_dot ; causal ; sparsemax"), parse("causal")}) == 2


def test_dict_accepts_strings_for_parts() -> None:
    p = Program.from_dict({"mods": ["alibi"], "mask": "causal & window(8)",
                           "normalizer": "entmax(1.5)", "layout": {"heads": 4}})
    assert str(p) == "scaled_dot + alibi ; causal & window(8) ; entmax(1.5) ; heads(4)"


def test_predicate_runs_but_has_no_text_form() -> None:
    def even_keys(b, h, q, kv):
        return kv % 2 == 0

    p = Program(mask=S.Causal() & S.Predicate(even_keys))
    assert str(p) == "scaled_dot ; causal & predicate(even_keys) ; softmax"
    with pytest.raises(ProgramError, match="Python function"):
        p.to_dict()


@pytest.mark.parametrize("bad, message", [
    ("scaled_dot ; causl & window(256)", "did you mean 'causal'"),
    ("window(0)", "w must be ≥ 1, got 0"),
    ("heads(8) + kv_heads(3)", "kv_heads=3 must divide heads=8"),
    ("entmax(0.5)", "alpha must be > 1"),
    ("entmax(1)", "write 'softmax'"),
    ("causal ; softmax ; sparsemax", "a second normalizer section"),
    ("causal ; window(2)", "combine masks with & and |"),
    ("alibi + additive", "the score comes first"),
    ("linear(elu1) ; topk(3)", "replaces the normalizer"),
    ("favor(16) + alibi", "replaces the score, so score mods cannot be added"),
    ("lowrank(8) ; causal", "only padding can apply"),
    ("window(2.5)", "whole number"),
    ("window(w=3, x=2)", "no argument 'x'"),
    ("window(3, w=3)", "given twice"),
    ("window", "window needs w"),
    ("causal & (window(3)", "never closed"),
    ("softmax + causal", "one normalizer"),
    ("zoo:bigbrd", "did you mean 'bigbird'"),
    ("causal ;", "empty section"),
    ("causal $ window(2)", "unexpected character"),
    ("sofmax", "did you mean 'softmax'"),
    ("window(3) + causal", "masks combine with & (and) or | (or)"),
    ("relative_bias(buckets=2)", "buckets"),
    ("linear(elu_1)", "did you mean 'elu1'"),
    ("dropout(1.5)", "p must be in [0, 1)"),
])
def test_bad_programs_teach(bad: str, message: str) -> None:
    with pytest.raises(ProgramError, match=re.escape(message)):
        parse(bad)


def test_layout_resolve_takes_the_program_then_the_given_then_the_default() -> None:
    lay = parse("causal ; kv_heads(2) + head_dim(24)").layout
    assert lay.resolve(heads=4) == S.Layout(heads=4, kv_heads=2, head_dim=24)
    assert lay.resolve() == S.Layout(heads=8, kv_heads=2, head_dim=24)  # default heads
    assert S.Layout().resolve(dim=96, default_heads=4) == S.Layout(4, 4, 24)  # head_dim: dim // heads
    assert S.Layout().resolve(default_heads=4, default_head_dim=16) == S.Layout(4, 4, 16)
    assert S.Layout(cross=True).resolve(heads=2, head_dim=8) == S.Layout(2, 2, 8, cross=True)
    for options, message in [
        ({"kv_heads": 4}, "kv_heads=4 disagrees with the program, which says kv_heads(2)"),
        ({"heads": 3}, "kv_heads=2 must divide heads=3 (each key/value head serves heads/kv_heads "
                       "query heads; try 1, 3)"),
        ({"heads": 0}, "heads must be a whole number ≥ 1, got 0"),
        ({"head_dim": 2.5}, "head_dim must be a whole number ≥ 1, got 2.5"),
    ]:
        with pytest.raises(attnlab.ConfigError, match=re.escape(message)):
            lay.resolve(**options)
    with pytest.raises(attnlab.ConfigError, match="dim=30 is not divisible by heads=4"):
        S.Layout().resolve(heads=4, dim=30)


def test_errors_point_at_the_offending_text() -> None:
    with pytest.raises(ProgramError) as err:
        parse("scaled_dot ; causl & window(256)")
    lines = str(err.value).splitlines()
    assert lines[1] == "  scaled_dot ; causl & window(256)"
    assert lines[2] == "  " + " " * 13 + "^^^^^"


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(ProgramError, ValueError)
    with pytest.raises(ValueError):
        S.Window(0)
    with pytest.raises(ProgramError, match="must be a mask"):
        Program(mask=S.Softmax())  # type: ignore[arg-type]
    with pytest.raises(ProgramError, match=r"unknown program key 'normaliser'.*'normalizer'"):
        Program.from_dict({"normaliser": "softmax"})


def test_zoo() -> None:
    required = {"vanilla", "causal", "alibi-causal", "sliding-window", "longformer", "bigbird",
                "prefix-lm", "sparsemax", "entmax15", "hard-top8", "linear", "performer",
                "linformer"}
    assert required <= set(zoo)
    for name in zoo:
        program = zoo[name]
        assert parse(f"zoo:{name}") == program
        assert parse(str(program)) == program
        assert zoo.description(name)
    assert attnlab.parse("zoo:bigbird").mask is not None
    with pytest.raises(ProgramError, match="did you mean 'longformer'"):
        zoo["longformr"]


def test_learnable_parts_and_requirements() -> None:
    p = parse("additive + relative_bias + bias ; document & padding ; softmax")
    assert p.learnable
    assert p.parameter_shapes(heads=4, head_dim=8) == {
        "score.w_q": (4, 8, 8), "score.w_k": (4, 8, 8), "score.v": (4, 8),
        "mods.0.table": (32, 4)}
    assert p.requires() == {"bias", "segments", "key_padding"}
    assert not parse("cosine(10.0)").learnable and parse("cosine").learnable
    assert parse("lowrank(16, max_len=128)").parameter_shapes(2, 4) == {
        "approximation.e": (16, 128), "approximation.f": (16, 128)}


def test_mods_may_be_written_as_strings() -> None:
    want = parse("alibi + softcap(30.0)")
    assert Program(mods="alibi + softcap(30)") == want
    assert Program.from_dict({"mods": ["alibi", "softcap(30)"]}) == want
    with pytest.raises(ProgramError, match="the score has its own field"):
        Program(mods="additive + alibi")
    with pytest.raises(ProgramError, match="must be a mod, got the mask 'causal'"):
        Program(mods=["causal"])


def test_visible_is_the_dense_mask_and_all_true_without_one() -> None:
    from attnlab.lang import MaskInputs

    inp = MaskInputs(2, 3, 5, 7)
    assert attnlab.parse("softmax").visible(inp).shape == (1, 1, 5, 7)
    assert attnlab.parse("softmax").visible(inp).all()
    program = attnlab.parse("causal & window(2)")
    assert torch.equal(program.visible(inp), program.mask.dense(inp))
