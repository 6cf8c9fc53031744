"""Paired significance in the tables: each method against a reference on the same test queries and seeds
(semshare.evaluation.significance), from the per-query values every run keeps (RUN/per_query.npz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.evaluation.significance import RESAMPLES, PairedComparison, compare_runs

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


def per_seed_values(results: list[dict], dataset: str, method: str) -> list[dict]:
    """The per-query values of a method's runs on a dataset, one dict per seed in seed order."""
    runs = sorted((r for r in results if r["dataset"] == dataset and r["method"] == method), key=lambda r: r["seed"])
    loaded = [load_per_query(Path(r["run_dir"]), r.get("per_query_file", "per_query.npz")) for r in runs if r.get("run_dir")]
    return [values for values in loaded if values is not None]


def compare_methods(results_a: list[dict], results_b: list[dict], dataset: str, method_a: str, method_b: str,
                    metric: str, resamples: int = RESAMPLES) -> PairedComparison | None:
    a, b = per_seed_values(results_a, dataset, method_a), per_seed_values(results_b, dataset, method_b)
    if not a or not b:
        return None
    try:
        return compare_runs(a, b, metric, resamples)
    except (ValueError, KeyError):  # other queries (another text source) or another metric: not comparable
        return None


def rests_on(comparison: PairedComparison) -> str:
    """What a comparison's CI and p rest on, for its row: seeds x test queries, and which test."""
    seeds = f"{comparison.seeds} seed{'s' if comparison.seeds != 1 else ''}"
    if comparison.level == "seeds":
        return f"{seeds} x {comparison.queries} queries: seeds, then queries (p >= {comparison.smallest_p:.4g})"
    return f"{seeds} x {comparison.queries} queries: queries only"


def format_comparison(name: str, comparison: PairedComparison | None) -> str:
    if comparison is None:
        return f"| {name} | - | - | - | - |"
    mark = " *" if comparison.significant else ""
    return (f"| {name}{mark} | {100 * comparison.difference:+.2f} | [{100 * comparison.ci_low:+.2f}, "
            f"{100 * comparison.ci_high:+.2f}] | {comparison.p_value:.4f} | {rests_on(comparison)} |")


TEST_NOTE = ("with 3 seeds or more: a 95% hierarchical-bootstrap CI (seeds, then queries) and an exact seed-level "
             "sign-flip permutation p, so training randomness is in both; with fewer: a 95% paired-bootstrap CI and "
             "a sign-flip permutation p over test queries only, which cover the queries and not another training "
             "draw (docs/METRICS.md)")


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
                     f"reference; {TEST_NOTE}; {resamples} resamples, seeded; * = p < 0.05)", "",
                     "| method | difference | 95% CI | p | rests on |", "|---|---|---|---|---|"]
            lines += [format_comparison(names.get(m, m), compare_methods(results, results, dataset, m, reference, metric,
                                                                          resamples)) for m in methods]
            blocks.append("\n".join(lines))
    return ("\n\n" + "\n\n".join(blocks)) if blocks else ""


def _flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# keys that differ between any two seeds or copies of the same run: not a difference of settings
PER_RUN_KEYS = ("train.seed", "text.segments_dir", "text.deep_features_run")


def _run_record(result: dict, name: str) -> dict:
    """A run folder's record (config.yaml, data_fingerprint.json), {} when the folder is gone."""
    import json

    import yaml

    path = Path(result.get("run_dir", "")) / name
    if not result.get("run_dir") or not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) if name.endswith(".yaml") else json.loads(path.read_text())


def _test_queries(result: dict) -> int | None:
    """How many test queries per direction a run's per-query values hold (None: it kept none)."""
    values = load_per_query(Path(result["run_dir"]), result.get("per_query_file", "per_query.npz")) if result.get("run_dir") else None
    return len(next(iter(values["i2t"].values()))) if values and values["i2t"] else None


def what_differs(results_a: list[dict], results_b: list[dict], pairs: list[tuple[str, str]]) -> list[str]:
    """What each side rests on (seeds, test queries) and what differs between A and B per (dataset, method):
    settings (config keys) and code versions. Different data is refused: a paired test needs the same test
    queries, and a difference on other data is not a difference of the methods."""
    lines = []
    for dataset, method in pairs:
        side = [[r for r in results if r["dataset"] == dataset and r["method"] == method] for results in (results_a, results_b)]
        fingerprints = [_run_record(runs[0], "data_fingerprint.json") for runs in side]
        if all(fingerprints):
            keys = ("num_items", "labels_sha256", "splits_sha256", "files")
            differing = [k for k in keys if fingerprints[0].get(k) != fingerprints[1].get(k)]
            if differing:
                raise SemshareError(f"{dataset} / {method}: A and B were trained on different data ({differing[0]} "
                                    f"differs: {fingerprints[0].get('path')} vs {fingerprints[1].get('path')}); a "
                                    "paired comparison needs the same data and test queries")
        queries = [_test_queries(runs[0]) for runs in side]
        lines.append(f"{dataset} / {method}: A {len(side[0])} seed(s), B {len(side[1])} seed(s); "
                     + (f"{queries[0]} test queries per direction" if queries[0] == queries[1] and queries[0]
                        else f"test queries A {queries[0]}, B {queries[1]}"))
        configs = [_flat(_run_record(runs[0], "config.yaml")) for runs in side]
        changed = sorted(k for k in set(configs[0]) | set(configs[1])
                         if k not in PER_RUN_KEYS and configs[0].get(k) != configs[1].get(k))
        if all(configs) and changed:
            lines.append("  settings that differ: " + "; ".join(f"{k} {configs[0].get(k)!r} (A) vs {configs[1].get(k)!r} (B)"
                                                               for k in changed))
        versions = [sorted({r.get("code_version", "unrecorded") for r in runs}) for runs in side]
        if versions[0] != versions[1]:
            lines.append(f"  code versions differ: A {', '.join(versions[0])}, B {', '.join(versions[1])}")
    return lines


def compare_result_folders(folder_a: Path, folder_b: Path, metric: str = "NDCG@500",
                           resamples: int = RESAMPLES) -> str:
    """The paired comparison of two benchmark result folders, method by method on the datasets both hold: first
    what each side rests on and what differs between them (different data is refused), then the table."""
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
    lines = what_differs(results_a, results_b, pairs)
    seeds = [len({r["seed"] for r in results}) for results in (results_a, results_b)]
    if min(seeds) < 2:
        lines.append("One training run (seed) on a side: the p-values and CIs below resample its test queries only; "
                     "they say nothing about how another training draw would rank.")
    lines.append("")
    lines += [f"A = {folder_a}, B = {folder_b}: Ave {metric} x100, mean over the seeds each holds; A minus B, "
              f"{TEST_NOTE}; {resamples} resamples, seeded; * = p < 0.05",
              "", "| dataset / method | A | B | A - B | 95% CI | p | rests on |", "|---|---|---|---|---|---|---|"]
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
