"""A gallery of photos a trained run never saw (`semshare index build RUN --images DIR [--captions FILE]`).

Each photo goes through the extractor that made the run's data (the run's dataset meta.json, or a package's
extractor.json) and the run's image side, once: the same forward pass gives its embedding and the run's
reading of it (label probabilities). No labels are needed: an item's labels are the labels the run reads in
it at or above a threshold chosen on the run's validation images (the best micro-F1 there; 0.5 for a run
without its dataset), marked `labels_given: false`; labels a captions file gives are kept as given. Label
chips and facets then work on the new photos as on a dataset's. The index folder is the usual one
(manifest `source: images`): search, serve and the API use it unchanged, and an item query (`item_id`, the
page's "find similar") is the item's own stored vector.

The optional captions file is JSON lines of {"file_name" (relative to DIR), "captions"?, "labels"?}.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from semshare.errors import DataFormatError
from semshare.fileio import json_line
from semshare.index import build_backend
from semshare.training.finished_run import Run
from semshare.training.run_folder import recorded_paths

logger = logging.getLogger(__name__)
THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
DEFAULT_THRESHOLD = 0.5


def photo_files(images_dir: Path) -> list[Path]:
    """Every image file below `images_dir` (by its first bytes, not its name), in sorted order."""
    from semshare.features.image_types import image_kind

    if not images_dir.is_dir():
        raise DataFormatError(images_dir, "--images", "a folder of image files", "no such folder")
    files = [p for p in sorted(images_dir.rglob("*")) if p.is_file() and image_kind(p)]
    if not files:
        raise DataFormatError(images_dir, "--images", "image files (JPEG, PNG, GIF, BMP, WebP)", "none")
    return files


def read_photo_captions(path: Path | None, images_dir: Path) -> dict[str, dict]:
    """file name (relative to the photos folder) -> {"captions": [...], "labels": [...]} of a captions file."""
    if path is None:
        return {}
    records = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json_line(path, number, line)
        if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
            raise DataFormatError(path, f"line {number}", '{"file_name": str, "captions"?: [str], "labels"?: [str]}',
                                  line.strip()[:60])
        for key in ("captions", "labels"):
            if key in record and not (isinstance(record[key], list) and all(isinstance(v, str) for v in record[key])):
                raise DataFormatError(path, f"line {number} {key}", "a list of strings", repr(record[key])[:60])
        records[str(Path(record["file_name"]))] = record
    unknown = sorted(name for name in records if not (images_dir / name).is_file())
    if unknown:
        raise DataFormatError(path, f"file_name {unknown[0]!r}", f"a file in {images_dir}", "no such file")
    return records


def label_threshold(run: Run) -> float:
    """The probability above which the run's reading of an image counts as a label: the best micro-F1 over
    a grid on its validation images (the run's dataset), 0.5 when the dataset is not at hand."""
    if run.dataset is None or not len(run.val_rows):
        return DEFAULT_THRESHOLD
    rows = np.asarray(run.val_rows, dtype=np.int64)
    probabilities = run.predict_rows(rows, "image")
    truth = np.asarray(run.dataset.labels)[rows] > 0
    scores = []
    for threshold in THRESHOLDS:
        predicted = probabilities >= threshold
        true_positives = float((predicted & truth).sum())
        scores.append(2 * true_positives / max(1.0, float(predicted.sum() + truth.sum())))
    return float(THRESHOLDS[int(np.argmax(scores))])  # ties: the lowest threshold


def photo_items(run: Run, files: list[Path], images_dir: Path, captions_file: str | Path | None, threshold: float,
                first_id: int) -> tuple[np.ndarray, list[dict]]:
    """The photos' (N, D) embeddings and items.jsonl records (ids from `first_id`): the labels a captions
    file gives, else the run's reading at `threshold`."""
    given = read_photo_captions(Path(captions_file) if captions_file else None, images_dir)
    embs, probabilities = run.query_image_files(files)
    names = run.label_names
    records = []
    for position, path in enumerate(files):
        record = given.get(str(path.relative_to(images_dir)), {})
        read = ([names[c] for c in np.flatnonzero(probabilities[position] >= threshold)]
                if probabilities is not None else [])
        records.append({"id": first_id + position, "row": first_id + position, "labels": record.get("labels", read),
                        "captions": list(record.get("captions", [])), "image_file": str(path),
                        "labels_given": "labels" in record})
    return embs, records


def build_photo_gallery(run: Run, images_dir: str | Path, out_dir: str | Path, captions_file: str | Path | None = None,
                        kind: str = "faiss-flat", params: dict | None = None, overwrite: bool = False):
    """Embed a folder of new photos with a trained run and write an index folder (module docstring)."""
    from semshare.search.gallery import (IndexManifest, bytes_per_item, run_record, weak_threshold_of,
                                        write_index_folder)

    images_dir = Path(images_dir).resolve()
    files = photo_files(images_dir)
    threshold = label_threshold(run) if run.capabilities.label_classifier else -1.0
    embs, records = photo_items(run, files, images_dir, captions_file, threshold, first_id=0)
    backend = build_backend(kind, embs, params)
    paths = {**recorded_paths(out_dir, "run_dir", run.run_dir), **recorded_paths(out_dir, "data_dir", images_dir)}
    manifest = IndexManifest(kind=kind, params=dict(params or {}), side="image", size=backend.size, dim=backend.dim,
                             checkpoint=run.checkpoint, split="all", ranking=run.ranking, source="images",
                             label_threshold=round(threshold, 4),
                             created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **paths, **run_record(run),
                             bytes_per_item=bytes_per_item(backend))
    manifest.weak_threshold = weak_threshold_of(run) if run.dataset is not None else -1.0
    write_index_folder(out_dir, backend, np.arange(len(files), dtype=np.int64), records, manifest, None, overwrite)
    if not run.capabilities.label_classifier:
        logger.warning("%s reads no labels (no label classifier): the photos carry only the labels given", run.cfg.name)
    return manifest
