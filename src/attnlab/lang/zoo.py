"""The catalogue: named programs from the literature, each with a one-line description."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from attnlab.errors import ProgramError, did_you_mean
from attnlab.lang.base import show
from attnlab.lang.program import Program


@dataclass(frozen=True)
class Entry:
    name: str
    text: str
    description: str

    @property
    def program(self) -> Program:
        return Program.from_string(self.text)


_ENTRIES = [
    Entry("vanilla", "scaled_dot ; softmax",
          "full bidirectional softmax attention (Vaswani et al., 2017)"),
    Entry("causal", "scaled_dot ; causal ; softmax",
          "decoder attention: each position sees itself and the past"),
    Entry("alibi-causal", "scaled_dot + alibi ; causal ; softmax",
          "causal attention with ALiBi linear distance biases, no position embeddings "
          "(Press et al., 2022)"),
    Entry("sliding-window", "scaled_dot ; causal & window(256) ; softmax",
          "causal attention over the last 256 positions (Mistral-style local attention)"),
    Entry("longformer", "scaled_dot ; window(256) | global_tokens(4) ; softmax",
          "sliding window plus a few global tokens that see and are seen by all "
          "(Beltagy et al., 2020)"),
    Entry("bigbird", "scaled_dot ; window(96) | global_tokens(64) | random_blocks(0.05) ; softmax",
          "window, global and random 64-blocks: sparse yet a universal approximator "
          "(Zaheer et al., 2020)"),
    Entry("prefix-lm", "scaled_dot ; causal | prefix(64) ; softmax",
          "bidirectional over a 64-token prefix, causal after it (Raffel et al., 2020)"),
    Entry("t5-bias", "scaled_dot + relative_bias ; softmax",
          "learned per-head biases on log-spaced relative distances (Raffel et al., 2020)"),
    Entry("softcap", "scaled_dot + softcap(50.0) ; causal ; softmax",
          "causal attention with scores capped by 50·tanh(s/50) (Gemma 2)"),
    Entry("cosine", "cosine ; softmax",
          "cosine similarity with a learned per-head temperature (Swin Transformer V2)"),
    Entry("sparsemax", "scaled_dot ; sparsemax",
          "sparse attention weights by Euclidean projection onto the simplex "
          "(Martins & Astudillo, 2016)"),
    Entry("entmax15", "scaled_dot ; entmax(1.5)",
          "1.5-entmax: sparse yet smooth weights (Peters et al., 2019; Correia et al., 2019)"),
    Entry("entmax-local", "scaled_dot ; causal & window(32) ; entmax(1.5)",
          "1.5-entmax inside a causal window of 32: sparse by the mask and by the normalizer"),
    Entry("hard-top8", "scaled_dot ; topk(8)",
          "hard attention to the 8 highest-scoring keys, straight-through gradient"),
    Entry("sigmoid", "scaled_dot ; sigmoid",
          "independent sigmoid weights with bias −log(n) (Ramapuram et al., 2024)"),
    Entry("linear", "linear(elu1)",
          "kernelised attention with φ = elu + 1, O(N) (Katharopoulos et al., 2020)"),
    Entry("performer", "favor(256)",
          "FAVOR+ positive orthogonal random features approximating softmax "
          "(Choromanski et al., 2021)"),
    Entry("linformer", "lowrank(256)",
          "keys and values projected to 256 learned summaries, O(N) (Wang et al., 2020)"),
]


class Catalogue(Mapping[str, Program]):
    """`zoo['bigbird']` is a Program; `zoo.description('bigbird')` says what it is."""

    def __init__(self, entries: list[Entry]) -> None:
        self._entries = {e.name: e for e in entries}

    def __getitem__(self, name: str) -> Program:
        return self.entry(name).program

    def entry(self, name: str) -> Entry:
        if not isinstance(name, str) or name not in self._entries:
            raise ProgramError(f"no program {show(name)} in the zoo{did_you_mean(name, self._entries)} "
                               f"(see `attnlab zoo`)")
        return self._entries[name]

    def description(self, name: str) -> str:
        return self.entry(name).description

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


zoo = Catalogue(_ENTRIES)
