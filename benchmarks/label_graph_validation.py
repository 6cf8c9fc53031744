"""What moves the label-graph baseline, measured on the validation split only (never test): graph threshold,
name vectors, consistency weight, GCN hidden size, retrieval space. Each variant is `label_gcn` with a few
`--set` overrides, trained on the train split; its best validation Ave NDCG@500 / mAP@all (and both retrieval
spaces' numbers at that epoch) are read from the run's metrics.jsonl. DSCMR is trained alike as the bar.

  python benchmarks/label_graph_validation.py --data ../shared/data/coco_2k --seeds 0 --out docs/label_graph_validation.json \
      [--glove ../shared/data/coco_2k/label_vectors_glove.npy] [--segments-dir SEG] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def variants(glove: str) -> dict[str, dict]:
    out = {"dscmr": {}, "default (tau 0.4, p 0.2, auto names)": {}}
    for tau in (0.1, 0.2, 0.6):
        out[f"threshold {tau}"] = {"model.graph.threshold": tau}
    for p in (0.0, 0.5):
        out[f"reweight {p}"] = {"model.graph.reweight": p}
    if glove:
        out["GloVe names"] = {"model.graph.node_vectors_path": glove}
    out["adaptive graph"] = {"model.graph.adaptive": True}
    for weight in (0.1, 1.0):
        out[f"consistency {weight}"] = {"model.consistency_weight": weight}
    out["GCN hidden 1024"] = {"model.graph.hidden_dim": 1024}
    out["common space only"] = {"model.retrieval": "common"}
    out["label space only"] = {"model.retrieval": "label"}
    return out


def best_validation(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val/ave/NDCG@500" in r]
    best = max(validations, key=lambda r: r["val/ave/NDCG@500"])
    return {k.removeprefix("val/"): v for k, v in best.items() if k.startswith("val/")} | {"epoch": best["epoch"]}


def main() -> None:
    import torch

    from semshare.data.dataset import open_dataset
    from semshare.training.experiment import train_experiment
    from semshare.training.recipes import resolve_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--glove", default="")
    parser.add_argument("--segments-dir", default="", help="MiniLM segments: every variant on text.source=minilm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data)
    text = {"text.source": "minilm", "text.segments_dir": args.segments_dir} if args.segments_dir else {}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in variants(args.glove).items():
            for seed in map(int, args.seeds.split(",")):
                method = "dscmr" if name == "dscmr" else "label_gcn"
                cfg = resolve_config(method, "small", overrides={"train.seed": seed, "train.progress": False,
                                                                  **text, **overrides})
                run_dir = Path(tmp) / f"{len(results)}"
                started = time.time()
                train_experiment(dataset, cfg, run_dir)
                results.append({"variant": name, "seed": seed, "overrides": overrides, **best_validation(run_dir),
                                "seconds": round(time.time() - started, 1)})
                row = results[-1]
                print(f"{name:<40} seed {seed}: val Ave NDCG@500 {100 * row['ave/NDCG@500']:.1f} "
                      f"mAP@all {100 * row['ave/mAP@all']:.1f}", flush=True)
    args.out.write_text(json.dumps({"data": args.data, "text": "minilm" if text else "native", "results": results},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
