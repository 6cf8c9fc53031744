"""Instance-level recall (R@1/5/10, a query's own item in the top k) of finished benchmark runs, beside their
label-wise metrics, re-evaluated from each run folder (the label metrics must equal the recorded ones: the
script stops if one differs).

  python benchmarks/instance_recall.py BENCH_FOLDER [BENCH_FOLDER ...] [--out docs/instance_recall.json]

Prints one markdown table per benchmark folder: mean ± std over the seeds, x100.
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

COLUMNS = ("i2t/R@1", "i2t/R@5", "i2t/R@10", "t2i/R@1", "t2i/R@5", "t2i/R@10", "ave/NDCG@500", "ave/mAP@all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {}
    for folder in args.folders:
        results = json.loads((folder / "results.json").read_text())
        tables: dict[str, list[dict]] = {}
        names = {}
        for result in results:
            run = load_run(result["run_dir"])
            table, _ = evaluate_run(run, ProtocolConfig(), MetricSpec(ndcg_k=(500,), map_k=(None,), recall_k=(1, 5, 10)))
            for key in ("ave/NDCG@500", "ave/mAP@all"):  # the same run, the same data: the same numbers
                assert abs(table[key] - result["test"][key]) < 1e-9, (result["run_dir"], key)
            tables.setdefault(result["method"], []).append(table)
            names[result["method"]] = result.get("display_name") or result["method"]
        report[str(folder)] = {m: {k: [t[k] for t in ts] for k in COLUMNS} for m, ts in tables.items()}
        inputs = sorted({r.get("text_inputs", "native") for r in results})
        print(f"\n{folder} ({', '.join(inputs)} text inputs; {len(results)} runs)\n")
        print("| method | " + " | ".join(c.replace("i2t/", "I2T ").replace("t2i/", "T2I ").replace("ave/", "Ave ")
                                         for c in COLUMNS) + " |")
        print("|---|" + "---|" * len(COLUMNS))
        for method, ts in tables.items():
            cells = [f"{100 * np.mean([t[c] for t in ts]):.1f} ± {100 * np.std([t[c] for t in ts], ddof=1):.1f}"
                     for c in COLUMNS]
            print(f"| {names[method]} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
