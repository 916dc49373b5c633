"""`DecoderLM`: a GPT-style language model whose attention is any causal attnlab program.

Tokens → embeddings (+ positions) → pre-norm blocks → LayerNorm → logits over the vocabulary.
`generate` decodes with a KV cache: each step feeds only the newest token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnlab.errors import InputError
from attnlab.models.base import Model
from attnlab.nn.attention import KVCache
from attnlab.nn.blocks import Block, Positions, attention_layers


@dataclass
class DecoderLMConfig:
    vocab_size: int
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    programs: Any = "causal"  # one program, one per layer, or head groups (see attention_layers)
    positions: str = "learned"
    max_len: int = 512
    dropout: float = 0.0
    kv_heads: int | None = None
    tie_weights: bool = True
    mlp_ratio: int = 4


class DecoderLM(Model):
    """Next-token language model. Every program must mask the future (`causal` in its mask);
    `positions='none'` suits programs that carry their own positions, such as `alibi`."""

    kind, Config = "decoder_lm", DecoderLMConfig

    def __init__(self, config: DecoderLMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.positions = Positions(c.positions, c.d_model, c.max_len)
        self.drop = nn.Dropout(c.dropout)
        attn = attention_layers(c.d_model, c.programs, layers=c.layers, heads=c.heads,
                                kv_heads=c.kv_heads, rotary=self.positions.rotary,
                                causal_for="DecoderLM", max_len=c.max_len)
        self.blocks = nn.ModuleList(Block(c.d_model, a, c.mlp_ratio, c.dropout) for a in attn)
        self.norm = nn.LayerNorm(c.d_model)
        self.head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.init_weights()
        if c.tie_weights:  # input and output embeddings share one matrix (Press & Wolf, 2017)
            self.head.weight = self.embed.weight

    def forward(self, tokens: Tensor, *, caches: list[KVCache] | None = None,
                select: Tensor | None = None) -> Tensor:
        """Logits (B, L, vocab) for tokens (B, L). With `caches` (one KVCache per layer), tokens
        are the continuation of what the caches hold and attend to it too. With `select`, a
        (B, L) bool, only those positions' logits come back, as (K, vocab): training on sparse
        targets (MQAR scores 4 of 64) then skips the vocabulary projection elsewhere."""
        if caches is not None and len(caches) != len(self.blocks):
            raise InputError(f"caches must hold one KVCache per layer ({len(self.blocks)}), "
                             f"got {len(caches)}")
        past = 0 if caches is None else caches[0].length
        x = self.drop(self.positions(self.embed(tokens), offset=past))
        for i, block in enumerate(self.blocks):
            x = block(x, cache=None if caches is None else caches[i])
        x = self.norm(x)
        return self.head(x if select is None else x[select])

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                 top_k: int | None = None, greedy: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
        """prompt (B, L0) followed by max_new_tokens sampled tokens, (B, L0 + max_new_tokens).

        The prompt runs once to fill the KV caches; each later step runs only the new token.
        Call `model.eval()` first so dropout does not perturb the samples.
        """
        caches = [KVCache() for _ in self.blocks]
        tokens, logits = prompt, self(prompt, caches=caches)[:, -1]
        for step in range(max_new_tokens):
            nxt = self._pick(logits, temperature, top_k, greedy, generator)
            tokens = torch.cat([tokens, nxt], dim=1)
            if step + 1 < max_new_tokens:
                logits = self(nxt, caches=caches)[:, -1]
        return tokens

    @staticmethod
    def _pick(logits: Tensor, temperature: float, top_k: int | None, greedy: bool,
              generator: torch.Generator | None) -> Tensor:
        if greedy:
            return logits.argmax(-1, keepdim=True)
        logits = logits / temperature
        if top_k is not None:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(F.softmax(logits.float(), dim=-1), 1, generator=generator)
