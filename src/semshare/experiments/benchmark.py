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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semshare.data.batches import text_source_for
from semshare.evaluation.report import format_cell
from semshare.errors import SemshareError
from semshare.fileio import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

CLOSED_FORM_METHODS = ("ridge", "cca", "lcfs", "jfssl")
DEFAULT_METHODS = ("cca", "lcfs", "jfssl", "dcca", "dscmr", "scml", "vilbert", "st", "imc", "wo_r", "wo_t", "wo_c", "wo_l", "ours_con", "ours")
ROW_NAMES = {"cca": "CCA", "lcfs": "LCFS", "jfssl": "JFSSL", "ridge": "Ridge", "dcca": "DCCA", "dscmr": "DSCMR", "scml": "SCML", "vilbert": "ViLBERT (from scratch)", "st": "ST",
             "imc": "IMC", "wo_r": "w/o R", "wo_t": "w/o T", "wo_c": "w/o C", "wo_l": "w/o L",
             "ours_con": "Ours+Con", "ours": "Ours", "ours_ls": "Ours (label space)"}


@dataclass(frozen=True)
class RunSpec:
    data_dir: str
    method: str
    seed: int
    run_dir: str
    preset: str = "small"
    overrides: dict = field(default_factory=dict)
    threads: int = 1
    # closed-form methods: "pooled" raw inputs (bag of words), "pooled-word2vec" (mean of Word2Vec vectors
    # learned on the training captions, seeded), or "st" (a trained ST model's features)
    linear_inputs: str = "pooled"
    # the text side every method reads: "native" (each method's own: words for Ours and ViLBERT, frozen
    # Word2Vec means for DCCA/DSCMR/SCML, bag of words for closed forms) or "minilm" (every method on the
    # same MiniLM token states, or their pooled sentence vector), from `segments_dir`
    text_inputs: str = "native"
    segments_dir: str = ""


def _closed_form_embeddings(spec: RunSpec, dataset):
    """Fit a closed-form method on pooled training inputs; (image table, text table, text source) of test."""
    from semshare.data.pooled import (default_image_source, default_text_source, pooled_image_features,
                                      pooled_text_features)
    from semshare.data.text import Vocabulary
    from semshare.evaluation.protocols import EmbeddingTable
    from semshare.methods.ridge import fit_ridge_model

    test = dataset.split("test")
    if spec.linear_inputs == "st":
        return _closed_form_on_st_features(spec, dataset)
    image_source, text_source = default_image_source(dataset), default_text_source(dataset)
    item_vectors = None
    if spec.text_inputs == "minilm":  # the pooled form of the segments the neural methods read
        from semshare.data.text_segments import open_text_segments

        item_vectors = np.asarray(open_text_segments(spec.segments_dir, int(dataset.caption_offsets[-1])).sentence,
                                  dtype=np.float32)
        text_source = "item-vectors"
    caption_source = "vectors" if text_source == "vectors" else "captions"
    if spec.method == "ridge":
        return fit_ridge_model(dataset, item_vectors=item_vectors).embed(dataset, test) + (caption_source,)
    train = dataset.split("train")
    train_items = dataset.text_items(train, caption_source)
    vocab = Vocabulary.build(train_items.texts) if text_source == "bow" else None
    word_vectors = None
    if vocab is not None and spec.linear_inputs == "pooled-word2vec":
        from semshare.data.word_vectors import Word2VecConfig, train_word2vec

        text_source = "word-vectors"
        word_vectors = train_word2vec(train_items.texts, vocab, Word2VecConfig(), seed=spec.seed)
    # one text item per training image keeps the pairs of a two-view method one-to-one
    first = np.unique(train_items.rows, return_index=True)[1]
    x = pooled_image_features(dataset, train, image_source)
    y = pooled_text_features(dataset, train_items, text_source, vocab, word_vectors, item_vectors)[first]
    model = _fit_closed_form(spec.method, x, y, np.asarray(dataset.labels, dtype=np.float64)[train], spec.seed)
    test_items = dataset.text_items(test, caption_source)
    img = model.transform_image(pooled_image_features(dataset, test, image_source))
    txt = model.transform_text(pooled_text_features(dataset, test_items, text_source, vocab, word_vectors,
                                                    item_vectors))
    return EmbeddingTable(test, img), EmbeddingTable(test_items.item_ids, txt), caption_source


def _fit_closed_form(method: str, x: np.ndarray, y: np.ndarray, labels: np.ndarray, seed: int):
    from semshare.methods.cca import fit_cca
    from semshare.methods.jfssl import JFSSLConfig, fit_jfssl
    from semshare.methods.lcfs import fit_lcfs

    if method == "cca":
        return fit_cca(x, y)
    if method == "lcfs":
        return fit_lcfs(x, y, labels)
    if method == "jfssl":
        return fit_jfssl(x, y, labels, JFSSLConfig(seed=seed))
    raise ValueError(f"{method} takes no deep features")


