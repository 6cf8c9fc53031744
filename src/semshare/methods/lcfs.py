"""LCFS (Wang et al., ICCV 2013): coupled feature selection and subspace learning, half-quadratic solver.

Minimise over U_a (D_a, C), U_b (D_b, C):
    sum_p ||X_p U_p - Y||_F^2 + l1 sum_p ||U_p||_{2,1} + l2 ||[X_a U_a, X_b U_b]||_*
Half-quadratic iterations (../REFERENCE.md), starting from ridge solutions:
    U_p = (X_p^T X_p + l1 R_p + l2 X_p^T D X_p)^-1 X_p^T Y,   R_p,ii = 1 / (2 ||u_p^i||),
    D = (X_a U_a U_a^T X_a^T + X_b U_b U_b^T X_b^T)^(-1/2)
D is applied through a thin SVD of M = [X_a U_a, X_b U_b] (N x 2C): the inverse square root is taken
on M's column space (the trace norm's gradient lives there), so no N x N matrix is formed.
Embeddings are the projections X_p U_p (label space); retrieval by cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semshare.methods.base import ClosedFormMethod, LinearEncoder, PairedFeatures
from semshare.registry import METHODS


@dataclass(frozen=True)
class LCFSConfig:
    l1: float = 0.1  # l2,1 feature-selection weight
    l2: float = 0.01  # trace-norm coupling weight
    iterations: int = 10
    eps: float = 1e-8


def row_norm_weights(u: np.ndarray, eps: float) -> np.ndarray:
    """R_ii = 1 / (2 ||u^i||): the half-quadratic weights of the l2,1 norm."""
    return 1.0 / (2.0 * np.maximum(np.linalg.norm(u, axis=1), eps))


def trace_norm_metric(x: np.ndarray, projected: list[np.ndarray], eps: float) -> np.ndarray:
    """X^T D X with D = (M M^T)^(-1/2) on the column space of M = [X_a U_a, X_b U_b]."""
    m = np.hstack(projected)
    basis, singular, _ = np.linalg.svd(m, full_matrices=False)
    keep = singular > eps * max(1.0, singular.max())
    xp = x.T @ basis[:, keep]
    return (xp / singular[keep]) @ xp.T


def fit_lcfs(x: np.ndarray, y: np.ndarray, labels: np.ndarray, cfg: LCFSConfig = LCFSConfig()) -> LinearEncoder:
    """x (N, D_x) image, y (N, D_y) text, labels (N, C) multi-hot: paired training rows."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    targets = np.asarray(labels, dtype=np.float64)
    mean_x, mean_y = x.mean(0), y.mean(0)
    views = [x - mean_x, y - mean_y]
    grams = [v.T @ v for v in views]
    rhs = [v.T @ targets for v in views]
    projections = [np.linalg.solve(g + cfg.l1 * np.eye(len(g)), r) for g, r in zip(grams, rhs)]
    for _ in range(cfg.iterations):
        coupled = [v @ u for v, u in zip(views, projections)]
        projections = [
            np.linalg.solve(g + cfg.l1 * np.diag(row_norm_weights(u, cfg.eps))
                            + cfg.l2 * trace_norm_metric(v, coupled, cfg.eps), r)
            for v, g, r, u in zip(views, grams, rhs, projections)
        ]
    return LinearEncoder(mean_x, projections[0], mean_y, projections[1])


@METHODS.register("lcfs")
class LCFS(ClosedFormMethod):
    config_class = LCFSConfig
    display_name = "LCFS"
    deterministic = True

    def fit(self, features: PairedFeatures, seed: int = 0) -> LinearEncoder:
        return fit_lcfs(features.img, features.paired_text, features.img_labels, self.cfg)
