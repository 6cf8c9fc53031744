"""Paired significance in the tables: each method against a reference on the same test queries and seeds
(semshare.evaluation.significance), from the per-query values every run keeps (RUN/per_query.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.evaluation.significance import RESAMPLES, PairedComparison, paired_comparison

METRICS = ("NDCG@500", "mAP@all", "R@10")


def load_per_query(run_dir: Path, name: str = "per_query.npz") -> dict | None:
    """{"i2t": {metric: (Q,)}, "t2i": {...}} of one run (`name`: its file; a combined-ranking row keeps its
    own), or None when the run kept none."""
    path = run_dir / name
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        out: dict = {"i2t": {}, "t2i": {}}
        for key in arrays.files:
            direction, metric = key.split("/", 1)
            out[direction][metric] = arrays[key]
    return out


def _per_seed(results: list[dict], dataset: str, method: str) -> list[dict]:
    runs = sorted((r for r in results if r["dataset"] == dataset and r["method"] == method), key=lambda r: r["seed"])
    loaded = [load_per_query(Path(r["run_dir"]), r.get("per_query_file", "per_query.npz")) for r in runs if r.get("run_dir")]
    return [values for values in loaded if values is not None]


def compare_methods(results_a: list[dict], results_b: list[dict], dataset: str, method_a: str, method_b: str,
                    metric: str, resamples: int = RESAMPLES) -> PairedComparison | None:
    a, b = _per_seed(results_a, dataset, method_a), _per_seed(results_b, dataset, method_b)
    if not a or not b:
        return None
    try:
        return paired_comparison(a, b, metric, resamples)
    except (ValueError, KeyError):  # other queries (another text source) or another metric: not comparable
        return None


def format_comparison(name: str, comparison: PairedComparison | None) -> str:
    if comparison is None:
        return f"| {name} | - | - | - |"
    mark = " *" if comparison.significant else ""
    return (f"| {name}{mark} | {100 * comparison.difference:+.2f} | [{100 * comparison.ci_low:+.2f}, "
            f"{100 * comparison.ci_high:+.2f}] | {comparison.p_value:.4f} |")


def significance_tables(results: list[dict], reference: str | None = None, resamples: int = RESAMPLES) -> str:
    """Per dataset and metric: every method minus the reference (default: the default recipe), Ave x100."""
    from semshare.methods import DEFAULT_RECIPE

    reference = reference or DEFAULT_RECIPE
    blocks = []
    names = {r["method"]: r.get("display_name") or r["method"] for r in results}
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        methods = [m for m in dict.fromkeys(r["method"] for r in results if r["dataset"] == dataset) if m != reference]
        if not any(r["method"] == reference and r["dataset"] == dataset for r in results) or not methods:
            continue
        for metric in METRICS:
            if not all(f"ave/{metric}" in r["test"] for r in results if r["dataset"] == dataset):
                continue  # results scored before the metric existed
            lines = [f"Paired vs {names.get(reference, reference)} on {dataset}, Ave {metric} x100 (method minus "
                     f"reference; 95% paired-bootstrap CI and two-sided sign-flip permutation p over queries and "
                     f"seeds, {resamples} resamples each, seeded; * = p < 0.05)", "",
                     "| method | difference | 95% CI | p |", "|---|---|---|---|"]
            lines += [format_comparison(names.get(m, m), compare_methods(results, results, dataset, m, reference, metric,
                                                                          resamples)) for m in methods]
            blocks.append("\n".join(lines))
    return ("\n\n" + "\n\n".join(blocks)) if blocks else ""


def compare_result_folders(folder_a: Path, folder_b: Path, metric: str = "NDCG@500",
                           resamples: int = RESAMPLES) -> str:
    """The paired comparison of two benchmark result folders, method by method on the datasets both hold."""
    import json

    loaded = []
    for folder in (folder_a, folder_b):
        path = Path(folder) / "results.json"
        if not path.exists():
            raise SemshareError(f"{path}: no such file; give two folders written by `semshare benchmark`")
        loaded.append(json.loads(path.read_text()))
    results_a, results_b = loaded
    pairs = sorted({(r["dataset"], r["method"]) for r in results_a} & {(r["dataset"], r["method"]) for r in results_b})
    if not pairs:
        raise SemshareError(f"{folder_a} and {folder_b} share no (dataset, method) run to compare")
    lines = [f"A = {folder_a}, B = {folder_b}: Ave {metric} x100, mean over the seeds each holds; A minus B with "
             f"its 95% paired-bootstrap CI and sign-flip permutation p ({resamples} resamples, seeded; * = p < 0.05)",
             "", "| dataset / method | A | B | A - B | 95% CI | p |", "|---|---|---|---|---|---|"]
    for dataset, method in pairs:
        row = format_comparison(f"{dataset} / {method}",
                                compare_methods(results_a, results_b, dataset, method, method, metric, resamples))
        name, rest = row[2:].split(" | ", 1)
        means = [_mean_ave(results, dataset, method, metric) for results in (results_a, results_b)]
        lines.append(f"| {name} | " + " | ".join("-" if m is None else f"{100 * m:.2f}" for m in means) + f" | {rest}")
    return "\n".join(lines)


def _mean_ave(results: list[dict], dataset: str, method: str, metric: str) -> float | None:
    values = [r["test"][f"ave/{metric}"] for r in results
              if r["dataset"] == dataset and r["method"] == method and f"ave/{metric}" in r.get("test", {})]
    return float(np.mean(values)) if values else None
