"""What recorded attention weights say, one measure per function.

Each takes weights (B, H, N, M) as `Recorder.weights` returns them (or a list of them, one per
layer) and returns one number per head, or a map; rows that attend to nothing (every key
hidden: an all-zero row) are left out of per-head means.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from attnlab.errors import InputError


def _check(w: Tensor) -> None:
    if not isinstance(w, Tensor) or w.dim() != 4:
        raise InputError(f"attention weights must be a (batch, heads, queries, keys) tensor, got "
                         f"{tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__}")


def _per_head_mean(values: Tensor, live: Tensor) -> Tensor:
    """Mean over batch and live query rows of values (B, H, N), per head: (H,)."""
    live = live.to(values.dtype)
    return (values * live).sum((0, 2)) / live.sum((0, 2)).clamp(min=1)


def entropy(w: Tensor) -> Tensor:
    """(H,) mean entropy in nats of each query's weights, -Σ_j w_ij log w_ij (0 log 0 = 0): low
    for a head that looks at few keys. As in Clark et al. 2019, "What Does BERT Look At?", §3."""
    _check(w)
    terms = torch.where(w > 0, -w * w.clamp(min=torch.finfo(w.dtype).tiny).log(), 0)
    return _per_head_mean(terms.sum(-1), w.sum(-1) > 0)


def zero_share(w: Tensor, visible: Tensor | None = None) -> Tensor:
    """(H,) share of exactly-zero weights among the keys each query can see (`visible`, a bool
    tensor broadcastable to w; all keys when None): what sparse normalizers (sparsemax, entmax,
    top-k) buy. Correia et al. 2019, "Adaptively Sparse Transformers", §5."""
    _check(w)
    seen = torch.ones_like(w, dtype=torch.bool) if visible is None else visible.expand_as(w)
    zeros = ((w == 0) & seen).sum((0, 2, 3)).to(w.dtype)
    return zeros / seen.sum((0, 2, 3)).clamp(min=1).to(w.dtype)


def mean_distance(w: Tensor) -> Tensor:
    """(H,) mean attention distance in positions, Σ_j w_ij |pos(i) - j|, averaged over queries:
    the "attention distance" of Dosovitskiy et al. 2021 (ViT), Fig. 7, along the sequence. With
    fewer queries than keys, query i sits at key position i + M - N (as in decoding)."""
    _check(w)
    n, m = w.shape[-2:]
    queries = torch.arange(n, device=w.device) + (m - n if n <= m else 0)
    distance = (queries[:, None] - torch.arange(m, device=w.device)[None, :]).abs().to(w.dtype)
    return _per_head_mean((w * distance).sum(-1), w.sum(-1) > 0)


def rollout(layers: Sequence[Tensor], residual: float = 0.5) -> Tensor:
    """(B, N, N) attention rollout: how much each output position draws on each input token
    through all layers, Π_l (residual·I + (1 - residual)·mean_h W_l), rows renormalised, first
    layer rightmost. Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", §3.
    Self-attention only: every layer's weights must be (B, H, N, N)."""
    result = None
    for a in _attention_graph(layers, residual, "rollout"):
        result = a if result is None else a @ result
    return result


def flow(layers: Sequence[Tensor], residual: float = 0.5, max_tokens: int = 64,
         normalize: bool = True) -> Tensor:
    """(B, N, N) attention flow: entry [b, i, j] is the maximum flow from input token j (node j of
    layer 0) to output position i (node i of layer L) in the graph of L + 1 layers of N nodes whose
    edge from node j of layer l - 1 to node i of layer l has capacity A_l[i, j], A_l the
    residual-mixed, head-averaged, row-normalised weights that `rollout` multiplies. With
    `normalize`, each row is divided by its sum, as the paper's code does, so it reads like a row
    of rollout. Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", §3. Unnormalised,
    it is never below rollout: every cut bounds rollout's sum over paths.

    N² max-flow problems per example: inputs longer than `max_tokens` are refused (use rollout)."""
    graphs = _attention_graph(layers, residual, "flow")
    n = graphs[0].shape[-1]
    if n > max_tokens:
        raise InputError(f"attention flow solves {n}² max-flow problems per example; {n} tokens is "
                         f"over max_tokens={max_tokens}: use rollout, or raise max_tokens")
    capacities = torch.stack(graphs, 1).double().cpu()  # (B, L, N, N)
    # one layer: a single edge from each input to each output, whose capacity is the flow
    result = (capacities[:, 0] if len(graphs) == 1 else
              torch.stack([_max_flows(c) for c in capacities]))
    if normalize:
        result = result / result.sum(-1, keepdim=True).clamp(min=torch.finfo(result.dtype).tiny)
    return result.to(device=graphs[0].device, dtype=graphs[0].dtype)


