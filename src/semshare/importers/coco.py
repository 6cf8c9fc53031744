"""COCO: captions + instances JSON -> texts, 80-label multi-hot (category ids in sorted order), optional
Karpathy/SCAN split file; plus the readers the other importers and the extractor share."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import atomic_directory
from semshare.importers.base import ImportFormat, ImportTarget
from semshare.options import option
from semshare.importers.writer import DatasetWriter, seeded_test_split
from semshare.registry import IMPORTERS

logger = logging.getLogger(__name__)
CHUNK = 4096


def _load_json(path: str | Path) -> object:
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "file", "a JSON file", "a folder" if path.is_dir() else "no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, "JSON", "valid JSON", f"invalid JSON at line {exc.lineno} ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, "JSON", "UTF-8 text", f"binary data (byte {exc.start} is not UTF-8)") from None


def _field(path, record: dict, key: str, where: str):
    if not isinstance(record, dict) or key not in record:
        raise DataFormatError(path, f"{where} '{key}'", f"a '{key}' field", f"keys {sorted(record) if isinstance(record, dict) else type(record).__name__}")
    return record[key]


def _integer(path, record: dict, key: str, where: str) -> int:
    value = _field(path, record, key, where)
    if type(value) is not int:  # a string id or a float would silently become another image's id
        raise DataFormatError(path, f"{where} '{key}'", "an integer id", repr(value)[:60])
    return value


@dataclass
class CocoInstances:
    category_ids: list[int]  # sorted; column c of the labels is category_ids[c]
    category_names: list[str]
    labels: dict[int, set[int]] = field(default_factory=dict)  # image id -> label columns
    boxes: dict[int, list[tuple[float, float, float, float, int]]] = field(default_factory=dict)  # x, y, w, h, column
    images: dict[int, dict] = field(default_factory=dict)  # image id -> {file_name, width, height}


def read_coco_instances(paths: list[str | Path]) -> CocoInstances:
    """One or more instances JSON files (e.g. train + val) -> labels and boxes per image id."""
    result = None
    for path in paths:
        data = _load_json(path)
        categories = sorted(_field(path, data, "categories", "top level"), key=lambda c: _integer(path, c, "id", "category"))
        ids = [c["id"] for c in categories]
        if result is None:
            result = CocoInstances(ids, [str(_field(path, c, "name", "category")) for c in categories])
        elif ids != result.category_ids:
            raise DataFormatError(path, "categories", f"the same categories as {paths[0]}", f"{len(ids)} different ones")
        column = {cid: i for i, cid in enumerate(result.category_ids)}
        for image in _field(path, data, "images", "top level"):
            result.images[_integer(path, image, "id", "images[]")] = {
                "file_name": image.get("file_name"), "width": image.get("width"), "height": image.get("height")}
        for index, annotation in enumerate(_field(path, data, "annotations", "top level")):
            where = f"annotations[{index}]"
            category = _integer(path, annotation, "category_id", where)
            if category not in column:
                raise DataFormatError(path, f"{where} 'category_id'", "one of the listed categories", str(category))
            image_id = _integer(path, annotation, "image_id", where)
            result.labels.setdefault(image_id, set()).add(column[category])
            bbox = annotation.get("bbox")
            if bbox is not None:
                if not (isinstance(bbox, list) and len(bbox) == 4
                        and all(type(v) in (int, float) and np.isfinite(v) for v in bbox)):
                    raise DataFormatError(path, f"{where} 'bbox'", "[x, y, width, height]", repr(bbox)[:60])
                result.boxes.setdefault(image_id, []).append((*map(float, bbox), column[category]))
    if result is None:
        raise SemshareError("no instances file given")
    return result


def read_coco_captions(paths: list[str | Path]) -> tuple[dict[int, list[str]], dict[int, str], dict[int, int]]:
    """-> (image id -> captions in file order, image id -> file name, image id -> index of the file it came from)."""
    captions: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    origin: dict[int, int] = {}
    for file_index, path in enumerate(paths):
        data = _load_json(path)
        for image in data.get("images", []) if isinstance(data, dict) else []:
            if isinstance(image, dict) and "id" in image and "file_name" in image:
                names[_integer(path, image, "id", "images[]")] = str(image["file_name"])
        for index, annotation in enumerate(_field(path, data, "annotations", "top level")):
            where = f"annotations[{index}]"
            image_id = _integer(path, annotation, "image_id", where)
            caption = _field(path, annotation, "caption", where)
            if not isinstance(caption, str):
                raise DataFormatError(path, f"{where} 'caption'", "a string", type(caption).__name__)
            captions.setdefault(image_id, []).append(caption.strip())
            origin.setdefault(image_id, file_index)
    return captions, names, origin


def read_karpathy_split(path: str | Path) -> dict[int, str]:
    """Karpathy's dataset_coco.json (the split SCAN/VSE use): COCO id -> train | val | test (restval -> train)."""
    data = _load_json(path)
    result = {}
    for index, image in enumerate(_field(path, data, "images", "top level")):
        split = str(_field(path, image, "split", f"images[{index}]"))
        image_id = image.get("cocoid", image.get("id", -1)) if isinstance(image, dict) else -1
        if type(image_id) is not int or image_id < 0:
            raise DataFormatError(path, f"images[{index}] 'cocoid'", "a COCO image id", f"keys {sorted(image)}")
        result[image_id] = {"restval": "train"}.get(split, split)
    return result


