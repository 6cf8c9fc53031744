"""SCAN / VSE "precomp" folders: `{split}_ims.npy` (N, 36, 2048) bottom-up regions without boxes,
`{split}_caps.txt` (k captions per image, k = lines / N), optional `{split}_ids.txt` (COCO ids, one per image
or one per caption). Labels from COCO instances JSON (needs ids) or a labels .npy (rows in split order)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.dataset import load_npy, read_text_file
from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import atomic_directory
from semshare.importers.coco import labels_matrix, read_coco_instances
from semshare.importers.base import ImportFormat, ImportTarget
from semshare.options import option
from semshare.importers.writer import DatasetLayout, DatasetWriter
from semshare.progress import progress_bar
from semshare.registry import IMPORTERS

logger = logging.getLogger(__name__)
SPLITS = {"train": "train", "dev": "val", "test": "test"}  # precomp name -> ours ("testall" is COCO 5K)
CHUNK = 512


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in read_text_file(path, path.name).splitlines()]


def _read_split(src: Path, split: str) -> tuple:
    """(split, region features (N, R, D) map, captions, captions per image, COCO ids or None) of one split."""
    ims_path, caps_path = src / f"{split}_ims.npy", src / f"{split}_caps.txt"
    if not ims_path.exists():
        raise DataFormatError(ims_path, f"{split}_ims.npy", "region features (N, R, D)", "no such file")
    if not caps_path.exists():
        raise DataFormatError(caps_path, f"{split}_caps.txt", "captions, k per image", "no such file")
    ims = load_npy(ims_path, "image features")
    if ims.ndim != 3:
        raise DataFormatError(ims_path, "shape", "(N, R, D) region features", str(ims.shape))
    caps = _read_lines(caps_path)
    if len(caps) % len(ims):
        raise DataFormatError(caps_path, "lines", f"a multiple of the {len(ims)} images of {ims_path.name}",
                              f"{len(caps)} captions")
    per = len(caps) // len(ims)
    ids = None
    ids_path = src / f"{split}_ids.txt"
    if ids_path.exists():
        lines = [x for x in _read_lines(ids_path) if x]
        bad = next((i for i, x in enumerate(lines) if not x.isdigit()), None)
        if bad is not None:
            raise DataFormatError(ids_path, f"line {bad + 1}", "a COCO image id (a non-negative integer)", repr(lines[bad])[:60])
        ids = [int(x) for x in lines]
        if len(ids) == len(caps) and per > 1:
            ids = ids[::per]
        if len(ids) != len(ims):
            raise DataFormatError(ids_path, "lines", f"{len(ims)} ids (one per image) or {len(caps)} (per caption)",
                                  str(len(ids)))
    return split, ims, caps, per, ids


def _write_parts(writer: DatasetWriter, src: Path, parts: list[tuple], labels_all: np.ndarray | None, instances,
                 region_count: int, progress: bool) -> dict[str, list[int]]:
    """Stream every split's rows into `writer` in chunks; labels from `labels_all` rows or COCO `instances`.
    -> our split name -> rows."""
    row, our_splits = 0, {}
    total = sum(len(p[1]) for p in parts)
    whole_image = np.tile(np.array([0, 0, 1, 1], dtype=np.float32), (CHUNK, region_count, 1))
    bar = progress_bar(progress, total=total, unit="image", desc="import precomp")
    for split, ims, caps, per, ids in parts:
        our_splits[SPLITS.get(split, split)] = list(range(row, row + len(ims)))
        for start in range(0, len(ims), CHUNK):
            stop = min(len(ims), start + CHUNK)
            # a map per chunk, dropped after it: read pages leave the process (flat memory at any N)
            source = load_npy(src / f"{split}_ims.npy", "image features")
            block = np.asarray(source[start:stop], dtype=np.float32)
            del source
            if not np.isfinite(block).all():
                raise DataFormatError(src / f"{split}_ims.npy", f"rows {start}..{stop - 1}", "finite values",
                                      "NaN or inf")
            labels = (np.asarray(labels_all[row + start : row + stop]) if labels_all is not None
                      else labels_matrix(instances, ids[start:stop]))
            # precomp carries no boxes: every region is given the whole image
            writer.write_rows(row + start, regions=block.astype(np.float16),
                              region_mask=np.ones((stop - start, region_count), dtype=np.uint8),
                              region_boxes=whole_image[: stop - start], labels=labels)
            writer.write_captions([caps[i * per : (i + 1) * per] for i in range(start, stop)])
            bar.update(stop - start)
        row += len(ims)
    bar.close()
    return our_splits


def _names(value: str) -> tuple[str, ...]:
    return tuple(name for name in value.split(",") if name)


@dataclass(kw_only=True)
class PrecompInputs:
    src: Path = option(type=Path, help="the precomp folder")
    instances_files: list[Path] = option("--instances", type=Path, metavar="FILE", repeat=True,
                                         help="COCO instances JSON (labels)")
    labels_file: Path | None = option("--labels", type=Path, metavar="FILE",
                                      help="labels .npy, one row per image, splits in order")
    splits: tuple[str, ...] = option("--splits", type=_names, default=("train", "dev", "test"),
                                     help="precomp split names, in row order")


def import_precomp(inputs: PrecompInputs, target: ImportTarget) -> dict:
    src, instances_files, labels_file, splits = Path(inputs.src), inputs.instances_files, inputs.labels_file, inputs.splits
    if bool(instances_files) == bool(labels_file):
        raise SemshareError("precomp import needs labels: --instances (COCO instances JSON) or --labels FILE.npy")
    parts = [_read_split(src, split) for split in splits]
    region_count, dim = parts[0][1].shape[1:]
    for split, ims, *_ in parts:
        if ims.shape[1:] != (region_count, dim):
            raise DataFormatError(src / f"{split}_ims.npy", "shape", f"(N, {region_count}, {dim}) like {splits[0]}",
                                  str(ims.shape))
    total = sum(len(p[1]) for p in parts)
    if labels_file:
        labels_all = load_npy(labels_file, "labels")
        if labels_all.ndim != 2 or len(labels_all) != total:
            raise DataFormatError(labels_file, "shape", f"({total}, C): one row per image, splits in order "
                                  f"{', '.join(splits)}", str(labels_all.shape))
        label_names = [f"label_{i}" for i in range(labels_all.shape[1])]
    else:
        instances = read_coco_instances(instances_files)
        label_names = instances.category_names
        missing = [s for s, *_, ids in parts if ids is None]
        if missing:
            raise DataFormatError(src / f"{missing[0]}_ids.txt", "ids", "COCO image ids to look labels up",
                                  "no such file")
    with atomic_directory(target.out_dir, overwrite=target.overwrite, replaces="meta.json") as tmp:
        writer = DatasetWriter(tmp, total, len(label_names), DatasetLayout(regions=(region_count, dim)))
        our_splits = _write_parts(writer, src, parts, labels_all if labels_file else None,
                                  None if labels_file else instances, region_count, target.progress)
        meta = writer.finish(our_splits, label_names, target.name, {
            "source": "precomp", "boxes": "unknown in precomp: every region is given the whole image",
            "captions_per_image": {p[0]: p[3] for p in parts}},
            sources={"captions.jsonl": [src / f"{p[0]}_caps.txt" for p in parts],
                     "regions.npy": [src / f"{p[0]}_ims.npy" for p in parts],
                     "labels.npy": labels_file or instances_files})
    return meta


IMPORTERS.register("precomp")(ImportFormat("SCAN/VSE precomp folder ({split}_ims.npy, {split}_caps.txt)", PrecompInputs,
                                           import_precomp))
