"""attnlab.hf: a pretrained transformers model runs its attention as an attnlab program. With
`program_of(model)` nothing changes (padded batches, GQA, generation with the KV cache); another
program changes the outputs; `restore` gives the model back."""

from __future__ import annotations

import pytest
import torch

import attnlab
import attnlab.hf as hf
from attnlab.errors import ConfigError, InputError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def minilm():
    model, tokenizer = hf.pretrained("all-minilm-l6-v2")
    model.set_attn_implementation("eager")
    return model, tokenizer


def tiny_llama(**extra):
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2, **extra)
    model = transformers.LlamaForCausalLM(config).eval()
    model.set_attn_implementation("eager")
    return model


def left_padded(batch: int = 3, length: int = 12, pads=(5, 2, 0)):
    ids = torch.randint(3, 100, (batch, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    for row, n in enumerate(pads):
        ids[row, :n], mask[row, :n] = 0, 0
    return ids, mask


def test_minilm_with_its_own_program_equals_eager_on_a_padded_batch(minilm) -> None:
    model, tokenizer = minilm
    batch = tokenizer(["a short one", "a much longer sentence about attention and padding in a batch"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        eager = model(**batch).last_hidden_state
    assert str(hf.program_of(model)) == "scaled_dot ; softmax"
    hf.use(model, hf.program_of(model))
    try:
        assert model.config._attn_implementation == hf.NAME
        with torch.no_grad():
            same = model(**batch).last_hidden_state
        real = batch["attention_mask"].bool()
        assert (same - eager)[real].abs().max() < 1e-5
        hf.use(model, "scaled_dot ; window(2) ; softmax")  # a program changes what it sees
        with torch.no_grad():
            local = model(**batch).last_hidden_state
        assert (local - eager)[real].abs().max() > 0.1
    finally:
        hf.restore(model)
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        assert torch.equal(model(**batch).last_hidden_state, eager)


def test_llama_with_gqa_left_padding_and_generation_is_unchanged_by_its_own_program() -> None:
    model = tiny_llama()
    ids, mask = left_padded()
    with torch.no_grad():
        eager = model(input_ids=ids, attention_mask=mask).logits
        eager_tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert str(hf.program_of(model)) == "scaled_dot ; causal ; softmax"
    hf.use(model, hf.program_of(model))
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert not ours.isnan().any()  # the fully padded rows of left padding give zeros, never NaN
    assert (ours - eager)[mask.bool()].abs().max() < 1e-5
    assert torch.equal(tokens, eager_tokens)


def test_one_layer_can_take_another_program_and_the_rest_keep_the_models() -> None:
    model = tiny_llama()
    ids, mask = left_padded()
    with torch.no_grad():
        eager = model(input_ids=ids, attention_mask=mask).logits
    hf.use(model, {1: "scaled_dot ; causal & window(1) ; softmax"})
    layers = hf.attention_modules(model)
    assert [str(m._attnlab_program) for m in layers] == ["scaled_dot ; causal ; softmax",
                                                         "scaled_dot ; causal & window(1) ; softmax"]
    with torch.no_grad():
        local = model(input_ids=ids, attention_mask=mask).logits
    # the model's padding still holds: the last row has none, and its first positions see only
    # their window either way
    assert (local - eager)[mask.bool()].abs().max() > 1e-3
    assert torch.allclose(local[2, :2], eager[2, :2], atol=1e-5)


def test_a_sliding_window_model_gets_a_window_program() -> None:
    config = transformers.MistralConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                        sliding_window=4)
    torch.manual_seed(0)
    model = transformers.MistralForCausalLM(config).eval()
    model.set_attn_implementation("eager")
    assert str(hf.program_of(model)) == "scaled_dot ; causal & window(3) ; softmax"
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        hf.use(model, hf.program_of(model))
        assert (model(input_ids=ids).logits - eager).abs().max() < 1e-5


def test_mistakes_are_one_line() -> None:
    model = tiny_llama()
    with pytest.raises(ConfigError, match="LlamaForCausalLM has attention layers 0 to 1"):
        hf.use(model, {2: "scaled_dot ; causal ; softmax"})
    for gated in ("mix({causal ; softmax}, {causal & window(4) ; softmax})",
                  "causal ; softmax ; output_gate(headwise)"):
        with pytest.raises(ConfigError, match="adds gates a pretrained layer does not have"):
            hf.use(model, gated)
    with pytest.raises(InputError, match="is not running attnlab's attention: nothing to restore"):
        hf.restore(model)
    with pytest.raises(ConfigError, match="unknown pretrained model 'all-minilm' — did you mean "
                                          "'all-minilm-l6-v2'"):
        hf.pretrained("all-minilm")
    with pytest.raises(ConfigError, match="is not a transformers model"):
        hf.program_of(torch.nn.Linear(2, 2))


def test_smollm2_runs_on_attnlab_as_on_transformers_sdpa_and_generates_the_same_tokens() -> None:
    """SmolLM2 (30 layers, GQA 9/3) on a left-padded batch. Against eager attention, float32
    rounding over 30 layers leaves ~1e-4 on hidden states of size ~40 for transformers' own SDPA
    as for attnlab when the planner picks SDPA: that is checked against SDPA, to 1e-6; with the
    reference backend attnlab equals eager exactly."""
    pytest.importorskip("gguf")
    model, tokenizer = hf.pretrained("smollm2-135m-instruct")
    tokenizer.padding_side = "left"
    batch = tokenizer(["In the beginning God created", "And the earth was without form, and void"],
                      padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    assert not real.all()  # the first text is padded
    with torch.no_grad():
        model.set_attn_implementation("sdpa")
        sdpa = model.model(**batch).last_hidden_state
        sdpa_tokens = model.generate(**batch, max_new_tokens=8, do_sample=False)
        model.set_attn_implementation("eager")
        eager = model.model(**batch).last_hidden_state
        hf.use(model, hf.program_of(model))
        ours = model.model(**batch).last_hidden_state
        tokens = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert str(hf.program_of(model)) == "scaled_dot ; causal ; softmax"
    assert (ours - sdpa)[real].abs().max() <= 1e-6
    assert (ours - eager)[real].abs().max() <= 1e-6 * eager[real].abs().max() * 10
    assert torch.equal(tokens, sdpa_tokens)
    # the reference backend computes in eager's order: the same numbers, bit for bit
    with torch.no_grad():
        hf.use(model, hf.program_of(model), backend="reference")
        reference = model.model(**batch).last_hidden_state
        reference_tokens = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert torch.equal(reference[real], eager[real])
    assert torch.equal(reference_tokens, sdpa_tokens)
    with pytest.raises(ConfigError, match=r"backend 'refrence' is not one of .* did you mean 'reference'"):
        hf.use(model, hf.program_of(model), backend="refrence")
    # the recorder reads SmolLM2's weights as transformers' eager attention returns them
    # (grouped-query heads, left padding, causality), and a windowed program's as that program says
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = model.model(**batch, output_attentions=True).attentions
        hf.use(model, "scaled_dot ; window(3) ; softmax")
        with attnlab.record(model, layers=[0, 29]) as rec:
            model.model(**batch)
        hf.use(model, hf.program_of(model))
        with attnlab.record(model, layers=[0, 29]) as same:
            model.model(**batch)
    rows = real[:, None, :, None]  # eager's rows at padded queries are not meaningful
    for layer, index in ((0, 0), (29, 1)):
        assert (same.weights(index) - eager[layer]).masked_select(rows).abs().max() < 1e-4
    w = rec.weights(1)
    n = w.shape[-1]
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    seen = (k <= q) & (q - k <= 3) & real[:, None, None, :]
    assert w.shape[1] == 9 and torch.all(w.masked_select(~seen.expand_as(w)) == 0)
    assert torch.allclose(w.sum(-1).masked_select(real[:, None, :]), torch.tensor(1.0), atol=1e-5)
