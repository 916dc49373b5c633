"""attnlab.hf passes what a model adds to its attention scores on to the program: Gemma 2's softcap
(with its per-layer sliding window) and T5's relative position bias, composed with the program's own
mods; gpt-oss's attention sinks are refused with one line. All on tiny random models, checked
against the models' eager attention on padded batches."""

from __future__ import annotations

import pytest
import torch

import attnlab.hf as hf
from attnlab.errors import InputError

transformers = pytest.importorskip("transformers")


def tiny_gemma2(**extra):
    """4 layers alternating sliding (window 4) and full; softcap 1 and scaling 1 so the cap bites."""
    torch.manual_seed(0)
    config = transformers.Gemma2Config(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=1,
        attn_logit_softcapping=1.0, initializer_range=0.05, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, **extra)
    model = transformers.Gemma2ForCausalLM(config).eval()
    model.set_attn_implementation("eager")
    return model


def tiny_t5():
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    model.set_attn_implementation("eager")
    return model


def padded(pads, left: bool, length: int = 12, seed: int = 1):
    ids = torch.randint(3, 100, (len(pads), length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row, n in enumerate(pads):
        cut = slice(0, n) if left else slice(length - n, length)
        ids[row, cut], mask[row, cut] = 0, 0
    return ids, mask


def test_gemma2_softcap_and_sliding_layers_are_its_program_and_generation_is_unchanged() -> None:
    model = tiny_gemma2()
    ids, mask = padded((5, 2, 0), left=True)
    real = mask.bool()
    with torch.no_grad():
        eager = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        eager_tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
        layers = hf.attention_modules(model)
        for layer in layers:  # the cap changes this model: the test would see it dropped
            layer.attn_logit_softcapping = None
        uncapped = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        for layer in layers:
            layer.attn_logit_softcapping = 1.0
    assert (uncapped - eager)[real].abs().max() > 0.1
    sliding = "scaled_dot + softcap(1.0) ; causal & window(3) ; softmax"
    full = "scaled_dot + softcap(1.0) ; causal ; softmax"
    assert {i: str(p) for i, p in hf.program_of(model).items()} == {0: sliding, 1: full, 2: sliding, 3: full}
    hf.use(model, hf.program_of(model))
    with torch.no_grad():
        ours = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert not ours.isnan().any()  # left padding's query rows see nothing: zeros, never NaN
    assert (ours - eager)[real].abs().max() <= 1e-5
    assert torch.equal(tokens, eager_tokens)
    # a program without the cap still gets the model's: the softcap comes with the model's call
    hf.use(model, {0: "scaled_dot ; causal & window(3) ; softmax", 1: "scaled_dot ; causal ; softmax"})
    with torch.no_grad():
        named_none = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (named_none - eager)[real].abs().max() <= 1e-5
    hf.restore(model)


def test_gemma2_program_carries_the_window_by_itself() -> None:
    """The model's mask holds its window too; the program's window(w - 1) alone must be the same:
    the same weights with every layer full, running the sliding model's program, equal it."""
    sliding = tiny_gemma2()
    full = tiny_gemma2(layer_types=["full_attention"] * 4)
    full.load_state_dict(sliding.state_dict())
    ids, mask = padded((5, 2, 0), left=True)
    real = mask.bool()
    with torch.no_grad():
        eager = sliding.model(input_ids=ids, attention_mask=mask).last_hidden_state
        unwindowed = full.model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert (unwindowed - eager)[real].abs().max() > 0.1  # a window of 4 in 12 tokens matters
        hf.use(full, hf.program_of(sliding))
        ours = full.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert (ours - eager)[real].abs().max() <= 1e-5


def test_gemma3_keeps_a_softcap_setting_it_never_applies_and_so_does_its_program() -> None:
    """transformers 5.24's Gemma 3 stores attn_logit_softcapping but passes no softcap to the
    attention function: its program has none either, and stays the identity."""
    torch.manual_seed(0)
    config = transformers.Gemma3TextConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=1,
        attn_logit_softcapping=1.0, initializer_range=0.05, pad_token_id=0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"])
    model = transformers.Gemma3ForCausalLM(config).eval()
    model.set_attn_implementation("eager")
    ids, mask = padded((4, 0), left=True)
    with torch.no_grad():
        eager = model(input_ids=ids, attention_mask=mask).logits
        eager_tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        assert [str(p) for p in hf.program_of(model).values()] == [
            "scaled_dot ; causal & window(3) ; softmax"] * 2 + ["scaled_dot ; causal ; softmax"]
        hf.use(model, hf.program_of(model))
        ours = model(input_ids=ids, attention_mask=mask).logits
        tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert (ours - eager)[mask.bool()].abs().max() <= 1e-5
    assert torch.equal(tokens, eager_tokens)


def test_t5_position_bias_reaches_the_program_on_a_padded_batch_with_an_empty_row() -> None:
    model = tiny_t5()
    ids, mask = padded((0, 4, 12), left=False)  # the last input is all padding
    decoder_ids = torch.randint(3, 100, (3, 6), generator=torch.Generator().manual_seed(2))
    real = mask.bool()
    run = dict(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids)
    with torch.no_grad():
        eager = model(**run)
        eager_tokens = model.generate(input_ids=ids[:2], attention_mask=mask[:2], max_new_tokens=6,
                                      do_sample=False)
        bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
        saved = bias.clone()
        bias.zero_()  # the position bias changes this model: the test would see it dropped
        unbiased = model(**run).encoder_last_hidden_state
        bias.copy_(saved)
    assert (unbiased - eager.encoder_last_hidden_state)[real].abs().max() > 0.1
    programs = hf.program_of(model)  # encoder, decoder self (causal) and cross layers
    assert [str(p) for p in programs.values()] == ["scaled_dot ; softmax"] * 2 + [
        "scaled_dot ; causal ; softmax", "scaled_dot ; softmax"] * 2
    hf.use(model, programs)
    with torch.no_grad():
        ours = model(**run)
        tokens = model.generate(input_ids=ids[:2], attention_mask=mask[:2], max_new_tokens=6, do_sample=False)
    assert not ours.encoder_last_hidden_state.isnan().any() and not ours.logits.isnan().any()
    assert (ours.encoder_last_hidden_state - eager.encoder_last_hidden_state)[real].abs().max() <= 1e-5
    # the empty input gives the decoder nothing to read (zeros, where eager averages padding)
    assert (ours.logits - eager.logits)[:2].abs().max() <= 1e-5
    assert torch.equal(tokens, eager_tokens)
    hf.restore(model)


def one_call(batch: int, length: int, seed: int):
    """q (4 heads), k and v (2 kv heads) of size 8, and a position bias, for one attention call."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, length, 8, generator=g) for heads in (4, 2, 2))
    return q, k, v, torch.randn(1, 4, length, length, generator=g)


def test_the_models_mods_come_first_and_the_programs_follow() -> None:
    """One attention call, by hand: scaled scores + the model's position bias, its softcap, then
    the program's mods and mask; a row with nothing to see gives zeros."""
    model = tiny_gemma2()
    hf.use(model, "scaled_dot + temperature(2.0) ; causal & window(2) ; softmax")
    layer = hf.attention_modules(model)[0]
    q, k, v, bias = one_call(batch=2, length=5, seed=3)
    seen = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    seen[1, :, 0] = False  # a query row with nothing to see
    out, _ = hf.attnlab_attention(layer, q, k, v, seen, scaling=0.7, softcap=1.5, position_bias=bias)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ kk.transpose(-1, -2) * 0.7 + bias) / 1.5
    scores = 1.5 * torch.tanh(scores) / 2.0
    i, j = torch.arange(5)[:, None], torch.arange(5)[None]
    allowed = seen & (j <= i) & (i - j <= 2)
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
    assert (out - (weights @ vv).transpose(1, 2)).abs().max() <= 1e-6
    assert out[1, 0].abs().max() == 0
    hf.restore(model)


def test_a_program_that_names_the_models_mods_places_them_and_sinks_are_refused() -> None:
    model = tiny_gemma2()
    hf.use(model, "scaled_dot + temperature(2.0) + softcap(1.5) + bias ; causal ; softmax")
    layer = hf.attention_modules(model)[0]
    q, k, v, bias = one_call(batch=1, length=4, seed=4)
    out, _ = hf.attnlab_attention(layer, q, k, v, None, scaling=0.7, softcap=1.5, position_bias=bias)
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = 1.5 * torch.tanh(q @ kk.transpose(-1, -2) * 0.7 / 2.0 / 1.5) + bias  # where the program put them
    weights = scores.masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    assert (out - (weights @ vv).transpose(1, 2)).abs().max() <= 1e-6
    with pytest.raises(InputError, match="the program's `bias` mod reads the model's position bias, and this "
                                         "layer is given none"):
        hf.attnlab_attention(layer, q, k, v, None, softcap=1.5)
    with pytest.raises(InputError, match=r"adds attention sinks \(`s_aux`.*with its own attention"):
        hf.attnlab_attention(layer, q, k, v, None, s_aux=torch.zeros(4))
    hf.restore(model)
