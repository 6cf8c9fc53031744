"""Closed-form methods as runs: pooled features of the training split -> one `fit` -> a run folder.

The run folder has what a trained run has (config.yaml, model_spec.json, splits.json, `best/` with the
weights in safetensors and a state.json) plus the feature space's own files (vocab.json for bag-of-words
or Word2Vec text, word_vectors.safetensors), so `evaluate`, `benchmark` and `index build` load it alike.
Choices: fits use the whole train split (nothing is carved off: only ridge selects, on the val split when
the data has one); text features are one per text item, the first caption of each image pairs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from semshare.config import to_dict
from semshare.data.dataset import Dataset, TextItems, open_dataset
from semshare.data.pooled import pooled_image_features, pooled_text_features
from semshare.data.text import Vocabulary
from semshare.data.text_segments import default_segments_dir, open_text_segments
from semshare.data.word_vectors import Word2VecConfig, train_word2vec
from semshare.errors import SemshareError
from semshare.evaluation.protocols import EmbeddingTable
from semshare.fileio import atomic_write_json, verify_files_manifest, write_files_manifest
from semshare.methods.base import LinearEncoder, ModelSpec, PairedFeatures
from semshare.registry import METHODS
from semshare.training.checkpoint import CHECKPOINT_FORMAT_VERSION

WORD_VECTORS_FILE = "word_vectors.safetensors"
ENCODER_FILE = "model.safetensors"


@dataclass
class FeatureSpace:
    """How items become the pooled vectors a closed-form method reads."""

    image_source: str  # regions-mean | global | deep
    text_source: str  # bow | word-vectors | vectors | item-vectors | deep
    caption_source: str  # which text items: captions | vectors
    vocab: Vocabulary | None = None
    word_vectors: np.ndarray | None = None
    item_vectors: np.ndarray | None = None  # one vector per global text item (MiniLM sentence vectors)
    deep_run: object | None = None  # a trained PreparedRun whose pooled features are the inputs

    def image(self, dataset: Dataset, rows: np.ndarray) -> np.ndarray:
        if self.deep_run is not None:
            return self._deep(self.deep_run.builder(training=False).build_images, rows, "image")
        return pooled_image_features(dataset, rows, self.image_source)

    def text(self, dataset: Dataset, items: TextItems) -> np.ndarray:
        if self.deep_run is not None:
            return self._deep(self.deep_run.builder(training=False).build_texts, items.item_ids, "text")
        return pooled_text_features(dataset, items, self.text_source, self.vocab, self.word_vectors, self.item_vectors)

    @torch.no_grad()
    def _deep(self, build, ids: np.ndarray, side: str, batch_size: int = 256) -> np.ndarray:
        model = self.deep_run.model
        return np.concatenate([model.encode_features(build(ids[i : i + batch_size]), side).numpy()
                               for i in range(0, len(ids), batch_size)])


def _feature_space(cfg, dataset: Dataset, train_rows: np.ndarray, vocab: Vocabulary | None = None,
                   word_vectors: np.ndarray | None = None) -> FeatureSpace:
    """The features the run's inputs name; vocabulary and word vectors are built on `train_rows` unless given."""
    if cfg.text.deep_features_run:
        from semshare.training.experiment import load_run

        deep_run = load_run(cfg.text.deep_features_run, dataset.root, dataset=dataset)
        return FeatureSpace("deep", "deep", deep_run.text_source, deep_run=deep_run)
    image_source = "regions-mean" if cfg.inputs.image == "regions" and dataset.has_regions else "global"
    if cfg.inputs.text == "vector" or not dataset.has_captions:
        return FeatureSpace(image_source, "vectors", "vectors")
    if cfg.inputs.text == "segments":  # the pooled form of the token states the neural methods read
        folder = cfg.text.segments_dir or default_segments_dir(dataset.root, cfg.text.segments_encoder)
        store = open_text_segments(folder, int(dataset.caption_offsets[-1]))
        return FeatureSpace(image_source, "item-vectors", "captions", item_vectors=np.asarray(store.sentence, dtype=np.float32))
    if cfg.text.pooled not in ("bow", "word2vec"):
        raise SemshareError(f"text.pooled: expected bow or word2vec, found {cfg.text.pooled!r}")
    if vocab is None:
        vocab = Vocabulary.build(dataset.text_items(train_rows).texts)
    if cfg.text.pooled == "bow":
        return FeatureSpace(image_source, "bow", "captions", vocab=vocab)
    if word_vectors is None:
        word_vectors = train_word2vec(dataset.text_items(train_rows).texts, vocab,
                                      Word2VecConfig(dim=cfg.text.word_dim, epochs=cfg.text.word2vec_epochs),
                                      seed=cfg.train.seed)
    return FeatureSpace(image_source, "word-vectors", "captions", vocab=vocab, word_vectors=word_vectors)


