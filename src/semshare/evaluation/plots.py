"""PNG figures: training curves of a run, precision-recall curves per method, and parameter sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from semshare.names import SELECTION_METRIC


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(run_dir: str | Path, out_path: str | Path) -> None:
    """Train losses per step and validation NDCG@500 / mAP@all per epoch, from RUN/metrics.jsonl."""
    plt = _pyplot()
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line]
    train = [r for r in records if "train/loss" in r]
    val = [r for r in records if "val/ave/NDCG@500" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in sorted({k for r in train for k in r if k.startswith("train/")}):
        points = [(r["step"], r[key]) for r in train if key in r]
        left.plot(*zip(*points), label=key.removeprefix("train/"), lw=1.2 if key == "train/loss" else 0.8)
    left.set_xlabel("step")
    left.set_ylabel("loss")
    left.set_yscale("log")
    left.legend(fontsize=7)
    for key in ("val/ave/NDCG@500", "val/ave/mAP@all"):
        if val and key in val[0]:
            right.plot([r["epoch"] for r in val], [100 * r[key] for r in val], marker="o", label=key.removeprefix("val/"))
    right.set_xlabel("epoch")
    right.xaxis.get_major_locator().set_params(integer=True)
    right.set_ylabel("validation, x100")
    right.legend(fontsize=7)
    fig.suptitle(f"{Path(run_dir).parent.name}/{Path(run_dir).name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)


def read_metrics(run_dir: str | Path) -> list[dict]:
    from semshare.errors import SemshareError

    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise SemshareError(f"{path}: no such file; {run_dir} is not a trained run (closed-form fits have no curves)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """The shortest ends of the runs' paths (two parts at least) that tell them apart: two benchmarks' runs
    of one method and seed are `benchA/synthetic-tiny/ours-seed0` and `benchB/...`, not the same label."""
    parts = [Path(run_dir).resolve().parts for run_dir in run_dirs]
    for depth in range(2, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [str(run_dir) for run_dir in run_dirs]


def line_style(index: int) -> dict:
    """A distinct colour / line style / marker for line `index`: 40 lines before a combination repeats (ten
    colours alone cannot tell 16 methods apart)."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    return {"color": colours[index % 10], "linestyle": ("-", "--", "-.", ":")[(index // 10) % 4],
            "marker": ("o", "s", "^", "D")[(index // 10) % 4]}


def plot_runs(run_dirs: list[str | Path], out_path: str | Path, metric: str = SELECTION_METRIC,
              labels: list[str] | None = None, title: str = "") -> list[str]:
    """Train loss per step and the validation `metric` per epoch of several runs, one line each; returns the
    legend labels (`labels`, else the shortest path ends that differ)."""
    from semshare.errors import SemshareError

    if labels is not None and len(labels) != len(run_dirs):
        raise SemshareError(f"--labels: expected {len(run_dirs)} labels (one per run), found {len(labels)}")
    labels = labels or run_labels(run_dirs)
    plt = _pyplot()
    fig = runs_figure(run_dirs, labels, metric, title)
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return labels


def runs_figure(run_dirs: list[str | Path], labels: list[str], metric: str, title: str = ""):
    """The figure of plot_runs: train loss per step (left), validation `metric` per epoch (right)."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    for index, (run_dir, name) in enumerate(zip(run_dirs, labels)):
        records = read_metrics(run_dir)
        style = line_style(index)
        train = [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]
        val = [(r["epoch"], 100 * r[f"val/{metric}"]) for r in records if f"val/{metric}" in r]
        if train:
            left.plot(*zip(*train), lw=1.2, label=name, color=style["color"], linestyle=style["linestyle"])
        if val:
            right.plot(*zip(*val), label=name, **style)
    left.set_xlabel("step")
    left.set_ylabel("train loss")
    left.set_yscale("log")
    right.set_xlabel("epoch")
    right.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole: no 1.5 tick
    right.set_ylabel(f"validation {metric}, x100")
    fig.suptitle(title or f"{len(run_dirs)} run{'s' if len(run_dirs) != 1 else ''}: train loss and validation {metric}",
                 fontsize=9)
    handles, names = right.get_legend_handles_labels() or left.get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.tight_layout()
    return fig


def pr_figure(curves: dict[str, dict], title: str = ""):
    """The figure of plot_pr_curves: I2T and T2I side by side, one style per method, one legend outside."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, direction in zip(axes, ("i2t", "t2i")):
        for index, (method, curve) in enumerate(curves.items()):
            if direction in curve:
                ax.plot(curve[direction]["recall"], curve[direction]["precision"], lw=1, markersize=3, label=method,
                        **line_style(index))
        ax.set_title(direction.upper())
        ax.set_xlabel("recall")
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("precision")
    # one legend for both panels, right of them: inside, it covered the T2I curves
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_pr_curves(curves: dict[str, dict], out_path: str | Path, title: str = "") -> None:
    """curves: method -> {"i2t": {"recall": [...], "precision": [...]}, "t2i": {...}}."""
    plt = _pyplot()
    fig = pr_figure(curves, title)
    fig.savefig(out_path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_sweep(values: list[float], per_value: list[list[dict]], param: str, out_path: str | Path,
               title: str = "") -> None:
    """NDCG@500 (I2T, T2I, Ave; mean ± std over seeds) against the swept value; x on a symlog axis (0 allowed)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for direction, style in (("i2t", "s--"), ("t2i", "^--"), ("ave", "o-")):
        means = np.array([np.mean([100 * t[f"{direction}/NDCG@500"] for t in tables]) for tables in per_value])
        stds = np.array([np.std([100 * t[f"{direction}/NDCG@500"] for t in tables]) for tables in per_value])
        ax.errorbar(values, means, yerr=stds, fmt=style, capsize=3, label=direction.upper())
    positive = [v for v in values if v > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.set_xlabel(param)
    ax.set_ylabel("NDCG@500 x100")
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
