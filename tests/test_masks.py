"""Masks: dense semantics against loop-written definitions, and exact block summaries."""

from __future__ import annotations

import re
import time

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnlab import lang as S
from attnlab.lang.masks import EMPTY, FULL, PARTIAL, MaskInputs
from strategies import mask_leaves, masks


def random_inputs(batch: int, heads: int, n: int, m: int, seed: int) -> MaskInputs:
    g = torch.Generator().manual_seed(seed)
    segments = torch.sort(torch.randint(0, 3, (batch, m), generator=g), dim=1).values
    lengths = torch.randint(0, m + 1, (batch,), generator=g)
    graph = torch.rand(batch, n, m, generator=g) < 0.3
    distances = torch.randint(-1, 6, (batch, n, m), generator=g)
    return MaskInputs.build(batch, heads, n, m, segments=segments, key_lengths=lengths, graph=graph,
                            distances=distances)


def by_definition(mask: S.Mask, inp: MaskInputs, b: int, h: int, i: int, j: int) -> bool:
    """The issue's definition of each mask, one (query, key) pair at a time."""
    pos = i + inp.m - inp.n  # bottom-right alignment
    if isinstance(mask, S.And):
        return all(by_definition(c, inp, b, h, i, j) for c in mask.children)
    if isinstance(mask, S.Or):
        return any(by_definition(c, inp, b, h, i, j) for c in mask.children)
    if isinstance(mask, S.Not):
        return not by_definition(mask.child, inp, b, h, i, j)
    if isinstance(mask, S.Causal):
        return j <= pos
    if isinstance(mask, S.Window):
        return abs(pos - j) <= mask.w
    if isinstance(mask, S.Prefix):
        return j < mask.n
    if isinstance(mask, S.GlobalTokens):
        return pos < mask.k or j < mask.k
    if isinstance(mask, S.Dilated):
        return abs(pos - j) <= mask.w * mask.d and (pos - j) % mask.d == 0
    if isinstance(mask, S.RandomBlocks):
        return bool(mask.tile_visible(torch.tensor(pos // mask.block), torch.tensor(j // mask.block)))
    if isinstance(mask, S.Document):
        return bool(inp.kv_segments[b, pos] == inp.kv_segments[b, j])
    if isinstance(mask, S.Padding):
        return bool(inp.key_keep[b, j])
    if isinstance(mask, S.Graph):
        return bool(inp.graph[b, i, j])
    if isinstance(mask, S.Rule):
        return _rule_by_definition(mask.rule, mask.n, int(inp.distances[b, i, j]), pos, j)
    raise AssertionError(mask)


def _rule_by_definition(name: str, n: int | None, dist: int, pos: int, j: int) -> bool:
    """The built-in named rules (attnlab.priors.rules), as their docstrings define them."""
    if name == "chunk":
        return pos // n == j // n
    if name == "summary":
        return j % n == n - 1
    return {"within": 0 <= dist <= (n or 0), "hops": dist == n, "reachable": dist >= 0,
            "diagonal": j == pos}[name]


@settings(max_examples=150, deadline=None)
@given(masks(), st.integers(1, 9), st.integers(0, 6), st.integers(0, 2**31 - 1))
def test_dense_matches_definition(mask: S.Mask, n: int, extra: int, seed: int) -> None:
    m = n + extra  # queries never outnumber keys in the alignment the issue defines
    inp = random_inputs(2, 2, n, m, seed)
    dense = mask.dense(inp).expand(2, 2, n, m)
    for b in range(2):
        for i in range(n):
            for j in range(m):
                assert bool(dense[b, 0, i, j]) == by_definition(mask, inp, b, 0, i, j), (b, i, j)


def blocks_by_slicing(dense: torch.Tensor, bq: int, bk: int) -> torch.Tensor:
    """Expected states, computed block by block from the dense mask."""
    b, h, n, m = dense.shape
    out = torch.empty(b, h, -(-n // bq), -(-m // bk), dtype=torch.int8)
    for qi in range(out.shape[2]):
        for ki in range(out.shape[3]):
            tile = dense[:, :, qi * bq:(qi + 1) * bq, ki * bk:(ki + 1) * bk].flatten(2)
            out[:, :, qi, ki] = torch.where(tile.all(-1), FULL, torch.where(tile.any(-1), PARTIAL,
                                                                              EMPTY))
    return out


@settings(max_examples=400, deadline=None)
@given(masks(), st.integers(1, 48), st.integers(0, 20), st.integers(2, 17), st.integers(2, 17),
       st.integers(1, 2), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_block_summary_agrees_with_dense(mask, n, extra, bq, bk, batch, heads, seed) -> None:
    inp = random_inputs(batch, heads, n, n + extra, seed)
    dense = mask.dense(inp).expand(batch, heads, inp.n, inp.m)
    summary = mask.block_summary(inp, (bq, bk))
    assert torch.equal(summary.state.expand(batch, heads, -1, -1), blocks_by_slicing(dense, bq, bk))
    assert mask.density(inp, block=bq) == pytest.approx(dense.double().mean().item(), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(mask_leaves(data_masks=False), st.integers(1, 64), st.integers(0, 64))
def test_structured_leaves_summarise_without_dense(mask, n, extra) -> None:
    inp = MaskInputs.build(1, 1, n, n + extra)
    assert mask._block_state(*_bounds(inp, 8, 8), inp) is not None


def _bounds(inp: MaskInputs, bq: int, bk: int):
    q0 = torch.arange(0, inp.n, bq).view(-1, 1)
    k0 = torch.arange(0, inp.m, bk).view(1, -1)
    return q0, (q0 + bq).clamp(max=inp.n) - 1, k0, (k0 + bk).clamp(max=inp.m) - 1


def test_long_sequences_never_build_the_dense_matrix(monkeypatch) -> None:
    mask = S.Causal() & (S.Window(256) | S.GlobalTokens(4)) | S.RandomBlocks(0.02, block=128)
    inp = MaskInputs.build(1, 8, 65536, 65536)

    def no_dense(self, inp):
        raise AssertionError("built an N×M matrix")

    monkeypatch.setattr(S.Mask, "dense", no_dense)
    start = time.perf_counter()
    summary = mask.block_summary(inp, 128)
    density = mask.density(inp, block=128)
    assert time.perf_counter() - start < 30
    assert summary.state.shape == (1, 1, 512, 512)
    assert summary.fraction_skippable > 0.9
    assert 0.004 < density < 0.05


def test_causal_alignment_for_kv_cache() -> None:
    inp = MaskInputs.build(1, 1, 2, 5)  # two new queries at positions 3 and 4
    dense = S.Causal().dense(inp)[0, 0]
    assert dense.tolist() == [[True] * 4 + [False], [True] * 5]


def test_random_blocks_do_not_depend_on_length() -> None:
    mask = S.RandomBlocks(0.3, block=4, seed=7)
    short = mask.dense(MaskInputs.build(1, 1, 16, 16))[0, 0]
    long = mask.dense(MaskInputs.build(1, 1, 64, 64))[0, 0]
    assert torch.equal(short, long[:16, :16])
    assert 0.1 < long.float().mean() < 0.5
    other = S.RandomBlocks(0.3, block=4, seed=8).dense(MaskInputs.build(1, 1, 64, 64))[0, 0]
    assert not torch.equal(long, other)


@pytest.mark.parametrize("n, m", [(37, 37), (20, 53), (53, 20), (1, 9)])
@pytest.mark.parametrize("block, seed", [(4, 0), (7, 3), (16, 11)])
def test_random_blocks_look_up_the_hash_of_each_pairs_tile(n: int, m: int, block: int,
                                                           seed: int) -> None:
    """visible() reads a table of tiles; each pair must get its own tile's hash, N ≠ M included."""
    mask, inp = S.RandomBlocks(0.4, block=block, seed=seed), MaskInputs.build(1, 1, n, m)
    q, kv = torch.arange(n).view(-1, 1), torch.arange(m).view(1, -1)
    hashed = mask.tile_visible((q + m - n) // block, kv // block)
    assert torch.equal(mask.dense(inp)[0, 0], hashed)
    picks = torch.randint(0, n, (5, 3, 1)), torch.randint(0, m, (5, 1, 4))  # as evaluate_blocks asks
    assert torch.equal(mask.visible(None, None, *picks, inp),
                       mask.tile_visible((picks[0] + m - n) // block, picks[1] // block))


def test_mask_mod_has_the_flex_signature() -> None:
    inp = MaskInputs.build(1, 1, 8, 8)
    mod = (S.Causal() & S.Window(2)).mask_mod(inp)
    assert bool(mod(torch.tensor(0), torch.tensor(0), torch.tensor(5), torch.tensor(3)))
    assert not bool(mod(torch.tensor(0), torch.tensor(0), torch.tensor(5), torch.tensor(2)))


def test_user_predicates_are_evaluated_and_summarised() -> None:
    mask = S.Predicate(lambda b, h, q, kv: (q + kv) % 3 == 0) | S.Causal()
    inp = MaskInputs.build(1, 1, 10, 10)
    dense = mask.dense(inp)
    assert bool(dense[0, 0, 0, 3]) and not bool(dense[0, 0, 0, 4])
    assert torch.equal(mask.block_summary(inp, 4).state, blocks_by_slicing(dense, 4, 4))


@pytest.mark.parametrize("kwargs, message", [
    ({"segments": torch.zeros(2, 7)}, "segments must have shape"),
    ({"key_lengths": torch.tensor([3, 9])}, "key_lengths must lie in [0, 8]"),
    ({"key_lengths": torch.tensor([3, 4]), "key_padding_mask": torch.zeros(2, 8, dtype=torch.bool)},
     "not both"),
    ({"key_padding_mask": torch.zeros(2, 8)}, "must be bool"),
    ({"graph": torch.ones(3, 8, 8, dtype=torch.bool)}, "graph must have shape"),
])
def test_bad_call_time_inputs(kwargs, message) -> None:
    from attnlab import InputError

    with pytest.raises(InputError, match=re.escape(message)):
        MaskInputs.build(2, 1, 8, 8, **kwargs)
