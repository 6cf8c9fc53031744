"""Annotation formats of raw images (labels and boxes for `semshare extract`), one file each, registered in
semshare.registry.ANNOTATIONS; base.py says what a format declares."""

from semshare.features.annotations import captions, coco, voc, yolo  # noqa: F401  (registers each)
