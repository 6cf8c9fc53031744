"""Metrics against hand-computed rankings, a plain loop, scikit-learn and torchmetrics."""

import math

import numpy as np
import pytest
import torch

from semshare.evaluation import metrics
from semshare.evaluation.retrieval import MetricSpec, evaluate_cross_modal, evaluate_direction, summarise


# ---- naive references -----------------------------------------------------------------------------------
def naive_ranking(row):
    """Descending score, ties to the lower index: sort by (-score, index)."""
    return sorted(range(len(row)), key=lambda i: (-row[i], i))


def naive_ndcg(scores, gains, k, exponential=False):
    out = []
    for row, gain_row in zip(scores, gains):
        order = naive_ranking(row)
        g = (lambda r: 2.0**r - 1) if exponential else (lambda r: float(r))
        dcg = sum(g(gain_row[i]) / math.log2(pos + 2) for pos, i in enumerate(order[:k]))
        ideal = sorted(gain_row, reverse=True)[:k]
        idcg = sum(g(r) / math.log2(pos + 2) for pos, r in enumerate(ideal))
        out.append(dcg / idcg if idcg > 0 else 0.0)
    return np.array(out)


def naive_ap(scores, relevant, k=None):
    out = []
    for row, rel_row in zip(scores, relevant):
        order = naive_ranking(row)[: (k or len(row))]
        hits, precisions = 0, []
        for pos, i in enumerate(order, start=1):
            if rel_row[i] > 0:
                hits += 1
                precisions.append(hits / pos)
        out.append(float(np.mean(precisions)) if precisions else 0.0)
    return np.array(out)


def random_problem(seed, queries=17, gallery=53, labels=6, density=0.3, ties=False):
    rng = np.random.default_rng(seed)
    query_labels = (rng.random((queries, labels)) < density).astype(np.int64)
    gallery_labels = (rng.random((gallery, labels)) < density).astype(np.int64)
    scores = rng.standard_normal((queries, gallery))
    if ties:
        scores = np.round(scores, 1)  # many exact ties
    return scores, query_labels @ gallery_labels.T


