"""Bottom-up-attention TSV (Anderson et al.): one image per line, tab-separated
`image_id, image_w, image_h, num_boxes, boxes, features` (boxes and features base64 float32), with real
boxes. Texts from a COCO captions JSON or a JSON-lines file of {"image_id", "captions"}; labels from COCO
instances JSON or a labels .npy (rows in TSV order)."""

from __future__ import annotations

import base64
import binascii
import csv
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.dataset import load_npy
from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import atomic_directory
from semshare.importers.coco import labels_matrix, read_coco_captions, read_coco_instances, read_karpathy_split
from semshare.importers.base import ImportFormat, ImportTarget
from semshare.options import option
from semshare.importers.writer import DatasetLayout, DatasetWriter, seeded_test_split
from semshare.progress import progress_bar
from semshare.registry import IMPORTERS

logger = logging.getLogger(__name__)
FIELDS = ("image_id", "image_w", "image_h", "num_boxes", "boxes", "features")
CHUNK = 512


def _rows(path: Path):
    csv.field_size_limit(sys.maxsize)  # one feature field is ~100 KB of base64
    with open(path, newline="", encoding="utf-8") as handle:
        line_number = 0
        try:
            for line_number, fields in enumerate(csv.reader(handle, delimiter="\t"), start=1):
                if len(fields) < len(FIELDS):
                    raise DataFormatError(path, f"line {line_number}", f"{len(FIELDS)} tab-separated fields "
                                          f"({', '.join(FIELDS)})", f"{len(fields)} fields")
                yield line_number, fields
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataFormatError(path, f"line {line_number + 1}", "tab-separated UTF-8 text",
                                  f"unreadable bytes ({type(exc).__name__})") from None


def _decode(path: Path, line_number: int, field: str, text: str, count: int) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise DataFormatError(path, f"line {line_number} '{field}'", "base64-encoded float32", "invalid base64") from None
    if len(raw) % (4 * max(count, 1)):
        raise DataFormatError(path, f"line {line_number} '{field}'", f"{count} rows of float32",
                              f"{len(raw)} bytes, not a multiple of {4 * max(count, 1)}")
    return np.frombuffer(raw, dtype=np.float32).reshape(count, -1)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "file", "a captions file", "no such file") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "text", "UTF-8 JSON lines", f"binary data (byte {exc.start} is not UTF-8)") from None


def read_captions_file(path: str | Path) -> dict[int, list[str]]:
    """COCO captions JSON, or JSON lines of {"image_id": id, "captions": [...]} -> image id -> captions."""
    path = Path(path)
    if path.suffix == ".jsonl":
        result = {}
        for line_number, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise DataFormatError(path, f"line {line_number}", "a JSON object", repr(line[:60])) from None
            if not isinstance(record, dict) or "image_id" not in record or not isinstance(record.get("captions"), list):
                raise DataFormatError(path, f"line {line_number}", "{\"image_id\": ..., \"captions\": [...]}",
                                      f"keys {sorted(record)}")
            if type(record["image_id"]) is not int:
                raise DataFormatError(path, f"line {line_number} 'image_id'", "an integer id", repr(record["image_id"])[:60])
            result[record["image_id"]] = [str(c) for c in record["captions"]]
        return result
    return read_coco_captions([path])[0]


def _scan(tsv_files: list[str | Path]) -> tuple[list[tuple[int, int]], int]:
    """Pass 1, streamed (features not decoded): (image id, box count) per TSV line, and the feature size."""
    entries, dim, seen = [], None, {}
    for path in map(Path, tsv_files):
        for line_number, fields in _rows(path):
            try:
                image_id, num_boxes = int(fields[0]), int(fields[3])
            except ValueError:
                raise DataFormatError(path, f"line {line_number} 'image_id'/'num_boxes'", "integers",
                                      f"{fields[0][:20]!r}, {fields[3][:20]!r}") from None
            if num_boxes < 1:  # a bottom-up line has 10..100 boxes; none leaves nothing to read the image from
                raise DataFormatError(path, f"line {line_number} 'num_boxes'", "an integer >= 1", str(num_boxes))
            if image_id in seen:
                raise DataFormatError(path, f"line {line_number} 'image_id'", "each image once",
                                      f"image {image_id} again (first at {seen[image_id]})")
            seen[image_id] = f"{path.name} line {line_number}"
            if dim is None:
                dim = _decode(path, line_number, "features", fields[5], num_boxes).shape[1]
            entries.append((image_id, num_boxes))
    if dim is None:
        raise SemshareError(f"{', '.join(map(str, tsv_files))}: no rows")
    return entries, dim


