"""Hypothesis strategies that generate valid attention programs and mask expressions."""

from __future__ import annotations

from hypothesis import strategies as st

from attnlab import lang as S

floats = st.floats(0.05, 100.0, allow_nan=False, allow_infinity=False)


def mask_leaves(data_masks: bool = True) -> st.SearchStrategy[S.Mask]:
    structured = [
        st.just(S.Causal()),
        st.builds(S.Window, st.integers(1, 40)),
        st.builds(S.Prefix, st.integers(1, 30)),
        st.builds(S.GlobalTokens, st.integers(1, 6)),
        st.builds(S.Dilated, st.integers(1, 5), st.integers(1, 4)),
        st.builds(S.RandomBlocks, st.floats(0, 1), st.integers(1, 12), st.integers(0, 999)),
        # named rules that read positions only, with exact block summaries
        st.just(S.Rule("diagonal")),
        st.builds(S.Rule, st.just("chunk"), st.integers(1, 9)),
        st.builds(S.Rule, st.just("summary"), st.integers(1, 9)),
    ]
    data = [st.just(S.Document()), st.just(S.Padding()), st.just(S.Graph()),
            st.builds(S.Rule, st.sampled_from(["within", "hops"]), st.integers(0, 4)),
            st.just(S.Rule("reachable"))]
    return st.one_of(structured + (data if data_masks else []))


def masks(data_masks: bool = True, leaves: st.SearchStrategy | None = None):
    leaves = leaves or mask_leaves(data_masks)

    def extend(children):
        return st.one_of(
            st.builds(S.Not, children),
            st.lists(children, min_size=2, max_size=3).map(lambda c: S.And(tuple(c))),
            st.lists(children, min_size=2, max_size=3).map(lambda c: S.Or(tuple(c))),
        )

    return st.recursive(leaves, extend, max_leaves=5)


scores = st.one_of(
    st.just(S.Dot()),
    st.builds(S.ScaledDot, st.none() | floats),
    st.builds(S.Additive, st.none() | st.integers(1, 32)),
    st.just(S.General()),
    st.builds(S.Cosine, st.none() | floats),
)

mods = st.one_of(
    st.just(S.Alibi()),
    st.builds(S.RelativeBias, st.sampled_from([8, 16, 32, 64]), st.integers(64, 256), st.booleans()),
    st.builds(S.Softcap, floats),
    st.builds(S.Temperature, floats),
    st.just(S.Bias()),
    st.builds(S.GraphDistance, st.integers(1, 6)),
)

normalizers = st.one_of(
    st.just(S.Softmax()),
    st.just(S.Sparsemax()),
    st.builds(S.Entmax, st.floats(1.01, 4.0)),
    st.builds(S.TopK, st.integers(1, 16)),
    st.builds(S.Gumbel, floats, st.booleans()),
    st.builds(S.Sigmoid, st.none() | st.floats(-10, 10)),
    st.just(S.Relu()),
)


@st.composite
def layouts(draw) -> S.Layout:
    heads = draw(st.none() | st.integers(1, 16))
    kv = None
    if heads is not None and draw(st.booleans()):
        kv = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0]))
    return S.Layout(heads, kv, draw(st.none() | st.integers(1, 128)),
                    draw(st.sampled_from([None, True, False])))


@st.composite
def programs(draw, data_masks: bool = True) -> S.Program:
    layout = draw(layouts())
    dropout = draw(st.sampled_from([0.0, 0.1]) | st.floats(0, 0.9))
    kind = draw(st.sampled_from(["exact", "exact", "exact", "kernel", "lowrank"]))
    if kind == "lowrank":
        k = draw(st.integers(1, 64))
        approx = S.LowRank(k, draw(st.integers(k, 8192)))
        mask = draw(st.sampled_from([None, S.Padding()]))
        return S.Program(mask=mask, approximation=approx, layout=layout, dropout=dropout)
    mask = draw(st.none() | masks(data_masks))
    if kind == "kernel":
        approx = draw(st.builds(S.Linear, st.sampled_from(["elu1", "relu"]))
                      | st.builds(S.Favor, st.integers(1, 512), st.booleans(), st.integers(0, 99)))
        return S.Program(mask=mask, approximation=approx, layout=layout, dropout=dropout)
    return S.Program(draw(scores), tuple(draw(st.lists(mods, max_size=3))), mask,
                     draw(normalizers), None, layout, dropout)
