"""Each analysis against its formula written out by hand, element by element."""

from __future__ import annotations

import math

import pytest
import torch

import attnlab
from attnlab.errors import InputError
from attnlab.inspect.analyses import (
    entropy,
    flow,
    grad_attention,
    head_importance,
    mean_distance,
    rollout,
    zero_share,
)


def weights(b=2, h=3, n=5, m=5, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(b, h, n, m, generator=g, dtype=torch.float64)
    w[w < 0.3] = 0  # exact zeros, as sparse normalizers give
    w[0, 0, 1] = 0  # a row that sees nothing
    return w / w.sum(-1, keepdim=True).clamp(min=1e-300)


def test_entropy_is_the_mean_row_entropy_per_head() -> None:
    w = weights()
    for h in range(w.shape[1]):
        rows = [w[b, h, i] for b in range(w.shape[0]) for i in range(w.shape[2])
                if w[b, h, i].sum() > 0]
        want = sum(-sum(x * math.log(x) for x in row.tolist() if x > 0) for row in rows) / len(rows)
        assert entropy(w)[h].item() == pytest.approx(want, rel=1e-12)


def test_zero_share_counts_exact_zeros_among_visible_keys() -> None:
    w = weights()
    visible = torch.ones(5, 5, dtype=torch.bool).tril()  # causal
    for h in range(w.shape[1]):
        seen = [w[b, h, i, j].item() for b in range(2) for i in range(5) for j in range(5)
                if visible[i, j]]
        assert zero_share(w, visible)[h].item() == pytest.approx(
            sum(x == 0 for x in seen) / len(seen))
    assert zero_share(w)[0].item() == pytest.approx((w[:, 0] == 0).double().mean().item())


@pytest.mark.parametrize("n, m", [(5, 5), (3, 7)])
def test_mean_distance_weighs_each_key_by_its_distance(n, m) -> None:
    w = weights(n=n, m=m)
    for h in range(w.shape[1]):
        rows = [(b, i) for b in range(2) for i in range(n) if w[b, h, i].sum() > 0]
        want = sum(sum(w[b, h, i, j].item() * abs(i + m - n - j) for j in range(m))
                   for b, i in rows) / len(rows)
        assert mean_distance(w)[h].item() == pytest.approx(want, rel=1e-12)


def test_rollout_multiplies_residual_averaged_layers() -> None:
    layers = [weights(seed=s, h=2, n=4, m=4).clamp(min=0) + 0.01 for s in range(3)]
    layers = [w / w.sum(-1, keepdim=True) for w in layers]
    want = torch.eye(4, dtype=torch.float64).expand(2, 4, 4)
    for w in layers:  # first layer first: each later layer multiplies from the left
        a = 0.5 * torch.eye(4, dtype=torch.float64) + 0.5 * w.mean(1)
        want = (a / a.sum(-1, keepdim=True)) @ want
    torch.testing.assert_close(rollout(layers), want)
    torch.testing.assert_close(rollout(layers).sum(-1), torch.ones(2, 4, dtype=torch.float64))


def one_head(*rows: list[list[float]]) -> list[torch.Tensor]:
    """Layers of one example and one head, each given as rows (query i: its weights on keys j)."""
    return [torch.tensor(r, dtype=torch.float64)[None, None] for r in rows]


def test_flow_through_three_layers_is_the_min_cut_worked_by_hand() -> None:
    """Two tokens, three layers, no residual. From input 0 to output 0: input 0 sends 0.9 to node
    (1, 0) and 0.1 to (1, 1); (1, 0) passes on at most 0.2 + 0.2, (1, 1) all it gets; both of layer
    2 reach output 0 with 0.5 each. Cut {input 0, (1, 0)} from the rest: 0.1 + 0.2 + 0.2 = 0.5, and
    0.5 flows (0.4 via (1, 0), 0.1 via (1, 1)). Rollout, the sum over paths of products, is
    0.5·(0.2·0.9 + 0.8·0.1)·2 = 0.26."""
    a1 = [[0.9, 0.1], [0.1, 0.9]]
    a2 = [[0.2, 0.8], [0.2, 0.8]]
    a3 = [[0.5, 0.5], [0.5, 0.5]]
    layers = one_head(a1, a2, a3)
    raw = flow(layers, residual=0, normalize=False)
    assert raw[0, 0, 0].item() == pytest.approx(0.5)
    assert rollout(layers, residual=0)[0, 0, 0].item() == pytest.approx(0.26)
    torch.testing.assert_close(flow(layers, residual=0), raw / raw.sum(-1, keepdim=True))


def test_flow_through_one_or_two_layers_has_a_closed_form() -> None:
    """One layer: the edge itself. Two layers: the paths j → k → i share no edge, so the flow is
    Σ_k min(A1[k, j], A2[i, k]), at least rollout's Σ_k A1[k, j]·A2[i, k] (each factor ≤ 1)."""
    ws = [weights(seed=s, b=2, h=2, n=4, m=4) for s in (3, 4)]
    ws[0][0, 0, 1] = 0.25  # the row that saw nothing sees every key
    a = []  # what rollout multiplies, layer by layer, written out
    for w in ws:
        mixed = 0.5 * torch.eye(4, dtype=torch.float64) + 0.5 * w.mean(1)
        a.append(mixed / mixed.sum(-1, keepdim=True))
    torch.testing.assert_close(flow(ws[:1], normalize=False), a[0])
    got = flow(ws, normalize=False)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                want = sum(min(a[0][b, k, j].item(), a[1][b, i, k].item()) for k in range(4))
                assert got[b, i, j].item() == pytest.approx(want, rel=1e-9)
    assert (got >= rollout(ws) - 1e-12).all()


def test_flow_lies_between_the_widest_path_and_the_cuts_at_either_end() -> None:
    """For any depth: at least the bottleneck of the widest single path from j to i, at most what
    can leave input j (its column of the first layer) and what can reach output i (its row of the
    last layer, which sums to 1)."""
    ws = [weights(seed=s, b=1, h=2, n=3, m=3) for s in (5, 6, 7)]
    ws[0][0, 0, 1] = 1 / 3
    got = flow(ws, normalize=False)[0]
    a = []
    for w in ws:
        mixed = 0.5 * torch.eye(3, dtype=torch.float64) + 0.5 * w[0].mean(0)
        a.append((mixed / mixed.sum(-1, keepdim=True)).tolist())
    for i in range(3):
        for j in range(3):
            widest = max(min(a[0][k][j], a[1][m][k], a[2][i][m]) for k in range(3) for m in range(3))
            assert widest - 1e-12 <= got[i, j].item()
            assert got[i, j].item() <= min(sum(a[0][k][j] for k in range(3)), 1) + 1e-12


@pytest.mark.parametrize("depth", [3, 4])
def test_flow_is_at_least_rollout(depth) -> None:
    """Rollout[i, j] is the sum over paths j → i of the product of their edges. Any cut C meets
    every path: grouping paths by an edge e = (a → b) of C they cross, their sum is at most
    w_e · (A_L⋯)[i, b] · (⋯A_1)[a, j] ≤ w_e, entries of row-stochastic products being ≤ 1. So
    rollout ≤ every cut's capacity, the smallest of which is the max flow."""
    ws = [weights(seed=10 + s, b=2, h=2, n=5, m=5) ** 3 for s in range(depth)]
    for w in ws:
        w[0, 0, 1] = 0.2
    assert (flow(ws, normalize=False) >= rollout(ws) - 1e-12).all()


def test_flow_refuses_long_inputs_and_names_rollout() -> None:
    w = torch.full((1, 1, 65, 65), 1 / 65)
    with pytest.raises(InputError, match="use rollout"):
        flow([w, w])
    with pytest.raises(InputError, match="flow is for self-attention"):
        flow([torch.ones(1, 1, 2, 3)])


def test_analyses_read_a_recorder() -> None:
    torch.manual_seed(0)
    m = attnlab.nn.Attention(16, "causal & window(2) ; sparsemax", heads=2).eval()
    with attnlab.record(m) as rec:
        m(torch.randn(1, 8, 16))
    w = rec.weights(0)
    assert (mean_distance(w) <= 2).all() and (entropy(w) >= 0).all()
    assert rollout([w, w]).shape == (1, 8, 8)


def test_mistakes_are_one_clear_error() -> None:
    with pytest.raises(InputError, match="batch, heads, queries, keys"):
        entropy(torch.ones(3, 3))
    with pytest.raises(InputError, match="self-attention"):
        rollout([torch.ones(1, 1, 2, 3)])
    with pytest.raises(InputError, match="at least one layer"):
        rollout([])


def test_grad_attention_is_chefer_rule_layer_by_layer() -> None:
    ws = [weights(seed=s) for s in (1, 2)]
    gs = [torch.randn(w.shape, generator=torch.Generator().manual_seed(9 + i), dtype=w.dtype)
          for i, w in enumerate(ws)]
    got = grad_attention(ws, gs)
    b, h, n, _ = ws[0].shape
    for bi in range(b):
        r = [[float(i == j) for j in range(n)] for i in range(n)]
        for w, g in zip(ws, gs, strict=True):
            a = [[sum(max(g[bi, k, i, j].item() * w[bi, k, i, j].item(), 0) for k in range(h)) / h
                  for j in range(n)] for i in range(n)]
            r = [[r[i][j] + sum(a[i][t] * r[t][j] for t in range(n)) for j in range(n)]
                 for i in range(n)]
        assert got[bi].flatten().tolist() == pytest.approx([x for row in r for x in row], rel=1e-12)
    with pytest.raises(InputError, match="one gradient per layer"):
        grad_attention(ws, gs[:1])


def test_head_importance_is_the_mean_absolute_mask_gradient_normalised_per_layer() -> None:
    g = [torch.tensor([[1.0, -2.0], [-3.0, 0.0]]), torch.tensor([[0.5, 0.5], [0.5, -0.5]])]
    raw = head_importance(g, normalize=False)
    assert raw.tolist() == [[2.0, 1.0], [0.5, 0.5]]
    norm = head_importance(g)
    assert norm[0].tolist() == pytest.approx([2 / math.sqrt(5), 1 / math.sqrt(5)])
    assert norm[1].tolist() == pytest.approx([1 / math.sqrt(2)] * 2)
