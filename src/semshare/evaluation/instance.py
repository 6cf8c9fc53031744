"""Instance-level recall: is a query's OWN item near the top? (the label-wise metrics count every item of
the right label set the same; users expect the image a caption was written for first.)

T2I: a caption's own image; I2T: the best-ranked of an image's own captions. R@k is the probability that
it lies in the top k when ties are broken at random (exact, not sampled): with g other items scored above
the best own item, t others tied with it and m own items tied at that score, the best own item falls in the
top k with probability 0 (k <= g), 1 (k > g + t), else 1 - C(t, k - g) / C(t + m, k - g), the chance that the
k - g tied slots are not all taken by other items. Without ties this is the usual rank <= k.
"""

from __future__ import annotations

from math import comb

import numpy as np
import torch

RECALL_KS = (1, 5, 10)


def instance_recall(query_emb: np.ndarray, gallery_emb: np.ndarray, query_owner: np.ndarray, gallery_owner: np.ndarray,
                    ks: tuple[int, ...] = RECALL_KS, similarity: str = "cosine", chunk_size: int = 512) -> dict[str, np.ndarray]:
    """{"R@k": (Q,) probabilities} of every query; `query_owner` / `gallery_owner`: the dataset row each item
    belongs to (a query's own gallery items share its row). Every query needs at least one own item."""
    queries = torch.as_tensor(np.asarray(query_emb, dtype=np.float32))
    gallery = torch.as_tensor(np.asarray(gallery_emb, dtype=np.float32))
    if similarity == "cosine":
        queries = queries / queries.norm(dim=1, keepdim=True).clamp_min(1e-12)
        gallery = gallery / gallery.norm(dim=1, keepdim=True).clamp_min(1e-12)
    query_owner, gallery_owner = np.asarray(query_owner), np.asarray(gallery_owner)
    out = {f"R@{k}": np.zeros(len(queries)) for k in ks}
    for start in range(0, len(queries), chunk_size):
        scores = (queries[start : start + chunk_size] @ gallery.T).numpy()
        own = query_owner[start : start + len(scores), None] == gallery_owner[None, :]
        if not own.any(axis=1).all():
            raise ValueError("every query needs one of its own items in the gallery")
        best = np.where(own, scores, -np.inf).max(axis=1, keepdims=True)
        above = ((scores > best) & ~own).sum(axis=1)
        tied_others = ((scores == best) & ~own).sum(axis=1)
        tied_own = ((scores == best) & own).sum(axis=1)
        for k in ks:
            out[f"R@{k}"][start : start + len(scores)] = [
                _within(int(k), int(g), int(t), int(m)) for g, t, m in zip(above, tied_others, tied_own)]
    return out


def _within(k: int, above: int, tied_others: int, tied_own: int) -> float:
    slots = k - above
    if slots <= 0:
        return 0.0
    if slots > tied_others:
        return 1.0
    return 1.0 - comb(tied_others, slots) / comb(tied_others + tied_own, slots)
