"""K-BERT for attnlab's text classifiers (Liu et al., 2020): WordNet's noun classes inserted as
branch tokens after each noun, seen only by that noun (the `graph` visible matrix) and placed
at soft positions, so the rest of the sentence reads as without them.

Experiments ask for it with `model.prior: {kind: kbert}` and a program that reads `graph`.
The text's encoder (`KbertEncoder`) inserts the branches, one new token per noun class after
the vocabulary; the model's prior (`KBert`) recovers from the token ids alone which noun each
branch hangs from and each token's soft position, so a saved run needs nothing else.
Entities are single words (their word pieces), so that the ids say exactly where each begins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from attnlab.errors import ConfigError
from attnlab.models.knowledge import knowledge
from attnlab.priors.inputs import Prior
from attnlab.priors.knowledge import WordNetLookup, class_ids, text_trees, visible_matrix
from attnlab.priors.wordnet import noun_classes

BRANCHES = 4  # at most this many classes per sentence, as the sentence tree caps them


@dataclass
class KbertEncoder:
    """A text encoder whose ids carry K-BERT branches: each WordNet noun is followed by the
    tokens of its noun classes (first sense), new ids from the base vocabulary's size on."""

    base: Any  # the task's TextEncoder
    max_branches: int = BRANCHES

    def __post_init__(self) -> None:
        self.nouns = noun_classes()
        self.classes = class_ids(self.nouns, self.base.vocab_size)
        self.lookup = WordNetLookup(self.nouns, longest=1)

    def __getattr__(self, name: str) -> Any:  # tokenizer, max_len, label_names
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + len(self.classes)

    @property
    def class_names(self) -> dict[int, str]:
        return {ids[0]: name for name, ids in self.classes.items()}

    def __call__(self, texts: list[str]) -> torch.LongTensor:
        batch, _ = text_trees(list(texts), self.tokenizer, self.lookup, max_len=self.max_len,
                              max_branches=self.max_branches, class_tokens=self.classes)
        return batch.tokens


@knowledge("kbert")
class KBert(Prior):
    """K-BERT's visible matrix (as `graph=`) and soft positions from token ids whose ids from
    `first` on are branch tokens (one per class), each hanging from the word just before its
    run; `continuation` lists the word-piece ids that continue a word (`##…`)."""

    gives = ("graph",)

    def __init__(self, first: int | None = None, classes: int = 0,
                 continuation: list[int] | None = None, max_branches: int = BRANCHES) -> None:
        super().__init__()
        if first is None:
            raise ConfigError("prior kbert is filled in from a text task's tokenizer when it trains; "
                              "train it on a text classification task")
        self.first, self.classes, self.max_branches = first, classes, max_branches
        cont = torch.zeros(first, dtype=torch.bool)
        cont[torch.tensor(continuation or [], dtype=torch.long)] = True
        self.register_buffer("continuation", cont, persistent=False)  # rebuilt from the config

    @classmethod
    def resolve(cls, spec: dict[str, Any], prepared: Any, exp: Any) -> dict[str, Any]:
        enc = prepared.encoders
        vocab = enc.tokenizer.get_vocab()
        return {**spec, "first": enc.base.vocab_size, "classes": len(enc.classes),
                "continuation": sorted(i for t, i in vocab.items() if t.startswith("##")),
                "max_branches": enc.max_branches}

    @classmethod
    def wrap_encoders(cls, encoders: Any, spec: dict[str, Any]) -> Any:
        if isinstance(encoders, KbertEncoder):
            return encoders
        return KbertEncoder(encoders, int(spec.get("max_branches", BRANCHES)))

    def forward(self, tokens: Tensor, pad: Tensor | None) -> dict[str, Tensor]:
        b, n = tokens.shape
        pad = torch.zeros_like(tokens, dtype=torch.bool) if pad is None else pad
        branch_token = (tokens >= self.first) & ~pad
        trunk = ~branch_token & ~pad
        where = torch.arange(n, device=tokens.device).expand(b, n)
        piece = self.continuation[tokens.clamp(max=self.first - 1)] & trunk
        # the latest trunk position at or before each token, and where its word begins
        last_trunk = torch.where(trunk, where, -1).cummax(1).values
        word_start = torch.where(trunk & ~piece, where, -1).cummax(1).values
        anchor = torch.where(trunk, word_start, word_start.gather(1, last_trunk.clamp(min=0)))
        anchor = torch.where(pad | (last_trunk < 0), -1, anchor)
        branch = torch.where(branch_token, where + 1, 0)  # each class token its own branch
        soft_trunk = trunk.long().cumsum(1) - 1  # a trunk token's place without the branches
        positions = torch.where(branch_token, soft_trunk + 1, soft_trunk.clamp(min=0))
        return {"graph": visible_matrix(branch, anchor, pad), "positions": positions.masked_fill(pad, 0)}
