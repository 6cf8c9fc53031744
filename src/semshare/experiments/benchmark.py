"""The experiment runner: every method x every dataset x every seed, on the same splits and metrics.

Each run trains on the train split, selects on the val split (carved from train when absent), and scores
the test split (queries = gallery) once. A finished run leaves `RUN/result.json`; rerunning the same
command skips it, so an interrupted benchmark resumes. Outputs in OUT:
  results.json   every run: method, dataset, seed, config overrides, test metrics, train time, best epoch
  table.md       like the paper's Table 1: rows = methods, columns = dataset x {I2T, T2I, Ave}, NDCG@500 x100,
                 mean ± std over seeds; a second table with mAP@all
  table.csv      the same numbers, one row per method x dataset x metric
"""

from __future__ import annotations

import csv
import json
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from semshare.data.dataset import Dataset, open_dataset
from semshare.data.synthetic import make_synthetic, preset
from semshare.config import to_dict
from semshare.errors import SemshareError
from semshare.names import folder_name
from semshare.evaluation.evaluate import evaluate_run
from semshare.evaluation.plots import plot_pr_curves, plot_training_curves
from semshare.evaluation.protocols import ProtocolConfig
from semshare.evaluation.report import format_cell
from semshare.evaluation.retrieval import MetricSpec
from semshare.experiments.compare import significance_tables
from semshare.experiments.paper import DEEP_FEATURES_RECIPE
from semshare.fileio import atomic_file, atomic_write_json, atomic_write_text, folder_lock, read_json_object
from semshare.training.experiment import load_run, train_experiment
from semshare.training.loop import usable_cores
from semshare.training.recipes import ExperimentConfig, config_dir, resolve_config, unsupported_inputs
from semshare.provenance import code_version
from semshare.training.run_folder import (FINGERPRINT_FILE, data_differences, data_fingerprint, result_differences,
                                          saved_config)

logger = logging.getLogger(__name__)

LINEAR_INPUTS = ("pooled", "pooled-word2vec", "deep")
EXECUTORS = ("local", "ray")
PER_QUERY_FILE = "per_query.npz"
INSTANCE_RESULT_FILE, INSTANCE_PER_QUERY_FILE = "result_instance.json", "per_query_instance.npz"  # each test query's metric values, for paired comparisons (compare.py)


def write_per_query(path: Path, directions: dict) -> None:
    """{"i2t/NDCG@500": (Q,), ...} as float32 arrays (no pickle), written atomically."""
    arrays = {f"{d}/{name}": np.asarray(values, dtype=np.float32)
              for d, result in directions.items() for name, values in result.per_query.items()}
    with atomic_file(path, "wb") as handle:
        np.savez(handle, **arrays)


METRIC_SPEC = dict(ndcg_k=(500,), map_k=(None,), pr_points=20, recall_k=(1, 5, 10))


@dataclass(frozen=True)
class RunSpec:
    data_dir: str
    method: str  # a recipe (configs/method/NAME.yaml) or a registered method
    seed: int
    run_dir: str
    preset: str = "small"
    overrides: dict = field(default_factory=dict)
    threads: int = 1
    # closed-form methods: "pooled" raw inputs (bag of words), "pooled-word2vec" (mean of Word2Vec vectors
    # learned on the training captions, seeded), or "deep" (the pooled features of a trained run of
    # semshare.experiments.paper.DEEP_FEATURES_RECIPE with the same seed)
    linear_inputs: str = "pooled"
    # the text side every method reads: "native" (each method's own: words for Ours and ViLBERT, frozen
    # Word2Vec means for DCCA/DSCMR/SCML, bag of words for closed forms) or "minilm" (every method on the
    # same MiniLM token states, or their pooled sentence vector), from `segments_dir`
    text_inputs: str = "native"
    segments_dir: str = ""
    config_files: tuple[str, ...] = ()  # experiment YAML files, in order (e.g. quick.yaml, global_features.yaml)
    instance_head: bool = False  # also fit the instance head and score the combined ranking as its own row
    cfg: ExperimentConfig | None = field(default=None, compare=False)  # resolved once, when the run is planned

    def resolved(self) -> "RunSpec":
        """This spec with its config resolved (once: the plan, the finished-run check and the run share it)."""
        if self.cfg is not None:
            return self
        cfg = resolve_config(self.method, self.preset, list(self.config_files),
                             {"train.seed": self.seed, "train.progress": False, **self.overrides})
        return replace(self, cfg=cfg)


