"""What labels derived from captions (`extract --labels-from-captions`) are worth: per label, precision and
recall against a dataset's true labels, from the same captions (no training).

    python -m benchmarks.derived_labels ../shared/data/coco_2k [--synonyms FILE] [--out docs/derived_labels_coco2k.json]
    python -m benchmarks.derived_labels ../shared/data/coco_2k --cost DERIVED_RES TRUE_RES --method ours

The label names are the dataset's own (label_names.txt, as a user would write them); prints micro and macro
precision / recall and the per-label figures of the most frequent labels. `--cost`: what training on derived
labels costs on the true labels: the runs of DERIVED_RES (a benchmark on the dataset with derived labels.npy)
re-scored on the true labels, paired with TRUE_RES's runs of the same method and seeds (the hierarchical test).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from semshare.data.dataset import open_dataset
from semshare.features.annotations.captions import labels_from_captions, read_synonyms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--synonyms", type=Path)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cost", nargs=2, type=Path, metavar=("DERIVED_RES", "TRUE_RES"))
    parser.add_argument("--method", default="ours")
    args = parser.parse_args()
    dataset = open_dataset(args.data_dir, check_values=False)
    names = list(dataset.label_names)
    derived = labels_from_captions(dataset.captions, names, read_synonyms(args.synonyms, names))
    predicted = np.array([[name in labels for name in names] for labels in derived])
    truth = np.asarray(dataset.labels) > 0
    hits = (predicted & truth).sum(0)
    precision = hits / np.maximum(predicted.sum(0), 1)
    recall = hits / np.maximum(truth.sum(0), 1)
    report = {"dataset": dataset.name, "images": int(len(truth)), "labels": len(names),
              "micro_precision": float(hits.sum() / max(predicted.sum(), 1)),
              "micro_recall": float(hits.sum() / max(truth.sum(), 1)),
              "macro_precision": float(precision[predicted.sum(0) > 0].mean()),
              "macro_recall": float(recall[truth.sum(0) > 0].mean()),
              "images_without_a_derived_label": int((~predicted.any(1)).sum()),
              "per_label": {name: {"images": int(truth[:, c].sum()), "derived": int(predicted[:, c].sum()),
                                   "precision": float(precision[c]), "recall": float(recall[c])}
                            for c, name in enumerate(names)}}
    print(f"{dataset.name}: {report['images']} images, {len(names)} labels; micro precision "
          f"{100 * report['micro_precision']:.1f}, recall {100 * report['micro_recall']:.1f}; macro precision "
          f"{100 * report['macro_precision']:.1f}, recall {100 * report['macro_recall']:.1f}; "
          f"{report['images_without_a_derived_label']} images without a derived label")
    print("| label | images | derived | precision | recall |\n|---|---|---|---|---|")
    for name in sorted(names, key=lambda n: -report["per_label"][n]["images"])[: args.top]:
        row = report["per_label"][name]
        print(f"| {name} | {row['images']} | {row['derived']} | {100 * row['precision']:.1f} | {100 * row['recall']:.1f} |")
    if args.cost:
        report["cost"] = training_cost(dataset, Path(args.cost[0]), Path(args.cost[1]), args.method)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def training_cost(dataset, derived_res: Path, true_res: Path, method: str) -> dict:
    """The method trained on derived labels, scored on the true ones, minus the method trained on the true."""
    from semshare.evaluation.evaluate import evaluate_run
    from semshare.evaluation.protocols import ProtocolConfig
    from semshare.evaluation.retrieval import MetricSpec
    from semshare.evaluation.significance import hierarchical_comparison
    from semshare.experiments.benchmark import METRIC_SPEC
    from semshare.experiments.compare import load_per_query
    from semshare.training.experiment import load_run

    derived, true, tables = [], [], []
    for run_dir in sorted((derived_res / dataset.name).glob(f"{method}-seed*")):
        table, folds = evaluate_run(load_run(run_dir, dataset, ranking="label"), ProtocolConfig(), MetricSpec(**METRIC_SPEC))
        derived.append({d: {m: np.asarray(v) for m, v in folds[0][d].per_query.items()} for d in ("i2t", "t2i")})
        true.append(load_per_query(true_res / dataset.name / run_dir.name))
        tables.append(table)
    out = {"seeds": len(derived), "derived_on_true": {k: float(np.mean([t[k] for t in tables]))
                                                       for k in ("ave/NDCG@500", "ave/mAP@all")}}
    for metric in ("NDCG@500", "mAP@all"):
        result = hierarchical_comparison(derived, true, metric)
        out[metric] = {"difference": result.difference, "ci": [result.ci_low, result.ci_high], "p": result.p_value}
        print(f"{method} trained on derived labels minus on true labels, Ave {metric} x100 on the true labels: "
              f"{100 * result.difference:+.2f}, hierarchical 95% CI [{100 * result.ci_low:+.2f}, "
              f"{100 * result.ci_high:+.2f}], p {result.p_value:.4f} ({len(derived)} seeds)")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
