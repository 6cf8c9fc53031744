"""JFSSL (Wang et al., TPAMI 2016): joint feature selection and subspace learning with graph regularisation.

Both modalities regress onto the labels with l2,1 feature selection, plus a multimodal graph term
tr(F^T L F) over F = [X_a U_a; X_b U_b] (2N nodes): intra-modal edges join k-nearest neighbours (cosine),
inter-modal edges join items that share a label. Alternating closed-form updates (../REFERENCE.md):
    U_a = (X_a^T X_a + l1 R_a + l2 X_a^T L_aa X_a)^-1 (X_a^T Y - l2 X_a^T L_ab X_b U_b), U_b symmetric,
with L = Deg - W the Laplacian of the joint graph and L_aa, L_ab its blocks.
The graph is N x N: training sets above `max_graph_items` are subsampled (seeded) for the fit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from semshare.methods.base import ClosedFormMethod, LinearEncoder, PairedFeatures
from semshare.methods.lcfs import row_norm_weights
from semshare.registry import METHODS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JFSSLConfig:
    l1: float = 2.0
    l2: float = 1.0
    neighbours: int = 10
    iterations: int = 5
    max_graph_items: int = 5000
    eps: float = 1e-8


def knn_graph(features: np.ndarray, k: int) -> np.ndarray:
    """Symmetric 0/1 adjacency of k nearest neighbours by cosine (no self loops)."""
    normed = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    similarity = normed @ normed.T
    np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(features) - 1)
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    adjacency = np.zeros(similarity.shape)
    np.put_along_axis(adjacency, neighbours, 1.0, axis=1)
    return np.maximum(adjacency, adjacency.T)


def joint_laplacian_blocks(x: np.ndarray, y: np.ndarray, labels: np.ndarray, k: int):
    """(L_aa, L_ab, L_ba, L_bb) of the 2N-node graph: kNN within a modality, shared labels across."""
    w_aa, w_bb = knn_graph(x, k), knn_graph(y, k)
    w_ab = (labels @ labels.T > 0).astype(np.float64)
    degree_a = w_aa.sum(1) + w_ab.sum(1)
    degree_b = w_bb.sum(1) + w_ab.sum(0)
    return np.diag(degree_a) - w_aa, -w_ab, -w_ab.T, np.diag(degree_b) - w_bb


def fit_jfssl(x: np.ndarray, y: np.ndarray, labels: np.ndarray, cfg: JFSSLConfig = JFSSLConfig(),
              seed: int = 0) -> LinearEncoder:
    """x (N, D_x) image, y (N, D_y) text, labels (N, C) multi-hot: paired training rows; `seed` picks the
    graph's subsample when there are more than `max_graph_items`."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    targets = np.asarray(labels, dtype=np.float64)
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    if len(xc) > cfg.max_graph_items:
        keep = np.sort(np.random.default_rng(seed).choice(len(xc), cfg.max_graph_items, replace=False))
        logger.info("jfssl: graph over %d of %d training items", len(keep), len(xc))
        xc, yc, targets = xc[keep], yc[keep], targets[keep]
    l_aa, l_ab, l_ba, l_bb = joint_laplacian_blocks(xc, yc, targets, cfg.neighbours)
    graph_a = xc.T @ l_aa @ xc
    graph_b = yc.T @ l_bb @ yc
    gram_a, gram_b = xc.T @ xc, yc.T @ yc
    u_a = np.linalg.solve(gram_a + cfg.l1 * np.eye(len(gram_a)), xc.T @ targets)
    u_b = np.linalg.solve(gram_b + cfg.l1 * np.eye(len(gram_b)), yc.T @ targets)
    for _ in range(cfg.iterations):
        u_a = np.linalg.solve(gram_a + cfg.l1 * np.diag(row_norm_weights(u_a, cfg.eps)) + cfg.l2 * graph_a,
                              xc.T @ targets - cfg.l2 * xc.T @ (l_ab @ (yc @ u_b)))
        u_b = np.linalg.solve(gram_b + cfg.l1 * np.diag(row_norm_weights(u_b, cfg.eps)) + cfg.l2 * graph_b,
                              yc.T @ targets - cfg.l2 * yc.T @ (l_ba @ (xc @ u_a)))
    return LinearEncoder(mean_x, u_a, mean_y, u_b)


@METHODS.register("jfssl")
class JFSSL(ClosedFormMethod):
    config_class = JFSSLConfig
    display_name = "JFSSL"

    def fit(self, features: PairedFeatures, seed: int = 0) -> LinearEncoder:
        return fit_jfssl(features.img, features.paired_text, features.img_labels, self.cfg, seed)