def _closed_form_on_st_features(spec: RunSpec, dataset):
    """Fit a linear method on the pooled features of the ST run with the same seed (trained if missing)."""
    import torch

    from semshare.evaluation.protocols import EmbeddingTable
    from semshare.training.experiment import load_run

    st_dir = Path(spec.run_dir).parent / f"st-seed{spec.seed}"
    if not (st_dir / "result.json").exists():
        run_one(RunSpec(spec.data_dir, "st", spec.seed, str(st_dir), spec.preset, spec.overrides, spec.threads))
    run = load_run(st_dir, spec.data_dir)
    builder = run.builder(training=False)
    text_source = text_source_for(run.cfg.model.text_input)

    @torch.no_grad()
    def features(rows: np.ndarray, items) -> tuple[np.ndarray, np.ndarray]:
        img = np.concatenate([run.model.encode_features(builder.build(rows[i : i + 256], rows[i : i + 256],
                              None if items.texts is None else [dataset.captions[r][0] for r in rows[i : i + 256]]),
                              "image").numpy() for i in range(0, len(rows), 256)])
        txt = np.concatenate([run.model.encode_features(builder.build(items.rows[i : i + 256], items.item_ids[i : i + 256],
                              None if items.texts is None else items.texts[i : i + 256]), "text").numpy()
                              for i in range(0, len(items.rows), 256)])
        return img, txt

    train, test = run.train_rows, dataset.split("test")
    train_items = dataset.text_items(train, text_source)
    first = np.unique(train_items.rows, return_index=True)[1]
    x, y_all = features(train, train_items)
    model = _fit_closed_form(spec.method, x, y_all[first], np.asarray(dataset.labels, dtype=np.float64)[train], spec.seed)
    test_items = dataset.text_items(test, text_source)
    img, txt = features(test, test_items)
    return (EmbeddingTable(test, model.transform_image(img)),
            EmbeddingTable(test_items.item_ids, model.transform_text(txt)), text_source)


def run_one_safely(spec: RunSpec) -> dict:
    """run_one, but a failed run is recorded (RUN/error.json) instead of stopping the whole benchmark;
    it is retried the next time the benchmark runs."""
    import traceback

    try:
        return run_one(spec)
    except Exception as exc:  # one diverging method must not cost the other runs
        error = {"method": spec.method, "data_dir": spec.data_dir, "seed": spec.seed, "error": repr(exc),
                 "traceback": traceback.format_exc()}
        Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(spec.run_dir) / "error.json", error)
        return error


def run_one(spec: RunSpec) -> dict:
    """Train (or fit) one method on one dataset with one seed; score the test split; write result.json."""
    import torch

    from semshare.data.dataset import open_dataset
    from semshare.evaluation.embed import embed_rows
    from semshare.evaluation.protocols import ProtocolConfig, evaluate_tables
    from semshare.evaluation.retrieval import MetricSpec
    from semshare.training.experiment import load_run, resolve_config, train_experiment

    torch.set_num_threads(spec.threads)
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    metric_spec = MetricSpec(ndcg_k=(500,), map_k=(None,), pr_points=20)
    best_epoch = None
    pairwise_table = None
    if spec.method in CLOSED_FORM_METHODS:
        dataset = open_dataset(spec.data_dir)
        img, txt, text_source = _closed_form_embeddings(spec, dataset)
    else:
        cfg = resolve_config(spec.method, spec.preset, overrides={"train.seed": spec.seed, "train.progress": False,
                                                                   **spec.overrides})
        state = train_experiment(spec.data_dir, cfg, run_dir, resume=(run_dir / "last").exists())
        best_epoch = state["best_epoch"]
        run = load_run(run_dir, spec.data_dir)
        dataset = run.dataset
        text_source = text_source_for(cfg.model.text_input)
        if getattr(run.model, "pairwise_scoring", False):
            from semshare.evaluation.rerank import evaluate_pairwise_rows

            pairwise_table = evaluate_pairwise_rows(run.model, run.builder(training=False), dataset,
                                                    dataset.split("test"), text_source, metric_spec,
                                                    cfg.vilbert.shortlist)
        else:
            img, txt = embed_rows(run.model, run.builder(training=False), dataset.split("test"))
    seconds = time.time() - started
    if pairwise_table is not None:
        table, directions = pairwise_table
        folds = [directions]
    else:
        table, folds = evaluate_tables(dataset, img, txt, ProtocolConfig(text_source=text_source), metric_spec)
    pr_curves = {direction: {"recall": folds[0][direction].pr_recall.tolist(),
                             "precision": folds[0][direction].pr_precision.tolist()} for direction in ("i2t", "t2i")}
    result = {"method": spec.method, "dataset": dataset.name, "data_dir": spec.data_dir, "seed": spec.seed,
              "preset": spec.preset, "overrides": spec.overrides, "test": table, "train_seconds": seconds,
              "inputs": spec.linear_inputs if spec.method in CLOSED_FORM_METHODS else "segments",
              "text_inputs": spec.text_inputs,
              "best_epoch": best_epoch, "pr_curves": pr_curves}
    if (run_dir / "metrics.jsonl").exists():
        from semshare.evaluation.plots import plot_training_curves

        plot_training_curves(run_dir, run_dir / "training_curves.png")
    atomic_write_json(run_dir / "result.json", result)
    return result


