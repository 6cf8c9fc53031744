"""Ridge regression of each modality onto the labels; the predicted label scores are the embeddings.

A closed-form reference point (../REFERENCE.md lists its numbers on the shared data): no training loop,
ridge strength chosen on the validation split by NDCG@500 (Ave).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from semshare.data.dataset import Dataset
from semshare.data.pooled import default_image_source, default_text_source, pooled_image_features, pooled_text_features
from semshare.data.text import Vocabulary
from semshare.evaluation.protocols import EmbeddingTable
from semshare.evaluation.retrieval import MetricSpec, evaluate_cross_modal, summarise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RidgeConfig:
    strengths: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    image_source: str = "auto"  # regions-mean | global
    text_source: str = "auto"  # bow | vectors | item-vectors (given to fit_ridge_model)


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


def solve_ridge(features: np.ndarray, targets: np.ndarray, strength: float) -> np.ndarray:
    """(D + 1, C) weights minimising ||[X 1] W - Y||^2 + strength ||W||^2."""
    x = _with_bias(features.astype(np.float64))
    return np.linalg.solve(x.T @ x + strength * np.eye(x.shape[1]), x.T @ targets.astype(np.float64))


@dataclass
class RidgeModel:
    img_weights: np.ndarray
    txt_weights: np.ndarray
    image_source: str
    text_source: str
    vocab: Vocabulary | None
    strength: float
    item_vectors: np.ndarray | None = None

    def embed(self, dataset: Dataset, rows: np.ndarray) -> tuple[EmbeddingTable, EmbeddingTable]:
        """Image embeddings of `rows` and text embeddings of their text items."""
        text_items = dataset.text_items(rows, "vectors" if self.text_source == "vectors" else "captions")
        img = _with_bias(pooled_image_features(dataset, rows, self.image_source)) @ self.img_weights
        txt = _with_bias(pooled_text_features(dataset, text_items, self.text_source, self.vocab,
                                              item_vectors=self.item_vectors)) @ self.txt_weights
        return EmbeddingTable(rows, img), EmbeddingTable(text_items.item_ids, txt)


def fit_ridge_model(dataset: Dataset, cfg: RidgeConfig = RidgeConfig(),
                    item_vectors: np.ndarray | None = None) -> RidgeModel:
    """`item_vectors`: one text vector per global text item (e.g. MiniLM sentence vectors); used when given."""
    image_source = default_image_source(dataset) if cfg.image_source == "auto" else cfg.image_source
    text_source = default_text_source(dataset) if cfg.text_source == "auto" else cfg.text_source
    if item_vectors is not None:
        text_source = "item-vectors"
    caption_source = "vectors" if text_source == "vectors" else "captions"
    train, val = dataset.split("train"), dataset.split("val")
    train_txt = dataset.text_items(train, caption_source)
    vocab = Vocabulary.build(train_txt.texts) if text_source == "bow" else None
    labels = np.asarray(dataset.labels, dtype=np.float64)
    img_x = pooled_image_features(dataset, train, image_source)
    txt_x = pooled_text_features(dataset, train_txt, text_source, vocab, item_vectors=item_vectors)
    candidates = []
    for strength in cfg.strengths:
        candidates.append(RidgeModel(solve_ridge(img_x, labels[train], strength),
                                     solve_ridge(txt_x, labels[train_txt.rows], strength),
                                     image_source, text_source, vocab, strength, item_vectors))
    if len(val) == 0 or len(candidates) == 1:
        logger.info("ridge: no validation split; using strength %s", cfg.strengths[len(cfg.strengths) // 2])
        return candidates[len(candidates) // 2]
    best_score, best = -1.0, candidates[0]
    for model in candidates:
        img, txt = model.embed(dataset, val)
        val_txt = dataset.text_items(val, caption_source)
        score = summarise(evaluate_cross_modal(img.emb, txt.emb, labels[val], labels[val_txt.rows],
                                               MetricSpec(map_k=())))["ave/NDCG@500"]
        if score > best_score:
            best_score, best = score, model
    logger.info("ridge: strength %s chosen on val (NDCG@500 Ave %.4f)", best.strength, best_score)
    return best
