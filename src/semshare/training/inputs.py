"""A run's inputs, prepared once from its training split: rows, text vocabulary and word vectors, token-state
segments, region targets, the model's sizes, and the arrays a method fits (`fit_inputs`).

The arrays handed to a method's constructor (`fitted`: the Word2Vec vectors of a words run plus the method's
own entries) are saved in the run folder as `fitted_inputs.safetensors` and read back when the run is loaded,
so a method is built the same way from scratch and on load. Run folders written before this file existed
load too: a closed-form run's `word_vectors.safetensors` (key `vectors` or `word_vectors`) is read instead,
and a trained run needs nothing (its checkpoint holds the embedding the vectors initialised).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from semshare.data.dataset import Dataset
from semshare.data.text import Vocabulary
from semshare.data.text_segments import (TextSegments, default_segments_dir, open_text_segments, target_lookup,
                                         training_word_pieces)
from semshare.data.word_vectors import Word2VecConfig, load_word2vec_file, load_word_vectors, train_word2vec
from semshare.errors import ConfigError, DataFormatError, SemshareError
from semshare.fileio import atomic_write_bytes, atomic_write_json
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, FitContext, ModelSpec, RegionTargetRequest
from semshare.registry import METHODS
from semshare.training.loop import TrainConfig
from semshare.training.recipes import ExperimentConfig, TextConfig

logger = logging.getLogger(__name__)

FITTED_INPUTS_FILE = "fitted_inputs.safetensors"
LEGACY_WORD_VECTORS_FILE = "word_vectors.safetensors"  # closed-form runs written before fitted_inputs
VOCAB_FILE = "vocab.json"
SEGMENT_VOCAB_FILE = "segment_vocab.json"


def training_rows(dataset: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows); val is carved from train (seeded) when the data has none."""
    train, val = dataset.split("train"), dataset.split("val")
    if len(val):
        return train, val
    count = max(1, int(round(cfg.val_fraction * len(train))))
    shuffled = np.random.default_rng([cfg.seed, 0xCA5E]).permutation(train)
    logger.info("no val split in %s: carving %d of %d training rows (seed %d)", dataset.root, count, len(train), cfg.seed)
    return np.sort(shuffled[count:]), np.sort(shuffled[:count])


def build_vocabulary(texts: list, text: TextConfig) -> Vocabulary:
    """The run's vocabulary from its training texts (every run kind, and `prepare-text`, build it here)."""
    return Vocabulary.build(texts, min_count=text.min_count)


def build_word_vectors(texts: list, vocab: Vocabulary, text: TextConfig, seed: int) -> np.ndarray:
    """(V, D) vectors of the vocabulary: loaded from `text.word_vectors_path`, else Word2Vec on `texts`."""
    if text.word_vectors_path:
        return load_word2vec_file(text.word_vectors_path, vocab, seed=seed)[0]
    return train_word2vec(texts, vocab, Word2VecConfig(dim=text.word_dim, epochs=text.word2vec_epochs), seed=seed)


def training_texts(dataset: Dataset, train_rows: np.ndarray) -> list:
    if not dataset.has_captions:
        raise SemshareError(f"{dataset.root}: inputs.text=words needs captions.jsonl "
                            "(or use --set inputs.text=vector with text.npy)")
    return dataset.text_items(train_rows).texts


def open_segments(dataset: Dataset, text: TextConfig) -> TextSegments:
    if not dataset.has_captions:
        raise SemshareError(f"{dataset.root}: inputs.text=segments needs captions.jsonl (the text items)")
    folder = text.segments_dir or default_segments_dir(dataset.root, text.segments_encoder)
    return open_text_segments(folder, int(dataset.caption_offsets[-1]))


def region_targets(dataset: Dataset, request: RegionTargetRequest | None, train_rows: np.ndarray,
                   seed: int) -> tuple[np.ndarray | None, int]:
    """(N, R) class per region for masked region prediction, and the number of classes."""
    if request is None:
        return None, 0
    choice = request.source
    if choice == "auto":
        choice = "labels" if dataset.region_labels is not None else "kmeans"
    if choice == "labels":
        if dataset.region_labels is None:
            raise SemshareError(f"{dataset.root}: region targets 'labels' need region_labels.npy")
        targets = np.asarray(dataset.region_labels, dtype=np.int64)
        return targets, int(targets.max()) + 1
    if choice != "kmeans":
        raise ConfigError(f"unknown region targets {choice!r}; expected auto, labels or kmeans")
    from semshare.data.region_clusters import fit_region_clusters  # scikit-learn's k-means: loaded when asked

    return fit_region_clusters(dataset, train_rows, request.kmeans_k, seed=seed)


def image_dim(dataset: Dataset, image_input: str) -> int:
    if image_input == "regions":
        if dataset.regions is None:
            raise SemshareError(f"{dataset.root}: inputs.image=regions needs regions.npy "
                                "(or use --set inputs.image=global with image.npy)")
        return int(dataset.regions.shape[2])
    if dataset.image is None:
        raise SemshareError(f"{dataset.root}: inputs.image=global needs image.npy")
    return int(dataset.image.shape[1])


@dataclass
class TrainedInputs:
    """What a trained method's batches and constructor are made from."""

    spec: ModelSpec
    fitted: Mapping[str, np.ndarray]
    vocab: Vocabulary | None = None
    text_segments: TextSegments | None = None
    word_pieces: np.ndarray | None = None  # the word pieces of the training texts (segments runs)
    segment_targets: np.ndarray | None = None  # word-piece id -> masked-word class
    region_targets: np.ndarray | None = None


