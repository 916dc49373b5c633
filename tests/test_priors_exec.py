"""Prior knowledge in the language and on every backend: the `graph_distance` score mod
(Graphormer's learnable bias per shortest-path distance, read from `distances=`) and named
rules (`rule(within, 2)`), which round-trip in every spelling unlike `predicate(fn)`."""

from __future__ import annotations

import re

import pytest
import torch

import attnlab
from attnlab import InputError, Program, ProgramError, attention, parse
from attnlab.exec.api import check_call
from attnlab.exec.backend import Call
from attnlab.exec.flex import FlexBackend
from attnlab.exec.reference import reference_attention
from attnlab.exec.sdpa import SdpaBackend
from attnlab.exec.tiled import TiledBackend
from attnlab.lang import GraphDistance, MaskInputs, Rule
from attnlab.lang import rules as R
from attnlab.nn import Attention, MixedAttention
from attnlab.nn.causality import require_causal
from attnlab.priors import rules as library
from test_backends import compare

FAST = {"sdpa": SdpaBackend(), "tiled8": TiledBackend(block=8), "tiled3": TiledBackend(block=3)}


def tensors(b=2, h=4, hk=2, n=5, m=7, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, n, d, generator=g, dtype=dtype)
    k, v = (torch.randn(b, hk, m, d, generator=g, dtype=dtype) for _ in "kv")
    # −1 (unreachable) and lengths past max_distance both occur
    dist = torch.randint(-1, 12, (b, n, m), generator=g)
    return q, k, v, dist


def random_table(program: Program, heads: int, seed: int = 1, dtype=torch.float64) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g, dtype=dtype)
            for key, shape in program.parameter_shapes(heads, 8).items()}


# -- graph_distance: the formula, the table, every backend ---------------------------------------


def test_reference_weights_equal_the_graphormer_formula() -> None:
    program = parse("scaled_dot + graph_distance(4) ; softmax")
    q, k, v, dist = tensors()
    params = random_table(program, 4)
    table = params["mods.0.table"]
    assert table.shape == (6, 4)  # distances 0..4, then one row for far and unreachable
    _, w = attention(q, k, v, program, distances=dist, params=params, backend="reference",
                     return_weights=True)
    kk = k.repeat_interleave(2, dim=1)
    row = torch.where((dist < 0) | (dist > 4), 5, dist)  # (B, N, M)
    bias = table[row].permute(0, 3, 1, 2)  # (B, H, N, M)
    want = torch.softmax(q @ kk.transpose(-1, -2) / 8**0.5 + bias, dim=-1)
    torch.testing.assert_close(w, want)
    assert (row == 5).any() and (dist == -1).any() and (dist > 4).any()


def test_a_fresh_table_is_zero_so_the_program_starts_as_plain_attention() -> None:
    program = parse("scaled_dot + graph_distance ; softmax")
    params = attnlab.init_params(program, heads=4, head_dim=8)
    assert str(program) == "scaled_dot + graph_distance(8) ; softmax"
    assert params["mods.0.table"].shape == (10, 4) and not params["mods.0.table"].any()
    q, k, v, dist = tensors()
    torch.testing.assert_close(
        attention(q, k, v, program, distances=dist, params=params, backend="reference"),
        attention(q, k, v, "scaled_dot ; softmax", backend="reference"))


@pytest.mark.parametrize("text", [
    "scaled_dot + graph_distance(3) ; softmax",
    "scaled_dot + alibi + graph_distance(2) + temperature(2.0) ; causal & rule(within, 5) ; softmax",
    "general + graph_distance(6) ; rule(reachable) | rule(diagonal) ; sparsemax",
    "scaled_dot + graph_distance(4) + softcap(5.0) ; window(3) ; entmax(1.5)",
])
@pytest.mark.parametrize("backend", list(FAST.values()), ids=list(FAST))
def test_every_backend_agrees_with_the_reference_forward_and_backward(text, backend) -> None:
    """Out, and the gradients of q, k, v and the table, N ≠ M, B > 1, GQA; sdpa refuses only
    the programs it does not run (non-affine mods, other normalizers)."""
    program = parse(text)
    for n, m in ((5, 9), (11, 4), (8, 8)):
        ran = compare(program, backend, 2, 4, 2, n, m, 8, n * m, torch.float64, 1e-8)
        assert ran == (backend.name != "sdpa" or (text.endswith("; softmax") and "softcap" not in text))