def run_one_safely(spec: RunSpec, dataset: Dataset | None = None) -> dict:
    """run_one, but a failed run is recorded (RUN/error.json) instead of stopping the whole benchmark;
    it is retried the next time the benchmark runs. A worker process (or Ray task) gets no `dataset` and
    opens the folder itself (shapes checked; the values were checked once when the benchmark started)."""
    import traceback

    try:
        result = run_one(spec, dataset or open_dataset(spec.data_dir, check_values=False))
        (Path(spec.run_dir) / "error.json").unlink(missing_ok=True)  # an earlier failure, now redone
        return result
    except Exception as exc:  # one diverging method must not cost the other runs
        error = {"method": spec.method, "data_dir": spec.data_dir, "seed": spec.seed, "error": repr(exc),
                 "traceback": traceback.format_exc()}
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(spec.run_dir) / "error.json", error)
        return error


def _deep_features_run(spec: RunSpec, dataset: Dataset) -> str:
    """The trained run whose pooled features a linear method is fitted on (trained first if missing)."""
    deep_dir = Path(spec.run_dir).parent / f"{DEEP_FEATURES_RECIPE}-seed{spec.seed}"
    if not (deep_dir / "result.json").exists():
        run_one(RunSpec(spec.data_dir, DEEP_FEATURES_RECIPE, spec.seed, str(deep_dir), spec.preset, spec.overrides,
                        spec.threads, text_inputs=spec.text_inputs, segments_dir=spec.segments_dir,
                        config_files=spec.config_files), dataset)
    return str(deep_dir.resolve())


def run_one(spec: RunSpec, dataset: Dataset) -> dict:
    """Train (or fit) one method on one dataset with one seed; score the test split; write result.json."""
    import torch

    torch.set_num_threads(spec.threads)
    run_dir = Path(spec.run_dir)
    started = time.time()
    cfg = spec.resolved().cfg
    closed_form = cfg.method_class.closed_form
    if closed_form and spec.linear_inputs == "deep":
        cfg = replace(cfg, text=replace(cfg.text, deep_features_run=_deep_features_run(spec, dataset)))
    # an unfinished run of this benchmark continues (checked to be the same run: config and data)
    state = train_experiment(dataset, cfg, run_dir, resume=True)
    run = load_run(run_dir, dataset, ranking="label")  # the method's own row: its label space alone
    table, folds = evaluate_run(run, ProtocolConfig(), MetricSpec(**METRIC_SPEC))
    seconds = time.time() - started
    result = {"method": spec.method, "display_name": cfg.row_name, "dataset": folder_name(dataset.name), "data_dir": spec.data_dir,
              "run_dir": str(run_dir.resolve()), "code_version": code_version(),
              "seed": spec.seed, "preset": spec.preset, "overrides": spec.overrides, "test": table,
              "train_seconds": seconds, "closed_form": closed_form,
              # what it read: a closed form's pooled inputs, a trained run's image / text inputs
              "inputs": spec.linear_inputs if closed_form else f"{cfg.inputs.image}/{cfg.inputs.text}",
              "text_inputs": spec.text_inputs,
              "image_input": cfg.inputs.image, "text_input": cfg.inputs.text,
              "best_epoch": None if closed_form else state.best_epoch, "pr_curves": _pr_curves(folds)}
    write_per_query(run_dir / PER_QUERY_FILE, folds[0])
    if (run_dir / "metrics.jsonl").exists():
        plot_training_curves(run_dir, run_dir / "training_curves.png")
    if spec.instance_head and not run.pairwise_scoring:
        _instance_row(run, spec, result)
    atomic_write_json(run_dir / "result.json", result)
    return result


