"""Ridge regression of each modality onto the labels; the predicted label scores are the embeddings.

A closed-form reference point (../REFERENCE.md lists its numbers on the shared data): no training loop,
ridge strength chosen on the validation split by NDCG@500 (Ave); without a validation split, the middle
strength of the grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from semshare.evaluation.retrieval import MetricSpec, evaluate_cross_modal, summarise
from semshare.methods.base import ClosedFormMethod, LinearEncoder, PairedFeatures
from semshare.registry import METHODS
from semshare.names import SELECTION_METRIC

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RidgeConfig:
    strengths: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)


def _with_bias(x: np.ndarray) -> np.ndarray:
    return np.hstack([x, np.ones((len(x), 1), dtype=x.dtype)])


def solve_ridge(features: np.ndarray, targets: np.ndarray, strength: float) -> np.ndarray:
    """(D + 1, C) weights minimising ||[X 1] W - Y||^2 + strength ||W||^2."""
    x = _with_bias(features.astype(np.float64))
    return np.linalg.solve(x.T @ x + strength * np.eye(x.shape[1]), x.T @ targets.astype(np.float64))


def _encoder(img_weights: np.ndarray, txt_weights: np.ndarray) -> LinearEncoder:
    return LinearEncoder(np.zeros(len(img_weights) - 1), img_weights[:-1], np.zeros(len(txt_weights) - 1),
                         txt_weights[:-1], img_bias=img_weights[-1], txt_bias=txt_weights[-1])


@METHODS.register("ridge")
class Ridge(ClosedFormMethod):
    """Every text item of the training images is a regression row (not only the first)."""

    config_class = RidgeConfig
    display_name = "Ridge"
    deterministic = True

    def fit(self, features: PairedFeatures, seed: int = 0) -> LinearEncoder:
        strengths = self.cfg.strengths
        candidates = [_encoder(solve_ridge(features.img, features.img_labels, strength),
                               solve_ridge(features.txt, features.txt_labels, strength)) for strength in strengths]
        val = features.val
        if val is None or len(val.img) == 0 or len(candidates) == 1:
            logger.info("ridge: no validation split; using strength %s", strengths[len(strengths) // 2])
            return candidates[len(candidates) // 2]
        scores = [summarise(evaluate_cross_modal(model.transform_image(val.img), model.transform_text(val.txt),
                                                 val.img_labels, val.txt_labels, MetricSpec(map_k=())))[SELECTION_METRIC]
                  for model in candidates]
        best = int(np.argmax(scores))
        logger.info("ridge: strength %s chosen on val (NDCG@500 Ave %.4f)", strengths[best], scores[best])
        return candidates[best]