# ---- hand-computed ----------------------------------------------------------------------------------------
def test_hand_computed_ranking():
    # ranking by score: items 2 (gain 2), 0 (gain 0), 3 (gain 1), 1 (gain 0)
    scores = np.array([[0.5, 0.1, 0.9, 0.3]])
    gains = np.array([[0, 0, 2, 1]])
    dcg = 2 / math.log2(2) + 1 / math.log2(4)  # ranks 1 and 3
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert metrics.ndcg_at_k(scores, gains, k=4)[0] == pytest.approx(dcg / idcg)  # 2.5 / 2.6309
    assert metrics.ndcg_at_k(scores, gains, k=4)[0] == pytest.approx(0.950234, abs=1e-6)
    assert metrics.ndcg_at_k(scores, gains, k=1)[0] == pytest.approx(1.0)
    # AP: relevant at ranks 1 and 3 -> (1/1 + 2/3) / 2
    assert metrics.average_precision(scores, gains)[0] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.average_precision(scores, gains, k=2)[0] == pytest.approx(1.0)
    assert metrics.precision_at_k(scores, gains, k=2)[0] == pytest.approx(0.5)
    cutoffs, precision, recall = metrics.precision_recall_curve(scores, gains)
    assert list(cutoffs) == [1, 2, 3, 4]
    np.testing.assert_allclose(precision[0], [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall[0], [0.5, 0.5, 1, 1])


def test_exponential_gain_hand_computed():
    scores = np.array([[0.9, 0.5, 0.1]])
    gains = np.array([[1, 2, 0]])
    dcg = 1 / 1 + 3 / math.log2(3)
    idcg = 3 / 1 + 1 / math.log2(3)
    assert metrics.ndcg_at_k(scores, gains, k=3, gain="exponential")[0] == pytest.approx(dcg / idcg)


def test_tie_rule_lower_index_first():
    # all scores equal: the ranking is the index order, so item 0 (irrelevant) is first
    scores = np.zeros((1, 3))
    gains = np.array([[0, 1, 2]])
    assert metrics.average_precision(scores, gains)[0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # DCG: gain 1 at rank 2, gain 2 at rank 3
    dcg = 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / 1 + 1 / math.log2(3)
    assert metrics.ndcg_at_k(scores, gains, k=3)[0] == pytest.approx(dcg / idcg)
    assert metrics.ndcg_at_k_top(scores, gains, k=3)[0] == pytest.approx(dcg / idcg)
    # a tie at the top-k boundary: k=1 takes item 0 (gain 0)
    assert metrics.ndcg_at_k_top(scores, gains, k=1)[0] == 0.0


def test_query_without_relevant_items_scores_zero_and_counts():
    scores = np.array([[0.3, 0.2], [0.3, 0.2]])
    gains = np.array([[0, 0], [1, 0]])
    assert list(metrics.ndcg_at_k(scores, gains, k=2)) == [0.0, 1.0]
    assert list(metrics.average_precision(scores, gains)) == [0.0, 1.0]
    assert list(metrics.ndcg_at_k_top(scores, gains, k=2)) == [0.0, 1.0]


def test_k_larger_than_gallery_means_whole_list():
    scores, gains = random_problem(0, gallery=9)
    np.testing.assert_allclose(metrics.ndcg_at_k(scores, gains, k=500), metrics.ndcg_at_k(scores, gains, k=None))
    np.testing.assert_allclose(metrics.precision_at_k(scores, gains, 500), (gains > 0).mean(axis=1))


def test_non_finite_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        metrics.ndcg_at_k(np.array([[np.nan, 1.0]]), np.array([[1, 0]]))


# ---- against a plain loop, with and without ties -----------------------------------------------------------
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_naive_loop(seed, ties):
    scores, gains = random_problem(seed, ties=ties)
    for k in (1, 5, 20, 500):
        np.testing.assert_allclose(metrics.ndcg_at_k(scores, gains, k=k), naive_ndcg(scores, gains, k), atol=1e-12)
        np.testing.assert_allclose(metrics.ndcg_at_k_top(scores, gains, k=k), naive_ndcg(scores, gains, k), atol=1e-12)
        np.testing.assert_allclose(
            metrics.ndcg_at_k(scores, gains, k=k, gain="exponential"),
            naive_ndcg(scores, gains, k, exponential=True),
            atol=1e-12,
        )
    np.testing.assert_allclose(metrics.average_precision(scores, gains), naive_ap(scores, gains), atol=1e-12)
    np.testing.assert_allclose(metrics.average_precision(scores, gains, k=10), naive_ap(scores, gains, k=10), atol=1e-12)


def test_precision_recall_and_curve_against_naive_loop():
    """Rows with and without ties in one block (ranked by different paths), signed zeros, an empty row."""
    scores, gains = random_problem(3, queries=9, gallery=40)
    scores[1] = np.round(scores[1], 1)  # ties in some rows only
    scores[2, :4] = [0.0, -0.0, 0.0, -0.0]  # equal scores of opposite sign tie by index
    gains[4] = 0  # no relevant item
    order = [naive_ranking(row) for row in scores]
    for k in (1, 7, 40):
        hits = np.array([sum(gains[q, i] > 0 for i in order[q][:k]) for q in range(len(scores))], dtype=float)
        totals = (gains > 0).sum(axis=1)
        np.testing.assert_allclose(metrics.precision_at_k(scores, gains, k), hits / k)
        np.testing.assert_allclose(metrics.recall_from_ranks(metrics.compute_relevant_ranks(scores, gains), k),
                                   np.divide(hits, totals, out=np.zeros_like(hits), where=totals > 0))
    cutoffs, precision, recall = metrics.precision_recall_curve(scores, gains, np.array([1, 3, 10, 40]))
    for p, cutoff in enumerate(cutoffs):
        np.testing.assert_allclose(precision[:, p], metrics.precision_at_k(scores, gains, int(cutoff)))
    expected_ranks = [[order[q].index(i) + 1 for i in sorted(np.flatnonzero(gains[q] > 0), key=order[q].index)]
                      for q in range(len(scores))]
    got = metrics.compute_relevant_ranks(scores, gains).per_query()
    assert [list(r) for r in got] == expected_ranks
    np.testing.assert_allclose(metrics.average_precision(scores, gains), naive_ap(scores, gains), atol=1e-12)
    # hundreds of tied relevant items per row (integer scores): the rows take the stable-sort path
    scores, gains = random_problem(4, queries=3, gallery=400, density=0.5)
    scores = np.round(scores)
    assert (metrics.compute_relevant_ranks(scores, gains).counts() > 2 * metrics._MAX_TIES_SCANNED).all()
    np.testing.assert_allclose(metrics.average_precision(scores, gains), naive_ap(scores, gains), atol=1e-12)
    np.testing.assert_allclose(metrics.ndcg_at_k(scores, gains, k=50), naive_ndcg(scores, gains, 50), atol=1e-12)


def test_radix_path_ranks_float32_rows_like_the_float_sort(monkeypatch):
    """Float32 rows ranked through order_keys + 16-bit radix passes give the naive ranking, ties (signed zeros,
    rounded scores, hundreds tied: the stable-sort path) included; the helpers match NumPy's sorts."""
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.standard_normal(5000) * 10.0 ** rng.integers(-40, 30, 5000), [0.0, -0.0, 1e-45, -1e-45,
                             np.finfo(np.float32).max, -np.finfo(np.float32).max, np.inf, -np.inf]]).astype(np.float32)
    keys = metrics.order_keys(values)
    assert keys.dtype == np.uint32 and keys[-8] == keys[-7]  # -0.0 and 0.0 tie, as floats compare
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.argsort(values, kind="stable"))
    np.testing.assert_array_equal(metrics.radix_sorted(keys), np.sort(keys))
    np.testing.assert_array_equal(metrics.radix_argsort(keys), np.argsort(keys, kind="stable"))
    scores, gains = random_problem(11, queries=12, gallery=300)
    scores = scores.astype(np.float32)
    scores[1] = np.round(scores[1], 1)
    scores[2, :40] = rng.choice(np.array([0.0, -0.0, 0.5], dtype=np.float32), 40)
    scores[3] = np.round(scores[3])  # hundreds of ties: the stable-sort path
    expected = [[naive_ranking(row).index(i) + 1 for i in np.flatnonzero(g > 0)] for row, g in zip(scores, gains)]
    assert not metrics.radix_sort_is_faster(scores[0])  # a short row is never timed: the float sort
    assert metrics.radix_sort_is_faster(values) in (True, False)  # timed on this CPU; either gives the same ranks
    for by_keys in (False, True):
        monkeypatch.setattr(metrics, "radix_sort_is_faster", lambda row, chosen=by_keys: chosen)
        got = metrics.compute_relevant_ranks(scores, gains).per_query()
        assert [list(r) for r in got] == [sorted(r) for r in expected], by_keys
        np.testing.assert_allclose(metrics.average_precision(scores, gains), naive_ap(scores, gains), atol=1e-12)


