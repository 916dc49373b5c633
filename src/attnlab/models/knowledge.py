"""Knowledge a model turns into attention's call-time inputs, from the inputs it reads.

A model built with `prior={kind: ..., ...}` holds the module `KNOWLEDGE[kind]` names and calls
it on each batch: it returns what the attention programs read at call time (`distances=`,
`graph=`) and, optionally, `positions` for the position table. The kinds are registered by
`attnlab.priors` (ListOps parse trees, item genres, K-BERT's sentence trees), so that a saved
model is rebuilt from its config alone.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from attnlab.errors import ConfigError, did_you_mean

KNOWLEDGE: dict[str, type[nn.Module]] = {}
ATTENTION_INPUTS = ("distances", "graph")  # what a prior may hand every attention layer


def knowledge(kind: str):
    """Register a module class as the prior `kind`: `module(tokens, pad) -> {input: tensor}`."""
    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if kind in KNOWLEDGE:
            raise RuntimeError(f"prior kind {kind!r} registered twice")
        KNOWLEDGE[kind] = cls
        cls.kind = kind
        return cls
    return register


def build_prior(spec: dict[str, Any] | None) -> nn.Module | None:
    """The prior module a model config's `prior` names (None: no prior)."""
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
        raise ConfigError(f"prior must be a mapping with a kind, e.g. {{kind: listops_tree}}; got "
                          f"{spec!r}")
    args = {k: v for k, v in spec.items() if k != "kind"}
    kind = spec["kind"]
    if kind not in KNOWLEDGE:  # importing attnlab registers attnlab.priors' kinds
        raise ConfigError(f"prior: unknown kind {kind!r}{did_you_mean(kind, KNOWLEDGE)} (kinds: "
                          f"{', '.join(sorted(KNOWLEDGE))})")
    try:
        return KNOWLEDGE[kind](**args)
    except TypeError as e:
        raise ConfigError(f"prior {kind}: {e}") from None


def prior_inputs(prior: nn.Module | None, tokens: Tensor, pad: Tensor | None
                 ) -> tuple[dict[str, Tensor], Tensor | None]:
    """(what the attention layers read, positions for the table) from the prior, for one batch;
    ({}, None) without a prior."""
    if prior is None:
        return {}, None
    given = dict(prior(tokens, pad))
    positions = given.pop("positions", None)
    unknown = set(given) - set(ATTENTION_INPUTS)
    if unknown:
        raise ConfigError(f"a prior gave {', '.join(sorted(unknown))}; attention reads "
                          f"{', '.join(ATTENTION_INPUTS)}")
    return given, positions


def check_prior_read(prior: nn.Module | None, layers: list[nn.Module]) -> None:
    """ConfigError unless some attention layer reads what the prior gives (`prior.gives`)."""
    if prior is None:
        return
    read = frozenset().union(*(getattr(m, "inputs_read", frozenset()) for m in layers))
    unread = [g for g in prior.gives if g not in read]
    if unread:
        hint = {"distances": "a score mod graph_distance(…) or a mask rule(within, …)",
                "graph": "the mask graph"}
        raise ConfigError(f"prior {prior.kind} gives {', '.join(unread)}= but no attention program "
                          f"reads it: add {hint.get(unread[0], unread[0])} to the attention")