def labels_matrix(instances: CocoInstances, image_ids: list[int]) -> np.ndarray:
    labels = np.zeros((len(image_ids), len(instances.category_ids)), dtype=np.uint8)
    for row, image_id in enumerate(image_ids):
        labels[row, sorted(instances.labels.get(image_id, ()))] = 1
    return labels


@dataclass(kw_only=True)
class CocoInputs:
    captions_files: list[Path] = option("--captions", type=Path, metavar="FILE", repeat=True, required=True,
                                        help="captions JSON (repeatable)")
    instances_files: list[Path] = option("--instances", type=Path, metavar="FILE", repeat=True, required=True,
                                         help="instances JSON (repeatable)")
    split_file: Path | None = option("--split-file", type=Path, help="Karpathy dataset_coco.json (train/restval/val/test)")
    images_dir: Path | None = option("--images", type=Path, metavar="DIR",
                                     help="image folder: recorded in image_files.txt for thumbnails")
    test_fraction: float = option("--test-fraction", type=float, default=0.1)
    seed: int = option("--seed", type=int, default=0)


def import_coco(inputs: CocoInputs, target: ImportTarget) -> dict:
    captions_files, instances_files, split_file = inputs.captions_files, inputs.instances_files, inputs.split_file
    images_dir, test_fraction = inputs.images_dir, inputs.test_fraction
    captions, file_names, origin = read_coco_captions(captions_files)
    instances = read_coco_instances(instances_files)
    annotated = [i for i in sorted(captions) if instances.labels.get(i)]
    dropped = len(captions) - len(annotated)
    logger.info("coco: %d images with captions, %d dropped without instance annotations", len(captions), dropped)
    if split_file:
        karpathy = read_karpathy_split(split_file)
        annotated = [i for i in annotated if i in karpathy]
        splits = {s: [r for r, i in enumerate(annotated) if karpathy[i] == s] for s in ("train", "val", "test")}
    elif len(captions_files) > 1:  # the first file trains, the others test (e.g. train2017 + val2017)
        splits = {"train": [r for r, i in enumerate(annotated) if origin[i] == 0],
                  "test": [r for r, i in enumerate(annotated) if origin[i] > 0]}
    else:
        splits = seeded_test_split(len(annotated), test_fraction, inputs.seed)
    if not splits.get("train"):
        raise SemshareError("coco import: no training images (check the split file and the caption files)")
    with atomic_directory(target.out_dir, overwrite=target.overwrite, replaces="meta.json") as tmp:
        writer = DatasetWriter(tmp, len(annotated), len(instances.category_ids))
        for start in range(0, len(annotated), CHUNK):
            chunk = annotated[start : start + CHUNK]
            writer.write_rows(start, labels=labels_matrix(instances, chunk))
            writer.write_captions([captions[i] for i in chunk])
        if images_dir:
            root = Path(images_dir).resolve()
            writer.write_image_files([str(root / file_names[i]) if i in file_names else
                                      (str(root / instances.images[i]["file_name"]) if i in instances.images else "")
                                      for i in annotated])
        meta = writer.finish(splits, instances.category_names, target.name, {
            **({"image_root": str(Path(images_dir).resolve())} if images_dir else {}),
            "source": "coco", "coco_image_ids": annotated, "dropped_without_annotations": dropped,
            "split_source": "karpathy" if split_file else ("files" if len(captions_files) > 1 else f"seeded {test_fraction}")},
            sources={"captions.jsonl": captions_files, "labels.npy": instances_files, "split.json": split_file})
    return meta


IMPORTERS.register("coco")(ImportFormat("COCO captions + instances JSON -> texts and 80-label multi-hot", CocoInputs,
                                        import_coco))
