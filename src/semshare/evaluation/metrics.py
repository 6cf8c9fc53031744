"""Exact retrieval metrics: pure functions on a score matrix and a relevance matrix.

Policy (docs/METRICS.md, ../REFERENCE.md):
- `gains` (Q, G) is the number of labels a gallery item shares with the query; relevant = gains > 0.
- Ranking: scores descending; **ties go to the lower gallery index** (a stable order), so results never
  depend on the sort algorithm.
- NDCG@k: DCG = sum over the top k of gain / log2(rank + 1); gain is r ("linear", default) or 2^r - 1
  ("exponential"); the ideal DCG sorts the whole gallery's gains. A query with no relevant item scores 0
  (and stays in the mean). k > G means the whole list.
- AP@all: mean over relevant items of precision at their rank; 0 without relevant items.
  AP@k: mean of precision at the relevant ranks <= k, divided by the number of relevant items retrieved
  in the top k (the convention of the label-wise / hashing literature, e.g. DCMH's `calc_map_k`); 0 if none.
- P@k: relevant in the top k, divided by min(k, G).
- Recall@n (PR curve): relevant in the top n, divided by all relevant; 0 without relevant items.
Every function returns one value per query: averaging is the caller's choice.

Speed: per query we sort only the relevant items' scores and the other scores (SIMD sorts in NumPy >= 2),
then count with binary search; tied scores are resolved exactly by index, so the tie rule holds everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GAIN_KINDS = ("linear", "exponential")


@dataclass(frozen=True)
class RelevantRanks:
    """Per query: the 1-based ranks of its relevant gallery items (ascending) and their gains, aligned."""

    ranks: list[np.ndarray]
    gains: list[np.ndarray]
    gallery_size: int


def _check_inputs(scores: np.ndarray, gains: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    gains = np.asarray(gains)
    if scores.ndim != 2 or scores.shape != gains.shape:
        raise ValueError(f"scores and relevance must be (Q, G) of one shape; got {scores.shape} and {gains.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf; rankings would be undefined")
    if scores.dtype.kind != "f":
        scores = scores.astype(np.float64)
    return scores, gains


def _irrelevant_ties_before(row: np.ndarray, relevant_mask: np.ndarray, item: int) -> int:
    """Irrelevant items whose score equals row[item] and whose index is lower (they rank first)."""
    equal_before = np.flatnonzero(row[:item] == row[item])
    return int(np.count_nonzero(~relevant_mask[equal_before]))


def compute_relevant_ranks(scores: np.ndarray, gains: np.ndarray) -> RelevantRanks:
    """Ranks of every relevant item of every query, under the stable tie rule.

    scores (Q, G) float, gains (Q, G) non-negative (shared-label counts, or 0/1 relevance).
    rank = 1 + relevant items ahead + irrelevant items with a higher score + irrelevant items with an
    equal score and a lower index. Only the R relevant scores are argsorted; the rest are value-sorted.
    """
    scores, gains = _check_inputs(scores, gains)
    all_ranks: list[np.ndarray] = []
    all_gains: list[np.ndarray] = []
    for row, gain_row in zip(scores, gains):
        relevant_mask = gain_row > 0
        relevant_index = np.flatnonzero(relevant_mask)
        if len(relevant_index) == 0:
            all_ranks.append(np.zeros(0, dtype=np.int64))
            all_gains.append(np.zeros(0, dtype=np.float64))
            continue
        relevant_scores = row[relevant_index]
        order = np.argsort(-relevant_scores)  # fast unstable sort; equal scores are re-sorted stably below
        relevant_sorted = relevant_scores[order]
        if (relevant_sorted[1:] == relevant_sorted[:-1]).any():
            # relevant_index ascends, so a stable sort puts tied relevant items in index order
            order = np.argsort(-relevant_scores, kind="stable")
            relevant_sorted = relevant_scores[order]
        others = np.sort(row[~relevant_mask])
        # ascending needles make the binary searches cache-friendly; read the result back reversed
        not_above = np.searchsorted(others, relevant_sorted[::-1], side="right")[::-1]
        ranks = np.arange(1, len(relevant_index) + 1) + (len(others) - not_above)
        if len(others):
            tied = np.flatnonzero((not_above > 0) & (others[np.maximum(not_above - 1, 0)] == relevant_sorted))
        else:
            tied = np.zeros(0, dtype=np.int64)  # every gallery item is relevant
        for position in tied:
            ranks[position] += _irrelevant_ties_before(row, relevant_mask, relevant_index[order[position]])
        all_ranks.append(ranks.astype(np.int64))
        all_gains.append(gain_row[relevant_index][order].astype(np.float64))
    return RelevantRanks(ranks=all_ranks, gains=all_gains, gallery_size=scores.shape[1])


def _discounts(length: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..length."""
    return 1.0 / np.log2(np.arange(2, length + 2, dtype=np.float64))


