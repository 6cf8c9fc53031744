"""CCA (Hotelling 1936), closed form: a regularised generalised eigenproblem, not an iterative solver.

Find W_x, W_y maximising corr(X W_x, Y W_y) with covariances C_xx + r_x I and C_yy + r_y I:
    [0 C_xy; C_yx 0] w = rho [C_xx + r_x I 0; 0 C_yy + r_y I] w        (scipy.linalg.eigh)
The top `dim` eigenvectors (largest rho) give the projections; embeddings are the centred inputs
projected (optionally scaled by rho^p, a common choice in CCA retrieval; p = 0 by default). Unsupervised:
labels are not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from semshare.methods.base import ClosedFormMethod, LinearEncoder, PairedFeatures
from semshare.registry import METHODS


@dataclass(frozen=True)
class CCAConfig:
    dim: int = 0  # 0: min(D_x, D_y)
    reg: float = 1e-3  # added to each covariance, relative to its mean variance
    eigen_power: float = 0.0  # scale component k by rho_k ** power


def fit_cca(x: np.ndarray, y: np.ndarray, cfg: CCAConfig = CCAConfig()) -> tuple[LinearEncoder, np.ndarray]:
    """x (N, D_x) and y (N, D_y): paired training rows -> (the encoder into the first `dim` canonical
    directions, component k scaled by rho_k ** eigen_power; the (dim,) canonical correlations, descending)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    n = len(x)
    c_xx = xc.T @ xc / n
    c_yy = yc.T @ yc / n
    c_xy = xc.T @ yc / n
    c_xx += cfg.reg * max(np.trace(c_xx) / len(c_xx), 1e-12) * np.eye(len(c_xx))
    c_yy += cfg.reg * max(np.trace(c_yy) / len(c_yy), 1e-12) * np.eye(len(c_yy))
    dx, dy = len(c_xx), len(c_yy)
    a = np.zeros((dx + dy, dx + dy))
    a[:dx, dx:] = c_xy
    a[dx:, :dx] = c_xy.T
    b = np.zeros_like(a)
    b[:dx, :dx] = c_xx
    b[dx:, dx:] = c_yy
    values, vectors = scipy.linalg.eigh(a, b)
    dim = cfg.dim or min(dx, dy)
    top = np.argsort(-values)[:dim]
    w = vectors[:, top]
    # eigh normalises w^T B w = 1 jointly; each view's part has half that norm: rescale to unit variance
    w_x = w[:dx] / np.sqrt(np.maximum(np.einsum("ij,ij->j", w[:dx], c_xx @ w[:dx]), 1e-12))
    w_y = w[dx:] / np.sqrt(np.maximum(np.einsum("ij,ij->j", w[dx:], c_yy @ w[dx:]), 1e-12))
    correlations = np.clip(values[top], 0, None)
    scale = correlations**cfg.eigen_power
    return LinearEncoder(mean_x, w_x * scale, mean_y, w_y * scale), correlations


@METHODS.register("cca")
class CCA(ClosedFormMethod):
    """Fitted on one text per image (the pairs of a two-view method are one-to-one)."""

    config_class = CCAConfig
    display_name = "CCA"
    deterministic = True

    def fit(self, features: PairedFeatures, seed: int = 0) -> LinearEncoder:
        return fit_cca(features.img, features.paired_text, self.cfg)[0]