def _dataset_name(data_dir: str) -> str:
    meta = Path(data_dir) / "meta.json"
    if meta.exists():
        return str(json.loads(meta.read_text()).get("name", Path(data_dir).name))
    return Path(data_dir).name


# Data with one vector per image and per text (no regions or no captions, e.g. wikipedia's SIFT/LDA): the
# trained methods run as their `w/o R` form (configs/experiment/global_features.yaml); methods whose point is
# a set of segments have nothing to work on there and are left out (their cells read "-")
GLOBAL_FEATURE_OVERRIDES = {"model.image_input": "global", "model.text_input": "vector", "model.segments": False,
                            "model.shared_model": "fc", "loss.context_weight": 0.0}
SEGMENT_ONLY_METHODS = ("ours", "wo_t", "wo_c", "vilbert")


def has_segments(data_dir: str) -> bool:
    from semshare.data.dataset import open_dataset

    dataset = open_dataset(data_dir, check_values=False)
    return dataset.has_regions and dataset.has_captions


WORD_ONLY_METHODS = ("vilbert",)  # reads word ids into its own streams; no segment input


def _segments_dir_for(data_dir: str, segments_dirs: list[str], index: int) -> str:
    from semshare.data.dataset import open_dataset
    from semshare.data.text_segments import default_segments_dir, open_text_segments

    folder = segments_dirs[index] if index < len(segments_dirs) else str(default_segments_dir(data_dir, "minilm"))
    dataset = open_dataset(data_dir, check_values=False)
    open_text_segments(folder, int(dataset.caption_offsets[-1]))  # fails now, with the fix, not mid-benchmark
    return str(Path(folder).resolve())


def plan_runs(data_dirs: list[str], methods: list[str], seeds: int, out_dir: Path, preset: str,
              overrides: dict, threads: int, linear_inputs: str = "pooled", progress=print,
              text_inputs: str = "native", segments_dirs: list[str] | None = None) -> list[RunSpec]:
    specs = []
    for index, data_dir in enumerate(data_dirs):
        name = _dataset_name(data_dir)
        data_overrides = overrides
        segmented = has_segments(data_dir)
        if not segmented:
            skipped = [m for m in methods if m in SEGMENT_ONLY_METHODS]
            progress(f"{name}: global features only (no regions or no captions): trained methods run on global "
                     f"inputs; left out: {', '.join(skipped) or 'none'}")
            methods_here = [m for m in methods if m not in SEGMENT_ONLY_METHODS]
            data_overrides = {**GLOBAL_FEATURE_OVERRIDES, **overrides}
        else:
            methods_here = methods
        segments_dir = ""
        if text_inputs == "minilm":
            if not segmented:
                raise SemshareError(f"{data_dir}: --text-inputs minilm needs captions (and regions) to encode")
            segments_dir = _segments_dir_for(data_dir, segments_dirs or [], index)
            left_out = [m for m in methods_here if m in WORD_ONLY_METHODS]
            if left_out:
                progress(f"{name}: MiniLM text inputs: left out {', '.join(left_out)} (reads word ids only)")
            methods_here = [m for m in methods_here if m not in WORD_ONLY_METHODS]
            data_overrides = {"text.source": "minilm", "text.segments_dir": segments_dir, **data_overrides}
        for method in methods_here:
            # deterministic fits on raw inputs need one seed; on ST features they follow ST's seeds
            deterministic = method in ("ridge", "cca", "lcfs") and linear_inputs == "pooled"
            for seed in range(1 if deterministic else seeds):
                specs.append(RunSpec(str(data_dir), method, seed, str(out_dir / name / f"{method}-seed{seed}"),
                                     preset, data_overrides, threads, linear_inputs, text_inputs, segments_dir))
    return specs