def _gain_values(relevance: np.ndarray, gain: str) -> np.ndarray:
    if gain == "linear":
        return relevance
    if gain == "exponential":
        return np.power(2.0, relevance) - 1.0
    raise ValueError(f"unknown gain {gain!r}; expected one of {GAIN_KINDS}")


def ndcg_from_ranks(relevant: RelevantRanks, k: int | None = 500, gain: str = "linear") -> np.ndarray:
    """(Q,) NDCG@k from precomputed relevant ranks; k=None means the whole list."""
    cutoff = relevant.gallery_size if k is None else min(k, relevant.gallery_size)
    discounts = _discounts(cutoff)
    values = np.zeros(len(relevant.ranks))
    for q, (ranks, gains) in enumerate(zip(relevant.ranks, relevant.gains)):
        if len(ranks) == 0:
            continue
        within = ranks <= cutoff
        dcg = float(np.dot(_gain_values(gains[within], gain), discounts[ranks[within] - 1]))
        ideal = -np.sort(-gains)[:cutoff]
        idcg = float(np.dot(_gain_values(ideal, gain), discounts[: len(ideal)]))
        values[q] = dcg / idcg
    return values


def average_precision_from_ranks(relevant: RelevantRanks, k: int | None = None) -> np.ndarray:
    """(Q,) AP@all (k=None) or AP@k from precomputed relevant ranks."""
    values = np.zeros(len(relevant.ranks))
    for q, ranks in enumerate(relevant.ranks):
        if k is not None:
            ranks = ranks[ranks <= k]
        if len(ranks) == 0:
            continue
        values[q] = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return values


def precision_from_ranks(relevant: RelevantRanks, k: int) -> np.ndarray:
    """(Q,) precision@k; k beyond the gallery divides by the gallery size."""
    denominator = min(k, relevant.gallery_size)
    return np.array([np.count_nonzero(r <= k) / denominator for r in relevant.ranks], dtype=np.float64)


def recall_from_ranks(relevant: RelevantRanks, k: int) -> np.ndarray:
    """(Q,) recall@k (0 for a query without relevant items)."""
    return np.array([np.count_nonzero(r <= k) / len(r) if len(r) else 0.0 for r in relevant.ranks])


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int | None = 500, gain: str = "linear") -> np.ndarray:
    """(Q,) NDCG@k; gains (Q, G) = number of shared labels."""
    return ndcg_from_ranks(compute_relevant_ranks(scores, gains), k=k, gain=gain)


def average_precision(scores: np.ndarray, relevant: np.ndarray, k: int | None = None) -> np.ndarray:
    """(Q,) AP@all (k=None) or AP@k; relevant (Q, G) bool or counts (> 0 means relevant)."""
    return average_precision_from_ranks(compute_relevant_ranks(scores, relevant), k=k)


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """(Q,) precision@k."""
    return precision_from_ranks(compute_relevant_ranks(scores, relevant), k)


