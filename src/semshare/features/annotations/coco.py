"""COCO instances JSON: labels and boxes of the images of a COCO captions JSON (matched by image id)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semshare.errors import SemshareError
from semshare.features.annotations.base import AnnotationFormat, CaptionedImages
from semshare.options import option
from semshare.registry import ANNOTATIONS


@dataclass(kw_only=True)
class CocoInstancesInputs:
    instances: list[Path] = option("--instances", type=Path, repeat=True, metavar="FILE", help="COCO instances JSON (labels, boxes)")


def attach_coco_instances(inputs: CocoInstancesInputs, captioned: CaptionedImages) -> list[str]:
    """Labels and boxes from COCO instances; images without annotations are dropped (counted in notes)."""
    from semshare.importers.coco import read_coco_instances

    if captioned.coco_ids is None:
        raise SemshareError("--instances goes with a COCO captions JSON (image ids); with .jsonl use labels/VOC XML")
    instances = inputs.instances
    coco = read_coco_instances(instances)
    kept_items, kept_ids = [], []
    for item, image_id in zip(captioned.items, captioned.coco_ids):
        columns = coco.labels.get(image_id)
        if not columns:
            continue
        item.labels = {coco.category_names[c] for c in columns}
        item.boxes = [(x, y, x + w, y + h, coco.category_names[c]) for x, y, w, h, c in coco.boxes.get(image_id, [])]
        item.box_source = str(instances[0]) if len(instances) == 1 else ", ".join(map(str, instances))
        kept_items.append(item)
        kept_ids.append(image_id)
    captioned.notes["dropped_without_annotations"] = len(captioned.items) - len(kept_items)
    captioned.notes["coco_image_ids"] = kept_ids
    captioned.items, captioned.coco_ids = kept_items, kept_ids
    return coco.category_names


ANNOTATIONS.register("coco-instances")(AnnotationFormat("COCO instances JSON (with a COCO captions JSON)",
                                                        CocoInstancesInputs, attach_coco_instances))
