"""attnlab.models: shapes, no look-ahead, padding, head groups, KV-cache decoding, beam search."""

from __future__ import annotations

import pytest
import torch

import attnlab
from attnlab import ConfigError, ProgramError
from attnlab.models import (
    MODELS,
    DecoderLM,
    DecoderLMConfig,
    EncoderClassifier,
    EncoderClassifierConfig,
    Seq2Seq,
    Seq2SeqConfig,
    SequentialRecommender,
    SequentialRecommenderConfig,
    ViT,
    ViTConfig,
    load_model,
    save_model,
)
from attnlab.nn import KVCache, MixedAttention

V = 23


def _f64(model: torch.nn.Module) -> torch.nn.Module:
    return model.double().eval()


def test_shapes_of_every_model() -> None:
    torch.manual_seed(0)
    tokens = torch.randint(1, V, (2, 9))
    enc = EncoderClassifier(EncoderClassifierConfig(V, 3, d_model=32, heads=4, pad_id=0))
    assert enc(tokens).shape == (2, 3)
    tok = EncoderClassifier(EncoderClassifierConfig(V, 5, d_model=32, heads=4, pooling="cls", per="token",
                            positions="sinusoidal"))
    assert tok(tokens).shape == (2, 9, 5)
    assert DecoderLM(DecoderLMConfig(V, d_model=32, kv_heads=2))(tokens).shape == (2, 9, V)
    s2s = Seq2Seq(Seq2SeqConfig(V, 17, d_model=32, heads=4, positions="rotary"))
    assert s2s(tokens, torch.randint(3, 17, (2, 6))).shape == (2, 6, 17)
    vit = ViT(ViTConfig(16, 4, 3, 7, d_model=32, heads=4, pooling="mean", programs="window(3)"))
    assert vit(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    rec = SequentialRecommender(SequentialRecommenderConfig(30, d_model=32, heads=2, max_len=9))
    assert rec(tokens).shape == (2, 9, 31)


@pytest.mark.parametrize("model, inputs", [
    (lambda: EncoderClassifier(EncoderClassifierConfig(
        V, 3, d_model=16, heads=2, programs=["causal", "alibi + relative_bias"], positions="none")),
     lambda: (torch.randint(0, V, (2, 9)),)),
    (lambda: DecoderLM(DecoderLMConfig(
        V, d_model=16, heads=2, programs=["causal", [("causal", 1), ("cosine ; causal & window(2)", 1)]])),
     lambda: (torch.randint(0, V, (2, 9)),)),
    (lambda: Seq2Seq(Seq2SeqConfig(V, V, d_model=16, heads=2, layers=1, pad_id=None,
                                   cross_programs="scaled_dot ; entmax(1.5)")),
     lambda: (torch.randint(0, V, (2, 7)), torch.randint(0, V, (2, 5)))),
    (lambda: ViT(ViTConfig(8, 4, 1, 2, d_model=16, heads=2, programs="general ; window(1)")),
     lambda: (torch.randn(2, 1, 8, 8),)),
    (lambda: SequentialRecommender(SequentialRecommenderConfig(10, d_model=16, heads=2,
                                                               programs="causal & window(3)")),
     lambda: (torch.randint(0, 11, (2, 9)),)),
])
def test_a_saved_model_rebuilds_from_kind_config_and_tensors(model, inputs, tmp_path) -> None:
    """Outputs, not parameter counts: a rebuild that dropped a program (or its learned parts)
    would have the same count and different outputs."""
    torch.manual_seed(0)
    m = model().eval()
    for p in m.parameters():  # learned program parts start at fixed values: move them
        p.data.add_(0.1 * torch.randn_like(p))
    save_model(m, tmp_path)
    rebuilt = load_model(tmp_path)
    assert type(rebuilt) is type(m) and MODELS[m.kind] is type(m)
    assert rebuilt.config_dict() == m.config_dict()
    args = inputs()
    assert torch.equal(rebuilt(*args), m(*args))
    assert rebuilt.programs() == m.programs()


def test_a_rebuild_that_drops_a_program_is_caught(tmp_path) -> None:
    m = DecoderLM(DecoderLMConfig(V, d_model=16, heads=2, programs="causal & window(2)")).eval()
    save_model(m, tmp_path)
    config = (tmp_path / "model.json").read_text().replace("causal & window(2)", "causal")
    (tmp_path / "model.json").write_text(config)
    tokens = torch.randint(0, V, (2, 9))
    assert not torch.allclose(load_model(tmp_path)(tokens), m(tokens))


def test_tied_weights_are_counted_once() -> None:
    tied = DecoderLM(DecoderLMConfig(V, d_model=16, heads=2))
    untied = DecoderLM(DecoderLMConfig(V, d_model=16, heads=2, tie_weights=False))
    assert untied.num_parameters() - tied.num_parameters() == V * 16


@pytest.mark.parametrize("programs, positions", [
    ("causal", "learned"), ("alibi ; causal ; sparsemax", "none"),
    ("causal & window(3)", "rotary"), ([("causal", 2), ("alibi ; causal", 2)], "sinusoidal"),
])
def test_decoder_does_not_look_ahead(programs, positions) -> None:
    torch.manual_seed(1)
    m = _f64(DecoderLM(DecoderLMConfig(V, d_model=32, heads=4, programs=programs, positions=positions)))
    x = torch.randint(0, V, (2, 10))
    y = x.clone()
    y[:, 6:] = torch.randint(0, V, (2, 4))
    torch.testing.assert_close(m(x)[:, :6], m(y)[:, :6], atol=1e-6, rtol=0)


def test_seq2seq_decoder_does_not_look_ahead() -> None:
    torch.manual_seed(2)
    m = _f64(Seq2Seq(Seq2SeqConfig(V, V, d_model=32, heads=4)))
    src, tgt = torch.randint(3, V, (2, 7)), torch.randint(3, V, (2, 8))
    src[0, 5:] = 0  # padded source
    other = tgt.clone()
    other[:, 4:] = torch.randint(3, V, (2, 4))
    torch.testing.assert_close(m(src, tgt)[:, :4], m(src, other)[:, :4], atol=1e-6, rtol=0)


def test_decoder_refuses_a_program_that_sees_the_future() -> None:
    with pytest.raises(ProgramError, match="no 'causal'"):
        DecoderLM(DecoderLMConfig(V, programs="alibi ; window(4)"))
    with pytest.raises(ProgramError, match="later ones"):
        DecoderLM(DecoderLMConfig(V, programs="causal | global_tokens(2)"))
    with pytest.raises(ProgramError, match="no 'causal'"):
        SequentialRecommender(SequentialRecommenderConfig(10, programs=["causal", "scaled_dot ; softmax"]))


def test_wrong_number_of_per_layer_programs_names_the_expected_length() -> None:
    with pytest.raises(ConfigError, match=r"lists 2 programs .* layers=3.*exactly 3"):
        DecoderLM(DecoderLMConfig(V, layers=3, programs=["causal", "causal"]))
    with pytest.raises(ConfigError, match="decoder_programs lists 1"):
        Seq2Seq(Seq2SeqConfig(V, V, layers=2, decoder_programs=["causal"]))
    with pytest.raises(ConfigError, match="heads in all"):
        DecoderLM(DecoderLMConfig(V, heads=4, programs=[("causal", 1), ("causal", 2)]))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_encoder_ignores_padding(pooling: str) -> None:
    torch.manual_seed(3)
    m = _f64(EncoderClassifier(EncoderClassifierConfig(V, 4, d_model=32, heads=4, pad_id=0, pooling=pooling,
                               programs=["scaled_dot ; softmax", "alibi ; window(2) ; entmax(1.5)"])))
    short = torch.randint(1, V, (1, 5))
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    longer = torch.randint(1, V, (1, 9))
    # One batch of rows with different lengths: each row's logits equal those of the row alone.
    out = m(torch.cat([padded, longer]))
    torch.testing.assert_close(out[0], m(short)[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], m(longer)[0], atol=1e-6, rtol=0)
    assert str(m.blocks[1].attention.program.mask) == "window(2) & padding"


def test_head_groups_each_follow_their_own_mask() -> None:
    torch.manual_seed(4)
    m = DecoderLM(DecoderLMConfig(V, d_model=32, heads=4, programs=["causal", [("causal", 2),
                                                               ("causal & window(2)", 2)]]))
    assert m(torch.randint(0, V, (2, 8))).shape == (2, 8, V)
    mixed = m.blocks[1].attention
    assert isinstance(mixed, MixedAttention) and mixed.group_heads == [2, 2]
    with attnlab.record(mixed) as rec:
        mixed(torch.randn(2, 8, 32))
    w = rec.weights(0)
    assert w.shape == (2, 4, 8, 8)
    q, kv = torch.arange(8)[:, None], torch.arange(8)[None, :]
    assert not w[:, :, kv > q].any()  # every group is causal
    assert not w[:, 2:, q - kv > 2].any()  # only the window group cuts off the far past
    assert w[:, :2, q - kv > 2].gt(0).all()  # the causal group still sees it (softmax > 0)


def _greedy_by_recomputing(m: DecoderLM, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    tokens = prompt
    for _ in range(steps):
        tokens = torch.cat([tokens, m(tokens)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return tokens


@pytest.mark.parametrize("programs, positions", [
    ("alibi ; causal", "none"), ("causal", "rotary"),
    ("relative_bias(bidirectional=false) ; causal & window(3) ; entmax(1.5)", "learned"),
    ([("alibi ; causal", 2), ("causal & window(2)", 2)], "rotary"),
])
def test_cached_generation_equals_recomputing_the_sequence(programs, positions) -> None:
    torch.manual_seed(5)
    m = _f64(DecoderLM(DecoderLMConfig(V, d_model=32, heads=4, programs=programs, positions=positions)))
    prompt = torch.randint(0, V, (3, 4))
    cached = m.generate(prompt, 8, greedy=True)
    assert torch.equal(cached, _greedy_by_recomputing(m, prompt, 8))
    # Logits too, step by step: the caches fed one token at a time give the full-sequence logits.
    caches = [KVCache() for _ in m.blocks]
    steps = torch.cat([m(cached[:, :4], caches=caches)] +
                      [m(cached[:, i:i + 1], caches=caches) for i in range(4, 12)], dim=1)
    torch.testing.assert_close(steps, m(cached), atol=1e-9, rtol=1e-9)


def test_sampling_is_seeded_and_top_k_limits_choices() -> None:
    m = DecoderLM(DecoderLMConfig(V, d_model=16, heads=2)).eval()
    prompt = torch.randint(0, V, (2, 3))
    a = m.generate(prompt, 6, top_k=3, generator=torch.Generator().manual_seed(0))
    b = m.generate(prompt, 6, top_k=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (2, 9)
    top1 = m.generate(prompt, 1, top_k=1, generator=torch.Generator().manual_seed(1))
    assert torch.equal(top1, m.generate(prompt, 1, greedy=True))


def test_beam_of_one_is_greedy_and_a_full_beam_is_exact() -> None:
    torch.manual_seed(6)
    m = _f64(Seq2Seq(Seq2SeqConfig(V, V, d_model=32, heads=4, positions="rotary")))
    src = torch.randint(3, V, (3, 6))
    src[1, 4:] = 0
    greedy = m.greedy(src, max_len=7)
    assert torch.equal(m.beam(src, beam_size=1, max_len=7), greedy)
    assert (greedy[:, 0] == m.bos_id).all()
    # A beam as wide as the vocabulary keeps every first token, so over two steps it finds the
    # most likely two-token output exactly; compare with brute force.
    best = m.beam(src, beam_size=V, max_len=2, length_penalty=0.0)
    bos = torch.full((3, 1), m.bos_id)
    first = m(src, bos)[:, -1].log_softmax(-1)  # (3, V)
    score = torch.empty(3, V)
    for t in range(V):
        second = m(src, torch.cat([bos, torch.full((3, 1), t)], 1))[:, -1].log_softmax(-1)
        score[:, t] = first[:, t] + (0 if t == m.eos_id else second.max(-1).values)
    assert torch.equal(best[:, 1], score.argmax(-1))


def test_seq2seq_greedy_stops_at_eos_and_fills_with_pad() -> None:
    torch.manual_seed(7)
    m = Seq2Seq(Seq2SeqConfig(V, V, d_model=16, heads=2)).eval()
    with torch.no_grad():  # make eos the certain first choice
        m.head.weight.zero_()  # tied: the target embeddings are zero too, which is fine here
        m.dec_norm.weight.zero_()
        m.dec_norm.bias.zero_()
        m.dec_norm.bias[0] = 1.0
        m.head.weight[m.eos_id, 0] = 10.0
    out = m.greedy(torch.randint(3, V, (2, 5)), max_len=6)
    assert out.tolist() == [[m.bos_id, m.eos_id]] * 2
    assert torch.equal(m.beam(torch.randint(3, V, (2, 5)), beam_size=3, max_len=6), out)


def test_recommender_handles_left_padding() -> None:
    torch.manual_seed(8)
    m = _f64(SequentialRecommender(SequentialRecommenderConfig(30, d_model=32, heads=2, max_len=8,
                                                               dropout=0.0)))
    hist = torch.tensor([[0, 0, 0, 5, 9, 2, 7, 1], [3, 4, 5, 6, 7, 8, 9, 10]])
    logits = m(hist)
    assert logits.shape == (2, 8, 31) and torch.isfinite(logits[..., 1:]).all()  # no NaN
    assert (logits[..., 0] == float("-inf")).all()  # padding is never recommended


def test_models_train() -> None:
    torch.manual_seed(9)
    rec = SequentialRecommender(SequentialRecommenderConfig(30, d_model=16, heads=2, max_len=6, dropout=0.1))
    hist = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    target = torch.tensor([[0, 0, 4, 5, 6, 7], [2, 3, 4, 5, 6, 7]])
    loss = torch.nn.functional.cross_entropy(rec(hist).flatten(0, 1), target.flatten(),
                                             ignore_index=0)
    lm = DecoderLM(DecoderLMConfig(V, d_model=16, heads=2, programs=[("causal", 1), ("alibi ; causal", 1)],
                   positions="rotary", dropout=0.1))
    loss = loss + lm(torch.randint(0, V, (2, 5))).logsumexp(-1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in [*rec.parameters(), *lm.parameters()]
               if p.requires_grad)