def _pr_curves(folds: list[dict]) -> dict:
    return {direction: {"recall": folds[0][direction].pr_recall.tolist(),
                        "precision": folds[0][direction].pr_precision.tolist()} for direction in ("i2t", "t2i")}


def _instance_row(run, spec: RunSpec, result: dict) -> None:
    """The same run with its instance head (fitted here, seeded by the run's seed) as a row of its own:
    RUN/result_instance.json, its per-query values in RUN/per_query_instance.npz (for the paired tables)."""
    from semshare.training.instance_head import InstanceConfig, fit_instance_head, instance_ranking

    run_dir = Path(spec.run_dir)
    record = fit_instance_head(run, run_dir, InstanceConfig(seed=spec.seed), overwrite=True)
    table, folds = evaluate_run(run.ranked_by(instance_ranking(run_dir)), ProtocolConfig(), MetricSpec(**METRIC_SPEC))
    write_per_query(run_dir / INSTANCE_PER_QUERY_FILE, folds[0])
    atomic_write_json(run_dir / INSTANCE_RESULT_FILE, {
        **result, "method": f"{spec.method}+instance", "display_name": f"{result['display_name']} + instance head",
        "test": table, "pr_curves": _pr_curves(folds), "per_query_file": INSTANCE_PER_QUERY_FILE,
        "instance_weight": record["weight"]})


def finished(spec: RunSpec) -> bool:
    """Its result is there (and, with --instance-head, its combined row, for a method that has one)."""
    run_dir = Path(spec.run_dir)
    if not (run_dir / "result.json").exists():
        return False
    wants_instance = spec.instance_head and not spec.resolved().cfg.method_class.pairwise_scoring
    return not wants_instance or (run_dir / INSTANCE_RESULT_FILE).exists()


def spec_results(spec: RunSpec) -> list[dict]:
    """The result rows a finished run gives: its own, and with --instance-head its combined ranking's."""
    run_dir = Path(spec.run_dir)
    names = ["result.json"] + ([INSTANCE_RESULT_FILE] if spec.instance_head else [])
    return [json.loads((run_dir / name).read_text()) for name in names if (run_dir / name).exists()]


QUICK_NOTE = ("**Smoke test, not results**: `benchmark --quick` trains each method for one short epoch on tiny "
              "data to check that everything runs; its numbers rank nothing (docs/RESULTS.md has the results).")


def quick_setup(out_dir: Path, data_dirs: list[str], config_files: list[str]) -> tuple[list[str], int, list[str]]:
    """`benchmark --quick`: tiny synthetic data (made once in OUT) unless --data is given, one seed, one short
    epoch per method (configs/experiment/quick.yaml before the user's files). -> (data dirs, seeds, files)."""
    quick_data = out_dir / "data-tiny"
    if not data_dirs and not (quick_data / "meta.json").exists():
        make_synthetic(quick_data, preset("tiny"), name="synthetic-tiny", overwrite=True, progress=False)
    return data_dirs or [str(quick_data)], 1, [str(config_dir("experiment") / "quick.yaml")] + list(config_files)


def _segments_dir_for(dataset, segments_dirs: list[str], index: int) -> str:
    from semshare.data.text_segments import default_segments_dir, open_text_segments

    folder = segments_dirs[index] if index < len(segments_dirs) else str(default_segments_dir(dataset.root, "minilm"))
    open_text_segments(folder, int(dataset.caption_offsets[-1]))  # fails now, with the fix, not mid-benchmark
    return str(Path(folder).resolve())


def _left_out(cfg, segmented: bool) -> str:
    """Why a method has nothing to work on with these inputs ('' when it runs)."""
    if cfg.needs_segments and not segmented:
        return "its point is a set of segments"
    return unsupported_inputs(cfg)


