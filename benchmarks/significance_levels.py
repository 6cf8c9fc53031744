"""The same comparisons under the two tests: the query-level paired test (training runs held fixed) and the
hierarchical one (seeds, then queries; the default from 3 seeds), on the runs of a benchmark folder.

    python -m benchmarks.significance_levels RES [--reference ours] [--out docs/significance_levels.json]

For every method against the reference, on each dataset and for NDCG@500 and mAP@all: the Ave difference, the
query-level 95% CI and p, the hierarchical 95% CI and p, the seeds and test queries behind them. Prints a
markdown table (docs/RESULTS.md carries it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from semshare.evaluation.significance import hierarchical_comparison, paired_comparison
from semshare.experiments.benchmark import gather_results
from semshare.experiments.compare import per_seed_values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--reference", default="ours")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = gather_results(args.folders)
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        reference = per_seed_values(results, dataset, args.reference)
        for method in dict.fromkeys(r["method"] for r in results if r["dataset"] == dataset):
            if method == args.reference:
                continue
            values = per_seed_values(results, dataset, method)
            for metric in ("NDCG@500", "mAP@all"):
                flat = paired_comparison(values, reference, metric, args.resamples)
                levels = hierarchical_comparison(values, reference, metric, args.resamples)
                rows.append({"dataset": dataset, "method": method, "metric": metric, "difference": flat.difference,
                             "queries_ci": [flat.ci_low, flat.ci_high], "queries_p": flat.p_value,
                             "hierarchical_ci": [levels.ci_low, levels.ci_high], "hierarchical_p": levels.p_value,
                             "seeds": levels.seeds, "queries": levels.queries})
    lines = [f"| {r['dataset']} / {r['method']} - {args.reference} | {r['metric']} | {100 * r['difference']:+.2f} | "
             f"[{100 * r['queries_ci'][0]:+.2f}, {100 * r['queries_ci'][1]:+.2f}] | {r['queries_p']:.4f}"
             f"{' *' if r['queries_p'] < 0.05 else ''} | [{100 * r['hierarchical_ci'][0]:+.2f}, "
             f"{100 * r['hierarchical_ci'][1]:+.2f}] | {r['hierarchical_p']:.4f}{' *' if r['hierarchical_p'] < 0.05 else ''}"
             f" | {r['seeds']} x {r['queries']} |" for r in rows]
    print("| comparison | metric | Ave difference x100 | queries-only 95% CI | p | hierarchical 95% CI | p | seeds x "
          "queries |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