def build_method(cfg: ExperimentConfig, spec: ModelSpec, fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
    """The one way a method is constructed, for a new run and for a loaded one alike."""
    return METHODS.build(cfg.method, cfg.model, spec, cfg.inputs, fitted)


def fit_method_inputs(cfg: ExperimentConfig, context: FitContext,
                      shared: Mapping[str, np.ndarray] = NOTHING_FITTED) -> dict[str, np.ndarray]:
    """The shared entries (word vectors) plus what the method's `fit_inputs` computes; a clash is a bug."""
    own = cfg.method_class.fit_inputs(cfg.model, context)
    clash = sorted(set(own) & set(shared))
    if clash:
        raise ConfigError(f"{cfg.method}: fit_inputs returns {', '.join(clash)}, which the run already provides")
    return {**shared, **{name: np.asarray(value) for name, value in own.items()}}


def prepare_trained_inputs(dataset: Dataset, cfg: ExperimentConfig, train_rows: np.ndarray) -> TrainedInputs:
    """Vocabulary and word vectors or token segments, region targets, sizes and fitted arrays of a trained run."""
    vocab, word_vectors, segments, word_pieces, segment_targets = None, None, None, None, None
    image_dim(dataset, cfg.inputs.image)  # the image input is there before anything is fitted to it
    if cfg.inputs.text == "words":
        texts = training_texts(dataset, train_rows)
        vocab = build_vocabulary(texts, cfg.text)
        word_vectors = build_word_vectors(texts, vocab, cfg.text, cfg.train.seed)
    elif cfg.inputs.text == "segments":
        segments = open_segments(dataset, cfg.text)
        word_pieces = training_word_pieces(segments, dataset.text_items(train_rows).item_ids)
        segment_targets = target_lookup(word_pieces, int(segments.meta["vocab_size"]))
    elif dataset.text_vectors is None:
        raise SemshareError(f"{dataset.root}: inputs.text=vector needs text.npy")
    targets, num_region_classes = region_targets(dataset, cfg.method_class.region_targets_wanted(cfg.model, cfg.inputs),
                                                 train_rows, cfg.train.seed)
    if segments is not None:
        text_dim, vocab_size = segments.dim, int(segment_targets.max()) + 1
    else:
        text_dim = int(dataset.text_vectors.shape[1]) if dataset.text_vectors is not None else 0
        vocab_size = len(vocab) if vocab else 0
    spec = ModelSpec(
        num_labels=dataset.num_labels, region_dim=image_dim(dataset, cfg.inputs.image), text_dim=text_dim,
        vocab_size=vocab_size, word_dim=int(word_vectors.shape[1]) if word_vectors is not None else 0,
        mask_id=vocab.mask_id if vocab else 2, num_region_classes=num_region_classes,
    )
    shared = {WORD_VECTORS: word_vectors} if word_vectors is not None else {}
    context = FitContext(dataset, train_rows, cfg.inputs, cfg.train.seed, vocab, word_vectors)
    fitted = fit_method_inputs(cfg, context, shared)
    return TrainedInputs(spec, fitted, vocab, segments, word_pieces, segment_targets, targets)


def save_text_inputs(run_dir: Path, vocab: Vocabulary | None, segments: TextSegments | None = None,
                     word_pieces: np.ndarray | None = None) -> None:
    if vocab is not None:
        vocab.save(run_dir / VOCAB_FILE)
    if segments is not None:
        atomic_write_json(run_dir / SEGMENT_VOCAB_FILE, {"encoder": segments.meta["encoder"],
                                                         "vocab_size": int(segments.meta["vocab_size"]),
                                                         "word_pieces": word_pieces.tolist()})


def load_vocabulary(run_dir: Path, required: bool = False) -> Vocabulary | None:
    """The run's vocabulary; None for a run that has none (`required`: a run that reads words must)."""
    path = run_dir / VOCAB_FILE
    if path.exists():
        return Vocabulary.load(path)
    if required:
        raise SemshareError(f"{path}: file: expected the vocabulary of a run that reads words, found no such file")
    return None


def load_segment_targets(run_dir: Path) -> np.ndarray:
    path = run_dir / SEGMENT_VOCAB_FILE
    try:
        saved = json.loads(path.read_text())
        return target_lookup(np.array(saved["word_pieces"], dtype=np.int64), saved["vocab_size"])
    except FileNotFoundError:
        raise SemshareError(f"{path}: file: expected the run's word-piece vocabulary, found no such file") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SemshareError(f"{path}: word_pieces: expected the run's word-piece vocabulary, found an unreadable "
                            f"file ({exc})") from None


def save_fitted_inputs(run_dir: Path, fitted: Mapping[str, np.ndarray]) -> None:
    """The fitted arrays as safetensors, written atomically; keys sorted so equal arrays give equal bytes."""
    from safetensors.numpy import save

    arrays = {name: np.ascontiguousarray(fitted[name]) for name in sorted(fitted)}
    atomic_write_bytes(run_dir / FITTED_INPUTS_FILE, save(arrays))


def load_fitted_inputs(run_dir: Path) -> dict[str, np.ndarray]:
    """The arrays the run's method was built with; an old folder's word_vectors.safetensors, or nothing."""
    from safetensors.numpy import load_file

    path = run_dir / FITTED_INPUTS_FILE
    if path.exists():
        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors raises several types on a damaged file
            raise DataFormatError(path, "fitted inputs", "a safetensors file of arrays", f"unreadable ({exc})") from None
    legacy = run_dir / LEGACY_WORD_VECTORS_FILE
    return {WORD_VECTORS: load_word_vectors(legacy)} if legacy.exists() else {}
