"""Search latency and throughput: FAISS exact vs FAISS HNSW vs torch brute force, one gallery, one run.

Gallery: N x 256 clustered, L2-normalised float32 embeddings (1,000 centres, items scattered around them, so
near neighbours are close calls as in a real label space); queries drawn the same way. For each backend:
build time, batch-1 latency p50 / p99 over --single queries, batched throughput (queries/s) over --batch
queries at once, and recall@10 against the exact ranking. The BLAS kernel that ran is read with threadpoolctl
(OPENBLAS_CORETYPE is left as the environment has it).

  python benchmarks/search_latency.py --sizes 100000,1000000 [--out docs/search_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def clustered(n: int, dim: int, rng: np.random.Generator, centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: no N x 256 float64 temporary
        stop = min(n, start + 100_000)
        picks = rng.integers(0, len(centres), stop - start)
        block = centres[picks] + 0.35 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def blas_report() -> list[dict]:
    from threadpoolctl import threadpool_info

    return [{key: info.get(key) for key in ("internal_api", "prefix", "version", "architecture", "num_threads")}
            for info in threadpool_info() if info.get("user_api") == "blas"]


def time_backend(backend, queries_single: np.ndarray, queries_batch: np.ndarray, k: int) -> dict:
    backend.search(queries_single[:5], k)  # warm-up
    latencies = []
    for query in queries_single:
        started = time.perf_counter()
        backend.search(query[None, :], k)
        latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    _, positions = backend.search(queries_batch, k)
    batch_seconds = time.perf_counter() - started
    latencies_ms = 1000 * np.array(latencies)
    return {"p50_ms": float(np.median(latencies_ms)), "p99_ms": float(np.percentile(latencies_ms, 99)),
            "batched_qps": len(queries_batch) / batch_seconds, "batch": len(queries_batch)}, positions


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)]))


def main() -> None:
    from semshare.index import build_backend

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--single", type=int, default=200, help="batch-1 queries timed one by one")
    parser.add_argument("--batch", type=int, default=1000, help="queries in the batched measurement")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-ef-construction", type=int, default=80)
    parser.add_argument("--hnsw-ef-search", default="64,128,256")
    parser.add_argument("--out", default="docs/search_latency.json")
    args = parser.parse_args()
    report = {"cpu_count": os.cpu_count(), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
              "dim": args.dim, "k": args.k, "results": []}
    for size in [int(s) for s in args.sizes.split(",")]:
        rng = np.random.default_rng(0)
        centres = rng.standard_normal((1000, args.dim), dtype=np.float32)
        gallery = clustered(size, args.dim, rng, centres)
        queries = clustered(args.single + args.batch, args.dim, rng, centres)
        single, batch = queries[: args.single], queries[args.single :]
        truth = None
        entries = [("exact-torch", {}), ("faiss-flat", {})] + [
            ("faiss-hnsw", {"m": args.hnsw_m, "ef_construction": args.hnsw_ef_construction, "ef_search": int(ef)})
            for ef in args.hnsw_ef_search.split(",")]
        hnsw, hnsw_build_seconds = None, 0.0
        for kind, params in entries:
            started = time.perf_counter()
            if kind == "faiss-hnsw" and hnsw is not None:  # one graph, several beam widths
                hnsw.ef_search = params["ef_search"]
                backend, build_seconds = hnsw, hnsw_build_seconds
            else:
                backend = build_backend(kind, gallery, params)
                build_seconds = time.perf_counter() - started
                if kind == "faiss-hnsw":
                    hnsw, hnsw_build_seconds = backend, build_seconds
            timing, positions = time_backend(backend, single, batch, args.k)
            if truth is None:
                truth = positions
            entry = {"size": size, "kind": kind, "params": params, "build_s": build_seconds, **timing,
                     f"recall@{args.k}": recall_at_k(positions, truth)}
            print(json.dumps(entry), flush=True)
            report["results"].append(entry)
            if kind != "faiss-hnsw":
                del backend
        del hnsw
    report["blas"] = blas_report()
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