@pytest.mark.parametrize("backend", ["reference", "sdpa", "tiled"])
def test_the_table_learns_on_every_backend(backend) -> None:
    program = parse("scaled_dot + graph_distance(3) ; causal ; softmax")
    q, k, v, dist = tensors(n=6, m=6, dtype=torch.float32)
    table = torch.zeros(5, 4, requires_grad=True)
    out = attention(q, k, v, program, distances=dist, params={"mods.0.table": table},
                    backend=backend)
    out.square().sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
    seen = torch.where((dist < 0) | (dist > 3), 4, dist)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    unused = [r for r in range(5) if not (seen[:, causal] == r).any()]
    assert all(not table.grad[r].any() for r in unused)  # only rows some visible pair reads


def test_flex_runs_distances_new_every_call_without_recompiling() -> None:
    """Forward only (FlexAttention has no CPU backward): one compile, then new distances and a
    new rule mask of the same shape reuse the kernel."""
    text = "scaled_dot + graph_distance(4) ; rule(within, 6) ; softmax"
    program = parse(text)
    q, k, v, dist = tensors(n=12, m=12, dtype=torch.float32)
    params = random_table(program, 4, dtype=torch.float32)
    assert FlexBackend().refuse(Call.of(program, q, k, v, params=params, needs_grad=False)) is None
    for i, distances in enumerate((dist, torch.randint(-1, 12, (2, 12, 12)))):
        inp = check_call(q, k, v, program, params=params, distances=distances)
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            out = FlexBackend().run(q, k, v, program, inp, bias=None, params=params,
                                    training=False, generator=None)
        ref, _ = reference_attention(q, k, v, program, inp, params=params)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


def test_the_planner_runs_it_and_explains_it() -> None:
    program = parse("scaled_dot + graph_distance(4) ; softmax")
    q, k, v, dist = tensors(dtype=torch.float32)
    params = random_table(program, 4, dtype=torch.float32)
    got = attention(q, k, v, program, distances=dist, params=params)
    torch.testing.assert_close(got, attention(q, k, v, program, distances=dist, params=params,
                                              backend="reference"))
    assert "backend" in attnlab.explain(program, q, k, v, params=params)


@pytest.mark.parametrize("call, message", [
    (lambda q, k, v, d, p: attention(q, k, v, "scaled_dot + graph_distance ; softmax", params=p),
     "the score mod 'graph_distance(8)' needs distances= at call time"),
    (lambda q, k, v, d, p: attention(q, k, v, "causal & rule(within, 2)"),
     "the mask 'rule(within, 2)' needs distances= at call time"),
    (lambda q, k, v, d, p: attention(q, k, v, "causal", distances=d),
     "distances= was given but nothing reads it: add the score mod 'graph_distance'"),
    (lambda q, k, v, d, p: attention(q, k, v, "scaled_dot + graph_distance ; softmax", params=p,
                                     distances=d.float()),
     "distances must hold whole numbers (an integer tensor, -1 for unreachable), got torch.float32"),
    (lambda q, k, v, d, p: attention(q, k, v, "scaled_dot + graph_distance ; softmax", params=p,
                                     distances=d >= 0),
     "distances must hold whole numbers"),
    (lambda q, k, v, d, p: attention(q, k, v, "scaled_dot + graph_distance ; softmax", params=p,
                                     distances=d[:, :, :3]),
     "distances must have shape (2 or 1, 5, 7), got (2, 5, 3)"),
    (lambda q, k, v, d, p: attention(q, k, v, "scaled_dot + graph_distance ; softmax", params=p,
                                     distances=d.tolist()),
     "distances= must be a torch.Tensor, got list"),
])
def test_distances_errors_say_what_to_do(call, message) -> None:
    q, k, v, dist = tensors(dtype=torch.float32)
    params = attnlab.init_params("scaled_dot + graph_distance ; softmax", heads=4, head_dim=8)
    with pytest.raises(InputError, match=re.escape(message)):
        call(q, k, v, dist, params)


