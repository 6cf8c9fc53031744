"""YOLO label files: one <stem>.txt per image, `class cx cy w h` normalised to the image, with the class names
of a data.yaml (Ultralytics) or a names file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semshare.errors import DataFormatError, SemshareError
from semshare.features.annotations.base import AnnotationFormat, CaptionedImages, ExtractItem
from semshare.options import option
from semshare.registry import ANNOTATIONS


@dataclass(kw_only=True)
class YoloInputs:
    yolo_dir: Path | None = option("--yolo-labels", type=Path, metavar="DIR",
                                   help="YOLO label folder: one <stem>.txt per image, 'class cx cy w h' normalised "
                                        "(labels, boxes)")
    label_names_file: Path | None = option("--label-names", type=Path, metavar="FILE",
                                           help="class names of --yolo-labels: a data.yaml (Ultralytics) or one name "
                                                "per line (default: data.yaml in the label folder or above it)")


def read_label_names(path: str | Path) -> list[str]:
    """Class names by id: a data.yaml (Ultralytics: `names:` as a list or an {id: name} mapping) or a text
    file with one name per line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "class names", "a data.yaml or a names file (one per line)", "no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix not in (".yaml", ".yml"):
        names = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        try:
            names = (yaml.safe_load(text) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as exc:
            raise DataFormatError(path, "names", "a YAML mapping with a names: list", f"unreadable ({exc})") from None
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise DataFormatError(path, "names", "ids 0..C-1", f"ids {sorted(names)}")
            names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise DataFormatError(path, "names", "a non-empty list of class names", f"{names!r}")
    return names


def _find_yolo_names(labels_dir: Path) -> Path:
    for folder in (labels_dir, *labels_dir.parents[:3]):
        for name in ("data.yaml", "data.yml"):
            if (folder / name).is_file():
                return folder / name
    raise SemshareError(f"{labels_dir}: no data.yaml here or in the 3 folders above; give the class names "
                        "with --label-names FILE (a data.yaml or one name per line)")


def yolo_objects(path: Path, names: list[str]) -> list[tuple[float, float, float, float, str]]:
    """`class cx cy w h` per line, normalised to the image -> (x0, y0, x1, y1, name) as fractions."""
    objects = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            class_id, values = int(parts[0]), [float(v) for v in parts[1:]]
        except (ValueError, IndexError):
            raise DataFormatError(path, f"line {number}", "class cx cy w h (an integer, then 4 numbers)",
                                  repr(line.strip()[:80])) from None
        if len(values) != 4:
            raise DataFormatError(path, f"line {number}", "class cx cy w h (5 fields)", f"{len(parts)} fields")
        if not 0 <= class_id < len(names):
            raise DataFormatError(path, f"line {number}", f"a class id in 0..{len(names) - 1}", str(class_id))
        cx, cy, w, h = values
        if not all(0.0 <= v <= 1.0 for v in values) or w <= 0 or h <= 0:
            raise DataFormatError(path, f"line {number}", "cx cy w h normalised to [0, 1], w and h > 0",
                                  " ".join(parts[1:]))
        objects.append((max(cx - w / 2, 0.0), max(cy - h / 2, 0.0), min(cx + w / 2, 1.0), min(cy + h / 2, 1.0),
                        names[class_id]))
    return objects


def _attach_yolo_labels(items: list[ExtractItem], labels_dir: Path, names: list[str]) -> None:
    """Boxes and labels from `<stem>.txt` files (searched recursively); an image without one has no object."""
    by_stem: dict[str, Path] = {}
    for path in sorted(labels_dir.rglob("*.txt")):
        if path.name == "classes.txt":
            continue
        if path.stem in by_stem:
            raise DataFormatError(path, "file name", "one label file per image stem", f"also {by_stem[path.stem]}")
        by_stem[path.stem] = path
    stems = {Path(item.file_name).stem for item in items}
    orphans = sorted(stem for stem in by_stem if stem not in stems)
    if orphans:
        raise DataFormatError(by_stem[orphans[0]], "file", "the labels of an image named in the captions file",
                              f"no image {orphans[0]}.* there ({len(orphans)} label files like it)")
    for item in items:
        path = by_stem.get(Path(item.file_name).stem)
        if path is not None:
            item.boxes, item.normalized_boxes, item.box_source = yolo_objects(path, names), True, str(path)
            item.labels |= {name for *_, name in item.boxes}


def attach_yolo(inputs: YoloInputs, captioned: CaptionedImages) -> list[str]:
    if inputs.yolo_dir is None:
        raise SemshareError("--label-names names the classes of --yolo-labels: give the label folder too")
    yolo_dir, label_names_file, items, notes = Path(inputs.yolo_dir), inputs.label_names_file, captioned.items, captioned.notes
    if not yolo_dir.is_dir():
        raise DataFormatError(yolo_dir, "--yolo-labels", "a folder of <stem>.txt label files", "no such folder")
    names = read_label_names(label_names_file or _find_yolo_names(yolo_dir))
    _attach_yolo_labels(items, yolo_dir, names)
    notes["yolo_classes"] = len(names)
    # every class of data.yaml is a label column, in its id order, even one no image here shows
    return names + sorted({n for item in items for n in item.labels} - set(names))


ANNOTATIONS.register("yolo")(AnnotationFormat("YOLO label files with their class names", YoloInputs, attach_yolo))
