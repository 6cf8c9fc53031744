"""`semshare demo`: the main job on built-in data. Synthetic data, Ours against two of its ablations and the
ridge reference point (experiments.paper.DEMO_RECIPES, sized by configs/experiment/demo.yaml), the test table."""

from __future__ import annotations

import time
from pathlib import Path

from semshare.data.dataset import open_dataset
from semshare.data.synthetic import make_synthetic, preset
from semshare.evaluation.evaluate import evaluate_run
from semshare.evaluation.report import format_markdown_table
from semshare.experiments.paper import DEMO_RECIPES
from semshare.training.experiment import load_run, train_experiment
from semshare.training.recipes import config_dir, resolve_config


def run_demo(out_dir: Path, preset_name: str = "small", seed: int = 0, progress=print) -> str:
    """Make (once) the synthetic preset in OUT, train or resume each demo recipe, return the test table."""
    data_dir = out_dir / f"data-{preset_name}-seed{seed}"
    if not (data_dir / "meta.json").exists():
        make_synthetic(data_dir, preset(preset_name, seed=seed), name=f"synthetic-{preset_name}", overwrite=True)
    dataset = open_dataset(data_dir)
    rows: dict[str, list[dict]] = {}
    started = time.time()
    for method in DEMO_RECIPES:
        run_dir = out_dir / f"{method}-seed{seed}"
        cfg = resolve_config(method, "small", config_dir("experiment") / "demo.yaml", {"train.seed": seed})
        progress(f"training {method} -> {run_dir}")
        train_experiment(dataset, cfg, run_dir, resume=True)  # a rerun continues (or reuses) its own runs
        rows[cfg.row_name] = [evaluate_run(load_run(run_dir, dataset))[0]]
    return (f"\nsynthetic '{preset_name}' test split, x100, selection on val ({time.time() - started:.0f} s)\n\n"
            + format_markdown_table(rows))