def test_distances_broadcast_over_the_batch_and_any_integer_dtype_indexes() -> None:
    program = parse("scaled_dot + graph_distance(3) ; rule(reachable) ; softmax")
    q, k, v, dist = tensors(dtype=torch.float32)
    params = random_table(program, 4, dtype=torch.float32)
    one = dist[:1].clamp(min=-1, max=100)
    want = attention(q, k, v, program, distances=one.expand(2, -1, -1), params=params)
    for given in (one, one[0], one.to(torch.int32), one.to(torch.int8)):
        torch.testing.assert_close(attention(q, k, v, program, distances=given, params=params), want)
    with pytest.raises(ProgramError, match=re.escape("graph_distance: max_distance must be ≥ 1")):
        GraphDistance(0)
    with pytest.raises(ProgramError, match=re.escape("max_distance must be ≤ 65536")):
        parse("scaled_dot + graph_distance(65537)")


# -- named rules ------------------------------------------------------------------------------


def test_rules_round_trip_in_every_spelling() -> None:
    program = Program(mods=(GraphDistance(3),),
                      mask=Rule("within", 2) & (Rule("chunk", 4) | ~Rule("diagonal")))
    text = "scaled_dot + graph_distance(3) ; rule(within, 2) & (rule(chunk, 4) | ~rule(diagonal)) ; softmax"
    assert str(program) == text and parse(text) == program
    assert Program.from_dict(program.to_dict()) == program
    assert Program.from_yaml(program.to_yaml()) == program
    assert program.to_dict()["mask"]["and"][0] == {"name": "rule", "rule": "within", "n": 2}
    assert Program.from_dict({"mask": {"name": "rule", "rule": "hops", "n": 1}}).mask == Rule("hops", 1)
    assert program.requires() == {"distances"}
    assert parse("rule(chunk, 4) | rule(diagonal)").requires() == frozenset()


@pytest.mark.parametrize("text, message", [
    ("rule(withn, 2)", "unknown rule 'withn' — did you mean 'within'? (known rules: chunk, "
                       "diagonal, hops, reachable, summary, within)"),
    ("rule(within)", "rule: 'within' needs n: write rule(within, n), e.g. rule(within, 2)"),
    ("rule(diagonal, 3)", "rule: 'diagonal' takes no argument, got n=3; write rule(diagonal)"),
    ("rule(chunk, 0)", "rule: n of 'chunk' must lie in [1, 2**31 - 1], got 0"),
    ("rule(within, -1)", "n of 'within' must lie in [0"),
    ("rule(2, 3)", "rule: rule must be a name"),
    ("rule(within, 2.5)", "rule: n must be a whole number or none"),
])
def test_bad_rules_teach(text, message) -> None:
    with pytest.raises(ProgramError, match=re.escape(message)):
        parse(text)


BUILT_INS = {  # name, n -> the definition, from the query's position p and key j
    ("within", 2): lambda d, p, j: (d >= 0) & (d <= 2),
    ("hops", 1): lambda d, p, j: d == 1,
    ("reachable", None): lambda d, p, j: d >= 0,
    ("diagonal", None): lambda d, p, j: p == j,
    ("chunk", 3): lambda d, p, j: p // 3 == j // 3,
    ("summary", 4): lambda d, p, j: j % 4 == 3,
}


@pytest.mark.parametrize("name, n", list(BUILT_INS))
@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (7, 7)])
def test_each_built_in_rule_is_its_formula_with_an_exact_block_summary(name, n, shape) -> None:
    nq, m = shape
    dist = torch.randint(-1, 5, (2, nq, m), generator=torch.Generator().manual_seed(nq))
    inp = MaskInputs.build(2, 3, nq, m, distances=dist)
    mask = Rule(name, n)
    p = torch.arange(nq).view(-1, 1) + m - nq  # bottom-right alignment
    j = torch.arange(m).view(1, -1)
    want = BUILT_INS[name, n](dist, p, j).expand(2, nq, m)
    assert torch.equal(mask.dense(inp)[:, 0].expand(2, nq, m), want)
    assert torch.equal(mask.dense(inp).expand(2, 3, nq, m), want[:, None].expand(2, 3, nq, m))
    for block in ((2, 3), (4, 4), (1, 5)):
        state = mask.block_summary(inp, block).state.expand(2, 3, -1, -1)
        dense = mask.dense(inp).expand(2, 3, nq, m)
        from attnlab.lang.masks import _reduce_dense

        assert torch.equal(state, _reduce_dense(dense, *block)), block
    assert (mask._block_state(*_bounds(inp), inp) is not None) == (name in ("diagonal", "chunk",
                                                                            "summary"))
    assert library.RULES[name].fn.__doc__  # every built-in says what it is for


