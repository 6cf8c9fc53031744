"""Tokenizer and vocabulary, saved as JSON (never pickled).

Sentences are lower-cased and split into words and punctuation marks; tag-word texts (a list of tags
from the data's owner) keep each tag as one token. The vocabulary is built from the training texts only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from semshare.errors import DataFormatError
from semshare.fileio import atomic_write_text

PAD, UNK, MASK, CLS = "[PAD]", "[UNK]", "[MASK]", "[CLS]"
SPECIAL_TOKENS = (PAD, UNK, MASK, CLS)  # ids 0..3, in this order
VOCAB_FORMAT = "semshare-vocabulary"
VOCAB_VERSION = 1

# a word (letters/digits, inner apostrophes or hyphens kept) or one punctuation mark
_TOKEN_PATTERN = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*|[^\w\s]|_", re.UNICODE)


def tokenize(text: str | Sequence[str]) -> list[str]:
    """Lower-case tokens of a sentence, or the lower-cased tags of a tag list."""
    if isinstance(text, str):
        return _TOKEN_PATTERN.findall(text.lower())
    return [tag.strip().lower() for tag in text if tag.strip()]


def as_sentence(text: str | Sequence[str]) -> str:
    """A text item as one string: a sentence as it is, a tag list joined by spaces."""
    return text if isinstance(text, str) else " ".join(text)


@dataclass
class Vocabulary:
    """Token <-> id map. Ids 0..3 are PAD, UNK, MASK, CLS; the rest by descending training frequency."""

    tokens: list[str]
    min_count: int = 1
    counts: list[int] | None = None

    def __post_init__(self) -> None:
        if tuple(self.tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a vocabulary starts with the special tokens {SPECIAL_TOKENS}")
        self._index = {token: i for i, token in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be distinct")

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def mask_id(self) -> int:
        return 2

    @property
    def cls_id(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def encode(self, text: str | Sequence[str], max_length: int | None = None) -> list[int]:
        """Token ids of one text (UNK for unknown tokens), truncated to max_length."""
        ids = [self._index.get(token, 1) for token in tokenize(text)]
        return ids[:max_length] if max_length else ids

    def unknown_tokens(self, text: str | Sequence[str]) -> list[str]:
        return [token for token in tokenize(text) if token not in self._index]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    @classmethod
    def build(cls, texts: Iterable[str | Sequence[str]], min_count: int = 1, max_size: int | None = None) -> "Vocabulary":
        """Vocabulary of the tokens seen at least min_count times (ties broken alphabetically)."""
        counter: Counter = Counter()
        for text in texts:
            counter.update(tokenize(text))
        for special in SPECIAL_TOKENS:
            counter.pop(special, None)
        kept = sorted((t for t, c in counter.items() if c >= min_count), key=lambda t: (-counter[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(tokens=list(SPECIAL_TOKENS) + kept, min_count=min_count, counts=[0] * 4 + [counter[t] for t in kept])

    def save(self, path: str | Path) -> None:
        payload = {"format": VOCAB_FORMAT, "version": VOCAB_VERSION, "min_count": self.min_count,
                   "tokens": self.tokens, "counts": self.counts}
        atomic_write_text(path, json.dumps(payload, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFormatError(path, "vocabulary", "a JSON vocabulary file", f"unreadable ({type(exc).__name__})") from None
        if not isinstance(payload, dict) or payload.get("format") != VOCAB_FORMAT:
            raise DataFormatError(path, "format", repr(VOCAB_FORMAT), repr(payload.get("format") if isinstance(payload, dict) else payload)[:40])
        tokens = payload.get("tokens")
        if (not isinstance(tokens, list) or tuple(tokens[:4]) != SPECIAL_TOKENS
                or not all(isinstance(t, str) for t in tokens) or len(set(tokens)) != len(tokens)):
            raise DataFormatError(path, "tokens", f"distinct strings starting with {list(SPECIAL_TOKENS)}", repr(tokens)[:60])
        min_count, counts = payload.get("min_count", 1), payload.get("counts")
        if type(min_count) is not int or not (counts is None or (isinstance(counts, list) and len(counts) == len(tokens)
                                                                 and all(type(c) is int for c in counts))):
            raise DataFormatError(path, "min_count / counts", "an integer and one integer count per token",
                                  f"{min_count!r} / {repr(counts)[:40]}")
        return cls(tokens=tokens, min_count=min_count, counts=counts)


def encode_texts(vocab: Vocabulary, texts: Sequence, max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ragged token ids of many texts as (flat ids int32, offsets int64 of len(texts) + 1)."""
    encoded = [vocab.encode(text, max_length) for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(ids) for ids in encoded])
    flat = np.fromiter((i for ids in encoded for i in ids), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets
