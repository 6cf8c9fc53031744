"""Parameter sweeps (the paper's Figure 1: NDCG against the consistency weight eta), as PNG + CSV.

Each value x seed is an ordinary benchmark run (resumable, RUN/result.json), so a sweep shares the
runner's data, splits, selection on validation and metrics.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from semshare.data.dataset import open_dataset
from semshare.evaluation.plots import plot_sweep
from semshare.experiments.benchmark import RunSpec, run_one
from semshare.fileio import atomic_file

PARAM_ALIASES = {"eta": "model.loss.consistency_weight", "lambda": "model.loss.context_weight"}


@dataclass(frozen=True)
class SweepPlan:
    """One config key (`param`, or its alias eta / lambda) set to each of `values`, `seeds` runs each, of one
    method on one dataset; the other config layers as a benchmark's."""

    data_dir: str
    method: str
    param: str
    values: tuple[float, ...]
    seeds: int
    out_dir: Path
    preset: str = "small"
    overrides: dict = field(default_factory=dict)
    config_files: tuple[str, ...] = ()


def run_sweep(plan: SweepPlan, threads: int = 2, progress=print) -> list[list[dict]]:
    """Every value x seed run (resumable), then sweep.csv and sweep.png; -> the test tables per value."""
    data_dir, method, param, values, seeds = plan.data_dir, plan.method, plan.param, plan.values, plan.seeds
    preset, overrides, config_files, out_dir = plan.preset, plan.overrides, plan.config_files, Path(plan.out_dir)
    dataset = open_dataset(data_dir)  # opened and value-checked once for every run
    key = PARAM_ALIASES.get(param, param)
    per_value: list[list[dict]] = []
    for value in values:
        tables = []
        for seed in range(seeds):
            run_dir = out_dir / f"{param}={value:g}" / f"seed{seed}"
            if not (run_dir / "result.json").exists():
                result = run_one(RunSpec(str(data_dir), method, seed, str(run_dir), preset,
                                         {**(overrides or {}), key: value}, threads=threads,
                                         config_files=config_files), dataset)
                progress(f"{param}={value:g} seed {seed}: NDCG@500 Ave {100 * result['test']['ave/NDCG@500']:.1f}")
            tables.append(json.loads((run_dir / "result.json").read_text())["test"])
        per_value.append(tables)
    with atomic_file(out_dir / "sweep.csv") as handle:
        writer = csv.writer(handle)
        keys = list(per_value[0][0])
        writer.writerow([param, "seed"] + keys)
        for value, tables in zip(values, per_value):
            for seed, table in enumerate(tables):
                writer.writerow([value, seed] + [f"{table[k]:.6f}" for k in keys])
    plot_sweep(values, per_value, param, out_dir / "sweep.png", title=f"{method} on {Path(data_dir).name}, test split")
    return per_value