def _bounds(inp: MaskInputs, bq: int = 4, bk: int = 4):
    q0 = torch.arange(0, inp.n, bq).view(-1, 1)
    k0 = torch.arange(0, inp.m, bk).view(1, -1)
    return q0, (q0 + bq).clamp(max=inp.n) - 1, k0, (k0 + bk).clamp(max=inp.m) - 1


@pytest.mark.parametrize("text", [
    "causal & (rule(within, 1) | rule(diagonal)) ; softmax",
    "rule(chunk, 4) | rule(summary, 4) ; sparsemax",
    "alibi ; ~rule(hops, 2) & rule(reachable) ; softmax",
])
@pytest.mark.parametrize("backend", list(FAST.values()), ids=list(FAST))
def test_rule_masks_agree_across_backends(text, backend) -> None:
    for n, m in ((6, 10), (9, 9)):
        compare(parse(text), backend, 2, 2, 1, n, m, 4, n + m, torch.float64, 1e-8)


@pytest.fixture
def own_rules(monkeypatch):
    """The registry as it is, restored after the test."""
    monkeypatch.setattr(R, "RULES", dict(R.RULES))
    return R.RULES


def test_a_user_registered_rule_runs_everywhere_a_mask_does(own_rules) -> None:
    @library.rule("same_parity", reads=("distances",))
    def same_parity(b, h, q, kv, inp, n):
        """Keys an even number of hops away: a bipartite prior."""
        d = inp.distances[b, q, kv]
        return (d >= 0) & (d % 2 == 0)

    program = parse("scaled_dot ; causal & rule(same_parity) ; softmax")
    assert program.requires() == {"distances"} and Program.from_dict(program.to_dict()) == program
    q, k, v, dist = tensors(n=7, m=7)
    want_mask = (dist >= 0) & (dist % 2 == 0) & torch.ones(7, 7, dtype=torch.bool).tril()
    _, w = attention(q, k, v, program, distances=dist, backend="reference", return_weights=True)
    assert torch.equal(w.ne(0), want_mask[:, None].expand_as(w))
    torch.testing.assert_close(attention(q, k, v, program, distances=dist, backend="tiled"),
                               attention(q, k, v, program, distances=dist, backend="reference"))
    with pytest.raises(InputError, match=re.escape("the mask 'rule(same_parity)' needs distances=")):
        attention(q, k, v, program)

    @library.rule("stride", n=2, least=1)
    def stride(b, h, q, kv, inp, n):
        return (q + inp.offset - kv) % n == 0

    assert Rule("stride") == Rule("stride", 2) and str(Rule("stride")) == "rule(stride, 2)"
    assert parse("rule(stride)").requires() == frozenset()
    # not declared positional: it may read b and h, so nothing assumes it does not
    assert Rule("stride").python and not Rule("chunk", 2).python
    with pytest.raises(ProgramError, match="so it is not positional"):
        library.rule("near", reads=("distances",), positional=True)


def test_registering_a_taken_or_bad_name_is_refused(own_rules) -> None:
    with pytest.raises(ProgramError, match=re.escape("rule 'within' is registered already")):
        library.rule("within")(lambda b, h, q, kv, inp, n: kv >= 0)
    for bad in ("two words", "none", "3d", ""):
        with pytest.raises(ProgramError, match="a rule's name must be a word"):
            library.rule(bad)
    with pytest.raises(ProgramError, match="a rule may read distances, graph, segments"):
        library.rule("odd", reads=("weather",))
    assert own_rules["within"].fn is library.within  # the failed attempts changed nothing


