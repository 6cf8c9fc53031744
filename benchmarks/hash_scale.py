"""A gallery of millions of binary codes in memory (issue 35): build time, resident memory, one-query p50 /
p99 latency, batched queries/s and recall@10 against exact Hamming, for the binary backends at 1M and 10M
64-bit codes, and the float index at 1M for contrast.

    python -m benchmarks.hash_scale [--sizes 1000000,10000000] [--threads 2] [--out docs/hash_scale.json]

Codes: a seeded mixture of 1,000 random 64-bit centres, each bit of an item flipped with probability 0.1
(`--flip`; 0.25 makes the clusters overlap)
(codes of one label set sit close; uniform random codes would have no neighbours to find); 1,000 queries
drawn alike. Each backend is built in a child process of its own, so its resident memory (VmRSS after the
build minus before it: the Python, NumPy and FAISS start-up footprint measured apart) is its own; the ids
an index keeps beside its codes (int64, ids.npy) are counted in. recall@10: the share of a query's exact
top 10 found, an item at the 10th hit's distance counting as found. Latency: each query alone, 1,000 of
them; batched: all 1,000 in one call. The float contrast: 64-d float32 vectors (the same items' +-1 codes
as floats) in faiss-flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BITS = 64
QUERIES = 1000
CENTRES = 1000


FLIP = [0.1]  # the chance of each bit of an item differing from its centre (--flip)


def clustered_codes(count: int, seed: int) -> np.ndarray:
    """(count, 8) uint8 packed 64-bit codes, in chunks (10M items never exist as 64 bytes each)."""
    rng = np.random.default_rng(seed)
    centres = np.packbits(np.random.default_rng(0).random((CENTRES, BITS)) < 0.5, axis=1)
    out = np.empty((count, BITS // 8), dtype=np.uint8)
    for start in range(0, count, 1_000_000):
        n = min(1_000_000, count - start)
        flips = np.packbits(rng.random((n, BITS)) < FLIP[0], axis=1)
        out[start : start + n] = centres[rng.integers(0, CENTRES, n)] ^ flips
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, size: int, threads: int, nprobes: list[int]) -> dict:
    import faiss

    faiss.omp_set_num_threads(threads)
    exact_path = Path(os.environ["HASH_SCALE_TRUTH"])
    queries = clustered_codes(QUERIES, 2)
    before = rss_mb()  # the start-up footprint: Python, NumPy, FAISS (the codes are made after it)
    codes = clustered_codes(size, 1)
    started = time.perf_counter()
    ids = np.arange(size, dtype=np.int64)  # what an index keeps beside its codes (ids.npy)
    if kind == "faiss-flat":  # the float contrast: the same codes as +-1 float32 vectors
        vectors = np.unpackbits(codes, axis=1).astype(np.float32) * 2 - 1
        del codes
        index = faiss.IndexFlatIP(BITS)
        index.add(vectors)
        del vectors
        query_input = np.unpackbits(queries, axis=1).astype(np.float32) * 2 - 1
    elif kind == "faiss-binary-flat":
        index = faiss.IndexBinaryFlat(BITS)
        index.add(codes)
        del codes
        query_input = queries
    elif kind == "faiss-binary-ivf":
        nlist = min(4096, int(4 * np.sqrt(size)))  # k-means in Hamming space: 4,096 lists keep 10M buildable
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(BITS), BITS, nlist)
        sample = codes[np.random.default_rng(0).choice(size, min(size, 64 * nlist), replace=False)]
        index.train(sample)
        index.add(codes)
        del codes, sample
        query_input = queries
    else:  # faiss-binary-hnsw
        index = faiss.IndexBinaryHNSW(BITS, 16)
        index.add(codes)
        del codes
        query_input = queries
    build_s = time.perf_counter() - started
    memory = rss_mb() - before
    result = {"kind": kind, "size": size, "threads": threads, "build_s": build_s, "memory_mb": memory,
              "bytes_per_item": memory * 1024 * 1024 / size, "ids_bytes_per_item": ids.itemsize}
    settings = nprobes if kind == "faiss-binary-ivf" else [None]
    result["settings"] = []
    for nprobe in settings:
        if nprobe is not None:
            index.nprobe = nprobe
        if kind == "faiss-binary-hnsw":
            index.hnsw.efSearch = 64
        latencies = []
        for q in range(QUERIES):
            started = time.perf_counter()
            index.search(query_input[q : q + 1], 10)
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        distances, positions = index.search(query_input, 10)
        batched = QUERIES / (time.perf_counter() - started)
        row = {"nprobe": nprobe, "p50_ms": 1000 * float(np.median(latencies)),
               "p99_ms": 1000 * float(np.percentile(latencies, 99)), "batched_qps": batched}
        if kind != "faiss-flat":
            if kind == "faiss-binary-flat":  # exact: its distances are the truth of the others
                np.save(exact_path, distances)
            truth = np.load(exact_path)  # (Q, 10) exact Hamming distances of the top 10
            tenth = truth[:, 9:10]
            row["recall_at_10"] = float(np.minimum((distances <= tenth).sum(1), 10).mean() / 10)
        result["settings"].append(row)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nprobe", default="8,16,32,64")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--flip", type=float, default=0.1, help="bit-flip chance around a centre (0.25: harder)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SIZE"))
    args = parser.parse_args()
    nprobes = [int(v) for v in args.nprobe.split(",")]
    FLIP[0] = args.flip
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.threads, nprobes)))
        return 0
    report = {"bits": BITS, "queries": QUERIES, "threads": args.threads, "flip": args.flip, "runs": []}
    for size in [int(v) for v in args.sizes.split(",")]:
        truth = Path(f"/tmp/hash_scale_truth_{size}_{args.flip}.npy")
        kinds = ["faiss-binary-flat", "faiss-binary-ivf"] + (["faiss-binary-hnsw", "faiss-flat"] if size <= 1_000_000 else [])
        for kind in kinds:  # binary-flat first: its answers are the exact truth of the others
            done = subprocess.run([sys.executable, "-m", "benchmarks.hash_scale", "--child", kind, str(size),
                                   "--threads", str(args.threads), "--nprobe", args.nprobe, "--flip", str(args.flip)],
                                  capture_output=True, text=True, env={**os.environ, "HASH_SCALE_TRUTH": str(truth)})
            if done.returncode:
                raise SystemExit(done.stderr[-3000:])
            result = json.loads(done.stdout.strip().splitlines()[-1])
            report["runs"].append(result)
            for row in result["settings"]:
                print(f"{size:>9} {kind:<18} build {result['build_s']:7.1f} s, {result['bytes_per_item']:6.1f} B/item "
                      f"(+{result['ids_bytes_per_item']} ids); nprobe {row['nprobe']}: p50 {row['p50_ms']:.2f} ms, "
                      f"p99 {row['p99_ms']:.2f} ms, {row['batched_qps']:.0f} q/s batched"
                      + (f", recall@10 {row['recall_at_10']:.3f}" if "recall_at_10" in row else ""), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
