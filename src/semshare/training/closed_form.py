"""Closed-form methods as runs: pooled features of the training split -> one `fit` -> a run folder.

The run folder has what a trained run has (config.yaml, model_spec.json, splits.json, `best/` with the
weights in safetensors and a state.json, fitted_inputs.safetensors) plus vocab.json for bag-of-words or
Word2Vec text, so `evaluate`, `benchmark` and `index build` load it alike. The vocabulary and word vectors
come from the same recipe as a trained run's (training/inputs.py: every `text.*` key holds).
Choices: fits use the whole train split (nothing is carved off: only ridge selects, on the val split when
the data has one); text features are one per text item, the first caption of each image pairs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from semshare.config import to_dict
from semshare.data.dataset import Dataset, TextItems
from semshare.data.pooled import pooled_image_features, pooled_text_features
from semshare.data.text import Vocabulary
from semshare.errors import SemshareError
from semshare.evaluation.protocols import EmbeddingTable
from semshare.fileio import (atomic_directory, atomic_write_json, read_json_object, read_tensors, safetensors_bytes,
                             verify_files_manifest, write_files_manifest)
from semshare.methods.base import WORD_VECTORS, FitContext, LinearEncoder, ModelSpec, PairedFeatures
from semshare.training.checkpoint import CHECKPOINT_FORMAT_VERSION, STATE_FILE, TrainState
from semshare.training.inputs import (build_method, build_vocabulary, build_word_vectors, fit_method_inputs, load_fitted_inputs,
                                      load_vocabulary, open_segments, save_fitted_inputs, save_text_inputs,
                                      training_texts)
from semshare.names import BEST
from semshare.training.finished_run import LABEL_RANKING, RankingStage, Run, RunCapabilities
from semshare.training.recipes import ExperimentConfig
from semshare.training.run_folder import (check_checkpoint_of_run, read_run_config, read_split_rows, run_identity,
                                          save_run_description)

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
    deep_run: object | None = None  # a trained TrainedRun whose pooled features are the inputs

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


def feature_space(cfg: ExperimentConfig, dataset: Dataset, train_rows: np.ndarray, vocab: Vocabulary | None = None,
                  word_vectors: np.ndarray | None = None, deep_run=None) -> FeatureSpace:
    """The features the run's inputs name; vocabulary and word vectors are built on `train_rows` unless given
    (a loaded run gives its saved ones). `deep_run`: the trained run of `text.deep_features_run`."""
    if deep_run is not None:
        return FeatureSpace("deep", "deep", deep_run.text_source, deep_run=deep_run)
    if dataset is None:  # a loaded run on its own: its saved vocabulary and word vectors say what it read
        return _space_without_dataset(cfg, vocab, word_vectors)
    image_source = "regions-mean" if cfg.inputs.image == "regions" and dataset.has_regions else "global"
    if cfg.inputs.text == "vector" or not dataset.has_captions:
        return FeatureSpace(image_source, "vectors", "vectors")
    if cfg.inputs.text == "segments":  # the pooled form of the token states the neural methods read
        store = open_segments(dataset, cfg.text)
        return FeatureSpace(image_source, "item-vectors", "captions", item_vectors=np.asarray(store.sentence, dtype=np.float32))
    if cfg.text.pooled not in ("bow", "word2vec"):
        raise SemshareError(f"text.pooled: expected bow or word2vec, found {cfg.text.pooled!r}")
    if vocab is None:
        vocab = build_vocabulary(training_texts(dataset, train_rows), cfg.text)
    if cfg.text.pooled == "bow":
        return FeatureSpace(image_source, "bow", "captions", vocab=vocab)
    if word_vectors is None:
        word_vectors = build_word_vectors(training_texts(dataset, train_rows), vocab, cfg.text, cfg.train.seed)
    return FeatureSpace(image_source, "word-vectors", "captions", vocab=vocab, word_vectors=word_vectors)


def _space_without_dataset(cfg: ExperimentConfig, vocab: Vocabulary | None, word_vectors: np.ndarray | None) -> FeatureSpace:
    image_source = "regions-mean" if cfg.inputs.image == "regions" else "global"
    if cfg.inputs.text != "words" or vocab is None:
        return FeatureSpace(image_source, "vectors", "vectors")
    if cfg.text.pooled == "bow":
        return FeatureSpace(image_source, "bow", "captions", vocab=vocab)
    if word_vectors is None:
        raise SemshareError("a pooled-word2vec run saved before its word vectors were kept needs its dataset")
    return FeatureSpace(image_source, "word-vectors", "captions", vocab=vocab, word_vectors=word_vectors)


def paired_features(space: FeatureSpace, dataset: Dataset, rows: np.ndarray) -> PairedFeatures:
    items = dataset.text_items(rows, space.caption_source)
    labels = np.asarray(dataset.labels, dtype=np.float64)
    first = np.unique(items.rows, return_index=True)[1]  # text items are grouped by row, rows sorted
    return PairedFeatures(space.image(dataset, rows), space.text(dataset, items), labels[rows], labels[items.rows], first)


@dataclass(repr=False)  # Run's repr: the folder, method and inputs
class ClosedFormRun(Run):
    """A fitted closed-form method: the finished run's questions answered on pooled features (no label
    classifier, no extractor path for new image files, no token states)."""

    cfg: ExperimentConfig
    dataset: Dataset | None  # None: loaded without its data (it encodes queries; embedding rows needs the data)
    space: FeatureSpace
    encoder: LinearEncoder
    train_rows: np.ndarray
    val_rows: np.ndarray
    run_dir: Path | None = None  # the folder it was loaded from
    checkpoint: str = BEST
    ranking_stage: RankingStage = LABEL_RANKING
    num_labels: int | None = None

    @property
    def capabilities(self) -> RunCapabilities:
        return RunCapabilities(free_text=self.space.text_source in ("bow", "word-vectors"), token_states=False,
                               image_files=False, label_classifier=False, pairwise_scoring=False)

    @property
    def text_source(self) -> str:
        return self.space.caption_source

    @property
    def vocab(self) -> Vocabulary | None:
        return self.space.vocab

    def embed_label_space(self, rows: np.ndarray, sides: tuple[str, ...], device="cpu",
                          batch_size: int = 256) -> tuple[EmbeddingTable, EmbeddingTable]:
        empty = EmbeddingTable(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))
        img = txt = empty
        if "image" in sides:
            img = EmbeddingTable(rows, self.encoder.transform_image(self.space.image(self.dataset, rows)))
        if "text" in sides:
            items = self.dataset.text_items(rows, self.text_source)
            txt = EmbeddingTable(items.item_ids, self.encoder.transform_text(self.space.text(self.dataset, items)))
        return img, txt

    def encode_word_batch(self, texts: Sequence[list[str]], with_labels: bool = False) -> tuple[np.ndarray, None]:
        """(N, D) raw embeddings of tokenised free texts, each pooled and projected on its own."""
        out = []
        for known in texts:
            items = TextItems(rows=np.zeros(1, dtype=np.int64), item_ids=np.zeros(1, dtype=np.int64), texts=[known])
            out.append(self.encoder.transform_text(self.space.text(self.dataset, items))[0])
        return (np.stack(out) if out else np.zeros((0, 0))), None


def fit_closed_form_run(dataset: Dataset, cfg: ExperimentConfig, run_dir: Path, deep_run=None) -> TrainState:
    """Fit the method on the whole train split (ridge selects on val) and write the run folder.
    `deep_run`: the trained run whose pooled features are the inputs (`text.deep_features_run`)."""
    train_rows, val_rows = dataset.split("train"), dataset.split("val")
    space = feature_space(cfg, dataset, train_rows, deep_run=deep_run)
    if deep_run is not None:  # fitted where the features were learned
        train_rows = deep_run.train_rows
    features = paired_features(space, dataset, train_rows)
    if len(val_rows):
        features.val = paired_features(space, dataset, val_rows)
    spec = ModelSpec(num_labels=dataset.num_labels, region_dim=int(features.img.shape[1]),
                     text_dim=int(features.txt.shape[1]))
    shared = {WORD_VECTORS: space.word_vectors} if space.word_vectors is not None else {}
    fitted = fit_method_inputs(cfg, FitContext(dataset, train_rows, cfg.inputs, cfg.train.seed, space.vocab,
                                               space.word_vectors), shared)
    method = build_method(cfg, spec, fitted)
    encoder = method.fit(features, cfg.train.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_text_inputs(run_dir, space.vocab)
    if fitted:
        save_fitted_inputs(run_dir, fitted)
    save_run_description(run_dir, cfg, spec, dataset, train_rows, val_rows)
    state = {"step": 0, "epoch": 0, "best_epoch": 0, "best_metric": None, "format_version": CHECKPOINT_FORMAT_VERSION}
    metadata = {"config": json.dumps(to_dict(cfg)), "model_spec": json.dumps(to_dict(spec)),
                "run_id": json.dumps(run_identity(run_dir))}
    with atomic_directory(run_dir / BEST, overwrite=True) as best:  # the one fit, as a trained run's best/
        (best / ENCODER_FILE).write_bytes(safetensors_bytes(encoder.to_tensors(), metadata))
        atomic_write_json(best / STATE_FILE, state)
        write_files_manifest(best)
    return TrainState.from_record(state)


def closed_form_fit_complete(run_dir: Path) -> bool:
    """The fit finished: its encoder and state are in best/ and match best/files.json."""
    best = run_dir / BEST
    if not ((best / ENCODER_FILE).exists() and (best / STATE_FILE).exists()):
        return False
    verify_files_manifest(best, "checkpoint")
    return True


def read_fit_state(run_dir: Path) -> TrainState:
    return TrainState.from_record(read_json_object(run_dir / BEST / STATE_FILE, "the state of the finished fit"))


def load_closed_form_run(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset | None, deep_run=None) -> ClosedFormRun:
    weights = run_dir / BEST / ENCODER_FILE
    if not weights.exists():
        raise SemshareError(f"{weights}: no such file; the closed-form fit did not finish (rerun `semshare train`)")
    verify_files_manifest(run_dir / BEST, "checkpoint")
    from semshare.training.checkpoint import read_checkpoint_metadata

    check_checkpoint_of_run(run_dir, run_dir / BEST, cfg, read_checkpoint_metadata(run_dir / BEST))
    fitted = load_fitted_inputs(run_dir)
    train_rows, val_rows = read_split_rows(run_dir, dataset.num_items if dataset is not None else None)
    # a pooled-words run must bring its own vocabulary: one rebuilt from the data now may not be the fitted one
    vocab = load_vocabulary(run_dir, required=deep_run is None and cfg.inputs.text == "words"
                            and (dataset is None or dataset.has_captions))
    space = feature_space(cfg, dataset, train_rows, vocab, fitted.get(WORD_VECTORS), deep_run)
    return ClosedFormRun(cfg, dataset, space, LinearEncoder.from_tensors(read_tensors(weights, "the fitted encoder")),
                         train_rows, val_rows, run_dir, num_labels=int(read_run_config(run_dir)[1].num_labels))
