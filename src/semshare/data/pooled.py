"""Pooled (one vector per item) inputs for linear methods: the same data, without the segments.

Image: mean of the real regions ("regions-mean") or the global feature ("global").
Text: precomputed text vectors ("vectors", one per row), a bag of words over a vocabulary ("bow", the
mean one-hot of a text's tokens, one per caption), or the mean of a text's word vectors ("word-vectors",
e.g. Word2Vec learned on the training captions; unknown words are skipped), or one given vector per text
item ("item-vectors", indexed by global text item id: e.g. MiniLM sentence vectors from `extract-text`).
"""

from __future__ import annotations

import numpy as np

from semshare.data.dataset import Dataset, TextItems, gather_rows
from semshare.data.text import Vocabulary
from semshare.errors import SemshareError

IMAGE_SOURCES = ("regions-mean", "global")
TEXT_SOURCES = ("vectors", "bow", "word-vectors", "item-vectors")


def pooled_image_features(dataset: Dataset, rows: np.ndarray, source: str) -> np.ndarray:
    """(len(rows), D) float32."""
    if source == "regions-mean":
        if dataset.regions is None:
            raise SemshareError(f"{dataset.root}: image source 'regions-mean' needs regions.npy")
        regions = gather_rows(dataset.regions, rows).astype(np.float32)
        mask = gather_rows(dataset.region_mask, rows).astype(np.float32)
        return (regions * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
    if source == "global":
        if dataset.image is None:
            raise SemshareError(f"{dataset.root}: image source 'global' needs image.npy")
        return gather_rows(dataset.image, rows).astype(np.float32)
    raise SemshareError(f"unknown image source {source!r}; expected one of {IMAGE_SOURCES}")


def pooled_text_features(dataset: Dataset, items: TextItems, source: str, vocab: Vocabulary | None = None,
                         word_vectors: np.ndarray | None = None, item_vectors: np.ndarray | None = None) -> np.ndarray:
    """(len(items.rows), Dt) float32 for the given text items."""
    if source == "item-vectors":
        if item_vectors is None:
            raise SemshareError("text source 'item-vectors' needs one vector per text item")
        return gather_rows(item_vectors, items.item_ids).astype(np.float32)
    if source == "vectors":
        if dataset.text_vectors is None:
            raise SemshareError(f"{dataset.root}: text source 'vectors' needs text.npy")
        return gather_rows(dataset.text_vectors, items.rows).astype(np.float32)
    if source == "bow":
        if vocab is None or items.texts is None:
            raise SemshareError("text source 'bow' needs captions and a vocabulary")
        features = np.zeros((len(items.texts), len(vocab)), dtype=np.float32)
        for i, text in enumerate(items.texts):
            ids = vocab.encode(text)
            if ids:
                np.add.at(features[i], ids, 1.0 / len(ids))
        return features
    if source == "word-vectors":
        if vocab is None or items.texts is None or word_vectors is None:
            raise SemshareError("text source 'word-vectors' needs captions, a vocabulary and its word vectors")
        features = np.zeros((len(items.texts), word_vectors.shape[1]), dtype=np.float32)
        for i, text in enumerate(items.texts):
            ids = [t for t in vocab.encode(text) if t != vocab.unk_id]
            if ids:
                features[i] = word_vectors[ids].mean(0)
        return features
    raise SemshareError(f"unknown text source {source!r}; expected one of {TEXT_SOURCES}")
