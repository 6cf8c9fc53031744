"""Word vectors aligned to a Vocabulary: Word2Vec trained on the training texts, or a user's word2vec file.

Rows follow vocabulary ids. PAD is zero; other tokens the source lacks (specials, rare words) get small
seeded random vectors, so every id has a trainable starting point. Saved as safetensors (no pickle).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from semshare.data.text import Vocabulary, tokenize
from semshare.errors import DataFormatError
from semshare.fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

WORD_VECTORS_KEY = "word_vectors"
LEGACY_WORD_VECTORS_KEY = "vectors"


@dataclass(frozen=True)
class Word2VecConfig:
    dim: int = 300
    window: int = 5
    epochs: int = 10
    min_count: int = 1
    negative: int = 5
    skip_gram: bool = True


def _stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn(word + seed); Python's hash() is salted per process
    return zlib.crc32(text.encode("utf-8"))


def _fill_missing(matrix: np.ndarray, found: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = float(matrix[found].std()) if found.any() else 0.1
    missing = ~found
    matrix[missing] = rng.normal(0.0, scale or 0.1, size=(int(missing.sum()), matrix.shape[1]))
    matrix[0] = 0.0  # PAD
    return matrix


def train_word2vec(
    texts: Sequence, vocab: Vocabulary, config: Word2VecConfig = Word2VecConfig(), seed: int = 0
) -> np.ndarray:
    """(V, dim) float32 Word2Vec vectors trained on `texts` (the training split's texts only).

    Deterministic for a given seed: one worker thread and a process-independent hash.
    """
    from gensim.models import Word2Vec

    sentences = [tokenize(text) for text in texts]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise ValueError("no training text to learn word vectors from")
    model = Word2Vec(
        sentences=sentences,
        vector_size=config.dim,
        window=config.window,
        min_count=config.min_count,
        sg=1 if config.skip_gram else 0,
        negative=config.negative,
        epochs=config.epochs,
        seed=seed,
        workers=1,
        hashfxn=_stable_hash,
    )
    matrix = np.zeros((len(vocab), config.dim), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    for i, token in enumerate(vocab.tokens):
        if token in model.wv.key_to_index:
            matrix[i] = model.wv[token]
            found[i] = True
    logger.info("word2vec: %d of %d vocabulary tokens learned", int(found.sum()), len(vocab))
    return _fill_missing(matrix, found, seed)


MAX_WORD_VECTOR_BYTES = 16 << 30  # GoogleNews-vectors (3.6 GB) and GloVe 840B (5.6 GB) fit


def load_word2vec_file(path: str | Path, vocab: Vocabulary, seed: int = 0) -> tuple[np.ndarray, float]:
    """Align a word2vec `.bin` (binary) or `.txt` file to the vocabulary; returns (matrix, coverage)."""
    from gensim.models import KeyedVectors

    import stat

    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "word vectors", "an existing word2vec .bin or .txt file", "no such file")
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):  # /dev/zero would be read without end, a FIFO wait forever
        raise DataFormatError(path, "word vectors", "a regular word2vec .bin or .txt file", "a device, FIFO or folder")
    if info.st_size > MAX_WORD_VECTOR_BYTES:
        raise DataFormatError(path, "word vectors", f"a word2vec file of at most {MAX_WORD_VECTOR_BYTES >> 30} GB",
                              f"{info.st_size >> 30} GB")
    binary = path.suffix == ".bin"
    try:
        vectors = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    except Exception as exc:  # gensim raises many types on malformed files
        kind = "binary" if binary else "text"
        raise DataFormatError(path, "word vectors", f"a word2vec {kind} file", f"unreadable ({exc})") from None
    bad = np.flatnonzero(~np.isfinite(vectors.vectors).all(axis=1))
    if len(bad):  # a NaN here would surface later as a diverging loss, blamed on the learning rate
        raise DataFormatError(path, f"vector of {vectors.index_to_key[bad[0]]!r}", "finite numbers",
                              f"NaN or inf ({len(bad)} words)")
    matrix = np.zeros((len(vocab), vectors.vector_size), dtype=np.float32)
    found = np.zeros(len(vocab), dtype=bool)
    for i, token in enumerate(vocab.tokens):
        if token in vectors.key_to_index:
            matrix[i] = vectors[token]
            found[i] = True
    coverage = float(found[4:].mean()) if len(vocab) > 4 else 0.0
    logger.info("word vectors from %s cover %.1f%% of the vocabulary", path, 100 * coverage)
    return _fill_missing(matrix, found, seed), coverage


def save_word_vectors(path: str | Path, matrix: np.ndarray) -> None:
    from safetensors.numpy import save

    atomic_write_bytes(path, save({WORD_VECTORS_KEY: np.ascontiguousarray(matrix, dtype=np.float32)}))


def load_word_vectors(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    from safetensors.numpy import load_file

    path = Path(path)
    try:
        tensors = load_file(str(path))
    except Exception as exc:
        raise DataFormatError(path, WORD_VECTORS_KEY, "a safetensors file with a word_vectors tensor", str(exc)) from None
    # one layout, two names read: closed-form runs before fitted_inputs.safetensors wrote the key `vectors`
    matrix = tensors.get(WORD_VECTORS_KEY, tensors.get(LEGACY_WORD_VECTORS_KEY))
    if matrix is None:
        raise DataFormatError(path, WORD_VECTORS_KEY, "a tensor named word_vectors", f"tensors {sorted(tensors)}")
    if vocab_size is not None and matrix.shape[0] != vocab_size:
        raise DataFormatError(path, WORD_VECTORS_KEY, f"{vocab_size} rows (the vocabulary size)", f"{matrix.shape[0]}")
    return matrix
