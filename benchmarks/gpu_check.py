"""The prepared GPU check (benchmarks/gpu_check.sh runs it): device, matmul peaks, training items/s and MFU,
and a short training run on the GPU whose validation metric must match a CPU run of the same seed.

Runs from PYTHONPATH=src with torch, numpy, scipy, safetensors, pyyaml and tqdm only (no gensim, faiss,
fastapi, uvicorn or matplotlib there): the text side is a `text.npy` vector per row made here from the
captions with NumPy, and the synthetic data has region classes, so neither Word2Vec nor k-means is needed.

  PYTHONPATH=src python benchmarks/gpu_check.py --out OUT [--cpu-dry-run]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """FLOP/s of a size x size matmul (median of `repeats`, after warm-up)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - started)
    return 2 * size**3 / float(np.median(times))


def add_text_vectors(data_dir: Path, dim: int = 384, seed: int = 0) -> None:
    """text.npy: a fixed random projection of each row's first-caption bag of words (NumPy only)."""
    from semshare.data.dataset import open_dataset
    from semshare.data.text import Vocabulary, tokenize

    dataset = open_dataset(data_dir, check_values=False)
    firsts = [texts[0] for texts in dataset.captions]
    vocab = Vocabulary.build(firsts)
    projection = np.random.default_rng(seed).standard_normal((len(vocab), dim)).astype(np.float32) / np.sqrt(dim)
    vectors = np.zeros((len(firsts), dim), dtype=np.float32)
    for row, text in enumerate(firsts):
        ids = vocab.encode(tokenize(text))
        if ids:
            vectors[row] = projection[ids].mean(0)
    np.save(data_dir / "text.npy", vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-6))


def throughput(data_dir: Path, preset: str, device: torch.device, batch: int, steps: int, peak: float, tmp: Path) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from semshare.data.batches import TrainingBatches
    from semshare.data.dataset import open_dataset
    from semshare.training.experiment import prepare_run
    from semshare.training.recipes import resolve_config

    cfg = resolve_config("ours", preset, overrides={"train.batch_size": batch, "inputs.text": "vector",
                                                    "train.progress": False})
    run = prepare_run(open_dataset(data_dir), cfg, tmp / f"run-{preset}")
    model = run.model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    batches = [b.to(device) for b in TrainingBatches(run.builder(True), run.train_rows, batch, 0).epoch(0)][: steps + 2]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)

    def step(b):
        with autocast:
            loss = model(b)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step(batches[0])
    flops = counter.get_total_flops()
    step(batches[1])  # warm-up (kernels, allocator)
    synchronize(device)
    times = []
    for b in batches[2:]:
        started = time.perf_counter()
        step(b)
        synchronize(device)
        times.append(time.perf_counter() - started)
    seconds = float(np.median(times))
    return {"preset": preset, "precision": "bf16", "batch": batch, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflop_per_step": flops / 1e9, "median_step_s": seconds, "items_per_s": batch / seconds,
            "achieved_tflops": flops / seconds / 1e12, "mfu_vs_bf16_peak": flops / seconds / peak}


def short_training(data_dir: Path, device: str, precision: str, tmp: Path) -> float:
    """Best validation Ave NDCG@500 of a short seeded run (the one loop, its validation)."""
    from semshare.data.dataset import open_dataset
    from semshare.training.experiment import train_experiment
    from semshare.training.recipes import resolve_config

    cfg = resolve_config("ours", "small", overrides={
        "inputs.text": "vector", "train.epochs": 3, "train.batch_size": 32, "train.seed": 0, "train.device": device,
        "train.precision": precision, "train.progress": False, "models.semantic_sharing.dropout": 0.0})
    state = train_experiment(open_dataset(data_dir), cfg, tmp / f"short-{device.replace(':', '')}-{precision}")
    return float(state.best_metric)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-dry-run", action="store_true", help="no GPU here: run every step on the CPU, small")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from semshare.data.synthetic import make_synthetic, preset

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_dry_run:
        raise SystemExit("no CUDA device: run on the GPU machine, or pass --cpu-dry-run to check the script")
    device = torch.device("cuda" if cuda else "cpu")
    report: dict = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                    "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
                    "capability": list(torch.cuda.get_device_capability(0)) if cuda else None}
    print(json.dumps(report), flush=True)
    size = 8192 if cuda else 512
    torch.backends.cuda.matmul.allow_tf32 = True
    report["matmul_peak_tflops"] = {"bf16": matmul_peak(device, torch.bfloat16, size) / 1e12,
                                    "tf32": matmul_peak(device, torch.float32, size) / 1e12}
    print("matmul peak TFLOP/s", json.dumps(report["matmul_peak_tflops"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        batch, steps = (64, 10) if cuda else (8, 2)
        big = make_synthetic(tmp / "big", preset("small", num_items=(steps + 3) * batch + 40, num_regions=36,
                                                 region_dim=2048 if cuda else 64, val_items=20, test_items=20,
                                                 dtype="float16"), progress=False)
        add_text_vectors(big)
        peak = report["matmul_peak_tflops"]["bf16"] * 1e12
        report["throughput"] = [throughput(big, name, device, batch, steps, peak, tmp)
                                for name in (("small", "paper") if cuda else ("small",))]
        for record in report["throughput"]:
            print(json.dumps(record), flush=True)
        small = make_synthetic(tmp / "small", preset("tiny", num_items=400, val_items=80, test_items=20), progress=False)
        add_text_vectors(small)
        on_device = short_training(small, str(device), "auto", tmp)
        on_cpu = short_training(small, "cpu", "fp32", tmp)
        report["short_training"] = {"val_ave_ndcg500_device": on_device, "val_ave_ndcg500_cpu": on_cpu,
                                    "abs_difference": abs(on_device - on_cpu), "tolerance": 0.03,
                                    "matches": abs(on_device - on_cpu) <= 0.03}
        print(json.dumps(report["short_training"]), flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
