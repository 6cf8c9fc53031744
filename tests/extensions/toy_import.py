"""A new import format, in one file: a CSV of captions and labels beside a .npy of image features.

    caption,labels
    a dog on a sofa,dog|sofa

`semshare import labelled-csv CSV --features F.npy --out DIR` then works, with these flags and its help line
(tests/test_extension_points.py)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.dataset import load_npy
from semshare.errors import DataFormatError
from semshare.fileio import atomic_directory
from semshare.importers.base import ImportFormat, ImportTarget
from semshare.importers.writer import DatasetLayout, DatasetWriter, seeded_test_split
from semshare.options import option
from semshare.registry import IMPORTERS


@dataclass(kw_only=True)
class LabelledCsvInputs:
    csv_file: Path = option(type=Path, metavar="CSV", help="caption,labels per row (labels separated by |)")
    features: Path = option("--features", type=Path, metavar="FILE", required=True, help="(N, D) image features .npy")
    test_fraction: float = option("--test-fraction", type=float, default=0.2)


def import_labelled_csv(inputs: LabelledCsvInputs, target: ImportTarget) -> dict:
    with open(inputs.csv_file, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(rows[0]) != {"caption", "labels"}:
        raise DataFormatError(inputs.csv_file, "header", "caption,labels", ",".join(rows[0]) if rows else "no rows")
    features = load_npy(inputs.features, "image features")
    if features.ndim != 2 or len(features) != len(rows):
        raise DataFormatError(inputs.features, "shape", f"({len(rows)}, D): one row per CSV row", str(features.shape))
    names = sorted({name for row in rows for name in row["labels"].split("|") if name})
    labels = np.array([[name in row["labels"].split("|") for name in names] for row in rows], dtype=np.uint8)
    with atomic_directory(target.out_dir, overwrite=target.overwrite) as tmp:
        writer = DatasetWriter(tmp, len(rows), len(names), DatasetLayout(image_dim=features.shape[1]))
        writer.write_rows(0, labels=labels, image=features.astype(np.float16))
        writer.write_captions([[row["caption"]] for row in rows])
        return writer.finish(seeded_test_split(len(rows), inputs.test_fraction, 0), names, target.name,
                             {"source": "labelled-csv"}, sources={"captions.jsonl": inputs.csv_file})


IMPORTERS.register("labelled-csv")(ImportFormat("a CSV of caption,labels beside a .npy of image features",
                                                LabelledCsvInputs, import_labelled_csv))
