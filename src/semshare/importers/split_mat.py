"""`{train,test}_{img,txt,lab}.mat` (the GNN4CMR / ALGCN release style): one (N, D) image feature, one
(N, Dt) text vector and one label variable per split; labels multi-hot (N, C) or class indices (N,) / (N, 1)
(1-based when the smallest index is 1, as MATLAB writes them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.errors import DataFormatError
from semshare.fileio import atomic_directory
from semshare.importers.matfile import mat_keys, read_mat_variable
from semshare.importers.base import ImportFormat, ImportTarget
from semshare.options import option
from semshare.importers.writer import DatasetLayout, DatasetWriter
from semshare.registry import IMPORTERS


def _read_one(path: Path) -> np.ndarray:
    if not path.exists():
        raise DataFormatError(path, "file", "a .mat file", "no such file")
    keys = [k for k in mat_keys(path) if not k.startswith("__")]
    stem = path.stem
    key = stem if stem in keys else (keys[0] if len(keys) == 1 else None)
    if key is None:
        raise DataFormatError(path, "variables", f"one variable (or one named {stem})", f"{keys}")
    return read_mat_variable(path, key)


MAX_CLASSES = 100_000


@dataclass(kw_only=True)
class SplitMatInputs:
    src: Path = option(type=Path, help="the folder of {train,test}_{img,txt,lab}.mat")


def import_split_mat(inputs: SplitMatInputs, target: ImportTarget) -> dict:
    src = Path(inputs.src)
    parts = {}
    for split in ("train", "test"):
        img, txt, lab = (_read_one(src / f"{split}_{kind}.mat") for kind in ("img", "txt", "lab"))
        for array, kind in ((img, "img"), (txt, "txt")):
            if array.ndim != 2:
                raise DataFormatError(src / f"{split}_{kind}.mat", kind, "(N, D) features", str(array.shape))
        if not len(img) == len(txt) == len(lab):
            raise DataFormatError(src / f"{split}_lab.mat", "rows", f"{len(img)} (as {split}_img.mat) in img, txt, lab",
                                  f"{len(img)}, {len(txt)}, {len(lab)}")
        parts[split] = [img, txt, lab]
    if parts["train"][0].shape[1] != parts["test"][0].shape[1] or parts["train"][1].shape[1] != parts["test"][1].shape[1]:
        raise DataFormatError(src / "test_img.mat", "columns", "the same feature sizes as train", "different ones")
    multi = [p[2].ndim == 2 and p[2].shape[1] > 1 for p in parts.values()]
    if all(multi):
        labels = {s: parts[s][2] for s in parts}
        for split, values in labels.items():
            if not np.isin(np.unique(values), (0, 1)).all():
                raise DataFormatError(src / f"{split}_lab.mat", "labels", "0/1 multi-hot rows",
                                      f"values {np.unique(values)[:5].tolist()}")
    elif not any(multi):
        for split in parts:
            values = parts[split][2].reshape(-1)
            bad = values[~np.isfinite(values) | (values != np.round(values))] if values.dtype.kind == "f" else []
            if len(bad):
                raise DataFormatError(src / f"{split}_lab.mat", "labels", "integer class indices", f"{float(bad[0]):g}")
            if len(values) and np.abs(values).max() > MAX_CLASSES:  # one-hot columns: 1e9 would be 888 PiB
                raise DataFormatError(src / f"{split}_lab.mat", "labels", f"class indices up to {MAX_CLASSES}",
                                      f"{float(np.abs(values).max()):g}")
        indices = {s: parts[s][2].reshape(-1).astype(np.int64) for s in parts}
        low = min(int(i.min()) for i in indices.values())
        if low not in (0, 1):
            raise DataFormatError(src / "train_lab.mat", "labels", "class indices from 0 or 1", f"smallest {low}")
        classes = max(int(i.max()) for i in indices.values()) - low + 1
        labels = {s: np.eye(classes, dtype=np.uint8)[i - low] for s, i in indices.items()}
    else:
        raise DataFormatError(src / "test_lab.mat", "labels", "the same kind (multi-hot or indices) as train", "mixed")
    num_train, num_test = len(parts["train"][0]), len(parts["test"][0])
    with atomic_directory(target.out_dir, overwrite=target.overwrite, replaces="meta.json") as tmp:
        writer = DatasetWriter(tmp, num_train + num_test, labels["train"].shape[1], DatasetLayout(
            image_dim=parts["train"][0].shape[1], text_dim=parts["train"][1].shape[1], dtype=np.float32))
        for start, split in ((0, "train"), (num_train, "test")):
            img, txt, _ = parts[split]
            writer.write_rows(start, image=img.astype(np.float32), text=txt.astype(np.float32), labels=labels[split])
        meta = writer.finish({"train": list(range(num_train)), "test": list(range(num_train, num_train + num_test))},
                             [f"label_{i}" for i in range(labels["train"].shape[1])], target.name, {"source": "split-mat"},
                             sources={"image.npy": [src / "train_img.mat", src / "test_img.mat"],
                                      "text.npy": [src / "train_txt.mat", src / "test_txt.mat"],
                                      "labels.npy": [src / "train_lab.mat", src / "test_lab.mat"]})
    return meta


IMPORTERS.register("split-mat")(ImportFormat("{train,test}_{img,txt,lab}.mat (GNN4CMR / ALGCN style)", SplitMatInputs,
                                             import_split_mat))