@dataclass(frozen=True)
class BenchmarkPlan:
    """What a benchmark runs: every method x dataset x seed, and how each run's config is made (the layers
    of RunSpec), where it is written and what its tables say."""

    data_dirs: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: int
    out_dir: Path
    preset: str = "small"
    overrides: dict = field(default_factory=dict)
    linear_inputs: str = "pooled"  # RunSpec.linear_inputs
    text_inputs: str = "native"  # RunSpec.text_inputs
    segments_dirs: tuple[str, ...] = ()  # MiniLM token states, one per --data (default: each dataset's own)
    config_files: tuple[str, ...] = ()
    instance_head: bool = False  # also fit each run's instance head and score it as a row of its own
    reference: str = ""  # the method the paired tables compare against (default: the default recipe)
    note: str = ""  # a line table.md starts with, e.g. that a --quick table is a smoke test

    def __post_init__(self):
        if self.linear_inputs not in LINEAR_INPUTS:
            raise SemshareError(f"--linear-inputs: expected one of {', '.join(LINEAR_INPUTS)}, got {self.linear_inputs!r}")


@dataclass(frozen=True)
class Execution:
    """How a benchmark's runs are executed: in this process (or a pool of `workers`) or on Ray, with
    `threads` torch threads each (0: the usable cores for one run at a time, 1 for parallel runs)."""

    workers: int = 1
    threads: int = 0
    executor: str = "local"  # local | ray
    ray_address: str = ""

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise SemshareError(f"--executor: expected one of {', '.join(EXECUTORS)}, got {self.executor!r}")


def plan_runs(plan: BenchmarkPlan, datasets: dict, threads: int, progress=print) -> list[RunSpec]:
    """Every (method, dataset, seed) run, its config resolved; `datasets` maps each data folder to its
    opened Dataset."""
    methods, seeds, out_dir, preset, overrides = plan.methods, plan.seeds, Path(plan.out_dir), plan.preset, plan.overrides
    linear_inputs, text_inputs, segments_dirs, config_files = (plan.linear_inputs, plan.text_inputs, plan.segments_dirs,
                                                               plan.config_files)
    specs = []
    for index, (data_dir, dataset) in enumerate(datasets.items()):
        segmented = dataset.has_regions and dataset.has_captions
        files = tuple(config_files)
        data_overrides = dict(overrides)
        if not segmented:
            # one vector per image and per text (e.g. wikipedia's SIFT/LDA): the trained methods run in their
            # w/o R form; methods whose point is a set of segments are left out (their cells read "-")
            files = (str(config_dir("experiment") / "global_features.yaml"),) + files
        segments_dir = ""
        if text_inputs == "minilm":
            if not segmented:
                raise SemshareError(f"{data_dir}: --text-inputs minilm needs captions (and regions) to encode")
            segments_dir = _segments_dir_for(dataset, segments_dirs or [], index)
            data_overrides = {"text.source": "minilm", "text.segments_dir": segments_dir, **data_overrides}
        if linear_inputs == "pooled-word2vec":
            data_overrides = {"text.pooled": "word2vec", **data_overrides}
        left_out = []
        for method in methods:
            probe = RunSpec(str(data_dir), method, 0, "", preset, data_overrides, threads, linear_inputs, text_inputs,
                            segments_dir, files).resolved()
            cfg = probe.cfg
            reason = _left_out(cfg, segmented)
            if reason:
                left_out.append(f"{method} ({reason})")
                continue
            cls = cfg.method_class
            # deterministic fits on raw inputs need one seed; on learned features they follow the seeds
            one_seed = cls.deterministic and (not cls.closed_form or linear_inputs == "pooled")
            for seed in range(1 if one_seed else seeds):
                seeded = replace(cfg, train=replace(cfg.train, seed=seed))
                specs.append(replace(probe, seed=seed, run_dir=str(out_dir / folder_name(dataset.name) / f"{folder_name(method)}-seed{seed}"),
                                     cfg=seeded, instance_head=plan.instance_head))
        if left_out:
            progress(f"{dataset.name}: left out {', '.join(left_out)}")
    return specs




