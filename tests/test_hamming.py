"""Hamming-ranking metrics (issue 35): the exact expectation over tie orders against a loop that enumerates
every order, the family's calc_map where nothing ties, and the popcount distances against a bit loop."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from semshare.evaluation.hamming import (binary_codes, hamming_average_precision, hamming_distances,
                                         hamming_precision_at, pr_curve_by_radius, precision_within_radius)


def _ap_of_order(relevant_in_order: np.ndarray) -> float:
    positions = np.flatnonzero(relevant_in_order) + 1
    return float(np.mean(np.arange(1, len(positions) + 1) / positions)) if len(positions) else 0.0


def _orders(distances: np.ndarray):
    """Every ranking by distance, each tie group in every order."""
    groups = [np.flatnonzero(distances == d) for d in np.unique(distances)]
    for choice in itertools.product(*[itertools.permutations(g) for g in groups]):
        yield np.concatenate([np.array(c, dtype=np.int64) for c in choice])


def _naive(distances: np.ndarray, relevant: np.ndarray, n: int) -> tuple[float, float]:
    """(mean AP, mean P@n) over every tie order of one query."""
    aps, precisions = [], []
    for order in _orders(distances):
        aps.append(_ap_of_order(relevant[order]))
        precisions.append(relevant[order][:n].sum() / min(n, len(order)))
    return float(np.mean(aps)), float(np.mean(precisions))


def test_the_hamming_distance_is_the_count_of_differing_bits():
    rng = np.random.default_rng(35)
    for bits in (1, 7, 8, 13, 64):
        a, b = rng.integers(0, 2, (5, bits)).astype(np.uint8), rng.integers(0, 2, (9, bits)).astype(np.uint8)
        expected = np.array([[int((x != y).sum()) for y in b] for x in a])
        np.testing.assert_array_equal(hamming_distances(a, b), expected)
    assert binary_codes(np.array([[0.3, -1.0, 0.0]])).tolist() == [[1, 0, 0]]


@pytest.mark.parametrize("seed", range(12))
def test_ap_and_precision_are_the_exact_mean_over_every_tie_order(seed):
    rng = np.random.default_rng(seed)
    bits, size = 3, int(rng.integers(3, 8))
    distances = rng.integers(0, bits + 1, (1, size))
    relevant = rng.random((1, size)) < 0.45
    n = int(rng.integers(1, size + 1))
    ap, precision = _naive(distances[0], relevant[0], n)
    assert hamming_average_precision(distances, relevant, bits)[0] == pytest.approx(ap, abs=1e-12)
    assert hamming_precision_at(distances, relevant, bits, n)[0] == pytest.approx(precision, abs=1e-12)


def _calc_map(query_bits, gallery_bits, relevant):
    """The hashing family's usual mAP (sort by distance, precision at each relevant rank), ties by index."""
    maps = []
    for q in range(len(query_bits)):
        hamming = 0.5 * (query_bits.shape[1] - (2.0 * query_bits[q] - 1) @ (2.0 * gallery_bits - 1).T)
        truth = relevant[q][np.argsort(hamming, kind="stable")]
        total = int(truth.sum())
        if total == 0:
            maps.append(0.0)
            continue
        count = np.linspace(1, total, total)
        where = np.flatnonzero(truth) + 1.0
        maps.append(float(np.mean(count / where)))
    return np.array(maps)


def test_without_ties_it_is_the_familys_calc_map():
    rng = np.random.default_rng(7)
    bits, size = 64, 30
    for _ in range(5):
        query = rng.integers(0, 2, (1, bits)).astype(np.uint8)
        gallery = np.repeat(query, size, axis=0)
        for row, flips in enumerate(rng.choice(bits + 1, size, replace=False)):  # distinct distances: no ties
            gallery[row, rng.choice(bits, flips, replace=False)] ^= 1
        distances, relevant = hamming_distances(query, gallery), rng.random((1, size)) < 0.4
        assert len(np.unique(distances)) == size
        np.testing.assert_allclose(hamming_average_precision(distances, relevant, bits),
                                   _calc_map(query, gallery, relevant), atol=1e-12)


def test_the_expectation_does_not_depend_on_how_the_gallery_is_stored():
    rng = np.random.default_rng(3)
    distances, relevant = rng.integers(0, 5, (20, 50)), rng.random((20, 50)) < 0.3
    order = rng.permutation(50)
    np.testing.assert_allclose(hamming_average_precision(distances, relevant, 4),
                               hamming_average_precision(distances[:, order], relevant[:, order], 4), atol=1e-12)


def test_precision_within_radius_and_the_pr_curve_by_radius():
    distances = np.array([[0, 1, 2, 3, 4], [3, 3, 4, 4, 4]])
    relevant = np.array([[1, 0, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=bool)
    np.testing.assert_allclose(precision_within_radius(distances, relevant, 2), [2 / 3, 0.0])
    precision, recall = pr_curve_by_radius(distances, relevant, 4)
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3, np.mean([3 / 4, 1 / 2]), np.mean([3 / 5, 1 / 5])])
    np.testing.assert_allclose(recall, [np.mean([1 / 3, 0]), np.mean([1 / 3, 0]), np.mean([2 / 3, 0]),
                                        np.mean([1, 1]), 1.0])
