"""Chunked cross-modal retrieval evaluation: embeddings + labels -> per-query metrics, in bounded memory.

Scores (cosine by default) and shared-label counts are built one block of queries at a time, so 25,000
captions x 5,000 images or 20,000 x 20,000 never materialise a full matrix.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from semshare.evaluation import metrics

DEFAULT_PR_POINTS = 20


@dataclass(frozen=True)
class MetricSpec:
    """Which metrics to compute. Keys in results read `NDCG@500`, `mAP@all`, `mAP@100`, `P@10`."""

    ndcg_k: tuple = (500,)
    map_k: tuple = (None,)
    precision_k: tuple = ()
    gain: str = "linear"
    pr_points: int = 0  # > 0 adds a precision-recall curve sampled at that many rank cutoffs
    similarity: str = "cosine"  # or "dot"
    recall_k: tuple = ()  # instance-level R@k (evaluation/instance.py): a query's own item in the top k


@dataclass
class DirectionResult:
    """Per-query values of each metric (Q,), plus the mean PR curve when asked."""

    per_query: dict[str, np.ndarray]
    pr_cutoffs: np.ndarray | None = None
    pr_precision: np.ndarray | None = None
    pr_recall: np.ndarray | None = None

    def means(self) -> dict[str, float]:
        return {name: float(values.mean()) if len(values) else 0.0 for name, values in self.per_query.items()}


def _metric_name(kind: str, k: int | None) -> str:
    return f"{kind}@{'all' if k is None else k}"


def _normalise(emb: torch.Tensor) -> torch.Tensor:
    return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _pr_cutoffs(gallery_size: int, points: int) -> np.ndarray:
    return np.unique(np.linspace(1, gallery_size, num=points).round().astype(np.int64))


def _needs_ranks(spec: MetricSpec, cutoffs: np.ndarray | None) -> bool:
    # NDCG@k alone only needs each row's top k; every other metric needs the rank of every relevant item
    return bool(spec.map_k or spec.precision_k or cutoffs is not None) or None in spec.ndcg_k


def metrics_from_scores(scores: np.ndarray, gains: np.ndarray, spec: MetricSpec,
                        cutoffs: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], tuple | None]:
    """Per-query metrics of one block of scores (Q, G) and shared-label counts (Q, G); PR curve if cutoffs."""
    block = {}
    if not _needs_ranks(spec, cutoffs):
        for k in spec.ndcg_k:
            block[_metric_name("NDCG", k)] = metrics.ndcg_at_k_top(scores, gains, k=k, gain=spec.gain)
        return block, None
    ranks = metrics.compute_relevant_ranks(scores, gains)
    for k in spec.ndcg_k:
        block[_metric_name("NDCG", k)] = metrics.ndcg_from_ranks(ranks, k=k, gain=spec.gain)
    for k in spec.map_k:
        block[_metric_name("mAP", k)] = metrics.average_precision_from_ranks(ranks, k=k)
    for k in spec.precision_k:
        block[_metric_name("P", k)] = metrics.precision_from_ranks(ranks, k)
    curve = metrics.pr_curve_from_ranks(ranks, cutoffs) if cutoffs is not None else None
    return block, curve


def combine_blocks(outputs: list, cutoffs: np.ndarray | None) -> DirectionResult:
    """Concatenate per-block outputs of metrics_from_scores into one DirectionResult."""
    names = [name for name in (outputs[0][0] if outputs else {})]
    result = DirectionResult(per_query={name: np.concatenate([block[name] for block, _ in outputs]) for name in names})
    if cutoffs is not None:
        result.pr_cutoffs = cutoffs
        result.pr_precision = np.concatenate([c[0] for _, c in outputs]).mean(axis=0)
        result.pr_recall = np.concatenate([c[1] for _, c in outputs]).mean(axis=0)
    return result


def pr_cutoffs(gallery_size: int, points: int) -> np.ndarray | None:
    return _pr_cutoffs(gallery_size, points) if points > 0 else None


def evaluate_direction(
    query_emb: np.ndarray,
    gallery_emb: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    spec: MetricSpec = MetricSpec(),
    chunk_size: int = 256,
    num_threads: int | None = None,
) -> DirectionResult:
    """Rank the gallery for every query and score it.

    query_emb (Q, D), gallery_emb (G, D), query_labels (Q, C), gallery_labels (G, C) multi-hot.
    Threads work on separate query blocks (NumPy's sorts release the GIL).
    """
    if query_emb.shape[1] != gallery_emb.shape[1]:
        raise ValueError(f"query and gallery embeddings differ in width: {query_emb.shape} vs {gallery_emb.shape}")
    if len(query_emb) != len(query_labels) or len(gallery_emb) != len(gallery_labels):
        raise ValueError("each embedding matrix needs one label row per item")
    gallery = torch.as_tensor(np.asarray(gallery_emb, dtype=np.float32))
    queries = torch.as_tensor(np.asarray(query_emb, dtype=np.float32))
    if spec.similarity == "cosine":
        gallery, queries = _normalise(gallery), _normalise(queries)
    elif spec.similarity != "dot":
        raise ValueError(f"unknown similarity {spec.similarity!r}; expected 'cosine' or 'dot'")
    gallery_label_t = torch.as_tensor(np.asarray(gallery_labels, dtype=np.float32))
    query_label_t = torch.as_tensor(np.asarray(query_labels, dtype=np.float32))
    cutoffs = _pr_cutoffs(len(gallery_emb), spec.pr_points) if spec.pr_points > 0 else None

    def run_block(start: int) -> tuple[dict[str, np.ndarray], tuple | None]:
        stop = min(start + chunk_size, len(queries))
        scores = (queries[start:stop] @ gallery.T).numpy()
        # sums of 0/1 products are exact integers in float32 (below 2^24): no rounding needed
        gains = (query_label_t[start:stop] @ gallery_label_t.T).to(torch.uint8).numpy()
        return metrics_from_scores(scores, gains, spec, cutoffs)

    starts = list(range(0, len(queries), chunk_size))
    # both paths spend most of their time in whole-block NumPy calls (partition, sort) that release the GIL,
    # so two threads over blocks use both cores (docs/PERFORMANCE.md)
    threads = num_threads or 2
    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            outputs = list(pool.map(run_block, starts))
    else:
        outputs = [run_block(s) for s in starts]
    return combine_blocks(outputs, cutoffs)


def evaluate_cross_modal(
    img_emb: np.ndarray,
    txt_emb: np.ndarray,
    img_labels: np.ndarray,
    txt_labels: np.ndarray,
    spec: MetricSpec = MetricSpec(),
    chunk_size: int = 256,
) -> dict[str, DirectionResult]:
    """I2T (images query the texts) and T2I (texts query the images) on one query set = gallery set."""
    return {
        "i2t": evaluate_direction(img_emb, txt_emb, img_labels, txt_labels, spec, chunk_size),
        "t2i": evaluate_direction(txt_emb, img_emb, txt_labels, img_labels, spec, chunk_size),
    }


def summarise(directions: dict[str, DirectionResult]) -> dict[str, float]:
    """Flat table: `i2t/NDCG@500`, `t2i/NDCG@500`, `ave/NDCG@500`, ... (values in [0, 1])."""
    table: dict[str, float] = {}
    for direction, result in directions.items():
        for name, value in result.means().items():
            table[f"{direction}/{name}"] = value
    if {"i2t", "t2i"} <= set(directions):
        for name in directions["i2t"].per_query:
            table[f"ave/{name}"] = (table[f"i2t/{name}"] + table[f"t2i/{name}"]) / 2
    return table
