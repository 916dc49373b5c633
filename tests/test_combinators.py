"""Combinators (mix, diff), the output gate and head routing: the language's three spellings,
the module against formulas written here, every backend against the reference, the recorder's
weights and allocations, and training's allocation reports."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnlab
from attnlab.errors import InputError, ProgramError
from attnlab.lang import Diff, Layout, Mix, OutputGate, Program, Route, parse
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig
from attnlab.nn import Attention
from attnlab.nn.blocks import with_padding
from attnlab.nn.causality import require_causal
from attnlab.nn.gates import HeadRouter, allocation_metrics, allocations, auxiliary_loss
from attnlab.train import train
from strategies import programs

# -- the language ----------------------------------------------------------------------------


@st.composite
def combined(draw, data_masks: bool = True) -> Program:
    """A random combined program: plain components (no layout of their own), a combinator, and
    layout options, an output gate and routing at the top."""
    comb = draw(st.builds(Mix, st.sampled_from(["static", "layer", "token"]))
                | st.builds(Diff, st.none() | st.floats(0, 0.99)))
    n = 2 if isinstance(comb, Diff) else draw(st.integers(2, 4))
    comps = tuple(draw(programs(data_masks)).replace(layout=Layout()) for _ in range(n))
    heads = draw(st.none() | st.integers(2, 8))
    route = None
    if heads is not None and draw(st.booleans()):
        top = draw(st.integers(1, heads - 1))
        route = Route(top, draw(st.integers(0, heads - top - 1)), draw(st.floats(0, 1)))
    gate = draw(st.none() | st.builds(OutputGate, st.sampled_from(["headwise", "elementwise"])))
    return Program(layout=Layout(heads=heads, route=route), output_gate=gate, combinator=comb,
                   components=comps)


@settings(max_examples=150, deadline=None)
@given(combined())
def test_combined_programs_round_trip_in_all_three_spellings(program: Program) -> None:
    if any("predicate" in str(c) for c in program.components):
        return  # a Python function has no text or dict form
    assert parse(str(program)) == program
    assert Program.from_dict(program.to_dict()) == program
    assert Program.from_yaml(program.to_yaml()) == program


@pytest.mark.parametrize("text", [
    "mix({causal ; softmax}, {causal & window(64) ; softmax}, gate=token) ; "
    "heads(8) + output_gate(elementwise)",
    "diff({causal ; softmax}, {causal ; softmax}, lambda_init=0.5)",
    "mix({softmax}, {window(4) ; sparsemax}, {linear(elu1)}, gate=static)",
    "causal ; softmax ; heads(8) + route(2, shared=2, balance=0.1) + output_gate(headwise)",
])
def test_the_documented_spellings_round_trip(text: str) -> None:
    program = parse(text)
    assert parse(str(program)) == program == Program.from_dict(program.to_dict())


def test_the_dict_spelling_reads_as_written() -> None:
    program = Program.from_dict({"mix": {"gate": "token", "programs": ["causal ; softmax",
                                                                      "causal & window(8) ; softmax"]},
                                 "layout": {"heads": 4, "route": {"top": 1, "shared": 1}},
                                 "output_gate": "headwise"})
    assert program == parse("mix({causal ; softmax}, {causal & window(8) ; softmax}, gate=token) ; "
                            "heads(4) + route(1, shared=1) + output_gate(headwise)")
    assert program.mechanisms == program.components and parse("causal").mechanisms == (parse("causal"),)


@pytest.mark.parametrize("text, message", [
    ("mix({causal ; softmax})", "mix combines 2 to 8 programs, got 1"),
    ("diff({causal}, {causal}, {causal})", "diff combines 2 programs, got 3"),
    ("mix({causal}, {causal}, gate=tokn)", "gate must be one of static, layer, token"),
    ("mix({causal}, {causal ; heads(2)})", "'heads(2)' applies to the whole layer"),
    ("mix({causal}, {mix({causal}, {causal})})", "'mix' cannot nest inside another combinator"),
    ("mix({causal}, {causal}) ; causal", "put the mask inside each component's braces"),
    ("mix({causal}, {causal ; softmx})", "did you mean 'softmax'"),
    ("mix({causal}, {})", "empty program: write one between '{' and '}'"),
    ("mix(causal, softmax)", "mix takes component programs in braces"),
    ("mix({causal}, {causal}", "expected ',' between arguments"),
    ("mix({causal", "this '{' is never closed"),
    ("mix(gate=token, {causal}, {causal})", "programs come before keyword arguments"),
    ("causal ; heads(4) + route(2, shared=2)", "leaves nothing to route among 4 heads"),
    ("causal ; output_gate(channel)", "form must be headwise or elementwise"),
    ("diff({causal}, {causal}, lambda_init=1.5)", "lambda_init must lie in [0, 1)"),
])
def test_mistakes_get_caret_errors_that_say_what_to_do(text: str, message: str) -> None:
    with pytest.raises(ProgramError, match=re.escape(message)) as err:
        parse(text)
    assert "^" in str(err.value)


def test_the_caret_points_at_the_component_at_fault() -> None:
    with pytest.raises(ProgramError) as err:
        parse("mix({causal ; softmax}, {causal ; softmax ; heads(2)})")
    text, marks = str(err.value).splitlines()[1:3]
    assert text[marks.index("^"):].startswith("{causal ; softmax ; heads(2)}")


@pytest.mark.parametrize("d, message", [
    ({"mix": {"programs": ["causal"]}}, "mix combines 2 to 8 programs, got 1"),
    ({"mix": ["causal", "causal"]}, "program.mix must be a mapping with a list of programs"),
    ({"mix": {"programs": ["causal", "causal"]}, "mask": "causal"}, "program.mask: mix holds"),
    ({"mix": {"programs": ["causal", "causal"]}, "diff": {"programs": ["a", "b"]}}, "one combinator"),
    ({"mix": {"programs": ["causal", {"mask": "causal", "layout": {"heads": 2}}]}},
     "program.mix.programs[1]: 'heads(2)' applies to the whole layer"),
    ({"mix": {"programs": ["causal", "causal"], "gat": "token"}}, "did you mean 'gate'"),
    ({"mixx": {}}, "did you mean 'mix'"),
])
def test_dict_mistakes_name_the_field(d: dict, message: str) -> None:
    with pytest.raises(ProgramError, match=re.escape(message)):
        Program.from_dict(d)


def test_attention_refuses_a_combined_program_and_says_where_it_runs() -> None:
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(InputError, match=re.escape("use attnlab.nn.Attention")):
        attnlab.attention(q, q, q, "mix({causal}, {window(1)})")


def test_a_combined_program_reads_what_its_components_read_and_sees_what_any_sees() -> None:
    program = parse("mix({causal & padding ; softmax}, {window(1) & document ; softmax})")
    assert program.requires() == {"key_padding", "segments"}
    inp = attnlab.lang.MaskInputs(1, 1, 5, 5)
    mixed = parse("mix({causal}, {window(1)})").visible(inp)[0, 0]
    i, j = torch.arange(5)[:, None], torch.arange(5)[None]
    assert torch.equal(mixed, (j <= i) | ((i - j).abs() <= 1))


def test_models_add_padding_and_causality_to_every_component() -> None:
    program = with_padding(parse("mix({causal ; softmax}, {causal & window(2) ; softmax})"))
    assert all("padding" in str(c.mask) for c in program.components)
    with pytest.raises(ProgramError, match="query 0 sees key 1"):
        require_causal(parse("mix({causal ; softmax}, {window(2) ; softmax})"), "decoder", 16)


# -- the module against formulas ------------------------------------------------------------

B, N, DIM, H = 2, 6, 32, 4
D = DIM // H


def heads_of(t: torch.Tensor, h: int = H) -> torch.Tensor:
    return t.unflatten(-1, (h, -1)).transpose(1, 2)


def softmax_weights(q, k, visible) -> torch.Tensor:
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return s.masked_fill(~visible, float("-inf")).softmax(-1)


CAUSAL = torch.tril(torch.ones(N, N, dtype=torch.bool))
WINDOW2 = CAUSAL & ((torch.arange(N)[:, None] - torch.arange(N)[None]).abs() <= 2)


@pytest.mark.parametrize("gate", ["static", "layer", "token"])
def test_mix_is_the_gated_sum_of_its_programs(gate: str) -> None:
    torch.manual_seed(0)
    m = Attention(DIM, f"mix({{causal ; softmax}}, {{causal & window(2) ; softmax}}, gate={gate})",
                  heads=H)
    with torch.no_grad():  # gates that are not all equal
        if gate == "layer":
            m.join.logits.normal_()
        if gate == "token":
            m.join.proj.weight.normal_(0, 0.3)
    x = torch.randn(B, N, DIM)
    q, k, v = heads_of(m.to_q(x)), heads_of(m.to_k(x)), heads_of(m.to_v(x))
    outs = [softmax_weights(q, k, CAUSAL) @ v, softmax_weights(q, k, WINDOW2) @ v]
    if gate == "static":
        g = torch.full((B, N, H, 2), 0.5)
    elif gate == "layer":
        g = m.join.logits.softmax(-1).expand(B, N, H, 2)
    else:
        g = m.join.proj(x).unflatten(-1, (H, 2)).softmax(-1)
    out = sum(g[..., c].transpose(1, 2)[..., None] * o for c, o in enumerate(outs))
    expected = m.to_out(out.transpose(1, 2).flatten(2))
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


def test_diff_is_ye_et_al_differential_attention() -> None:
    torch.manual_seed(1)
    m = Attention(DIM, "diff({causal ; softmax}, {causal ; softmax})", heads=H, layer=3)
    x = torch.randn(B, N, DIM)
    q, k, v = heads_of(m.to_q(x), 2 * H), heads_of(m.to_k(x), 2 * H), heads_of(m.to_v(x))
    a1, a2 = softmax_weights(q[:, :H], k[:, :H], CAUSAL), softmax_weights(q[:, H:], k[:, H:], CAUSAL)
    j = m.join
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * 3)
    assert j.lambda_init == pytest.approx(lam_init)
    lam = (torch.exp((j.lambda_q1 * j.lambda_k1).sum()) - torch.exp((j.lambda_q2 * j.lambda_k2).sum())
           + lam_init)
    o = a1 @ v - lam * (a2 @ v)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * j.norm.weight * (1 - lam_init)
    torch.testing.assert_close(m(x), m.to_out(o.transpose(1, 2).flatten(2)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("form", ["headwise", "elementwise"])
def test_the_output_gate_is_sigmoid_of_the_input_times_each_head(form: str) -> None:
    torch.manual_seed(2)
    m = Attention(DIM, f"causal ; softmax ; output_gate({form})", heads=H)
    x = torch.randn(B, N, DIM)
    q, k, v = heads_of(m.to_q(x)), heads_of(m.to_k(x)), heads_of(m.to_v(x))
    gate = torch.sigmoid(m.output_gate.proj(x))  # (B, N, H) or (B, N, H·D)
    gate = gate[..., None] if form == "headwise" else gate.unflatten(-1, (H, D))
    out = (softmax_weights(q, k, CAUSAL) @ v) * gate.transpose(1, 2)
    torch.testing.assert_close(m(x), m.to_out(out.transpose(1, 2).flatten(2)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shared", [0, 1])
def test_routing_is_moh_with_a_load_balancing_loss(shared: int) -> None:
    torch.manual_seed(3)
    m = Attention(DIM, f"causal ; softmax ; route(1, shared={shared})", heads=H)
    m.train()
    x = torch.randn(B, N, DIM)
    y = m(x)
    q, k, v = heads_of(m.to_q(x)), heads_of(m.to_k(x)), heads_of(m.to_v(x))
    r = m.router
    probs = r.router(x).softmax(-1)
    best = probs.argmax(-1, keepdim=True)
    chosen = torch.zeros_like(probs).scatter(-1, best, 1.0)
    w = probs * chosen
    if shared:
        a = r.split(x).softmax(-1)
        w = torch.cat([r.shared_router(x).softmax(-1) * a[..., :1], w * a[..., 1:]], -1)
    w = w * (shared + 1)
    out = (softmax_weights(q, k, CAUSAL) @ v) * w.transpose(1, 2)[..., None]
    torch.testing.assert_close(y, m.to_out(out.transpose(1, 2).flatten(2)), atol=1e-5, rtol=1e-5)
    routed = H - shared
    f = chosen.reshape(-1, routed).mean(0)
    expected = routed * (f * probs.reshape(-1, routed).mean(0)).sum()
    torch.testing.assert_close(r.aux_loss, expected)
    assert (w > 0).sum(-1).eq(shared + 1).all()  # half the heads or fewer active per token


def test_routing_loss_is_one_when_routing_is_even_and_reaches_the_model_penalty() -> None:
    r = HeadRouter(DIM, 4, Route(2))
    probs = torch.full((1, 4, 4), 0.25)
    chosen = torch.tensor([[[1.0, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]]])
    assert r._balance_loss(probs, chosen, None).item() == pytest.approx(1.0)
    model = EncoderClassifier(EncoderClassifierConfig(
        vocab_size=20, num_classes=2, d_model=DIM, layers=2, heads=H,
        programs="softmax ; route(1, shared=1)"))
    model.train()
    model(torch.randint(1, 20, (2, 5)))
    total = auxiliary_loss(model)
    assert total is not None
    torch.testing.assert_close(model.penalty(), total)
    assert total.item() == pytest.approx(sum(0.01 * m.aux_loss.item() for m in model.modules()
                                             if isinstance(m, HeadRouter)))


# -- backends, recorder, allocation --------------------------------------------------------

PROGRAMS = [
    "mix({causal & padding ; softmax}, {causal & window(2) & padding ; softmax}, gate=token) ; "
    "output_gate(elementwise)",
    "mix({causal & padding ; softmax}, {causal & padding ; sparsemax}, gate=layer)",
    "diff({causal & padding ; softmax}, {causal & window(3) & padding ; softmax})",
    "causal & padding ; softmax ; heads(4) + route(2, shared=1) + output_gate(headwise)",
]


def _padded() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(B, N, DIM)
    kpm = torch.zeros(B, N, dtype=torch.bool)
    kpm[1, 4:] = True
    return x, kpm


@pytest.mark.parametrize("text", PROGRAMS)
@pytest.mark.parametrize("backend", ["sdpa", "tiled", "flex"])
def test_every_backend_agrees_with_the_reference_forward_and_backward(text: str, backend: str) -> None:
    program = parse(text)
    if backend == "sdpa" and any(not isinstance(c.normalizer, attnlab.lang.Softmax)
                                 for c in program.mechanisms):
        pytest.skip("sdpa runs softmax programs only")
    if backend == "flex" and "sparsemax" in text:
        pytest.skip("flex runs softmax programs only")
    torch.manual_seed(4)
    m = Attention(DIM, program, heads=H)
    x, kpm = _padded()
    results = []
    backward = backend != "flex"  # FlexAttention has no backward on CPU in torch 2.13
    for b in ("reference", backend):
        m.zero_grad()
        with torch.set_grad_enabled(backward):
            y = m(x, key_padding_mask=kpm, backend=b)
        if backward:
            y[~kpm].square().sum().backward()
        results.append((y[~kpm], {n: p.grad.clone() for n, p in m.named_parameters()
                                  if p.grad is not None}))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, atol=2e-5, rtol=1e-4)
    assert set(g0) == set(g1) and (not backward or g0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=5e-5, rtol=1e-3, msg=name)


def test_components_run_on_their_own_planned_backends_and_freeze_per_component() -> None:
    m = Attention(DIM, "mix({causal ; softmax}, {causal ; sparsemax})", heads=H)
    x = torch.randn(B, N, DIM)
    attnlab.freeze(m, x)
    assert m.frozen is not None and len(m.frozen) == 2
    assert m.frozen[0] in ("sdpa", "flex") and m.frozen[1] in ("tiled", "reference")


@pytest.mark.parametrize("text", PROGRAMS)
def test_recorded_weights_times_v_give_the_joined_output(text: str) -> None:
    torch.manual_seed(5)
    m = Attention(DIM, text, heads=H)
    x, kpm = _padded()
    with attnlab.record(m, grads=True) as rec:
        y = m(x, key_padding_mask=kpm)
        y[~kpm].sum().backward()
    w = rec.weights(0)
    kept = rec.passes[rec.layers[0]][-1]
    v = heads_of(m.to_v(x))
    if kept.joined is not None:  # mix and diff: the joined output is the layer's weights · v
        torch.testing.assert_close((w @ v)[~kpm[:, None, :, None].expand_as(w @ v)],
                                   kept.joined.out[~kpm[:, None, :, None].expand_as(w @ v)],
                                   atol=1e-5, rtol=1e-4)
    assert w.shape == (B, H, N, N)
    gates = rec.allocation(0)
    assert set(gates) == {name for name in ("mix", "diff", "output_gate", "route") if name in text}
    if "gate=token" in text:
        assert gates["mix"].shape == (B, N, H, 2)
        torch.testing.assert_close(gates["mix"].sum(-1), torch.ones(B, N, H))


def test_head_grads_of_a_gated_layer_are_the_gradient_of_a_head_mask() -> None:
    """∂loss/∂ξ_h with ξ multiplying each head's output as the output projection reads it."""
    torch.manual_seed(6)
    m = Attention(DIM, PROGRAMS[0], heads=H)
    x, kpm = _padded()
    with attnlab.record(m, grads=True) as rec:
        m(x, key_padding_mask=kpm)[~kpm].square().sum().backward()
    xi = torch.ones(H, requires_grad=True)
    m.head_mask = xi
    m(x, key_padding_mask=kpm)[~kpm].square().sum().backward()
    torch.testing.assert_close(rec.head_grads(0).sum(0), xi.grad, atol=1e-4, rtol=1e-4)


