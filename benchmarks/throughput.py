"""Training throughput of the Semantic Sharing model on this CPU: items/s and model FLOP utilisation.

For each size preset (small, paper) and precision (fp32, bf16 autocast) it times training steps on
synthetic data shaped like the real thing (R = 36 regions of 2,048-d, captions), counts the step's FLOPs
with torch's FlopCounterMode (matmuls and attention, forward + backward), and divides the achieved FLOP/s
by a matmul peak measured in the same run for the same precision (median of timed 2048 x 2048 matmuls).

  python benchmarks/throughput.py [--steps 6] [--batch 32] [--out docs/throughput.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * size**3 / float(np.median(times))


def main() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from semshare.data.batches import TrainingBatches
    from semshare.data.synthetic import make_synthetic, preset
    from semshare.data.dataset import open_dataset
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import prepare_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--presets", default="small,paper")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    results = {"threads": torch.get_num_threads(), "peak_gflops": {k: v / 1e9 for k, v in peaks.items()}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = make_synthetic(Path(tmp) / "d", preset("small", num_items=(args.steps + 2) * args.batch + 40,
                                                      num_regions=36, region_dim=2048, val_items=20, test_items=20,
                                                      dtype="float16"), progress=False)
        for preset_name in args.presets.split(","):
            for precision in ("fp32", "bf16"):
                cfg = resolve_config("ours", preset_name, overrides={
                    "train.batch_size": args.batch, "train.precision": precision, "text.word_dim": 300,
                    "text.word2vec_epochs": 1})
                run = prepare_run(open_dataset(data), cfg, Path(tmp) / f"run-{preset_name}-{precision}")
                model = run.model
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
                batches = list(TrainingBatches(run.builder(True), run.train_rows, args.batch, 0).epoch(0))
                autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

                def step(batch):
                    with autocast:
                        loss = model(batch)["loss"]
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()

                with FlopCounterMode(display=False) as counter:
                    step(batches[0])
                flops = counter.get_total_flops()
                times = []
                for batch in batches[1 : args.steps + 1]:
                    started = time.perf_counter()
                    step(batch)
                    times.append(time.perf_counter() - started)
                seconds = float(np.median(times[1:] if len(times) > 2 else times))
                achieved = flops / seconds
                record = {"preset": preset_name, "precision": precision, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                          "gflop_per_step": flops / 1e9, "median_step_s": seconds, "items_per_s": args.batch / seconds,
                          "achieved_gflops": achieved / 1e9, "mfu": achieved / peaks[precision]}
                results["runs"].append(record)
                print(f"{preset_name:<6} {precision}: {record['params_m']:.1f} M params, {record['gflop_per_step']:.1f} GFLOP/step, "
                      f"{record['items_per_s']:.1f} items/s, {record['achieved_gflops']:.0f} GFLOP/s, "
                      f"MFU {100 * record['mfu']:.0f}% of the {precision} matmul peak", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
