"""Train and test Semantic Sharing and its ablations over several seeds; write a JSON per run and a table.

  python benchmarks/run_methods.py --data DIR --methods ours,st,imc,wo_r,wo_t,wo_c,wo_l,ours_con --seeds 3 \
      --out results/NAME [--set key=value ...] [--workers 2]

Each run: `train` (selection on the val split, carved from train when the data has none), then the test
split scored with the best-on-val weights. Finished runs (RUN/result.json present) are not redone, so an
interrupted sweep resumes. Workers run one training each with one thread (2 workers fill 2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def run_one(data_dir: str, method: str, seed: int, run_dir: str, overrides: dict, threads: int) -> dict:
    import logging

    import torch

    from semshare.evaluation.evaluate import evaluate_run
    from semshare.evaluation.retrieval import MetricSpec
    from semshare.fileio import atomic_write_json
    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import load_run_from_folder, train_experiment

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(threads)
    run_path = Path(run_dir)
    cfg = resolve_config(method, "small", overrides={"train.seed": seed, "train.progress": False, **overrides})
    started = time.time()
    state = train_experiment(open_dataset(data_dir), cfg, run_path, resume=(run_path / "last").exists())
    train_seconds = time.time() - started
    table, _ = evaluate_run(load_run_from_folder(run_path, data_dir), spec=MetricSpec(ndcg_k=(500,), map_k=(None,)))
    result = {"method": method, "seed": seed, "data": data_dir, "overrides": overrides, "test": table,
              "best_val_ndcg500": state["best_metric"], "best_epoch": state["best_epoch"], "steps": state["step"],
              "train_seconds": train_seconds}
    atomic_write_json(run_path / "result.json", result)
    return result


def main() -> None:
    from semshare.config import parse_assignments
    from semshare.evaluation.report import format_markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--methods", default="ours,st,imc,wo_r,wo_t,wo_c,wo_l,ours_con")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--method-set", action="append", default=[], metavar="METHOD:KEY=VALUE",
                        help="an override for one method only, e.g. wo_r:inputs.text=vector")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    overrides = parse_assignments(args.overrides)
    per_method: dict[str, dict] = {}
    for item in args.method_set:
        method, assignment = item.split(":", 1)
        per_method.setdefault(method, {}).update(parse_assignments([assignment]))
    methods = args.methods.split(",")
    jobs = []
    for method in methods:
        for seed in range(args.seeds):
            run_dir = args.out / f"{method}-seed{seed}"
            if (run_dir / "result.json").exists():
                continue
            jobs.append((args.data, method, seed, str(run_dir), {**overrides, **per_method.get(method, {})},
                         1 if args.workers > 1 else 2))
    started = time.time()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for result in pool.map(run_one, *zip(*jobs)) if jobs else []:
            print(f"{result['method']} seed {result['seed']}: test Ave NDCG@500 {100 * result['test']['ave/NDCG@500']:.1f} "
                  f"mAP@all {100 * result['test']['ave/mAP@all']:.1f} ({result['train_seconds']:.0f} s)", flush=True)
    rows = {}
    seconds = []
    for method in methods:
        results = [json.loads((args.out / f"{method}-seed{s}" / "result.json").read_text()) for s in range(args.seeds)]
        rows[method] = [r["test"] for r in results]
        seconds += [r["train_seconds"] for r in results]
    table = format_markdown_table(rows)
    print(table)
    print(f"\n{len(jobs)} runs in {time.time() - started:.0f} s wall; median train time per run {np.median(seconds):.0f} s")
    (args.out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
