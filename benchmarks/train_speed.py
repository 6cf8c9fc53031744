"""Training-loop speed of Ours, `small` preset, side by side: the loop of `--before-rev` and this tree's,
with and without the prefetch thread, on the same synthetic data (36 regions of 2,048-d float16 as in
benchmarks/throughput.py, captions, batch 32), each in its own process with 2 torch threads.

items/s is what the loop itself reports (items trained / seconds since its first step, at the last log
step of `--steps` steps, no validation inside). Same losses to tolerance: one more pair of runs, before and
now with `models.semantic_sharing.dropout=0` (no random draw left in the model), must give the losses of every log step to
float rounding; with dropout on the two draw different masks (layers.dropout), so their losses are compared
as a trajectory (mean over the log steps).
`--paired` also times the two loops' steps alternately in ONE process (batch build + optimizer step, the
before-code imported as a renamed copy of its package): machine drift then hits both alike, which it does not
between processes on a shared machine.
`--compile` also times the step of the model under torch.compile(dynamic=True) against eager in one process.
`--dataloader` adds a variant whose batches come from a torch DataLoader with one worker process (measured
against the prefetch thread; the loop does not offer it: docs/PERFORMANCE.md).

  python -m benchmarks.train_speed [--steps 60 --repeats 3 --before-rev REV --paired --compile --dataloader] [--out docs/train_speed.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from benchmarks.revisions import run_json, source_at


LOOP_OVERRIDES = {"text.word_dim": 300, "text.word2vec_epochs": 1}  # every variant's config on top of `small`


def make_data(folder: Path, steps: int) -> Path:
    from semshare.data.synthetic import make_synthetic, preset

    return make_synthetic(folder, preset("small", num_items=(steps + 4) * 32 + 80, num_regions=36, region_dim=2048,
                                         val_items=40, test_items=40, dtype="float16"), progress=False)


def use_dataloader_worker() -> None:
    """The loop's batches built by one DataLoader worker process instead (fork: the batch generator is
    inherited, not pickled). Its own generator keeps the run's random stream: a DataLoader otherwise draws
    its worker seed from the global one, which moves every dropout mask after it."""
    import torch

    import semshare.training.loop as loop

    class Stream(torch.utils.data.IterableDataset):
        def __init__(self, items):
            self.items = items

        def __iter__(self):
            yield from self.items

    loop.prefetched = lambda items, depth: iter(torch.utils.data.DataLoader(
        Stream(items), batch_size=None, num_workers=1, prefetch_factor=2, multiprocessing_context="fork",
        generator=torch.Generator().manual_seed(0)))


def run_loop(data: Path, out: Path, steps: int, prefetch: int | None, dataloader: bool = False,
             dropout: float | None = None) -> dict:
    """train_experiment for `steps` steps (inside the first epoch); items/s and losses from its log."""
    import torch

    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import train_experiment

    torch.set_num_threads(2)
    if dataloader:
        use_dataloader_worker()
    overrides = {"train.max_steps": steps, "train.epochs": 1, "train.progress": False, "train.log_every": 10,
                 **LOOP_OVERRIDES}
    if prefetch is not None:
        overrides["train.prefetch_batches"] = prefetch
    if dropout is not None:
        overrides["models.semantic_sharing.dropout"] = dropout
    train_experiment(open_dataset(data), resolve_config("ours", "small", overrides=overrides), out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r for r in records if "train/loss" in r]
    return {"items_per_s": steps_logged[-1]["items_per_s"], "losses": [r["train/loss"] for r in steps_logged]}


def renamed_copy(code_root: Path, folder: Path, name: str = "semshare_before") -> Path:
    """`code_root`/src/semshare copied to `folder`/`name` with its own imports rewritten, so it imports beside
    this checkout's semshare in one process; returns `folder` (for PYTHONPATH)."""
    shutil.copytree(code_root / "src" / "semshare", folder / name)
    own_name = re.compile(r'(^\s*(?:from|import)\s+|resources\.files\(")semshare\b', re.M)
    for path in (folder / name).rglob("*.py"):
        path.write_text(own_name.sub(lambda match: match.group(1) + name, path.read_text()))
    return folder


def paired_steps(data: Path, out: Path, steps: int) -> dict:
    """Both loops' steps (batch built in the step, then train_step), alternating, in this process."""
    import torch

    torch.set_num_threads(2)
    loops = {}
    for label, package in (("before", "semshare_before"), ("now", "semshare")):
        experiment = importlib.import_module(f"{package}.training.experiment")
        recipes = importlib.import_module(f"{package}.training.recipes")
        datasets = importlib.import_module(f"{package}.data.dataset")
        loop = importlib.import_module(f"{package}.training.loop")
        batches = importlib.import_module(f"{package}.data.batches")
        cfg = recipes.resolve_config("ours", "small", overrides=LOOP_OVERRIDES)
        run = experiment.prepare_run(datasets.open_dataset(data), cfg, out / label)
        training = batches.TrainingBatches(run.builder(True), run.train_rows, cfg.train.batch_size, cfg.train.seed)
        setup = loop.setup_loop(run.model, training, cfg.train, loop.DistributedContext())
        loops[label] = (loop, run.model, setup, iter(training.epoch(0)), cfg.train)
    seconds: dict[str, list[float]] = {label: [] for label in loops}
    for step in range(steps):
        for label in ("before", "now") if step % 2 == 0 else ("now", "before"):
            loop, model, setup, stream, train_cfg = loops[label]
            started = time.perf_counter()
            losses, _ = loop.train_step(model, setup, next(stream), train_cfg, train_cfg.lr)
            float(losses["loss"])
            seconds[label].append(time.perf_counter() - started)
    warm = {label: values[5:] for label, values in seconds.items()}  # lazy initialisation in the first steps
    median = {label: float(np.median(values)) for label, values in warm.items()}
    return {"steps": steps, "median_step_s": median, "items_per_s": {k: 32 / v for k, v in median.items()},
            "ratio": median["before"] / median["now"],
            "ratio_per_10_steps": [float(np.median(warm["before"][i : i + 10]) / np.median(warm["now"][i : i + 10]))
                                   for i in range(0, len(warm["now"]) - 9, 10)]}


