"""A new annotation format for `semshare extract`, in one file: a folder of <stem>.tags files, one label per line
(labels, no boxes: regions then come from the grid).

`semshare extract --images DIR --captions F.jsonl --tags TAGS_DIR --out DATA` then works
(tests/test_extension_points.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from semshare.errors import DataFormatError
from semshare.features.annotations.base import AnnotationFormat, CaptionedImages, labels_of_items
from semshare.options import option
from semshare.registry import ANNOTATIONS


@dataclass(kw_only=True)
class TagFilesInputs:
    tags_dir: Path | None = option("--tags", type=Path, metavar="DIR", help="one <stem>.tags file per image")


def attach_tag_files(inputs: TagFilesInputs, captioned: CaptionedImages) -> list[str]:
    for item in captioned.items:
        path = Path(inputs.tags_dir) / f"{Path(item.file_name).stem}.tags"
        if not path.is_file():
            raise DataFormatError(path, "file", f"the tags of {item.file_name}", "no such file")
        item.labels = {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    return labels_of_items(captioned)


ANNOTATIONS.register("tag-files")(AnnotationFormat("a <stem>.tags file per image, one label per line", TagFilesInputs,
                                                   attach_tag_files))
