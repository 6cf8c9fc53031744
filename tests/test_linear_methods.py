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
    model, correlations = fit_cca(x[:1500], y[:1500], CCAConfig(dim=3))
    assert correlations[:3].min() > 0.8  # the planted directions are strongly correlated
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
    _, correlations = fit_cca(rng.standard_normal((3000, 6)), rng.standard_normal((3000, 5)))
    assert correlations.max() < 0.15


def planted_labels(seed=0, n=1500, classes=4, informative=5, junk=20, noise=0.5):
    """Both modalities carry the labels in a few informative dimensions; the rest is noise."""
    rng = np.random.default_rng(seed)
    labels = np.eye(classes)[rng.integers(0, classes, n)]
    x = np.hstack([labels @ rng.standard_normal((classes, informative)), np.zeros((n, junk))])
    y = labels @ rng.standard_normal((classes, informative))
    x += noise * rng.standard_normal(x.shape)
    y += noise * rng.standard_normal(y.shape)
    return x, y, labels


def cross_modal_map(model, x, y, labels):
    from semshare.evaluation.retrieval import MetricSpec, evaluate_cross_modal, summarise

    return summarise(evaluate_cross_modal(model.transform_image(x), model.transform_text(y), labels, labels,
                                          MetricSpec(ndcg_k=(), map_k=(None,))))["ave/mAP@all"]


def test_lcfs_selects_the_informative_features_and_aligns_the_modalities():
    from semshare.methods.lcfs import LCFSConfig, fit_lcfs

    x, y, labels = planted_labels()
    model = fit_lcfs(x[:1000], y[:1000], labels[:1000], LCFSConfig(l1=50.0))
    row_norms = np.linalg.norm(model.img_weight, axis=1)
    assert row_norms[:5].min() > 5 * row_norms[5:].max()  # l2,1 switches the junk features off
    assert cross_modal_map(model, x[1000:], y[1000:], labels[1000:]) > 0.85  # chance is ~0.3


def test_jfssl_aligns_the_modalities():
    from semshare.methods.jfssl import fit_jfssl

    x, y, labels = planted_labels(seed=2, n=1200)
    model = fit_jfssl(x[:800], y[:800], labels[:800])
    assert cross_modal_map(model, x[800:], y[800:], labels[800:]) > 0.8  # chance is ~0.3
    # with the default graph weight the same-label graph dominates the l2,1 term, so no selection test here


def test_jfssl_graph_blocks_form_a_laplacian():
    from semshare.methods.jfssl import joint_laplacian_blocks

    x, y, labels = planted_labels(seed=3, n=60)
    blocks = joint_laplacian_blocks(x, y, labels, k=5)
    laplacian = np.block([[blocks[0], blocks[1]], [blocks[2], blocks[3]]])
    np.testing.assert_allclose(laplacian, laplacian.T)
    np.testing.assert_allclose(laplacian.sum(1), 0, atol=1e-9)  # rows of a Laplacian sum to zero
    assert np.linalg.eigvalsh(laplacian).min() > -1e-8  # positive semi-definite