def test_ties_do_not_depend_on_gallery_permutation_of_equal_items():
    """Relabelling which of two tied items comes first by index changes the result as the rule says."""
    scores = np.array([[0.5, 0.5]])
    assert metrics.average_precision(scores, np.array([[1, 0]]))[0] == 1.0
    assert metrics.average_precision(scores, np.array([[0, 1]]))[0] == 0.5


# ---- against scikit-learn and torchmetrics ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_ndcg_matches_sklearn(seed):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, gains = random_problem(seed, queries=30, gallery=200, labels=8)
    for k in (10, 50, 500):
        ours = metrics.ndcg_at_k(scores, gains, k=k)
        # sklearn averages over queries; a query without relevant items scores 0 there too
        reference = sklearn_metrics.ndcg_score(gains, scores, k=k, ignore_ties=True)
        assert ours.mean() == pytest.approx(reference, abs=1e-9)
        per_query = [sklearn_metrics.ndcg_score(gains[i : i + 1], scores[i : i + 1], k=k) for i in range(len(gains))]
        np.testing.assert_allclose(ours, per_query, atol=1e-9)


def test_ap_matches_sklearn_average_precision():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    scores, gains = random_problem(3, queries=20, gallery=150)
    ours = metrics.average_precision(scores, gains)
    for q in range(len(scores)):
        if (gains[q] > 0).any():
            assert ours[q] == pytest.approx(sklearn_metrics.average_precision_score(gains[q] > 0, scores[q]), abs=1e-9)


def test_matches_torchmetrics():
    tm = pytest.importorskip("torchmetrics.functional.retrieval")
    scores, gains = random_problem(4, queries=12, gallery=80)
    for q in range(len(scores)):
        # torchmetrics 1.9 counts an item with a score <= 0 as irrelevant in AP; a shift keeps the ranking
        preds = torch.tensor(scores[q] - scores[q].min() + 1.0)
        target = torch.tensor(gains[q])
        if not (gains[q] > 0).any():
            continue
        ndcg = tm.retrieval_normalized_dcg(preds, target, top_k=20).item()
        assert metrics.ndcg_at_k(scores[q : q + 1], gains[q : q + 1], k=20)[0] == pytest.approx(ndcg, abs=1e-6)
        ap = tm.retrieval_average_precision(preds, target > 0).item()
        assert metrics.average_precision(scores[q : q + 1], gains[q : q + 1])[0] == pytest.approx(ap, abs=1e-6)
        p10 = tm.retrieval_precision(preds, target > 0, top_k=10).item()
        assert metrics.precision_at_k(scores[q : q + 1], gains[q : q + 1], 10)[0] == pytest.approx(p10, abs=1e-6)


