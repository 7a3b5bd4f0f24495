"""Word-level tokenizer over the caption grammar, with reserved placeholder tokens for new concepts.

ids: 0 <pad>, 1 <bos>, 2 <eos>, 3..12 the placeholders <new0>..<new9> (never in pretraining
captions), then the grammar's words in sorted order. A caption becomes <bos> w1 ... wn <eos>
<pad>...; an unknown word or a caption longer than the context is an error.
"""
from __future__ import annotations

import torch

from core import captions
from core.config import PLACEHOLDERS
from core.errors import ConfigError

SPECIALS = ("<pad>", "<bos>", "<eos>")
PAD, BOS, EOS = 0, 1, 2


class Tokenizer:
    def __init__(self, words: list[str], context_length: int):
        self.words = list(words)
        self.context_length = context_length
        self.itos = list(SPECIALS) + list(PLACEHOLDERS) + self.words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate words")

    @classmethod
    def for_dataset(cls, dataset: str, class_names, context_length: int) -> "Tokenizer":
        return cls(captions.vocabulary(dataset, class_names), context_length)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """A caption -> context_length ids; an unknown word or too many words is a ConfigError."""
        words = captions.check_caption(text, self.words, self.context_length)
        ids = [BOS] + [self.stoi[w] for w in words] + [EOS]
        return ids + [PAD] * (self.context_length - len(ids))

    def __call__(self, texts) -> torch.Tensor:
        """list of B captions -> (B, context_length) int64."""
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        return " ".join(self.itos[i] for i in ids if i not in (PAD, BOS, EOS))

    def placeholder_id(self, token: str) -> int:
        if token not in PLACEHOLDERS:
            raise ConfigError(f"{token!r} is not a placeholder; valid: {', '.join(PLACEHOLDERS)}")
        return self.stoi[token]
