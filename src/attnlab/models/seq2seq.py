"""`Seq2Seq`: an encoder–decoder transformer (Vaswani et al., 2017) with attnlab programs for the
encoder, the decoder's self-attention and the cross-attention; greedy and beam-search decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnlab.ids import BOS_ID, EOS_ID, PAD_ID
from attnlab.models.base import Model
from attnlab.nn.attention import KVCache
from attnlab.nn.blocks import (
    Block,
    Positions,
    attention_layers,
    with_padding,
)


@dataclass
class Seq2SeqConfig:
    src_vocab: int
    tgt_vocab: int
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    encoder_programs: Any = "scaled_dot ; softmax"
    decoder_programs: Any = "causal"
    cross_programs: Any = "scaled_dot ; softmax"
    positions: str = "learned"
    max_len: int = 512
    pad_id: int | None = PAD_ID
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    dropout: float = 0.0
    mlp_ratio: int = 4
    tie_weights: bool = True


class Seq2Seq(Model):
    """Source tokens → encoder memory; target tokens (teacher-forced) → decoder → logits.

    Decoder self-attention must be causal. With `pad_id`, encoder and cross-attention programs get
    `& padding` over the source. The decoder's self-attention does not: targets are padded only at
    the end, and `causal` already keeps every real position from seeing the padding after it.
    """

    kind, Config = "seq2seq", Seq2SeqConfig

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = c = config
        self.pad_id, self.bos_id, self.eos_id = c.pad_id, c.bos_id, c.eos_id
        pad = with_padding if c.pad_id is not None else lambda p: p
        self.src_embed = nn.Embedding(c.src_vocab, c.d_model, padding_idx=c.pad_id)
        self.tgt_embed = nn.Embedding(c.tgt_vocab, c.d_model, padding_idx=c.pad_id)
        self.src_positions = Positions(c.positions, c.d_model, c.max_len)
        self.tgt_positions = Positions(c.positions, c.d_model, c.max_len)
        self.drop = nn.Dropout(c.dropout)
        rotary, shape = self.src_positions.rotary, dict(layers=c.layers, heads=c.heads)
        enc = attention_layers(c.d_model, c.encoder_programs, **shape, rotary=rotary, adapt=pad,
                               name="encoder_programs")
        dec = attention_layers(c.d_model, c.decoder_programs, **shape, rotary=rotary,
                               name="decoder_programs",
                               causal_for="Seq2Seq's decoder", max_len=c.max_len)
        # Queries and keys of cross-attention live on different sequences: no rotary there.
        cross = attention_layers(c.d_model, c.cross_programs, **shape, adapt=pad,
                                 name="cross_programs")
        self.encoder = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout) for a in enc)
        self.decoder = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout, cross_attention=x)
                                     for a, x in zip(dec, cross, strict=True))
        self.enc_norm, self.dec_norm = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.tgt_vocab, bias=False)
        self.init_weights()
        if c.tie_weights:
            self.head.weight = self.tgt_embed.weight

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Logits (B, T, tgt_vocab) for src (B, S) and the shifted target tgt_in (B, T)."""
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor | None]:
        """Encoder memory (B, S, d_model) and the source padding mask (True = padding)."""
        pad = src == self.pad_id if self.pad_id is not None else None
        x = self.drop(self.src_positions(self.src_embed(src)))
        for block in self.encoder:
            x = block(x, key_padding_mask=pad)
        return self.enc_norm(x), pad

    def decode(self, tgt: Tensor, memory: Tensor, src_pad: Tensor | None, *,
               caches: list[KVCache] | None = None) -> Tensor:
        """Logits for tgt (B, T); with `caches`, tgt continues what the caches hold."""
        past = 0 if caches is None else caches[0].length
        x = self.drop(self.tgt_positions(self.tgt_embed(tgt), offset=past))
        for i, block in enumerate(self.decoder):
            x = block(x, memory=memory, memory_padding_mask=src_pad,
                      cache=None if caches is None else caches[i])
        return self.head(self.dec_norm(x))

    @torch.no_grad()
    def greedy(self, src: Tensor, max_len: int = 64) -> Tensor:
        """Most likely next token at each step: (B, ≤ 1 + max_len), starting with bos; rows
        that reached eos are filled with pad (eos when there is no pad_id)."""
        memory, src_pad = self.encode(src)
        caches = [KVCache() for _ in self.decoder]

        def step(tokens: Tensor) -> Tensor:
            # Only the newest token goes in; the caches hold the decoder's view of the rest.
            return self.decode(tokens[:, -1:], memory, src_pad, caches=caches)[:, -1]

        return greedy_search(step, src.shape[0], self.config, max_len, src.device)

    @torch.no_grad()
    def beam(self, src: Tensor, beam_size: int = 4, max_len: int = 64,
             length_penalty: float = 1.0) -> Tensor:
        """Beam search; the best finished hypothesis per row by log-probability / length^penalty.

        Returns (B, ≤ 1 + max_len) token ids starting with bos, filled after eos as in greedy.
        """
        memory, src_pad = self.encode(src)
        # Every beam of a row reads the same memory: rows are laid out (B·K) as b0k0, b0k1, …
        memory = memory.repeat_interleave(beam_size, dim=0)
        src_pad = None if src_pad is None else src_pad.repeat_interleave(beam_size, dim=0)
        caches = [KVCache() for _ in self.decoder]

        def step(tokens: Tensor) -> Tensor:
            return self.decode(tokens[:, -1:], memory, src_pad, caches=caches)[:, -1]

        def reorder(beam: Tensor) -> None:
            for cache in caches:
                cache.reorder(beam)

        return beam_search(step, reorder, src.shape[0], beam_size, self.config, max_len,
                           length_penalty, src.device)


