"""Pascal VOC XML: one <stem>.xml per image, its objects' names and pixel boxes."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from semshare.errors import DataFormatError
from semshare.features.annotations.base import AnnotationFormat, CaptionedImages, labels_of_items
from semshare.options import option
from semshare.registry import ANNOTATIONS


@dataclass(kw_only=True)
class VocInputs:
    voc_dir: Path | None = option("--voc-annotations", type=Path, metavar="DIR", help="Pascal VOC XML folder (labels, boxes)")


def voc_objects(path: Path) -> list[tuple[float, float, float, float, str]]:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise DataFormatError(path, "XML", "a Pascal VOC annotation", f"invalid XML ({exc})") from None
    objects = []
    for index, obj in enumerate(root.iter("object")):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if not name or box is None:
            raise DataFormatError(path, f"object {index}", "<name> and <bndbox>", "missing")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise DataFormatError(path, f"object {index} bndbox", "numeric xmin ymin xmax ymax", "missing or not numbers") from None
        objects.append((*coords, name.strip()))
    return objects


def attach_voc(inputs: VocInputs, captioned: CaptionedImages) -> list[str]:
    for item in captioned.items:
        xml = Path(inputs.voc_dir) / (Path(item.file_name).stem + ".xml")
        if not xml.exists():
            raise DataFormatError(xml, "file", f"the VOC annotation of {item.file_name}", "no such file")
        item.boxes, item.box_source = voc_objects(xml), str(xml)
        item.labels |= {name for *_, name in item.boxes}
    return labels_of_items(captioned)


ANNOTATIONS.register("voc")(AnnotationFormat("Pascal VOC XML, one <stem>.xml per image", VocInputs, attach_voc))