# ---- chunked driver ------------------------------------------------------------------------------------------
def test_chunked_driver_equals_full_matrix():
    rng = np.random.default_rng(5)
    img_emb, txt_emb = rng.standard_normal((37, 8)), rng.standard_normal((91, 8))
    img_labels = (rng.random((37, 5)) < 0.3).astype(np.uint8)
    txt_labels = (rng.random((91, 5)) < 0.3).astype(np.uint8)
    spec = MetricSpec(ndcg_k=(10, 500), map_k=(None, 20), precision_k=(5,), pr_points=7)
    chunked = evaluate_direction(img_emb, txt_emb, img_labels, txt_labels, spec, chunk_size=4)
    normed_q = img_emb / np.linalg.norm(img_emb, axis=1, keepdims=True)
    normed_g = txt_emb / np.linalg.norm(txt_emb, axis=1, keepdims=True)
    scores = (normed_q @ normed_g.T).astype(np.float32)
    gains = img_labels.astype(np.int64) @ txt_labels.T.astype(np.int64)
    np.testing.assert_allclose(chunked.per_query["NDCG@10"], naive_ndcg(scores, gains, 10), atol=1e-9)
    np.testing.assert_allclose(chunked.per_query["mAP@all"], naive_ap(scores, gains), atol=1e-9)
    np.testing.assert_allclose(chunked.per_query["mAP@20"], naive_ap(scores, gains, k=20), atol=1e-9)
    assert chunked.pr_recall[-1] == pytest.approx((gains > 0).any(axis=1).mean())
    # NDCG alone takes the top-k path; it must agree with the rank path
    alone = evaluate_direction(img_emb, txt_emb, img_labels, txt_labels, MetricSpec(ndcg_k=(10,), map_k=()), chunk_size=5)
    np.testing.assert_allclose(alone.per_query["NDCG@10"], chunked.per_query["NDCG@10"], atol=1e-12)


def test_cross_modal_summary_has_both_directions_and_average():
    rng = np.random.default_rng(6)
    labels = (rng.random((20, 4)) < 0.4).astype(np.uint8)
    labels[np.arange(20), rng.integers(0, 4, 20)] = 1  # every item labelled: every query has relevant items
    table = summarise(evaluate_cross_modal(labels + 0.01 * rng.standard_normal((20, 4)), labels.astype(float), labels, labels))
    assert table["ave/NDCG@500"] == pytest.approx((table["i2t/NDCG@500"] + table["t2i/NDCG@500"]) / 2)
    assert table["i2t/mAP@all"] > 0.9  # embeddings = labels: near-perfect retrieval


def test_every_gallery_item_relevant():
    scores = np.array([[0.2, 0.9, 0.5]])
    gains = np.array([[1, 1, 3]])
    assert metrics.average_precision(scores, gains)[0] == 1.0
    np.testing.assert_allclose(metrics.ndcg_at_k(scores, gains, k=3), naive_ndcg(scores, gains, 3))


def _naive_instance_recall(scores, query_owner, gallery_owner, k):
    """A loop: the gallery sorted by score (ties by a given order), the best own item's position."""
    hits = []
    for q in range(len(scores)):
        order = sorted(range(scores.shape[1]), key=lambda g: -scores[q, g])  # stable: ties keep gallery order
        position = next(p for p, g in enumerate(order) if gallery_owner[g] == query_owner[q])
        hits.append(float(position < k))
    return np.array(hits)


def test_instance_recall_equals_a_naive_loop_without_ties():
    from semshare.evaluation.instance import instance_recall

    rng = np.random.default_rng(0)
    queries, gallery = rng.standard_normal((40, 6)), rng.standard_normal((30, 6))
    gallery_owner = rng.permutation(np.repeat(np.arange(15), 2))  # every image has two captions
    query_owner = rng.integers(0, 15, 40)
    found = instance_recall(queries, gallery, query_owner, gallery_owner, ks=(1, 5, 10), similarity="dot")
    scores = queries @ gallery.T
    for k in (1, 5, 10):
        np.testing.assert_array_equal(found[f"R@{k}"], _naive_instance_recall(scores, query_owner, gallery_owner, k))


def test_instance_recall_with_ties_is_the_mean_over_every_tie_order():
    """Ties broken at random: the exact formula equals the average of the naive loop over all orders of the
    tied items."""
    from itertools import permutations

    from semshare.evaluation.instance import instance_recall

    # one query (owner 0); gallery: one item above, then four tied items (two of them its own), then one below
    gallery = np.array([[3.0], [2.0], [2.0], [2.0], [2.0], [1.0]])
    gallery_owner = np.array([5, 0, 7, 0, 8, 0])
    query = np.array([[1.0]])
    found = instance_recall(query, gallery, np.array([0]), gallery_owner, ks=(1, 2, 3, 4, 5), similarity="dot")
    for k in (1, 2, 3, 4, 5):
        outcomes = []
        for order in permutations([1, 2, 3, 4]):
            ranked = [0, *order, 5]
            position = next(p for p, g in enumerate(ranked) if gallery_owner[g] == 0)
            outcomes.append(float(position < k))
        assert found[f"R@{k}"][0] == pytest.approx(np.mean(outcomes)), k