# Decoding over a logits function: `step(tokens)` gives the next-token logits (rows, vocab) after
# the rows of `tokens` (rows, t), which start with bos. The model steps with its caches; an
# exported model (attnlab.deploy) runs its whole forward over the growing target instead.


def greedy_search(step, rows: int, config: Seq2SeqConfig, max_len: int, device) -> Tensor:
    """Greedy decoding: (rows, ≤ 1 + max_len) ids from bos, filled after eos."""
    fill = config.eos_id if config.pad_id is None else config.pad_id
    tokens = torch.full((rows, 1), config.bos_id, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    for _ in range(max_len):
        token = torch.where(done, fill, step(tokens).argmax(-1))
        tokens = torch.cat([tokens, token[:, None]], dim=1)
        done |= token == config.eos_id
        if done.all():
            break
    return tokens


def beam_search(step, reorder, b: int, k: int, config: Seq2SeqConfig, max_len: int,
                length_penalty: float, device) -> Tensor:
    """Beam search over b rows of k beams (laid out b0k0, b0k1, …); `reorder(beam)` is told
    which hypothesis each beam continues, for state kept beside `tokens` (caches)."""
    fill = config.eos_id if config.pad_id is None else config.pad_id
    tokens = torch.full((b * k, 1), config.bos_id, dtype=torch.long, device=device)
    # Only beam 0 is alive at first, so the first step does not pick K copies of one token.
    score = torch.full((b, k), float("-inf"), device=device)
    score[:, 0] = 0.0
    done = torch.zeros(b * k, dtype=torch.bool, device=device)
    length = torch.zeros(b * k, device=device)  # generated tokens, eos included
    for _ in range(max_len):
        logp = F.log_softmax(step(tokens).float(), dim=-1)
        # A finished hypothesis continues only with `fill`, at no cost, keeping its score.
        logp[done] = float("-inf")
        logp[done, fill] = 0.0
        vocab = logp.shape[-1]
        total = (score.view(-1, 1) + logp).view(b, k * vocab)
        score, flat = total.topk(k, dim=-1)
        beam = flat // vocab + torch.arange(b, device=device)[:, None] * k
        beam, token = beam.view(-1), (flat % vocab).view(-1)
        reorder(beam)
        tokens = torch.cat([tokens[beam], token[:, None]], dim=1)
        length = length[beam] + (~done[beam]).float()
        done = done[beam] | (token == config.eos_id)
        if done.all():
            break
    final = score.view(-1) / length.clamp(min=1) ** length_penalty
    best = final.view(b, k).argmax(-1) + torch.arange(b, device=device) * k
    # Drop columns that only other (losing) beams needed, so the width matches greedy's.
    return tokens[best][:, : 1 + int(length[best].max())]