def test_rules_are_registered_whenever_attnlab_is_imported() -> None:
    import subprocess
    import sys

    code = "import attnlab.lang as L; print(L.parse('rule(within, 2)').requires())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "distances" in out.stdout


def test_decoders_prove_positional_rules_and_take_the_others_at_their_most_permissive() -> None:
    require_causal(parse("causal & rule(within, 2)"), "decoder", 64)
    require_causal(parse("causal & rule(chunk, 8)"), "decoder", 64)
    require_causal(parse("rule(diagonal)"), "decoder", 64)  # positional: proved by looking
    with pytest.raises(ProgramError, match="query 0 sees key 1;"):
        require_causal(parse("rule(chunk, 8)"), "decoder", 64)
    with pytest.raises(ProgramError, match="rule: call-time data and Python predicates"):
        require_causal(parse("rule(within, 2)"), "decoder", 64)


# -- modules and the recorder -----------------------------------------------------------------


def test_attention_module_owns_the_table_trains_it_and_saves_it() -> None:
    torch.manual_seed(0)
    program = "scaled_dot + graph_distance(5) ; rule(within, 4) | rule(diagonal) ; softmax"
    m = Attention(16, program, heads=4, kv_heads=2)
    table = m.program_params["mods__0__table"]
    assert isinstance(table, torch.nn.Parameter) and table.shape == (7, 4)
    x = torch.randn(2, 9, 16)
    dist = torch.randint(-1, 8, (2, 9, 9))
    m(x, distances=dist).square().sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0
    with torch.no_grad():
        table.add_(torch.randn(7, 4))
    again = Attention(16, program, heads=4, kv_heads=2)
    again.load_state_dict(m.state_dict())
    assert torch.equal(again.program_params["mods__0__table"], table)
    with torch.no_grad():
        torch.testing.assert_close(again(x, distances=dist), m(x, distances=dist))


@pytest.mark.parametrize("backend", [None, "sdpa", "tiled"])
def test_the_recorder_recomputes_the_weights_exactly(backend) -> None:
    torch.manual_seed(1)
    program = "scaled_dot + graph_distance(3) ; causal & rule(reachable) ; softmax"
    m = Attention(16, program, heads=4, kv_heads=2).eval()
    with torch.no_grad():
        m.program_params["mods__0__table"].normal_()
    x, dist = torch.randn(2, 8, 16), torch.randint(-1, 6, (2, 8, 8))
    with attnlab.record(m) as rec:
        out = m(x, distances=dist, backend=backend)
    call = rec.calls(0)[0]
    assert torch.equal(call.inputs["distances"], dist) and not call._heads_alike()
    q, k, v = attnlab.nn.attention.qkv(m, x, None, None, None)
    _, want = attention(q, k, v, program, distances=dist, backend="reference", return_weights=True,
                        params=m.program_params.as_params())
    torch.testing.assert_close(rec.weights(0), want, atol=1e-6, rtol=0)
    torch.testing.assert_close(rec.weights(0, head=[3, 1], rows=[5, 2]), want[:, [3, 1]][:, :, [5, 2]],
                               atol=1e-6, rtol=0)
    fused = m.to_out((want @ v.repeat_interleave(2, 1)).transpose(1, 2).flatten(2))
    torch.testing.assert_close(fused, out, atol=1e-5, rtol=1e-4)


def test_mixed_attention_passes_distances_to_each_group() -> None:
    torch.manual_seed(2)
    m = MixedAttention(16, [("scaled_dot + graph_distance(2) ; softmax", 2),
                            ("causal & rule(within, 1) ; sparsemax", 2)]).eval()
    with torch.no_grad():
        m.program_params[0]["mods__0__table"].normal_()
    x, dist = torch.randn(2, 6, 16), torch.randint(-1, 4, (2, 6, 6))
    with attnlab.record(m) as rec:
        m(x, distances=dist)
    w = rec.weights(0)
    assert w.shape == (2, 4, 6, 6)
    hidden = ~((dist >= 0) & (dist <= 1) & torch.ones(6, 6, dtype=torch.bool).tril())
    assert (w[:, 2:][hidden[:, None].expand(2, 2, 6, 6)] == 0).all()
    with pytest.raises(InputError, match="needs distances="):
        m(x)
