"""Pseudo-classes for masked region prediction when the data has no detector classes: k-means (FAISS)
fitted on the training split's real regions, then every region assigned to its nearest centroid."""

from __future__ import annotations

import logging

import numpy as np

from semshare.data.dataset import Dataset, gather_rows

logger = logging.getLogger(__name__)

MAX_FIT_REGIONS = 200_000
ASSIGN_CHUNK_ITEMS = 4096


def fit_region_clusters(dataset: Dataset, train_rows: np.ndarray, k: int, seed: int = 0,
                        iterations: int = 20) -> tuple[np.ndarray, int]:
    """(N, R) int64 pseudo-class per region (-1 for padding) and the number of classes actually used."""
    import faiss

    assert dataset.regions is not None and dataset.region_mask is not None
    rng = np.random.default_rng([seed, 0xC1A5])
    mask = gather_rows(dataset.region_mask, train_rows).astype(bool)
    real = np.argwhere(mask)
    if len(real) > MAX_FIT_REGIONS:
        real = real[np.sort(rng.choice(len(real), MAX_FIT_REGIONS, replace=False))]
    sample_rows = train_rows[real[:, 0]]
    vectors = np.stack([np.asarray(dataset.regions[r, s], dtype=np.float32) for r, s in zip(sample_rows, real[:, 1])])
    # faiss needs several points per centroid; a small training set gets fewer classes
    k_used = int(max(2, min(k, len(vectors) // 4)))
    if k_used < k:
        logger.info("k-means: %d training regions support %d pseudo-classes (asked %d)", len(vectors), k_used, k)
    kmeans = faiss.Kmeans(vectors.shape[1], k_used, niter=iterations, seed=seed, verbose=False)
    kmeans.train(np.ascontiguousarray(vectors))
    targets = np.full(dataset.region_mask.shape, -1, dtype=np.int64)
    for start in range(0, dataset.num_items, ASSIGN_CHUNK_ITEMS):
        stop = min(dataset.num_items, start + ASSIGN_CHUNK_ITEMS)
        regions = np.asarray(dataset.regions[start:stop], dtype=np.float32)
        chunk_mask = np.asarray(dataset.region_mask[start:stop]).astype(bool)
        _, assigned = kmeans.index.search(np.ascontiguousarray(regions[chunk_mask]), 1)
        chunk = np.full(chunk_mask.shape, -1, dtype=np.int64)
        chunk[chunk_mask] = assigned[:, 0]
        targets[start:stop] = chunk
    return targets, k_used