def test_weight_grads_of_a_mixed_layer_are_the_gradient_of_its_weights() -> None:
    torch.manual_seed(7)
    m = Attention(DIM, "mix({causal ; softmax}, {causal & window(2) ; softmax}, gate=token)", heads=H)
    x = torch.randn(B, N, DIM)
    with attnlab.record(m, grads=True) as rec:
        m(x).square().sum().backward()
        w = rec.weights(0)
    # the same loss as a function of the layer's weights: to_out(w · v) squared
    w = w.detach().requires_grad_()
    v = heads_of(m.to_v(x)).detach()
    m.to_out(((w @ v)).transpose(1, 2).flatten(2)).square().sum().backward()
    torch.testing.assert_close(rec.weight_grads(0), w.grad, atol=1e-4, rtol=1e-4)


def test_objectives_refuse_a_combined_layer_with_a_clear_message() -> None:
    m = Attention(DIM, "mix({causal}, {window(1)})", heads=H)
    with attnlab.record(m) as rec:
        m(torch.randn(1, 3, DIM))
    with pytest.raises(InputError, match=re.escape("read them with rec.weights")):
        rec.calls(0)


def test_gates_tally_real_tokens_while_evaluating_only() -> None:
    torch.manual_seed(8)
    m = Attention(DIM, "causal & padding ; softmax ; heads(4) + route(1, shared=1)", heads=H)
    x, kpm = _padded()
    m.train()
    m(x, key_padding_mask=kpm)
    assert m.router.allocation() is None
    m.eval()
    m(x, key_padding_mask=kpm)
    expected = m.router.last[~kpm].float().mean(0)
    torch.testing.assert_close(m.router.allocation(), expected)
    assert allocations(m) == {"": {"route": pytest.approx(expected.tolist())}}
    flat = allocation_metrics(torch.nn.ModuleDict({"layer": m}))
    assert set(flat) == {f"alloc_route/layer/h{h}" for h in range(H)}


