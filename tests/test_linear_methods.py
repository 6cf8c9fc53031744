"""Closed-form baselines recover a planted shared subspace (a check that can fail)."""

import numpy as np

from semshare.methods.cca import CCAConfig, fit_cca


def planted_pair(seed=0, n=2000, shared=3, dx=12, dy=9, noise=0.3):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, shared))
    x = z @ rng.standard_normal((shared, dx)) + noise * rng.standard_normal((n, dx))
    y = z @ rng.standard_normal((shared, dy)) + noise * rng.standard_normal((n, dy))
    return z, x, y


def test_cca_recovers_planted_subspace():
    z, x, y = planted_pair()
    model = fit_cca(x[:1500], y[:1500], CCAConfig(dim=3))
    assert model.correlations[:3].min() > 0.8  # the planted directions are strongly correlated
    zx, zy = model.transform_image(x[1500:]), model.transform_text(y[1500:])
    # the canonical directions span the planted latent space: regress z on them
    for emb in (zx, zy):
        coef, *_ = np.linalg.lstsq(emb, z[1500:], rcond=None)
        residual = z[1500:] - emb @ coef
        assert residual.var() / z[1500:].var() < 0.1
    # paired test items are each other's nearest neighbours far above chance
    zx_n = zx / np.linalg.norm(zx, axis=1, keepdims=True)
    zy_n = zy / np.linalg.norm(zy, axis=1, keepdims=True)
    assert (np.argmax(zx_n @ zy_n.T, axis=1) == np.arange(500)).mean() > 0.2  # chance is 0.002


def test_cca_on_pure_noise_finds_no_correlation():
    rng = np.random.default_rng(1)
    model = fit_cca(rng.standard_normal((3000, 6)), rng.standard_normal((3000, 5)))
    assert model.correlations.max() < 0.15