def run_benchmark(data_dirs: list[str], methods: list[str], seeds: int, out_dir: str | Path, preset: str = "small",
                  overrides: dict | None = None, workers: int = 1, progress=print,
                  linear_inputs: str = "pooled", text_inputs: str = "native",
                  segments_dirs: list[str] | None = None, threads: int = 0) -> list[dict]:
    """Run what is not finished yet, then write results.json, table.md and table.csv from every result."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = plan_runs(data_dirs, methods, seeds, out_dir, preset, overrides or {},
                      threads or (1 if workers > 1 else 2), linear_inputs, progress, text_inputs, segments_dirs)
    todo = [s for s in specs if not (Path(s.run_dir) / "result.json").exists()]
    progress(f"{len(specs)} runs, {len(specs) - len(todo)} already finished, {len(todo)} to do")
    started = time.time()
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for done, result in enumerate(pool.map(run_one_safely, todo), start=1):
                progress(_progress_line(done, len(todo), result, started))
    else:
        for done, spec in enumerate(todo, start=1):
            progress(_progress_line(done, len(todo), run_one_safely(spec), started))
    results = [json.loads((Path(s.run_dir) / "result.json").read_text()) for s in specs
               if (Path(s.run_dir) / "result.json").exists()]
    failed = [s for s in specs if not (Path(s.run_dir) / "result.json").exists()]
    if failed:
        progress(f"{len(failed)} runs failed (see their error.json); they are left out of the tables: "
                 + ", ".join(f"{Path(s.data_dir).name}/{s.method}-seed{s.seed}" for s in failed))
    atomic_write_json(out_dir / "results.json", results)
    atomic_write_text(out_dir / "table.md", inputs_line(results) + "\n\n" + format_paper_table(results, "NDCG@500")
                      + "\n\n" + format_paper_table(results, "mAP@all") + "\n")
    write_csv(out_dir / "table.csv", results)
    plot_method_pr_curves(results, out_dir)
    return results


def plot_method_pr_curves(results: list[dict], out_dir: Path) -> None:
    """One PNG per dataset: each method's test precision-recall curve (its first seed)."""
    from semshare.evaluation.plots import plot_pr_curves

    for dataset in dict.fromkeys(r["dataset"] for r in results):
        curves = {}
        for result in results:
            if result["dataset"] == dataset and "pr_curves" in result:
                curves.setdefault(ROW_NAMES.get(result["method"], result["method"]), result["pr_curves"])
        if curves:
            plot_pr_curves(curves, out_dir / f"pr_curves_{dataset}.png", title=f"{dataset}, test split")


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


def inputs_line(results: list[dict]) -> str:
    """What every row read, stated above each table (equal inputs or not)."""
    text = sorted({r.get("text_inputs", "native") for r in results})
    linear = sorted({r["inputs"] for r in results if r["method"] in CLOSED_FORM_METHODS})
    described = {"native": "each method's own text input (words for Ours/ViLBERT, frozen Word2Vec means for "
                           "DCCA/DSCMR/SCML, bag of words for closed forms)",
                 "minilm": "MiniLM token states for every method (their pooled sentence vector for methods "
                           "that take one vector)"}
    line = "Inputs: images = region features (mean of regions for pooled methods); texts = " + \
        "; ".join(described.get(t, t) for t in text)
    if linear:
        line += f"; closed-form methods on {', '.join(linear)} inputs"
    global_only = sorted({r["dataset"] for r in results if r.get("overrides", {}).get("model.image_input") == "global"})
    if global_only:
        line += (f"; {', '.join(global_only)}: one global image feature and one text vector per item, trained "
                 "methods in their w/o R form, segment-only methods (Ours, w/o T, w/o C, ViLBERT) left out")
    return line + "."


def format_paper_table(results: list[dict], metric: str) -> str:
    """Rows = methods, columns = dataset x {I2T, T2I, Ave}; mean ± std over seeds, x100."""
    grouped = _aggregate(results)
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    methods = list(dict.fromkeys(r["method"] for r in results))
    header = "| " + metric + " x100 | " + " | ".join(f"{d} {s}" for d in datasets for s in ("I2T", "T2I", "Ave")) + " |"
    lines = [header, "|---|" + "---|" * (3 * len(datasets))]
    for method in methods:
        cells = []
        for dataset in datasets:
            tables = grouped.get(method, {}).get(dataset, [])
            for direction in ("i2t", "t2i", "ave"):
                cells.append(format_cell(np.array([100 * t[f"{direction}/{metric}"] for t in tables])))
        lines.append(f"| {ROW_NAMES.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: Path, results: list[dict]) -> None:
    grouped = _aggregate(results)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "dataset", "metric", "mean", "std", "seeds"])
        for method, per_dataset in grouped.items():
            for dataset, tables in per_dataset.items():
                for key in tables[0]:
                    values = np.array([t[key] for t in tables])
                    writer.writerow([method, dataset, key, f"{values.mean():.6f}",
                                     f"{values.std(ddof=1) if len(values) > 1 else 0.0:.6f}", len(values)])
    tmp.replace(path)