def precision_recall_curve(
    scores: np.ndarray, relevant: np.ndarray, cutoffs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at each rank cutoff, per query.

    Returns (cutoffs (P,), precision (Q, P), recall (Q, P)); default cutoffs: 1..G.
    """
    ranks = compute_relevant_ranks(scores, relevant)
    if cutoffs is None:
        cutoffs = np.arange(1, ranks.gallery_size + 1)
    cutoffs = np.asarray(cutoffs, dtype=np.int64)
    return (cutoffs,) + pr_curve_from_ranks(ranks, cutoffs)


def pr_curve_from_ranks(relevant: RelevantRanks, cutoffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(precision (Q, P), recall (Q, P)) at the given rank cutoffs."""
    cutoffs = np.asarray(cutoffs, dtype=np.int64)
    retrieved = np.stack([np.searchsorted(r, cutoffs, side="right") for r in relevant.ranks]).astype(np.float64)
    precision = retrieved / np.minimum(cutoffs, relevant.gallery_size)[None, :]
    totals = np.array([len(r) for r in relevant.ranks], dtype=np.float64)[:, None]
    recall = np.divide(retrieved, totals, out=np.zeros_like(retrieved), where=totals > 0)
    return precision, recall


def _ideal_dcg(gains: np.ndarray, cutoff: int, gain: str) -> np.ndarray:
    """(Q,) ideal DCG@cutoff from integer gains (Q, G), by counting items at each gain level (no sort)."""
    discount_cumsum = np.concatenate([[0.0], np.cumsum(_discounts(cutoff))])
    ideal = np.zeros(len(gains))
    at_least_previous = np.zeros(len(gains), dtype=np.int64)
    for level in range(int(gains.max(initial=0)), 0, -1):  # highest gain fills the first ideal positions
        at_least = np.count_nonzero(gains >= level, axis=1)
        if not at_least.any():
            continue
        filled = discount_cumsum[np.minimum(at_least, cutoff)] - discount_cumsum[np.minimum(at_least_previous, cutoff)]
        ideal += float(_gain_values(np.float64(level), gain)) * filled
        at_least_previous = at_least
    return ideal


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) gallery indices of each row's top k under the tie rule (score desc, then index asc).

    A value-only partition finds each row's k-th largest score; the candidates at or above it are then
    ordered. Rows where a tie at the k-th score lets more than k items in are ordered one by one.
    """
    G = scores.shape[1]
    k = min(k, G)
    kth = np.partition(scores, G - k, axis=1)[:, G - k]
    candidates = scores >= kth[:, None]
    counts = np.count_nonzero(candidates, axis=1)
    result = np.empty((len(scores), k), dtype=np.int64)
    exact = np.flatnonzero(counts == k)
    if len(exact):
        all_exact = len(exact) == len(scores)  # the usual case: no copies of the (Q, G) arrays
        exact_candidates = candidates if all_exact else candidates[exact]
        exact_scores = scores if all_exact else scores[exact]
        columns = np.nonzero(exact_candidates)[1].reshape(len(exact), k)  # ascending index within a row
        values = np.take_along_axis(exact_scores, columns, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")  # stable: equal scores keep index order
        result[exact] = np.take_along_axis(columns, order, axis=1)
    for row in np.flatnonzero(counts != k):
        columns = np.flatnonzero(candidates[row])
        order = np.argsort(-scores[row, columns], kind="stable")
        result[row] = columns[order[:k]]
    return result


def ndcg_at_k_top(scores: np.ndarray, gains: np.ndarray, k: int = 500, gain: str = "linear") -> np.ndarray:
    """(Q,) NDCG@k equal to `ndcg_at_k`, faster when k << G: it reads only the top k of each row."""
    scores, gains = _check_inputs(scores, gains)
    cutoff = min(k, scores.shape[1])
    index = top_k_indices(scores, cutoff)
    top_gains = np.take_along_axis(gains, index, axis=1).astype(np.float64)
    dcg = _gain_values(top_gains, gain) @ _discounts(cutoff)
    ideal = _ideal_dcg(gains, cutoff, gain)
    return np.divide(dcg, ideal, out=np.zeros_like(dcg), where=ideal > 0)
