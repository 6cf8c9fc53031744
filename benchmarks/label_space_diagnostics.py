"""Why does a trained run rank as it does? Validation-only diagnostics of Semantic Sharing-family runs.

For each run folder (its best checkpoint, its own validation rows):
- Ave NDCG@500 / mAP@all on validation under each retrieval pooling the run's classifier allows
  (label-segments, label, mean z): the same weights, only the embedding changes;
- the classifier as a multi-label classifier, per modality: macro AP over labels of sigmoid(g(z)) for
  images and for texts (texts carry their image's labels), and how many labels each modality wins;
- the modality gap in label space: mean cosine of an image's label scores with its own captions' scores,
  and the mean absolute difference between the two modalities' average label scores.

    python benchmarks/label_space_diagnostics.py --data ../shared/data/coco_2k RUN [RUN ...] --out docs/x.json

Nothing here selects a model: it reads validation rows only, and writes one JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import average_precision_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from semshare.data.dataset import open_dataset  # noqa: E402
from semshare.evaluation.evaluate import evaluate_run  # noqa: E402
from semshare.training.inputs import training_rows  # noqa: E402
from semshare.training.experiment import load_run  # noqa: E402

POOLINGS = ("label-segments", "label", "mean")


def _val_metrics(run, rows: np.ndarray, pooling: str) -> dict[str, float]:
    run.model.cfg = replace(run.model.cfg, pooling=pooling)
    table, _ = evaluate_run(run, rows=rows, validation=True)
    return {"ave/NDCG@500": table["ave/NDCG@500"], "ave/mAP@all": table["ave/mAP@all"]}


def _macro_ap(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AP per label (NaN for a label with no positive among these items)."""
    return np.array([average_precision_score(labels[:, k], scores[:, k]) if labels[:, k].any() else np.nan
                     for k in range(labels.shape[1])])


def diagnose(run_dir: Path, data_dir: str, dataset) -> dict:
    run = load_run(run_dir, dataset)
    _, val_rows = training_rows(dataset, run.cfg.train)
    saved_pooling = run.model.cfg.pooling
    has_classifier = run.model.cfg.loss.label_weight > 0
    poolings = POOLINGS if has_classifier else ("mean",)
    report = {"run": str(run_dir), "recipe": run.cfg.name, "trained_pooling": saved_pooling,
              "val": {p: _val_metrics(run, val_rows, p) for p in poolings}}
    if has_classifier:
        run.model.cfg = replace(run.model.cfg, pooling="label")  # the classifier's scores of the pooled z
        img, txt = run.embed(val_rows)
        labels = dataset.labels
        text_rows = dataset.text_items(val_rows, run.builder(training=False).text_source).rows
        img_ap = _macro_ap(img.emb, labels[img.ids] > 0)
        txt_ap = _macro_ap(txt.emb, labels[text_rows] > 0)
        both = ~np.isnan(img_ap) & ~np.isnan(txt_ap)
        own_text = {row: txt.emb[text_rows == row] for row in img.ids}
        unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
        pair_cos = np.mean([float((unit(own_text[row]) @ unit(vec)).mean()) for row, vec in zip(img.ids, img.emb)
                            if len(own_text[row])])
        report["classifier"] = {
            "image_macro_AP": float(np.nanmean(img_ap)), "text_macro_AP": float(np.nanmean(txt_ap)),
            "labels_image_better": int((img_ap[both] > txt_ap[both]).sum()), "labels_compared": int(both.sum()),
            "paired_label_cosine": pair_cos,
            "mean_score_gap": float(np.abs(img.emb.mean(0) - txt.emb.mean(0)).mean()),
        }
    run.model.cfg = replace(run.model.cfg, pooling=saved_pooling)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dataset = open_dataset(args.data, check_values=False)
    reports = []
    for run_dir in args.runs:
        reports.append(diagnose(run_dir, args.data, dataset))
        print(json.dumps(reports[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(reports, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
