"""Search backends: every FAISS option against the exact torch reference, padding, save/load, errors."""

import numpy as np
import pytest

from semshare.errors import SemshareError
from semshare.index import build_backend, normalize_rows
from semshare.index.base import load_backend

KINDS = ("exact-torch", "faiss-flat", "faiss-hnsw", "faiss-ivfpq")


def clustered(n: int, dim: int = 32, centres: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, dim))
    return (centre[rng.integers(0, centres, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def naive_top_k(gallery: np.ndarray, queries: np.ndarray, k: int):
    scores = normalize_rows(queries) @ normalize_rows(gallery).T
    order = [sorted(range(len(gallery)), key=lambda j: (-row[j], j))[:k] for row in scores]
    return np.take_along_axis(scores, np.array(order), axis=1), np.array(order)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def test_exact_backends_match_a_naive_ranking():
    gallery, queries = clustered(500), clustered(20, seed=1)
    truth_scores, truth = naive_top_k(gallery, queries, 10)
    for kind in ("exact-torch", "faiss-flat"):
        scores, positions = build_backend(kind, gallery).search(normalize_rows(queries), 10)
        np.testing.assert_array_equal(positions, truth)
        np.testing.assert_allclose(scores, truth_scores, atol=1e-5)


def test_exact_torch_breaks_ties_by_lower_position():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]], dtype=np.float32)
    scores, positions = build_backend("exact-torch", gallery).search(np.array([1.0, 0.0]), 3)
    np.testing.assert_array_equal(positions[0], [0, 2, 3])
    np.testing.assert_allclose(scores[0], [1.0, 1.0, 1.0])


def test_approximate_backends_recall_against_exact():
    gallery, queries = clustered(5000), normalize_rows(clustered(100, seed=1))
    _, truth = build_backend("exact-torch", gallery).search(queries, 10)
    _, hnsw = build_backend("faiss-hnsw", gallery).search(queries, 10)
    assert recall_at_k(hnsw, truth) >= 0.9  # default ef_search=128: 0.95 here
    _, hnsw = build_backend("faiss-hnsw", gallery, {"ef_search": 256}).search(queries, 10)
    assert recall_at_k(hnsw, truth) >= 0.97  # a wider beam finds more: 0.99 here
    # IVF-PQ with every list probed: only the quantisation error is left, and finer codes shrink it
    recalls = [recall_at_k(build_backend("faiss-ivfpq", gallery, {"nlist": 16, "nprobe": 16, "subquantizers": s})
                           .search(queries, 10)[1], truth) for s in (4, 16)]
    assert recalls[0] >= 0.25 and recalls[1] >= 0.75 and recalls[1] > recalls[0] + 0.2  # 0.37, 0.86 here


@pytest.mark.parametrize("kind", ("exact-torch", "faiss-flat", "faiss-hnsw"))
def test_k_larger_than_gallery_is_padded(kind):
    gallery = clustered(7)
    scores, positions = build_backend(kind, gallery).search(normalize_rows(gallery[:2]), 10)
    assert positions.shape == scores.shape == (2, 10)
    assert sorted(positions[0, :7]) == list(range(7)) and (positions[:, 7:] == -1).all()
    assert np.isneginf(scores[:, 7:]).all() and np.isfinite(scores[:, :7]).all()
    assert positions[0, 0] == 0 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)  # an item finds itself first


@pytest.mark.parametrize("kind", KINDS)
def test_save_and_load_give_the_same_results(kind, tmp_path):
    gallery, queries = clustered(3000), normalize_rows(clustered(10, seed=2))
    backend = build_backend(kind, gallery)
    backend.save(tmp_path)
    loaded = load_backend(kind, tmp_path)
    for a, b in zip(backend.search(queries, 5), loaded.search(queries, 5)):
        np.testing.assert_array_equal(a, b)


def test_bad_queries_and_parameters_are_clear_errors():
    backend = build_backend("faiss-flat", clustered(50))
    with pytest.raises(SemshareError, match=r"\(Q, 32\)"):
        backend.search(np.zeros((2, 5), dtype=np.float32), 3)
    with pytest.raises(SemshareError, match="k must be at least 1"):
        backend.search(np.zeros(32, dtype=np.float32), 0)
    with pytest.raises(SemshareError, match="unknown parameter.*efsearch.*accepted: m, ef_construction, ef_search"):
        build_backend("faiss-hnsw", clustered(50), {"efsearch": 10})
    with pytest.raises(SemshareError, match="cannot train"):
        build_backend("faiss-ivfpq", clustered(100))


@pytest.mark.parametrize("kind, params", [("exact-torch", {}), ("faiss-flat", {}), ("faiss-hnsw", {"m": 8}),
                                          ("faiss-ivfpq", {"nlist": 4, "subquantizers": 2, "nbits": 4})])
def test_label_facets_equal_a_brute_force_filter_of_the_index_ranking(tiny_data_dir, tmp_path, kind, params):
    """Only (all / any) or first: the items the index's own full ranking gives, filtered by brute force."""
    from semshare.api import build_index, load_run
    from semshare.cli.main import main
    from semshare.search.gallery import LabelFacet

    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(tmp_path / "run")]) == 0
    index = build_index(load_run(tmp_path / "run"), "image", tmp_path / "index", kind=kind, params=params)
    labels = sorted({n for item in index.items for n in item["labels"]})
    for row in (0, 7, 33):
        query = index.encode_image_row(row)
        full = index.search(query, index.manifest.size)
        for facet in (LabelFacet((labels[0],)), LabelFacet((labels[1], labels[2]), match="any"),
                      LabelFacet((labels[0], labels[3]), match="all"), LabelFacet((labels[2],), boost=True)):
            def carries(hit):
                found = [name in hit.labels for name in facet.labels]
                return all(found) if facet.match == "all" else any(found)

            for k in (1, 5, 30):
                got = [(h.id, h.score) for h in index.search(query, k, facet)]
                matching = [(h.id, h.score) for h in full if carries(h)]
                expected = matching[:k] + ([(h.id, h.score) for h in full if not carries(h)][: k - len(matching[:k])]
                                           if facet.boost else [])
                assert got == expected, (kind, facet, k)
    with pytest.raises(Exception, match="unknown label 'nope'"):
        index.search(query, 3, LabelFacet(("nope",)))
