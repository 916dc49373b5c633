"""Switching heads off with attnlab.inspect.heads.masked."""

from __future__ import annotations

import pytest
import torch

from attnlab.errors import InputError
from attnlab.inspect.heads import masked
from attnlab.models.decoder_lm import DecoderLM, DecoderLMConfig
from attnlab.nn import Attention, MixedAttention


def test_a_masked_head_contributes_nothing_and_the_mask_goes_away() -> None:
    torch.manual_seed(0)
    m = Attention(16, "causal ; softmax", heads=4).eval()
    x = torch.randn(2, 5, 16)
    seen = []  # what to_out reads: the heads' outputs side by side, (B, N, heads·head_dim)
    m.to_out.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
    with torch.no_grad():
        plain = m(x)
        with masked(m, {0: [1, 3]}):
            off = m(x)
    heads_plain, heads_off = (t.unflatten(-1, (4, 4)) for t in seen)
    assert (heads_off[:, :, [1, 3]] == 0).all()
    torch.testing.assert_close(heads_off[:, :, [0, 2]], heads_plain[:, :, [0, 2]])
    torch.testing.assert_close(off, m.to_out(heads_off.flatten(2)))
    assert m.head_mask is None
    torch.testing.assert_close(m(x), plain)


def test_masks_reach_layers_by_name_and_index_in_models_and_groups() -> None:
    torch.manual_seed(0)
    model = DecoderLM(DecoderLMConfig(vocab_size=20, d_model=16, layers=2, heads=2)).eval()
    tokens = torch.randint(0, 20, (2, 6))
    with torch.no_grad():
        plain = model(tokens)
        with masked(model, {0: [0], "blocks.1.attention": []}):
            assert not torch.allclose(model(tokens), plain)
    mixed = MixedAttention(24, [("causal ; softmax", 1), ("causal ; sparsemax", 2)])
    with masked(mixed, {0: [0, 1, 2]}), torch.no_grad():
        torch.testing.assert_close(mixed(torch.randn(1, 3, 24)),
                                   mixed.to_out.bias.expand(1, 3, 24))


def test_mistakes_name_what_exists() -> None:
    m = Attention(16, "causal", heads=2)
    with pytest.raises(InputError, match=r"heads 0\.\.1"), masked(m, {0: [2]}):
        pass
    with pytest.raises(InputError, match="out of range"), masked(m, {4: [0]}):
        pass
    with pytest.raises(InputError, match="no attention layer 'x'"), masked(m, {"x": [0]}):
        pass