def compile_probe(data: Path, steps: int) -> dict:
    """Median step time of the model eager vs torch.compile(dynamic=True), same batches, one process."""
    import torch

    from semshare.data.batches import TrainingBatches
    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import prepare_run

    torch.set_num_threads(2)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("eager", "compiled"):
            cfg = resolve_config("ours", "small", overrides=LOOP_OVERRIDES)
            run = prepare_run(open_dataset(data), cfg, Path(tmp) / mode)
            torch.manual_seed(0)
            model, forward = run.model, run.model
            if mode == "compiled":
                forward = torch.compile(run.model, dynamic=True)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            batches = list(TrainingBatches(run.builder(True), run.train_rows, 32, 0).epoch(0))[:steps]
            times = []
            for batch in batches:
                started = time.perf_counter()
                model.train()
                loss = forward(batch)["loss"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - started)
            result[mode] = {"first_step_s": times[0], "median_step_s": float(np.median(times[5:]))}
    return result


def main() -> None:
    if sys.argv[1:2] == ["_loop"]:
        data, out, steps, prefetch, dropout = sys.argv[2:7]
        dataloader = prefetch == "dataloader"
        depth = None if prefetch == "none" else 0 if dataloader else int(prefetch)
        print(json.dumps(run_loop(Path(data), Path(out), int(steps), depth, dataloader,
                                  None if dropout == "default" else float(dropout))))
        return
    if sys.argv[1:2] == ["_paired"]:  # the renamed copy of the earlier tree is on PYTHONPATH (run_json)
        print(json.dumps(paired_steps(Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))))
        return
    if sys.argv[1:2] == ["_compile"]:
        print(json.dumps(compile_probe(Path(sys.argv[2]), int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before-rev", default="10c95ea")
    parser.add_argument("--paired", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--dataloader", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results: dict = {"steps": args.steps, "before_rev": args.before_rev, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "data", args.steps)
        before = source_at(args.before_rev, tmp / "before")
        variants = [("before", before, "none"), ("now, no prefetch", ROOT, "0"), ("now, prefetch thread (2)", ROOT, "2")]
        if args.dataloader:
            variants.append(("now, DataLoader 1 worker", ROOT, "dataloader"))
        for repeat in range(args.repeats):  # interleaved, so drifts of the machine hit every variant alike
            for name, root, prefetch in variants:
                run = run_json(root, __file__, "_loop", str(data), str(tmp / f"run-{repeat}-{prefetch}"), str(args.steps),
                               prefetch, "default")
                results["runs"].append({"variant": name, **run})
                print(f"{name}: {run['items_per_s']:.1f} items/s", flush=True)
        for name, root in (("before, dropout 0", before), ("now, dropout 0", ROOT)):
            run = run_json(root, __file__, "_loop", str(data), str(tmp / f"run-{name}"), str(args.steps), "none", "0")
            results["runs"].append({"variant": name, **run})
            print(f"{name}: {run['items_per_s']:.1f} items/s", flush=True)
        if args.paired:
            renamed = renamed_copy(before, tmp / "paired")
            results["paired"] = run_json(ROOT, __file__, "_paired", str(renamed), str(data), str(tmp / "paired-runs"),
                                         str(args.steps), extra_path=(renamed,))
            print("paired in one process:", results["paired"], flush=True)
        if args.compile:
            results["compile"] = run_json(ROOT, __file__, "_compile", str(data), "40")
            print("torch.compile:", results["compile"], flush=True)
    by_variant: dict = {}
    for run in results["runs"]:
        by_variant.setdefault(run["variant"], []).append(run)
    results["median_items_per_s"] = {k: float(np.median([r["items_per_s"] for r in v])) for k, v in by_variant.items()}
    exact_before, exact_now = (np.array(by_variant[k][0]["losses"]) for k in ("before, dropout 0", "now, dropout 0"))
    results["dropout_0_max_relative_loss_difference"] = float(np.max(np.abs(exact_now - exact_before) / exact_before))
    # with dropout: each variant's losses are the same in every repeat (seeded); compare the trajectories
    mean_loss = {k: float(np.mean(v[0]["losses"])) for k, v in by_variant.items()}
    results["mean_log_step_loss"] = mean_loss
    results["dropout_on_max_loss_difference_vs_before"] = max(
        float(np.max(np.abs(np.subtract(r["losses"], by_variant["before"][0]["losses"])))) for r in results["runs"]
        if "dropout 0" not in r["variant"])
    base = results["median_items_per_s"]["before"]
    results["ratio_vs_before"] = {k: v / base for k, v in results["median_items_per_s"].items()}
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