def paired_features(space: FeatureSpace, dataset: Dataset, rows: np.ndarray) -> PairedFeatures:
    items = dataset.text_items(rows, space.caption_source)
    labels = np.asarray(dataset.labels, dtype=np.float64)
    first = np.unique(items.rows, return_index=True)[1]  # text items are grouped by row, rows sorted
    return PairedFeatures(space.image(dataset, rows), space.text(dataset, items), labels[rows], labels[items.rows], first)


@dataclass
class ClosedFormRun:
    """A fitted closed-form method: the same questions as a PreparedRun answers, on pooled features."""

    cfg: object
    dataset: Dataset
    space: FeatureSpace
    encoder: LinearEncoder
    train_rows: np.ndarray
    val_rows: np.ndarray

    pairwise_scoring = False

    @property
    def text_source(self) -> str:
        return self.space.caption_source

    def embed(self, rows: np.ndarray, sides: tuple[str, ...] = ("image", "text"), device="cpu",
              batch_size: int = 256) -> tuple[EmbeddingTable, EmbeddingTable]:
        rows = np.asarray(rows, dtype=np.int64)
        empty = EmbeddingTable(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))
        img = txt = empty
        if "image" in sides:
            img = EmbeddingTable(rows, self.encoder.transform_image(self.space.image(self.dataset, rows)))
        if "text" in sides:
            items = self.dataset.text_items(rows, self.text_source)
            txt = EmbeddingTable(items.item_ids, self.encoder.transform_text(self.space.text(self.dataset, items)))
        return img, txt


def fit_closed_form_run(data_dir: str | Path, cfg, run_dir: str | Path, dataset: Dataset | None = None) -> dict:
    """Fit the method on the whole train split (ridge selects on val) and write the run folder."""
    from semshare.training.experiment import save_run_description

    dataset = dataset or open_dataset(data_dir)
    run_dir = Path(run_dir)
    train_rows, val_rows = dataset.split("train"), dataset.split("val")
    space = _feature_space(cfg, dataset, train_rows)
    if space.deep_run is not None:  # fitted where the features were learned
        train_rows = space.deep_run.train_rows
    features = paired_features(space, dataset, train_rows)
    if len(val_rows):
        features.val = paired_features(space, dataset, val_rows)
    method = METHODS.build(cfg.method, cfg.model, cfg.train.seed)
    encoder = method.fit(features)
    spec = ModelSpec(num_labels=dataset.num_labels, region_dim=int(features.img.shape[1]),
                     text_dim=int(features.txt.shape[1]))
    run_dir.mkdir(parents=True, exist_ok=True)
    if space.vocab is not None:
        space.vocab.save(run_dir / "vocab.json")
    if space.word_vectors is not None:
        save_file({"vectors": torch.from_numpy(np.ascontiguousarray(space.word_vectors))}, str(run_dir / WORD_VECTORS_FILE))
    save_run_description(run_dir, cfg, spec, dataset, train_rows, val_rows)
    state = {"step": 0, "epoch": 0, "best_epoch": 0, "best_metric": None, "format_version": CHECKPOINT_FORMAT_VERSION}
    best = run_dir / "best"
    best.mkdir(exist_ok=True)
    save_file(encoder.to_tensors(), str(best / ENCODER_FILE),
              metadata={"config": json.dumps(to_dict(cfg)), "model_spec": json.dumps(to_dict(spec))})
    atomic_write_json(best / "state.json", state)
    write_files_manifest(best)
    return state


def load_closed_form_run(run_dir: Path, cfg, dataset: Dataset) -> ClosedFormRun:
    from semshare.training.checkpoint import _read_tensors

    weights = run_dir / "best" / ENCODER_FILE
    if not weights.exists():
        raise SemshareError(f"{weights}: no such file; the closed-form fit did not finish (rerun `semshare train`)")
    verify_files_manifest(run_dir / "best", "checkpoint")
    vocab = Vocabulary.load(run_dir / "vocab.json") if (run_dir / "vocab.json").exists() else None
    word_vectors = None
    if (run_dir / WORD_VECTORS_FILE).exists():
        word_vectors = load_file(str(run_dir / WORD_VECTORS_FILE))["vectors"].numpy()
    splits = json.loads((run_dir / "splits.json").read_text())
    train_rows = np.array(splits["train"], dtype=np.int64)
    space = _feature_space(cfg, dataset, train_rows, vocab, word_vectors)
    return ClosedFormRun(cfg, dataset, space, LinearEncoder.from_tensors(_read_tensors(weights, "the fitted encoder")), train_rows,
                         np.array(splits["val"], dtype=np.int64))
