"""Frozen plans: a frozen model computes what it did unfrozen, with no data-dependent choice
left, so torch.compile(fullgraph=True) and torch.export trace it."""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab.models import DecoderLM, DecoderLMConfig, EncoderClassifier, EncoderClassifierConfig
from attnlab.nn.attention import Attention


def encoder(program: str, pad_id: int | None) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = EncoderClassifier(EncoderClassifierConfig(50, 3, d_model=32, layers=2, heads=2, programs=program,
                                                      pad_id=pad_id, max_len=32)).eval()
    tokens = torch.randint(1, 50, (2, 20))
    if pad_id is not None:
        tokens[1, 12:] = pad_id
    return model, tokens


def decoder(program: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = DecoderLM(DecoderLMConfig(50, d_model=32, layers=2, heads=2, programs=program,
                                      max_len=32)).eval()
    return model, torch.randint(0, 50, (2, 20))


MODELS = {  # name -> (model, tokens), the backend its attention is frozen to
    "encoder-padding-sdpa": (lambda: encoder("scaled_dot ; softmax", pad_id=0), "sdpa"),
    "decoder-causal-sdpa": (lambda: decoder("causal"), "sdpa"),
    "encoder-entmax-tiled": (lambda: encoder("window(4) ; entmax(1.5)", pad_id=None), "tiled"),
    "decoder-window-tiled": (lambda: decoder("alibi ; causal & window(4) ; entmax(1.5)"), "tiled"),
}


@pytest.mark.parametrize("name", MODELS)
def test_frozen_models_equal_unfrozen_compile_and_export(name) -> None:
    make, backend = MODELS[name]
    model, tokens = make()
    with torch.no_grad():
        want = model(tokens)
        attnlab.freeze(model, tokens)
        assert {m.frozen for m in model.modules() if isinstance(m, Attention)} == {(backend,)}
        torch.testing.assert_close(model(tokens), want, rtol=0, atol=0)
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(tokens), want, rtol=1e-5, atol=1e-5)
        exported = torch.export.export(model, (tokens,))
        torch.testing.assert_close(exported.module()(tokens), want, rtol=1e-5, atol=1e-5)


def test_freeze_needs_attention_modules_and_pins_mixtures_per_group() -> None:
    from attnlab.nn.blocks import MixedAttention

    with pytest.raises(attnlab.InputError, match="no attnlab attention modules"):
        attnlab.freeze(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    mixed = MixedAttention(16, [("causal", 2), ("causal & window(3) ; sparsemax", 2)])
    x = torch.randn(1, 10, 16)
    attnlab.freeze(mixed, x)
    assert mixed.frozen == ("sdpa", "tiled")
    torch.testing.assert_close(mixed(x), mixed(x))


def test_a_model_frozen_for_training_compiles_forward_and_backward() -> None:
    make, _ = MODELS["decoder-window-tiled"]
    model, tokens = make()
    model.train()
    attnlab.freeze(model, tokens)  # with gradients: tiled's layouts for backward are pinned
    params = list(model.parameters())
    want = torch.autograd.grad(model(tokens).sum(), params)
    torch._dynamo.reset()
    out = torch.compile(model, fullgraph=True, backend="eager")(tokens)
    for got, w in zip(torch.autograd.grad(out.sum(), params), want, strict=True):
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)