def _read_line(path: Path, line_number: int, fields: list[str], dim: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(image id, (count, dim) float16 features, (count, 4) boxes scaled to [0, 1]) of one checked TSV line."""
    image_id, width, height, count = int(fields[0]), float(fields[1]), float(fields[2]), int(fields[3])
    if width <= 0 or height <= 0:
        raise DataFormatError(path, f"line {line_number} 'image_w'/'image_h'", "positive sizes", f"{width} x {height}")
    features = _decode(path, line_number, "features", fields[5], count)
    boxes = _decode(path, line_number, "boxes", fields[4], count)
    if features.shape[1] != dim or boxes.shape[1] != 4:
        raise DataFormatError(path, f"line {line_number} 'features'/'boxes'",
                              f"({count}, {dim}) features and ({count}, 4) boxes", f"{features.shape} and {boxes.shape}")
    if not np.isfinite(features).all():
        raise DataFormatError(path, f"line {line_number} 'features'", "finite values", "NaN or inf")
    inverted = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]) | ~np.isfinite(boxes).all(1))
    if len(inverted):  # checked here, on the TSV line, not later on the written temporary arrays
        x0, y0, x1, y1 = (float(v) for v in boxes[inverted[0]])
        raise DataFormatError(path, f"line {line_number} 'boxes' box {int(inverted[0])}",
                              "x0 <= x1 and y0 <= y1 (pixels)", f"{x0:g} {y0:g} {x1:g} {y1:g}")
    scaled = np.clip(boxes / np.array([width, height, width, height], dtype=np.float32), 0.0, 1.0)
    return image_id, features.astype(np.float16), scaled


class _BlockWriter:
    """Collects checked TSV lines and writes them CHUNK rows at a time (regions padded to `region_count`)."""

    def __init__(self, writer: DatasetWriter, region_count: int, dim: int, captions: dict, labels_of, bar):
        self.writer, self.region_count, self.dim, self.captions = writer, region_count, dim, captions
        self.labels_of, self.bar, self.block = labels_of, bar, []

    def add(self, row: int, line_index: int, image_id: int, features: np.ndarray, boxes: np.ndarray) -> None:
        self.block.append((row, line_index, image_id, features, boxes))
        if len(self.block) == CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.block:
            return
        count = len(self.block)
        feats = np.zeros((count, self.region_count, self.dim), dtype=np.float16)
        boxes = np.zeros((count, self.region_count, 4), dtype=np.float32)
        mask = np.zeros((count, self.region_count), dtype=np.uint8)
        for i, (_, _, _, f, b) in enumerate(self.block):
            feats[i, : len(f)], boxes[i, : len(b)], mask[i, : len(f)] = f, b, 1
        image_ids = [image_id for _, _, image_id, _, _ in self.block]
        labels = self.labels_of([line_index for _, line_index, *_ in self.block], image_ids)
        self.writer.write_rows(self.block[0][0], regions=feats, region_boxes=boxes, region_mask=mask, labels=labels)
        self.writer.write_captions([self.captions[i] for i in image_ids])
        self.bar.update(count)
        self.block.clear()


def _labels_source(labels_file, instances_files, num_lines: int):
    """(label names, labels_of(line indexes, image ids) -> (B, C)) from a labels .npy or COCO instances."""
    if labels_file:
        labels_all = load_npy(labels_file, "labels")
        if labels_all.ndim != 2 or len(labels_all) != num_lines:
            raise DataFormatError(labels_file, "shape", f"({num_lines}, C): one row per TSV line", str(labels_all.shape))
        return [f"label_{i}" for i in range(labels_all.shape[1])], lambda lines, _: np.asarray(labels_all[lines])
    instances = read_coco_instances(instances_files)
    return instances.category_names, lambda _, image_ids: labels_matrix(instances, image_ids)


@dataclass(kw_only=True)
class BottomUpInputs:
    tsv_files: list[Path] = option(type=Path, repeat=True, metavar="src", help="the TSV files")
    captions_file: Path = option("--captions", type=Path, metavar="FILE", required=True,
                                 help="COCO captions JSON or .jsonl {image_id, captions}")
    instances_files: list[Path] = option("--instances", type=Path, metavar="FILE", repeat=True,
                                         help="COCO instances JSON (labels)")
    labels_file: Path | None = option("--labels", type=Path, metavar="FILE", help="labels .npy, one row per TSV line")
    split_file: Path | None = option("--split-file", type=Path, help="Karpathy dataset_coco.json")
    test_fraction: float = option("--test-fraction", type=float, default=0.1)
    seed: int = option("--seed", type=int, default=0)


def import_bottomup_tsv(inputs: BottomUpInputs, target: ImportTarget) -> dict:
    tsv_files, captions_file, instances_files = inputs.tsv_files, inputs.captions_file, inputs.instances_files
    labels_file, split_file = inputs.labels_file, inputs.split_file
    if bool(instances_files) == bool(labels_file):
        raise SemshareError("bottomup-tsv import needs labels: --instances (COCO instances JSON) or --labels FILE.npy")
    captions = read_captions_file(captions_file)
    entries, dim = _scan(tsv_files)
    keep = [i for i, (image_id, _) in enumerate(entries) if image_id in captions]
    if not keep:
        raise DataFormatError(captions_file, "image ids", "captions for the TSV's images", "none match")
    label_names, labels_of = _labels_source(labels_file, instances_files, len(entries))
    ids = [entries[i][0] for i in keep]
    region_count = max(entries[i][1] for i in keep)
    if split_file:
        karpathy = read_karpathy_split(split_file)
        splits = {s: [r for r, image_id in enumerate(ids) if karpathy.get(image_id) == s] for s in ("train", "val", "test")}
    else:
        splits = seeded_test_split(len(ids), inputs.test_fraction, inputs.seed)
    wanted = {line_index: row for row, line_index in enumerate(keep)}
    with atomic_directory(target.out_dir, overwrite=target.overwrite, replaces="meta.json") as tmp:
        bar = progress_bar(target.progress, total=len(ids), unit="image", desc="import bottomup-tsv")
        block = _BlockWriter(DatasetWriter(tmp, len(ids), len(label_names), DatasetLayout(regions=(region_count, dim))),
                             region_count, dim, captions, labels_of, bar)
        line_index = -1
        for path in map(Path, tsv_files):
            for line_number, fields in _rows(path):
                line_index += 1
                if line_index in wanted:
                    block.add(wanted[line_index], line_index, *_read_line(path, line_number, fields, dim))
        block.flush()
        bar.close()
        meta = block.writer.finish(splits, label_names, target.name, {
            "source": "bottomup-tsv", "coco_image_ids": ids, "dropped_without_captions": len(entries) - len(keep),
            "boxes": "pixel boxes divided by image_w / image_h, clipped to [0, 1]"},
            sources={"captions.jsonl": captions_file, "labels.npy": labels_file or instances_files,
                     **{f: tsv_files for f in ("regions.npy", "region_boxes.npy", "region_mask.npy")}})
    return meta


IMPORTERS.register("bottomup-tsv")(ImportFormat("bottom-up-attention TSV files (base64 boxes and features)",
                                                BottomUpInputs, import_bottomup_tsv))