def _max_flows(capacities: Tensor) -> Tensor:
    """(N, N) max flow from each input token j to each output position i through L ≥ 2 layers
    of edge capacities (L, N, N). The edges between layers 1 and L - 1 stay; those leaving input
    j and those reaching output i change with (i, j): no other input or output node can carry
    flow from j to i."""
    import networkx as nx
    from networkx.algorithms.flow import boykov_kolmogorov  # the fastest of networkx's here

    layers, n, _ = capacities.shape
    graph = nx.DiGraph()
    for layer, a in enumerate(capacities[1:-1], 2):
        for i, j in a.nonzero().tolist():  # a zero weight is no edge at all
            graph.add_edge((layer - 1, j), (layer, i), capacity=a[i, j].item())
    first, last = capacities[0].tolist(), capacities[-1].tolist()
    result = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            graph.add_edges_from(("input", (1, k), {"capacity": first[k][j]}) for k in range(n))
            graph.add_edges_from(((layers - 1, k), "output", {"capacity": last[i][k]})
                                 for k in range(n))
            result[i, j] = nx.maximum_flow_value(graph, "input", "output",
                                                 flow_func=boykov_kolmogorov)
    return result


def _attention_graph(layers: Sequence[Tensor], residual: float, name: str) -> list[Tensor]:
    """Per layer, (B, N, N) residual·I + (1 - residual)·mean_h W, rows renormalised: the token
    graph rollout multiplies and flow pushes through."""
    if not layers:
        raise InputError(f"{name} needs the weights of at least one layer")
    graphs = []
    for w in layers:
        _check(w)
        n, m = w.shape[-2:]
        if n != m or (graphs and graphs[0].shape[-1] != n):
            raise InputError(f"{name} is for self-attention over one sequence: got weights of "
                             f"shape {tuple(w.shape)}")
        a = residual * torch.eye(n, dtype=w.dtype, device=w.device) + (1 - residual) * w.mean(1)
        graphs.append(a / a.sum(-1, keepdim=True))
    return graphs


def grad_attention(layers: Sequence[Tensor], grads: Sequence[Tensor]) -> Tensor:
    """(B, N, N) gradient-weighted attention relevance: R = I, then for each layer from the first,
    R ← R + Ā·R with Ā = mean_h (∇A ⊙ A)⁺, the head average of the attention weights times the
    gradient of the loss with respect to them, negatives clipped. Chefer, Gur & Wolf 2021,
    "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", eqs. 5-6 (self-attention). `grads` as `Recorder.weight_grads` gives them."""
    if not layers or len(layers) != len(grads):
        raise InputError(f"grad_attention needs one gradient per layer of weights: got "
                         f"{len(layers)} layer(s) and {len(grads)} gradient(s)")
    result = None
    for w, g in zip(layers, grads, strict=True):
        _check(w)
        n, m = w.shape[-2:]
        if n != m or g.shape != w.shape:
            raise InputError(f"grad_attention is for self-attention: weights {tuple(w.shape)} and "
                             f"gradients {tuple(g.shape)} must both be (B, H, N, N)")
        if result is None:
            result = torch.eye(n, dtype=w.dtype, device=w.device).expand(w.shape[0], n, n)
        result = result + (g * w).clamp(min=0).mean(1) @ result
    return result


def head_importance(head_grads: Sequence[Tensor], normalize: bool = True) -> Tensor:
    """(L, H) importance of each head: the mean over examples of |∂loss/∂ξ_h|, ξ_h a mask on the
    head's output (`Recorder.head_grads`, one (B, H) tensor per layer, or several batches of one
    layer concatenated on B); with `normalize`, each layer's scores divided by their l2 norm.
    Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?", §4.1, eq. 2."""
    if not head_grads:
        raise InputError("head_importance needs the head gradients of at least one layer")
    scores = torch.stack([g.abs().mean(0) for g in head_grads])
    if normalize:
        scores = scores / scores.norm(dim=1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
    return scores


__all__ = ["entropy", "flow", "grad_attention", "head_importance", "mean_distance", "rollout", "zero_share"]
