"""Metric speed and peak memory: semshare's chunked exact metrics vs scikit-learn, same input, same run.

Input: 5,000 image queries x 25,000 caption gallery (COCO 5K shape), 256-d embeddings with label
structure, 80 labels (~2.9 per item). Each variant runs in its own subprocess so its peak resident
memory (ru_maxrss) is its own; times are medians over --repeats runs.

`semshare-before-ndcg+ap` is the same call on the code of `--before-rev` (the per-row rank path of issue
15's start), imported from a `git archive` of that revision.

  python -m benchmarks.metrics_speed [--queries 5000 --gallery 25000 --repeats 3] [--out docs/metrics_speed.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_input(queries: int, gallery: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    C, D = 80, 256
    label_proto = rng.standard_normal((C, D)).astype(np.float32)

    def side(n):
        labels = (rng.random((n, C)) < 2.9 / C).astype(np.uint8)
        emb = labels @ label_proto + 2.0 * rng.standard_normal((n, D)).astype(np.float32)
        return emb.astype(np.float32), labels

    q_emb, q_lab = side(queries)
    g_emb, g_lab = side(gallery)
    return q_emb, g_emb, q_lab, g_lab


def run_variant(name: str, queries: int, gallery: int, repeats: int) -> dict:
    q_emb, g_emb, q_lab, g_lab = make_input(queries, gallery)
    times, values = [], {}
    for _ in range(repeats):
        if name.startswith("sklearn"):
            from sklearn.metrics import average_precision_score, ndcg_score

            started = time.perf_counter()
            qn = q_emb / np.linalg.norm(q_emb, axis=1, keepdims=True)
            gn = g_emb / np.linalg.norm(g_emb, axis=1, keepdims=True)
            scores = qn @ gn.T
            gains = q_lab.astype(np.float32) @ g_lab.T.astype(np.float32)
            values["NDCG@500"] = float(ndcg_score(gains, scores, k=500, ignore_ties=True))
            if name == "sklearn-ndcg+ap":
                aps = [average_precision_score(gains[i] > 0, scores[i]) if gains[i].any() else 0.0
                       for i in range(len(scores))]
                values["mAP@all"] = float(np.mean(aps))
            times.append(time.perf_counter() - started)
        else:
            from semshare.evaluation.retrieval import MetricSpec, evaluate_direction

            spec = MetricSpec(ndcg_k=(500,), map_k=() if name == "semshare-ndcg" else (None,))  # before: same call
            started = time.perf_counter()
            result = evaluate_direction(q_emb, g_emb, q_lab, g_lab, spec)
            times.append(time.perf_counter() - started)
            values = result.means()
    return {"variant": name, "median_s": float(np.median(times)), "times_s": times,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--gallery", type=int, default=25000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--before-rev", default="10c95ea")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.queries, args.gallery, args.repeats)))
        return
    results = {}
    from benchmarks.revisions import ROOT, code_env, source_at

    before = source_at(args.before_rev, Path(tempfile.mkdtemp()))
    for variant, repeats in (("semshare-ndcg", args.repeats), ("semshare-ndcg+ap", args.repeats),
                             ("semshare-before-ndcg+ap", args.repeats),
                             ("sklearn-ndcg", args.repeats), ("sklearn-ndcg+ap", 1)):
        env = code_env(before if "before" in variant else ROOT) if variant.startswith("semshare") else None
        out = subprocess.run([sys.executable, __file__, "--variant", variant.replace("-before", ""),
                              "--queries", str(args.queries), "--gallery", str(args.gallery), "--repeats", str(repeats)],
                             check=True, capture_output=True, text=True, env=env).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:<18} median {r['median_s']:7.2f} s   peak RSS {r['peak_rss_mib']:7.0f} MiB   {r['values']}", flush=True)
    ndcg_ratio = results["sklearn-ndcg"]["median_s"] / results["semshare-ndcg"]["median_s"]
    both_ratio = results["sklearn-ndcg+ap"]["median_s"] / results["semshare-ndcg+ap"]["median_s"]
    before_ratio = results["semshare-before-ndcg+ap"]["median_s"] / results["semshare-ndcg+ap"]["median_s"]
    gap = abs(results["sklearn-ndcg"]["values"]["NDCG@500"] - results["semshare-ndcg"]["values"]["NDCG@500"])
    gap_ap = abs(results["sklearn-ndcg+ap"]["values"]["mAP@all"] - results["semshare-ndcg+ap"]["values"]["mAP@all"])
    print(f"speed-up NDCG@500: {ndcg_ratio:.1f}x   NDCG@500 + mAP@all: {both_ratio:.1f}x   "
          f"|NDCG diff| {gap:.2e}   |mAP diff| {gap_ap:.2e}   now vs before: {before_ratio:.2f}x")
    if args.out:
        results["speedup_ndcg"] = ndcg_ratio
        results["speedup_ndcg_ap"] = both_ratio
        results["speedup_vs_before"] = before_ratio
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
