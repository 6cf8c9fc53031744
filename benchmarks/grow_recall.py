"""A gallery that grows, against one built at once (issue 32): recall@10 of the approximate backends after
`index add` / `index remove` (the backends' `extended` / `without`) against a full rebuild over the same
items, both scored against exact search; and the time each takes.

    python -m benchmarks.grow_recall [--items 100000] [--dim 128] [--change 10000] [--out docs/grow_recall.json]

Vectors: a seeded mixture of 200 Gaussian clusters on the unit sphere (label-space embeddings cluster by
label set, unlike uniform noise), L2-normalised; 1,000 queries drawn the same way. add: built on items -
change, then the last `change` added; remove: built on all, then `change` random items removed. The
rebuilds are built over exactly the items the updated index holds. An item at the 10th hit's exact score
counts as found (ties).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from semshare.index.base import build_backend, normalize_rows

KINDS = {"faiss-hnsw": {}, "faiss-ivfpq": {}}


def clustered(count: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    owners = rng.integers(0, len(centres), count)
    return normalize_rows(centres[owners] + 1.4 / np.sqrt(dim) * rng.standard_normal((count, dim)).astype(np.float32))


def recall_at_10(found: np.ndarray, exact_scores: np.ndarray, vectors: np.ndarray, queries: np.ndarray) -> float:
    """Share of the exact top-10 found, where any item scoring at least the exact 10th score counts."""
    tenth = exact_scores[:, 9]
    hits = []
    for q in range(len(queries)):
        ids = found[q][found[q] >= 0]
        scores = vectors[ids] @ queries[q]
        hits.append(min(10, int((scores >= tenth[q] - 1e-6).sum())) / 10)
    return float(np.mean(hits))


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    scores = queries @ vectors.T
    return -np.sort(-scores, axis=1)[:, :k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--change", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(32)
    centres = normalize_rows(rng.standard_normal((200, args.dim)).astype(np.float32))
    vectors = clustered(args.items, args.dim, rng, centres)
    queries = clustered(args.queries, args.dim, rng, centres)
    removed = np.sort(rng.choice(args.items, args.change, replace=False))
    kept = np.delete(vectors, removed, axis=0)
    base = args.items - args.change
    report = {"items": args.items, "dim": args.dim, "change": args.change, "queries": args.queries, "threads": 1,
              "kinds": {}}
    for kind, params in KINDS.items():
        row = {}
        started = time.perf_counter()
        partial = build_backend(kind, vectors[:base], params)
        build_base = time.perf_counter() - started
        started = time.perf_counter()
        grown = partial.extended(vectors[base:], params)
        row["add_s"] = time.perf_counter() - started
        started = time.perf_counter()
        rebuilt = build_backend(kind, vectors, params)
        row["rebuild_all_s"] = time.perf_counter() - started
        exact_all = exact_top(vectors, queries)
        row["recall_added"] = recall_at_10(grown.search(queries, 10)[1], exact_all, vectors, queries)
        row["recall_rebuilt_all"] = recall_at_10(rebuilt.search(queries, 10)[1], exact_all, vectors, queries)
        started = time.perf_counter()
        shrunk = rebuilt.without(removed, params)
        row["remove_s"] = time.perf_counter() - started
        started = time.perf_counter()
        rebuilt_kept = build_backend(kind, kept, params)
        row["rebuild_kept_s"] = time.perf_counter() - started
        exact_kept = exact_top(kept, queries)
        row["recall_removed"] = recall_at_10(shrunk.search(queries, 10)[1], exact_kept, kept, queries)
        row["recall_rebuilt_kept"] = recall_at_10(rebuilt_kept.search(queries, 10)[1], exact_kept, kept, queries)
        row["build_base_s"] = build_base
        report["kinds"][kind] = row
        print(f"{kind}: add {row['add_s']:.1f} s (rebuild {row['rebuild_all_s']:.1f} s), recall@10 "
              f"{100 * row['recall_added']:.2f} vs rebuild {100 * row['recall_rebuilt_all']:.2f}; remove "
              f"{row['remove_s']:.1f} s (rebuild {row['rebuild_kept_s']:.1f} s), recall@10 "
              f"{100 * row['recall_removed']:.2f} vs rebuild {100 * row['recall_rebuilt_kept']:.2f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