def test_a_model_with_gates_saves_and_loads(tmp_path) -> None:
    from attnlab.models.base import load_model, save_model

    model = DecoderLM(DecoderLMConfig(vocab_size=30, d_model=DIM, layers=2, heads=H, max_len=16,
                                      programs=PROGRAMS[2].replace(" & padding", "")))
    save_model(model, tmp_path)
    again = load_model(tmp_path)
    tokens = torch.randint(1, 30, (2, 8))
    model.eval()
    again.eval()
    torch.testing.assert_close(again(tokens), model(tokens))
    assert again.blocks[1].attention.join.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3))


def test_training_logs_the_allocation_per_epoch_and_draws_it(tmp_path) -> None:
    exp = {"name": "mix-smoke", "task": {"name": "mqar", "params": {"num_kv_pairs": 2, "seq_len": 16,
                                                                  "vocab_size": 64},
                                         "train_examples": 64, "val_examples": 16,
                                         "test_examples": 16},
           "model": {"d_model": 16, "layers": 1, "heads": 2},
           "attention": "mix({causal ; softmax}, {causal & window(2) ; softmax}, gate=layer) ; "
                        "heads(2) + route(1)",
           "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "seed": 0}}
    out = tmp_path / "run"
    metrics = train(exp, out, tracking_uri=f"sqlite:///{tmp_path}/ml.db", progress=False)
    history = json.loads((out / "allocation.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    mix = [h["alloc_mix/blocks.0.attention/c0"] + h["alloc_mix/blocks.0.attention/c1"]
           for h in history]
    assert mix == pytest.approx([1.0, 1.0])
    assert {"alloc_route/blocks.0.attention/h0", "alloc_route/blocks.0.attention/h1"} <= set(history[0])
    assert (out / "allocation.png").stat().st_size > 5000
    assert set(metrics["allocation"]["blocks.0.attention"]) == {"mix", "route"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/ml.db")
    run = client.search_runs([client.get_experiment_by_name("mix-smoke").experiment_id])[0]
    steps = client.get_metric_history(run.info.run_id, "alloc_mix/blocks.0.attention/c0")
    assert len(steps) == 2
    assert "train_load_balance" in run.data.metrics





def test_the_sink_measure_is_the_mean_weight_rows_after_the_first_put_on_the_first_key() -> None:
    from attnlab.objectives import Sink

    torch.manual_seed(9)
    m = Attention(DIM, "causal & padding ; softmax ; output_gate(headwise)", heads=H)
    x, kpm = _padded()
    with attnlab.record(m) as rec:
        m(x, key_padding_mask=kpm)
    w = rec.weights(0)
    counted = (~kpm)[:, None, :].expand(B, H, N).clone()
    counted[:, :, 0] = False
    expected = (w[..., 0] * counted).sum() / counted.sum()
    value = Sink(kind="sink").value(rec.calls(0), None)
    torch.testing.assert_close(value, expected)


RAN: list[Program] = []


@settings(max_examples=25, deadline=None)
@given(combined(data_masks=False), st.integers(0, 2**16))
def test_random_combined_programs_agree_with_the_reference_forward_and_backward(
        program: Program, seed: int) -> None:
    """The planner's backend for each component against the reference, through the module."""
    if program.requires() - {"bias", "key_padding", "distances"} or \
            any("predicate" in str(c) for c in program.components):
        return  # documents, graphs and Python predicates have their own tests
    if any(getattr(c.approximation, "max_len", 7) < 7 for c in program.components):
        return  # Linformer's projection is built for fewer keys than the 7 given (an InputError)
    RAN.append(program)
    heads = program.layout.heads or H
    torch.manual_seed(seed)
    m = Attention(heads * 4, program, heads=heads).eval()
    x = torch.randn(2, 7, heads * 4)
    kpm = torch.zeros(2, 7, dtype=torch.bool)
    kpm[1, 5:] = True
    given = {"bias": torch.randn(1, heads, 7, 7), "key_padding": kpm,
             "distances": torch.randint(-1, 10, (2, 7, 7))}
    inputs = {("key_padding_mask" if need == "key_padding" else need): given[need]
              for need in program.requires()}
    results = []
    for backend in ("reference", None):
        m.zero_grad()
        y = m(x, backend=backend, **inputs)
        y.square().sum().backward()
        results.append((y, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (y0, g0), (y1, g1) = results
    torch.testing.assert_close(y1, y0, atol=1e-4, rtol=1e-3)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], atol=1e-3, rtol=1e-2, msg=name)


def test_the_random_programs_above_were_mostly_run() -> None:
    if RAN:  # run with the test above, in this order
        assert len(RAN) >= 20


GATED = {"name": "tiny-gated",
         "task": {"name": "mqar", "params": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2},
                  "train_examples": 64, "val_examples": 16, "test_examples": 16},
         "model": {"d_model": 16, "layers": 1, "heads": 2, "dropout": 0.1},
         "attention": "mix({causal ; softmax}, {causal & window(2) ; softmax}, gate=token) ; "
                      "heads(2) + route(1)",
         "train": {"steps": 9, "validate_every": 3, "batch_size": 16, "lr": 0.01, "seed": 5}}


@pytest.mark.parametrize("stop_at", [2, 5, 8])
def test_the_allocation_history_of_a_resumed_run_is_the_straight_runs(stop_at, tmp_path,
                                                                      monkeypatch) -> None:
    """Every validation's allocation, however the run was interrupted, and not cut back to the
    best checkpoint's when the test loads it."""
    from attnlab.train.config import load_experiment
    from interrupting import train_until

    def run(out, resume=False):
        return train(load_experiment(GATED), out, resume=resume, progress=False,
                     tracking_uri=f"sqlite:///{tmp_path}/ml.db")

    run(tmp_path / "straight")
    assert train_until(stop_at, monkeypatch, lambda: run(tmp_path / "cut")) is None
    run(tmp_path / "cut", resume=True)
    straight = json.loads((tmp_path / "straight" / "allocation.json").read_text())
    assert [h["step"] for h in straight] == [3, 6, 9]
    assert json.loads((tmp_path / "cut" / "allocation.json").read_text()) == straight


def test_compare_gives_long_programs_that_differ_only_at_the_end_their_own_folders() -> None:
    from attnlab.train.compare import folder_name

    static = "mix({scaled_dot ; causal ; softmax}, {scaled_dot ; causal & window(8) ; softmax}, gate=static)"
    layer = "mix({scaled_dot ; causal ; softmax}, {scaled_dot ; causal & window(8) ; softmax})"
    assert folder_name(static) != folder_name(layer)
    assert len(folder_name(static)) <= 60 and folder_name("causal ; softmax") == "causal-softmax"


@pytest.mark.parametrize("text", [
    "mix({causal ; softmax}, {causal & window(2) ; softmax}, gate=token) ; output_gate(headwise)",
    "diff({causal ; softmax}, {causal ; softmax})",
    "causal ; softmax ; heads(4) + route(1, shared=1)",
])
def test_decoding_token_by_token_with_a_cache_equals_the_whole_sequence(text: str) -> None:
    from attnlab.nn import KVCache

    torch.manual_seed(10)
    m = Attention(DIM, text, heads=H).eval()
    x = torch.randn(B, N, DIM)
    cache = KVCache()
    steps = [m(x[:, i:i + 1], cache=cache) for i in range(N)]
    torch.testing.assert_close(torch.cat(steps, 1), m(x), atol=1e-5, rtol=1e-5)
