"""Markdown table of finished runs (RUN/result.json written by `semshare benchmark`), one row per method
(and dataset, when the folder holds several).

  python benchmarks/collect_results.py RESULTS_DIR [--order ours,st,...] [--label-prefix text]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from semshare.evaluation.report import format_markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", type=Path)
    parser.add_argument("--order", default="ours,st,imc,wo_r,wo_t,wo_c,wo_l,ours_con,dscmr")
    parser.add_argument("--label-prefix", default="")
    args = parser.parse_args()
    by_method: dict[str, list[dict]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    results = [json.loads(path.read_text()) for path in sorted(args.results_dir.rglob("result.json"))]
    several = len({r["dataset"] for r in results}) > 1
    for result in results:
        key = f"{result['dataset']}/{result['method']}" if several else result["method"]
        by_method[key].append(result["test"])
        seconds[key].append(result["train_seconds"])
    order = [m for m in args.order.split(",") if m in by_method] + sorted(set(by_method) - set(args.order.split(",")))
    rows = {f"{args.label_prefix}{m} ({len(by_method[m])} seeds)": by_method[m] for m in order}
    print(format_markdown_table(rows))
    print()
    print("median train time per run: " + ", ".join(f"{m} {np.median(seconds[m]):.0f} s" for m in order))


if __name__ == "__main__":
    main()
