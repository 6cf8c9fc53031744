"""Evaluation of methods that score a pair jointly (`pairwise_scoring = True`, e.g. ViLBERT).

For each query, a first stage ranks the whole gallery with the model's own single-side embeddings
(`encode_image` / `encode_text`); its top `shortlist` items are re-ordered by `score_pairs`. The final
ranking is the re-ranked shortlist followed by the rest in first-stage order, and every metric is computed
on that full ranking, exactly as for any other method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from semshare.data.batches import BatchBuilder
from semshare.data.dataset import Dataset
from semshare.evaluation import metrics
from semshare.evaluation.embed import embed_rows
from semshare.evaluation.protocols import table_from_folds
from semshare.evaluation.retrieval import DirectionResult, MetricSpec, combine_blocks, metrics_from_scores, pr_cutoffs

RERANK_OFFSET = 10.0  # pair scores lie in [0, 1]; first-stage cosines in [-1, 1]: shortlisted items go first


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return (a @ b.T).astype(np.float32)


PAIR_BATCH = 256  # (image, text) pairs scored together
QUERY_CHUNK = 64  # queries whose shortlists are scored at a time


@dataclass
class PairScorer:
    """A pair-scoring model, the batch builder of its run, the device, and how many first-stage candidates
    per query it re-orders."""

    model: object
    builder: BatchBuilder
    shortlist: int
    device: object = "cpu"


@dataclass
class RankedSide:
    """One side of a direction: image rows (`rows`) or text items (`items`), and their (N, D) embeddings."""

    emb: np.ndarray
    rows: np.ndarray | None = None
    items: object | None = None


@torch.no_grad()
def _rerank_direction(scorer: PairScorer, query: RankedSide, gallery: RankedSide, query_is_image: bool,
                      labels: np.ndarray, spec: MetricSpec) -> DirectionResult:
    model, builder, shortlist, device = scorer.model, scorer.builder, scorer.shortlist, scorer.device
    query_rows, query_items, query_emb = query.rows, query.items, query.emb
    gallery_rows, gallery_items, gallery_emb = gallery.rows, gallery.items, gallery.emb
    pair_batch, query_chunk = PAIR_BATCH, QUERY_CHUNK
    cutoffs = pr_cutoffs(len(gallery_emb), spec.pr_points)
    query_labels = labels[query_rows if query_is_image else query_items.rows].astype(np.float32)
    gallery_labels = labels[gallery_items.rows if query_is_image else gallery_rows].astype(np.float32)
    outputs = []
    for start in range(0, len(query_emb), query_chunk):
        stop = min(len(query_emb), start + query_chunk)
        scores = _cosine(query_emb[start:stop], gallery_emb)
        top = metrics.top_k_indices(scores, shortlist)
        pairs_q = np.repeat(np.arange(start, stop), top.shape[1])
        pairs_g = top.reshape(-1)
        pair_scores = []
        for p in range(0, len(pairs_q), pair_batch):
            q, g = pairs_q[p : p + pair_batch], pairs_g[p : p + pair_batch]
            if query_is_image:
                rows, txt_ids = query_rows[q], gallery_items.item_ids[g]
            else:
                rows, txt_ids = gallery_rows[g], query_items.item_ids[q]
            batch = builder.build(rows, txt_ids).to(device)
            pair_scores.append(model.score_pairs(batch, batch).cpu().numpy())
        reranked = scores.copy()
        np.put_along_axis(reranked, top, RERANK_OFFSET + np.concatenate(pair_scores).reshape(top.shape), axis=1)
        gains = (query_labels[start:stop] @ gallery_labels.T).astype(np.uint8)
        outputs.append(metrics_from_scores(reranked, gains, spec, cutoffs))
    return combine_blocks(outputs, cutoffs)


def evaluate_pairwise_rows(model, builder: BatchBuilder, dataset: Dataset, rows: np.ndarray, text_source: str,
                           spec: MetricSpec, shortlist: int, device="cpu") -> tuple[dict[str, float], dict]:
    """The default protocol on `rows` (queries = gallery) for a pairwise-scoring model."""
    img_table, txt_table = embed_rows(model, builder, rows, device=device)
    items = dataset.text_items(rows, text_source)
    labels = np.asarray(dataset.labels)
    img_emb = img_table.take(rows, "image")
    txt_emb = txt_table.take(items.item_ids, "text")
    scorer = PairScorer(model, builder, shortlist, device)
    images, texts = RankedSide(img_emb, rows=rows), RankedSide(txt_emb, items=items)
    directions = {"i2t": _rerank_direction(scorer, images, texts, True, labels, spec),
                  "t2i": _rerank_direction(scorer, texts, images, False, labels, spec)}
    return table_from_folds([directions]), directions
