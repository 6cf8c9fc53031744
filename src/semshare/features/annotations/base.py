"""What `semshare extract` reads beside the images: captions (a COCO captions JSON or a .jsonl of
{"file_name", "captions", "labels"?, "split"?}) and, from one registered annotation format, labels and boxes.

An annotation format is one file in this package: a dataclass of its inputs (semshare.options: the flags
`extract` gets) and `attach(inputs, captioned) -> label names`, which sets each item's labels and boxes:

    @dataclass(kw_only=True)
    class MyInputs:
        labels_dir: Path | None = option("--my-labels", type=Path, help="...")

    ANNOTATIONS.register("my-format")(AnnotationFormat("one line for `extract --help`", MyInputs, attach_my_format))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import json_line


@dataclass
class ExtractItem:
    file_name: str
    captions: list[str]
    labels: set[str] = field(default_factory=set)
    boxes: list[tuple[float, float, float, float, str]] = field(default_factory=list)  # x0 y0 x1 y1, label
    split: str | None = None
    normalized_boxes: bool = False  # boxes as fractions of the image size (YOLO), not pixels
    box_source: str = ""  # the annotation file the boxes came from (named when a box is wrong)


@dataclass
class CaptionedImages:
    """The items read from the captions file, their COCO image ids (None for a .jsonl) and notes for
    meta.json; an annotation format may drop items (with their ids) and add notes."""

    items: list[ExtractItem]
    coco_ids: list[int] | None
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AnnotationFormat:
    """A registered annotation format (semshare.registry.ANNOTATIONS): `attach(inputs, captioned)` sets the
    items' labels and boxes and returns the label names (the dataset's label columns, in order)."""

    summary: str
    inputs: type  # a dataclass of `option(...)`s, every one optional (the format is used when one is given)
    attach: Callable


def read_jsonl_items(captions_file: Path) -> list[ExtractItem]:
    from semshare.data.dataset import read_text_file

    items = []
    for line_number, line in enumerate(read_text_file(captions_file, captions_file.name).splitlines(), start=1):
        if not line.strip():
            continue
        record = json_line(captions_file, line_number, line)
        if (not isinstance(record, dict) or not isinstance(record.get("file_name"), str)
                or not isinstance(record.get("captions"), list)):
            raise DataFormatError(captions_file, f"line {line_number}", '{"file_name": str, "captions": [str]}',
                                  f"keys {sorted(record)}" if isinstance(record, dict) else type(record).__name__)
        items.append(ExtractItem(record["file_name"], [str(c) for c in record["captions"]],
                                 set(record.get("labels", [])), split=record.get("split")))
    return items


def read_captioned_images(captions_file: str | Path) -> CaptionedImages:
    from semshare.importers.coco import read_coco_captions

    captions_file = Path(captions_file)
    if captions_file.suffix == ".jsonl":
        return CaptionedImages(read_jsonl_items(captions_file), None)
    captions, names, _ = read_coco_captions([captions_file])
    coco_ids = sorted(i for i in captions if i in names)
    return CaptionedImages([ExtractItem(names[i], captions[i]) for i in coco_ids], coco_ids)


def labels_of_items(captioned: CaptionedImages) -> list[str]:
    """Without an annotation format: the labels the .jsonl lines give, sorted."""
    return sorted({name for item in captioned.items for name in item.labels})


def annotation_flags() -> list[str]:
    """The flags of every registered annotation format (for messages)."""
    import dataclasses

    import semshare.features.annotations  # noqa: F401  (each format registers itself)
    from semshare.registry import ANNOTATIONS

    return [spec.metadata["flag"] for name in ANNOTATIONS.names()
            for spec in dataclasses.fields(ANNOTATIONS.get(name).inputs) if spec.metadata["flag"]]


def format_of(annotations: object | None) -> AnnotationFormat | None:
    """The registered format whose inputs `annotations` is (None: labels from the .jsonl lines)."""
    import semshare.features.annotations  # noqa: F401
    from semshare.registry import ANNOTATIONS

    if annotations is None:
        return None
    for name in ANNOTATIONS.names():
        if isinstance(annotations, ANNOTATIONS.get(name).inputs):
            return ANNOTATIONS.get(name)
    raise SemshareError(f"annotations: expected the inputs of a registered annotation format "
                        f"({', '.join(ANNOTATIONS.names())}), found {type(annotations).__name__}")
