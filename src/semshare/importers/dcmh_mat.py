"""MIRFlickr-25K / NUS-WIDE as the DCMH code ships them: `LAll` (N, C) labels, `YAll` (N, V) tag vectors
(bag of tags over a tag list), optionally image features (`XAll` or any (N, D) variable / .npy). MATLAB v7.3
(HDF5) and older files both work. Each item's text is the list of its tags (a tag-word text, docs/DATA.md).

Split (DCMH protocol): `query` items drawn at random are the test split (queries and, with the rest, the
gallery is `database` = every non-query item); `train` items are drawn from the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.dataset import load_npy, read_text_file
from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import atomic_directory
from semshare.importers.matfile import read_mat_variable
from semshare.importers.base import ImportFormat, ImportTarget
from semshare.options import option
from semshare.importers.writer import DatasetLayout, DatasetWriter
from semshare.registry import IMPORTERS

CHUNK = 4096


def _read_names(path: str | Path | None, count: int, what: str) -> list[str]:
    if path is None:
        return [f"{what}_{i}" for i in range(count)]
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, "file", f"{count} {what} names, one per line", "no such file")
    names = [line.strip() for line in read_text_file(path, path.name).splitlines() if line.strip()]
    if len(names) != count:
        raise DataFormatError(path, "lines", f"{count} {what} names (columns of the matrix)", str(len(names)))
    return names


@dataclass(kw_only=True)
class DcmhInputs:
    labels_file: Path = option("--labels", type=Path, metavar="FILE", required=True, help=".mat with LAll (N, C)")
    tags_file: Path = option("--tags", type=Path, metavar="FILE", required=True, help=".mat with YAll (N, V)")
    tag_list: Path = option("--tag-list", type=Path, required=True, help="V tag words, one per line")
    label_list: Path | None = option("--label-list", type=Path, help="C label names, one per line")
    image_file: Path | None = option("--image-features", type=Path, metavar="FILE",
                                     help=".mat or .npy (N, D) image features")
    image_key: str | None = option("--image-key", help="variable name in --image-features (default: its only variable)")
    labels_key: str = option("--labels-key", default="LAll", help="variable name in --labels")
    tags_key: str = option("--tags-key", default="YAll", help="variable name in --tags")
    query: int = option("--query", type=int, default=2000, help="query (test) items")
    train: int = option("--train", type=int, default=10000, help="training items, drawn from the database")
    seed: int = option("--seed", type=int, default=0)


def import_dcmh_mat(inputs: DcmhInputs, target: ImportTarget) -> dict:
    labels_file, tags_file, image_file, image_key = inputs.labels_file, inputs.tags_file, inputs.image_file, inputs.image_key
    labels_key, tags_key, query, train, seed = inputs.labels_key, inputs.tags_key, inputs.query, inputs.train, inputs.seed
    labels = read_mat_variable(labels_file, labels_key)
    tags = read_mat_variable(tags_file, tags_key)
    if labels.ndim != 2:
        raise DataFormatError(labels_file, labels_key, "(N, C) labels", str(labels.shape))
    if tags.ndim != 2 or len(tags) != len(labels):
        raise DataFormatError(tags_file, tags_key, f"({len(labels)}, V) tag vectors (one row per label row)",
                              str(tags.shape))
    if not np.isin(np.unique(labels), (0, 1)).all():
        raise DataFormatError(labels_file, labels_key, "0/1 values", f"values {np.unique(labels)[:5].tolist()}")
    tag_names = _read_names(inputs.tag_list, tags.shape[1], "tag")
    label_names = _read_names(inputs.label_list, labels.shape[1], "label")
    image = None
    if image_file is not None:
        image = (load_npy(image_file, "image features") if str(image_file).endswith(".npy")
                 else read_mat_variable(image_file, image_key))
        if image.ndim != 2 or len(image) != len(labels):
            raise DataFormatError(image_file, image_key or "features", f"({len(labels)}, D) image features "
                                  "(raw images: run `semshare extract` first)", str(image.shape))
    n = len(labels)
    if query < 1 or train < 1:
        raise SemshareError(f"--query / --train: expected integers >= 1, found {query} / {train}")
    if query + train > n:
        raise SemshareError(f"--query {query} + --train {train} exceed the {n} items")
    order = np.random.default_rng(seed).permutation(n)
    query_rows, database = np.sort(order[:query]), np.sort(order[query:])
    train_rows = np.sort(np.random.default_rng([seed, 1]).choice(database, train, replace=False))
    with atomic_directory(target.out_dir, overwrite=target.overwrite, replaces="meta.json") as tmp:
        writer = DatasetWriter(tmp, n, labels.shape[1], DatasetLayout(
            image_dim=None if image is None else image.shape[1], dtype=np.float32))
        empty = 0
        for start in range(0, n, CHUNK):
            stop = min(n, start + CHUNK)
            arrays = {"labels": labels[start:stop].astype(np.uint8)}
            if image is not None:
                arrays["image"] = np.asarray(image[start:stop], dtype=np.float32)
            writer.write_rows(start, **arrays)
            texts = []
            for row in range(start, stop):
                words = [tag_names[j] for j in np.flatnonzero(tags[row] > 0)]
                empty += not words
                texts.append({"tokens": words})
            writer.write_captions(texts)
        meta = writer.finish({"train": train_rows.tolist(), "test": query_rows.tolist(),
                              "database": database.tolist()}, label_names, target.name, {
            "source": "dcmh-mat", "items_without_tags": empty, "split": f"DCMH: {query} query (test), "
            f"{n - query} database, {train} train from the database, seed {seed}"},
            sources={"labels.npy": labels_file, "captions.jsonl": [tags_file, inputs.tag_list], "image.npy": image_file})
    return meta


IMPORTERS.register("dcmh-mat")(ImportFormat("MIRFlickr-25K / NUS-WIDE .mat files of the DCMH code (v7.3 or older)",
                                            DcmhInputs, import_dcmh_mat))
