"""The instance head on finished benchmark runs: fit it (`semshare fit-instance`, defaults), then score the
test split with the label space alone and with the head; per method, the two rows and their per-seed
(paired) differences, x100.

  python benchmarks/instance_rerank.py BENCH_FOLDER [BENCH_FOLDER ...] [--methods ours,ours_con,dscmr]
      [--out docs/instance_rerank.json]

Writes RUN/instance/ into each run folder (replacing one there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from semshare.evaluation.evaluate import evaluate_run
from semshare.evaluation.protocols import ProtocolConfig
from semshare.evaluation.retrieval import MetricSpec
from semshare.training.experiment import load_run
from semshare.training.instance_head import InstanceConfig, fit_instance_head, instance_ranking

SPEC = MetricSpec(ndcg_k=(500,), map_k=(None,), recall_k=(1, 5, 10))
COLUMNS = ("i2t/R@10", "t2i/R@10", "i2t/R@1", "t2i/R@1", "ave/NDCG@500", "ave/mAP@all")


def cell(values) -> str:
    values = 100 * np.asarray(values)
    return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--methods", default="ours,ours_con,dscmr")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report: dict = {}
    for folder in args.folders:
        rows: dict[str, dict] = {}
        for result in json.loads((folder / "results.json").read_text()):
            if result["method"] not in args.methods.split(","):
                continue
            run = load_run(result["run_dir"], ranking="label")
            record = fit_instance_head(run, result["run_dir"], InstanceConfig(), overwrite=True)
            label = evaluate_run(run, ProtocolConfig(), SPEC)[0]
            combined = evaluate_run(run.ranked_by(instance_ranking(result["run_dir"])), ProtocolConfig(), SPEC)[0]
            entry = rows.setdefault(result.get("display_name") or result["method"], {"label": [], "combined": [], "w": []})
            entry["label"].append(label)
            entry["combined"].append(combined)
            entry["w"].append(record["weight"])
        report[str(folder)] = rows
        print(f"\n{folder}\n")
        print("| method | ranking | w (val) | " + " | ".join(COLUMNS) + " |")
        print("|---|---|---|" + "---|" * len(COLUMNS))
        for name, entry in rows.items():
            print(f"| {name} | label space | - | " + " | ".join(cell([t[c] for t in entry["label"]]) for c in COLUMNS) + " |")
            print(f"| {name} | + instance head | {', '.join(f'{w:g}' for w in entry['w'])} | "
                  + " | ".join(cell([t[c] for t in entry["combined"]]) for c in COLUMNS) + " |")
            diffs = [cell([b[c] - a[c] for a, b in zip(entry["label"], entry["combined"])]) for c in COLUMNS]
            print(f"| {name} | difference (paired by seed) | | " + " | ".join(diffs) + " |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
