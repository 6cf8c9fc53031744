"""COCO-sized training memory and data throughput; import memory at two sizes.

  python benchmarks/scale.py train --data COCO_DIR [--steps 300]      # loader alone vs loader + small model
  python benchmarks/scale.py import --sizes 2000,8000                  # precomp import peak RSS per size

`train`: each variant runs in its own subprocess, so its peak resident memory (ru_maxrss from wait4) is its
own: (1) the loader alone builds --steps training batches (regions, boxes, masks, captions, masking) and
reports items/s; (2) the one training loop trains the `small` model for --steps steps (validation skipped:
it would embed the val split) and reports items/s. `import`: writes a SCAN-style precomp folder of N images
x 36 x 2048 float32 (+5 captions each, random labels) and imports it in a subprocess.
Results: docs/scale.json.
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


def peak_rss_run(command: list[str]) -> tuple[str, float]:
    """Run a command under /usr/bin/time -> (its stdout, its own peak RSS in MB).

    Not wait4's ru_maxrss: a child started by vfork is charged the parent's resident memory until it execs,
    so a parent that has just written a 2 GB file would be measured, not the child.
    """
    process = subprocess.run(["/usr/bin/time", "-f", "peak_rss_kb=%M", *command], capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"{command} failed: {process.stderr[-2000:]}")
    peak = [line for line in process.stderr.splitlines() if line.startswith("peak_rss_kb=")][-1]
    return process.stdout, int(peak.split("=")[1]) / 1024


def child(argv: list[str]) -> tuple[dict, float]:
    """Run `python this_file argv` -> (its JSON line, peak RSS in MB)."""
    output, peak_mb = peak_rss_run([sys.executable, __file__, *argv])
    last = [line for line in output.splitlines() if line.startswith("{")][-1]
    return json.loads(last), peak_mb


def run_loader(data: str, steps: int, batch_size: int) -> None:
    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import prepare_run
    from semshare.data.batches import TrainingBatches

    cfg = resolve_config("ours", "small", overrides={"train.batch_size": batch_size})
    run = prepare_run(open_dataset(data), cfg, Path(os.environ.get("SCALE_RUN_DIR", "/tmp/scale_run")) / "loader")
    batches = TrainingBatches(run.builder(training=True), run.train_rows, batch_size, seed=0)
    started, count = time.perf_counter(), 0
    for step, batch in enumerate(batches.epoch(0)):
        count += len(batch)
        if step + 1 == steps:
            break
    seconds = time.perf_counter() - started
    print(json.dumps({"mode": "loader", "steps": steps, "items": count, "seconds": seconds, "items_per_s": count / seconds}))


def run_train(data: str, steps: int, batch_size: int) -> None:
    from semshare.data.batches import TrainingBatches
    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import prepare_run
    from semshare.training.loop import fit

    cfg = resolve_config("ours", "small", overrides={"train.batch_size": batch_size, "train.max_steps": steps,
                                                      "train.progress": False})
    run_dir = Path(os.environ.get("SCALE_RUN_DIR", "/tmp/scale_run")) / "train"
    run = prepare_run(open_dataset(data), cfg, run_dir)
    batches = TrainingBatches(run.builder(training=True), run.train_rows, batch_size, cfg.train.seed)
    started = time.perf_counter()
    fit(run.model, batches, lambda model: {"ave/NDCG@500": 0.0}, cfg.train, run_dir)  # no validation pass
    seconds = time.perf_counter() - started
    print(json.dumps({"mode": "train", "steps": steps, "items": steps * batch_size, "seconds": seconds,
                      "items_per_s": steps * batch_size / seconds}))


def write_precomp(folder: Path, count: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ims = np.lib.format.open_memmap(folder / "train_ims.npy", mode="w+", dtype=np.float32, shape=(count, 36, 2048))
    for start in range(0, count, 500):
        ims[start : start + 500] = rng.standard_normal((min(500, count - start), 36, 2048), dtype=np.float32)
    ims.flush()
    del ims
    (folder / "train_caps.txt").write_text("".join(f"a caption of image {i} number {k}\n" for i in range(count) for k in range(5)))
    np.save(folder / "labels.npy", (rng.random((count, 80)) < 0.05).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train")
    train.add_argument("--data", required=True)
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--batch-size", type=int, default=32)
    importer = sub.add_parser("import")
    importer.add_argument("--sizes", default="2000,8000")
    importer.add_argument("--work", default="/tmp/scale_import")
    for name in ("_loader", "_train"):
        hidden = sub.add_parser(name)
        hidden.add_argument("--data", required=True)
        hidden.add_argument("--steps", type=int, default=300)
        hidden.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default="docs/scale.json")
    args = parser.parse_args()
    if args.command == "_loader":
        return run_loader(args.data, args.steps, args.batch_size)
    if args.command == "_train":
        return run_train(args.data, args.steps, args.batch_size)
    report = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    if args.command == "train":
        results = []
        for mode in ("_loader", "_train"):
            result, peak_mb = child([mode, "--data", args.data, "--steps", str(args.steps), "--batch-size", str(args.batch_size)])
            result["peak_rss_mb"] = peak_mb
            print(json.dumps(result), flush=True)
            results.append(result)
        report["train"] = {"data": args.data, "num_items": json.loads((Path(args.data) / "meta.json").read_text())["num_items"],
                           "regions_bytes": os.path.getsize(Path(args.data) / "regions.npy"), "results": results}
    else:
        rows = []
        for size in [int(s) for s in args.sizes.split(",")]:
            folder = Path(args.work) / f"precomp-{size}"
            if not (folder / "labels.npy").exists():
                write_precomp(folder, size)
            out = Path(args.work) / f"imported-{size}"
            started = time.perf_counter()
            _, peak_mb = peak_rss_run([sys.executable, "-m", "semshare.cli", "import", "precomp", str(folder),
                                       "--splits", "train", "--labels", str(folder / "labels.npy"), "--out", str(out),
                                       "--overwrite"])
            row = {"images": size, "input_bytes": os.path.getsize(folder / "train_ims.npy"),
                   "seconds": time.perf_counter() - started, "peak_rss_mb": peak_mb}
            print(json.dumps(row), flush=True)
            rows.append(row)
        report["import"] = rows
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
