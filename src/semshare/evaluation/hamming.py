"""Retrieval metrics for binary codes (cross-modal hashing, issue 35): Hamming ranking with ties.

With 16-64 bits most of a gallery shares a handful of distances, so the order inside a tie group decides
much of AP. A stable order (lower index first) would make the score depend on how the gallery is stored;
here every metric is the exact expectation over uniformly random orders within each tie group (McSherry &
Najork, ECIR 2008), computed in closed form from the per-distance counts, never by sampling:

- AP@all: a tie group of n items with r relevant, after a items of which R relevant, adds
  (r / n) * sum_{j=1..n} (R + 1 + (j - 1)(r - 1)/(n - 1)) / (a + j)   [(r - 1)/(n - 1) = 0 when n = 1],
  with the sums over j written as harmonic differences; AP = the total / all relevant (0 without any).
- P@N: relevant in the top N, the straddling group counted as N - a of its n slots filled at random.
- precision within Hamming radius r (the family's "P@r=2"): relevant / items at distance <= r, 0 for a
  query with no item that close; the PR curve by radius: that precision and recall for r = 0..B.

Codes are {0, 1} bits (or any reals: their signs), packed 8 to a byte; distances are XOR popcounts.
Tested against a loop that enumerates every order of the tied items, and against the family's usual
`calc_map` (sort by distance, mean of precision at the relevant ranks) where no two distances tie.
"""

from __future__ import annotations

import numpy as np

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
QUERY_CHUNK = 256


def binary_codes(values: np.ndarray) -> np.ndarray:
    """(N, B) real values (embeddings through a hash layer) -> (N, B) uint8 bits: 1 where the value > 0."""
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"codes: expected an (N, B) array, found shape {values.shape}")
    return (values > 0).astype(np.uint8)


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """(N, B) {0, 1} -> (N, ceil(B / 8)) uint8, 8 bits a byte (B % 8 padding bits are 0 on both sides)."""
    return np.packbits(np.asarray(bits, dtype=np.uint8), axis=1)


def hamming_distances(query_bits: np.ndarray, gallery_bits: np.ndarray) -> np.ndarray:
    """(Q, G) int32 Hamming distances between {0, 1} codes of equal length."""
    if query_bits.shape[1] != gallery_bits.shape[1]:
        raise ValueError(f"codes: expected equal lengths, found {query_bits.shape[1]} and {gallery_bits.shape[1]} bits")
    queries, gallery = pack_codes(query_bits), pack_codes(gallery_bits)
    out = np.empty((len(queries), len(gallery)), dtype=np.int32)
    for start in range(0, len(queries), QUERY_CHUNK):
        xor = np.bitwise_xor(queries[start : start + QUERY_CHUNK, None, :], gallery[None, :, :])
        out[start : start + QUERY_CHUNK] = _POPCOUNT[xor].sum(axis=2, dtype=np.int32)
    return out


def _group_counts(distances: np.ndarray, relevant: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, B + 1) items and relevant items at each distance."""
    q = distances.shape[0]
    index = (np.arange(q)[:, None] * (bits + 1) + distances).ravel()
    items = np.bincount(index, minlength=q * (bits + 1)).reshape(q, bits + 1).astype(np.float64)
    hits = np.bincount(index, weights=np.asarray(relevant, dtype=np.float64).ravel(),
                       minlength=q * (bits + 1)).reshape(q, bits + 1)
    return items, hits


def _harmonic(upto: int) -> np.ndarray:
    """H[0..upto], H[0] = 0."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, upto + 1))])


def hamming_average_precision(distances: np.ndarray, relevant: np.ndarray, bits: int) -> np.ndarray:
    """(Q,) AP@all under Hamming ranking, the exact expectation over the orders within tie groups."""
    distances, relevant = np.asarray(distances), np.asarray(relevant) > 0
    items, hits = _group_counts(distances, relevant, bits)
    before = np.cumsum(items, axis=1) - items  # a: items ranked strictly before each group
    hits_before = np.cumsum(hits, axis=1) - hits  # R
    harmonic = _harmonic(distances.shape[1])
    span = harmonic[(before + items).astype(np.int64)] - harmonic[before.astype(np.int64)]  # sum_j 1/(a+j)
    share = np.divide(hits - 1, items - 1, out=np.zeros_like(hits), where=items > 1)  # (r - 1)/(n - 1)
    # sum_j (j - 1)/(a + j) = n - (a + 1) * span
    inner = (hits_before + 1) * span + share * (items - (before + 1) * span)
    contribution = np.divide(hits, items, out=np.zeros_like(hits), where=items > 0) * inner
    total = hits.sum(axis=1)
    return np.divide(contribution.sum(axis=1), total, out=np.zeros(len(total)), where=total > 0)


def hamming_precision_at(distances: np.ndarray, relevant: np.ndarray, bits: int, n: int) -> np.ndarray:
    """(Q,) expected precision of the top n (n beyond the gallery: of the whole gallery)."""
    distances, relevant = np.asarray(distances), np.asarray(relevant) > 0
    n = min(n, distances.shape[1])
    items, hits = _group_counts(distances, relevant, bits)
    before = np.cumsum(items, axis=1) - items
    taken = np.clip(n - before, 0, items)  # how many of each group's slots fall in the top n
    expected = (np.divide(hits, items, out=np.zeros_like(hits), where=items > 0) * taken).sum(axis=1)
    return expected / n


def precision_within_radius(distances: np.ndarray, relevant: np.ndarray, radius: int = 2) -> np.ndarray:
    """(Q,) relevant / items at distance <= radius; 0 for a query with none that close (the family's rule)."""
    near = np.asarray(distances) <= radius
    found = near.sum(axis=1).astype(np.float64)
    good = (near & (np.asarray(relevant) > 0)).sum(axis=1).astype(np.float64)
    return np.divide(good, found, out=np.zeros_like(found), where=found > 0)


def pr_curve_by_radius(distances: np.ndarray, relevant: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(precision (B + 1,), recall (B + 1,)) at radius 0..B, means over queries (precision over the queries
    with an item within the radius, recall over those with a relevant item)."""
    items, hits = _group_counts(np.asarray(distances), np.asarray(relevant) > 0, bits)
    found, good = np.cumsum(items, axis=1), np.cumsum(hits, axis=1)
    total = hits.sum(axis=1, keepdims=True)
    ratio = np.divide(good, found, out=np.zeros_like(good), where=found > 0)
    precision = np.array([ratio[found[:, r] > 0, r].mean() if (found[:, r] > 0).any() else 0.0
                          for r in range(bits + 1)])
    has = total[:, 0] > 0
    recall = (good[has] / total[has]).mean(axis=0) if has.any() else np.zeros(bits + 1)
    return precision, recall