def _run_local(todo: list[RunSpec], datasets: dict, workers: int, report) -> None:
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for result in pool.map(run_one_safely, todo):
                report(result)
    else:
        for spec in todo:
            report(run_one_safely(spec, datasets[spec.data_dir]))


def _run_on_ray(todo: list[RunSpec], workers: int, address: str, report) -> None:
    """Each run a Ray task of one CPU; results are written by the tasks (the run folders must be on storage
    every node sees), so the tables are made here exactly as for the local executor."""
    try:
        import ray
    except ImportError:
        raise SemshareError("--executor ray needs Ray: pip install 'semshare[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        # a local Ray gets --workers CPUs; a cluster (--ray-address) brings its own
        ray.init(address=address or None, num_cpus=None if address else max(1, workers), include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_one_safely)
        pending = [task.remote(spec) for spec in todo]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            report(ray.get(ready[0]))
    finally:
        if started_here:
            ray.shutdown()


def check_finished_runs(finished: list[RunSpec], datasets: dict) -> None:
    """A finished run is reused only if this benchmark would train it the same way, on the same data: after a
    default or a recipe changed, or when another dataset of the same name comes in, its old result must not
    fill the new table (nothing is deleted: the user decides)."""
    fingerprints: dict[str, dict] = {}
    for spec in finished:
        saved_path = Path(spec.run_dir) / "config.yaml"
        if not saved_path.exists():
            continue
        for key, old, new in result_differences(saved_config(saved_path), to_dict(spec.resolved().cfg),
                                                datasets[spec.data_dir]):
            raise SemshareError(f"{saved_path}: {key}: the finished run has {old!r}, this benchmark gives {new!r}; "
                                "delete that run folder to rerun it, or use another --out")
        data_path = Path(spec.run_dir) / FINGERPRINT_FILE
        if not data_path.exists():
            continue
        if spec.data_dir not in fingerprints:
            fingerprints[spec.data_dir] = data_fingerprint(datasets[spec.data_dir])
        saved = read_json_object(data_path, "the fingerprint of the run's data")
        # the data's content, wherever its folder is: sizes and the hashes of labels, splits and files
        for key, old, new in data_differences(saved, fingerprints[spec.data_dir]):
            raise SemshareError(f"{data_path}: {key}: the finished run was trained on {saved.get('path')} "
                                f"({old!r}), this benchmark's --data {spec.data_dir} gives {new!r}; datasets of one "
                                "name cannot share a benchmark folder: use another --out")


def check_distinct_names(datasets: dict) -> None:
    """Each --data folder becomes a column and a folder of the benchmark, named by its dataset name: two
    different datasets whose names meet (equal, or equal but for case: one folder on some file systems)
    would be merged into one, so they are refused in one line."""
    seen: dict[str, str] = {}
    for data_dir, dataset in datasets.items():
        key = folder_name(dataset.name).casefold()
        if key in seen and Path(seen[key]).resolve() != Path(data_dir).resolve():
            raise SemshareError(f"--data {seen[key]} and --data {data_dir} are both named {dataset.name!r} (their "
                                "meta.json name): one benchmark keeps one column per name; give one of them another "
                                "name, or benchmark them into two --out folders")
        seen.setdefault(key, data_dir)


def run_benchmark(plan: BenchmarkPlan, execution: Execution = Execution(), progress=print) -> list[dict]:
    """Run what is not finished yet, then write results.json, table.md and table.csv from every result.

    `execution.executor`: "local" (this process, or a process pool of `workers`) or "ray" (one Ray task per
    run, on a local Ray with `workers` CPUs or the cluster at `ray_address`)."""
    out_dir = Path(plan.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers, executor = execution.workers, execution.executor
    # one benchmark at a time per folder: two would train the same runs and write the same tables
    with folder_lock(out_dir, "benchmark"):
        datasets = {str(d): open_dataset(d) for d in plan.data_dirs}  # opened and value-checked once per folder
        check_distinct_names(datasets)
        parallel = workers > 1 or executor == "ray"
        specs = plan_runs(plan, datasets, execution.threads or (1 if parallel else usable_cores()), progress)
        todo = [s for s in specs if not finished(s)]
        check_finished_runs([s for s in specs if s not in todo], datasets)
        progress(f"{len(specs)} runs, {len(specs) - len(todo)} already finished, {len(todo)} to do")
        started, done = time.time(), [0]

        def report(result: dict) -> None:
            done[0] += 1
            progress(_progress_line(done[0], len(todo), result, started))

        if executor == "ray" and todo:
            _run_on_ray(todo, workers, execution.ray_address, report)
        else:
            _run_local(todo, datasets, workers, report)
        results = [result for s in specs for result in spec_results(s)]
        failed = [s for s in specs if not (Path(s.run_dir) / "result.json").exists()]
        if failed:
            progress(f"{len(failed)} runs failed (see their error.json); they are left out of the tables: "
                     + ", ".join(f"{Path(s.data_dir).name}/{s.method}-seed{s.seed}" for s in failed))
        atomic_write_json(out_dir / "results.json", results)
        atomic_write_text(out_dir / "table.md", table_markdown(results, plan.reference, plan.note))
        write_csv(out_dir / "table.csv", results)
        plot_method_pr_curves(results, out_dir, smoke_test=plan.note == QUICK_NOTE)
        return results


def table_markdown(results: list[dict], reference: str = "", note: str = "", seeds_line: bool = False) -> str:
    """table.md: the inputs line, Table 1's layout for NDCG@500 and mAP@all, instance recall where measured,
    and the paired tables against `reference` (default: the default recipe); `seeds_line`: how many seeds
    each row rests on (benchmarks/paper_table.py, which gathers several invocations)."""
    seeds = ""
    if seeds_line:
        counts: dict[str, int] = {}
        for result in results:
            counts[row_name(result)] = counts.get(row_name(result), 0) + 1
        seeds = "\nseeds per row: " + ", ".join(f"{name} {count}" for name, count in counts.items()) + "\n"
    return ((f"{note}\n\n" if note else "") + inputs_line(results) + "\n\n" + format_paper_table(results, "NDCG@500")
            + "\n\n" + format_paper_table(results, "mAP@all") + "\n" + seeds + instance_recall_tables(results)
            + significance_tables(results, reference or None) + "\n")


def gather_results(folders: list[Path]) -> list[dict]:
    """Every finished run's result.json below benchmark folders, in the paper's row order."""
    from semshare.experiments.paper import TABLE_ROW_ORDER

    results = [json.loads(path.read_text()) for folder in folders for path in sorted(Path(folder).glob("*/*/result.json"))]
    order = {name: index for index, name in enumerate(TABLE_ROW_ORDER)}
    return sorted(results, key=lambda r: (order.get(r["method"], len(order)), r["method"], r["seed"]))


def row_name(result: dict) -> str:
    return result.get("display_name") or result["method"]


def plot_method_pr_curves(results: list[dict], out_dir: Path, smoke_test: bool = False) -> None:
    """One PNG per dataset: each method's test precision-recall curve (its first seed)."""
    for dataset in dict.fromkeys(r["dataset"] for r in results):
        curves = {}
        for result in results:
            if result["dataset"] == dataset and "pr_curves" in result:
                curves.setdefault(row_name(result), result["pr_curves"])
        if curves:
            note = "SMOKE TEST, not results (benchmark --quick): " if smoke_test else ""
            plot_pr_curves(curves, out_dir / f"pr_curves_{dataset}.png", title=f"{note}{dataset}, test split")


def _progress_line(done: int, total: int, result: dict, started: float) -> str:
    if "error" in result:
        return f"[{done}/{total}] {Path(result['data_dir']).name} {result['method']} seed {result['seed']}: FAILED {result['error']}"
    return (f"[{done}/{total}] {result['dataset']} {result['method']} seed {result['seed']}: "
            f"NDCG@500 Ave {100 * result['test']['ave/NDCG@500']:.1f}, mAP@all Ave "
            f"{100 * result['test']['ave/mAP@all']:.1f} ({result['train_seconds']:.0f} s; "
            f"{time.time() - started:.0f} s elapsed)")


def _aggregate(results: list[dict]) -> dict:
    grouped: dict = {}
    for result in results:
        grouped.setdefault(result["method"], {}).setdefault(result["dataset"], []).append(result["test"])
    return grouped


IMAGE_READINGS = {"regions": "region features", "global": "one global feature"}
TEXT_READINGS = {"words": "words", "vector": "one text vector", "segments": "MiniLM token states"}
POOLED_TEXT_READINGS = {"pooled": "bag of words", "pooled-word2vec": "mean of Word2Vec vectors",
                        "deep": "a trained ST run's pooled features"}


def _reading(result: dict) -> tuple[str, str]:
    """(images, texts) as this result's run read them, from what the result records."""
    image = IMAGE_READINGS.get(result.get("image_input", "regions"), result.get("image_input", ""))
    text = TEXT_READINGS.get(result.get("text_input", "words"), result.get("text_input", ""))
    if result.get("closed_form"):
        image = "mean of region features" if result.get("image_input") == "regions" else image
        if result.get("text_inputs") == "minilm":
            text = "pooled MiniLM sentence vector"
        elif result.get("text_input") == "words":
            text = POOLED_TEXT_READINGS.get(result.get("inputs", ""), result.get("inputs", ""))
    return image, text


def inputs_line(results: list[dict]) -> str:
    """What every row read, stated above each table from the results' own records (equal inputs or not)."""
    groups: dict[str, dict[str, list[str]]] = {"images": {}, "texts": {}}
    for result in results:
        for side, reading in zip(("images", "texts"), _reading(result)):
            names = groups[side].setdefault(reading, [])
            if row_name(result) not in names:
                names.append(row_name(result))
    # names joined by " / ": a display name may hold a comma ("Ours, pooled z")
    parts = ["; ".join(f"{reading} ({' / '.join(names)})" for reading, names in groups[side].items())
             for side in ("images", "texts")]
    return f"Inputs: images = {parts[0]}; texts = {parts[1]}."


def format_paper_table(results: list[dict], metric: str) -> str:
    """Rows = methods, columns = dataset x {I2T, T2I, Ave}; mean ± std over seeds, x100."""
    grouped = _aggregate(results)
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    names = {r["method"]: row_name(r) for r in results}
    header = "| " + metric + " x100 | " + " | ".join(f"{d} {s}" for d in datasets for s in ("I2T", "T2I", "Ave")) + " |"
    lines = [header, "|---|" + "---|" * (3 * len(datasets))]
    for method in methods:
        cells = []
        for dataset in datasets:
            tables = grouped.get(method, {}).get(dataset, [])
            for direction in ("i2t", "t2i", "ave"):
                cells.append(format_cell(np.array([100 * t[f"{direction}/{metric}"] for t in tables])))
        lines.append(f"| {names[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def instance_recall_tables(results: list[dict]) -> str:
    """R@1 / R@5 / R@10 tables (a query's own item in the top k) when every result has them (older results
    were scored before instance recall existed: no table rather than a partial one)."""
    if not results or not all("ave/R@10" in r["test"] for r in results):
        return ""
    return "\n" + "\n\n".join(format_paper_table(results, f"R@{k}") for k in (1, 5, 10)) + "\n"


def write_csv(path: Path, results: list[dict]) -> None:
    grouped = _aggregate(results)
    with atomic_file(path) as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "dataset", "metric", "mean", "std", "seeds"])
        for method, per_dataset in grouped.items():
            for dataset, tables in per_dataset.items():
                for key in tables[0]:
                    values = np.array([t[key] for t in tables])
                    writer.writerow([method, dataset, key, f"{values.mean():.6f}",
                                     f"{values.std(ddof=1) if len(values) > 1 else 0.0:.6f}", len(values)])
