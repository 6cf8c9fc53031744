"""DatasetWriter: rows streamed into memory-mapped arrays of a new dataset folder, flat memory at any N."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.dataset import open_dataset, write_meta
from semshare.errors import DataFormatError, SemshareError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetLayout:
    """Which arrays a dataset folder has beside labels.npy, and their sizes: regions (count, dim) with their
    mask, boxes and (extracted from annotations) region labels; a global image feature; a text vector."""

    regions: tuple[int, int] | None = None
    image_dim: int | None = None
    text_dim: int | None = None
    dtype: object = np.float16
    region_labels: bool = False


class DatasetWriter:
    """Pre-sized arrays in `folder` (a temporary folder from `atomic_directory`); rows arrive in chunks.

    Every `write_rows` reopens the memory maps and closes them after the chunk, so written pages leave the
    process: resident memory stays flat however large N is.
    """

    def __init__(self, folder: Path, num_items: int, num_labels: int, layout: DatasetLayout = DatasetLayout(),
                 create: bool = True):
        regions, image_dim, text_dim, dtype = layout.regions, layout.image_dim, layout.text_dim, layout.dtype
        region_labels = layout.region_labels
        if num_items <= 0:
            raise SemshareError("nothing to import: 0 items")
        self.folder = Path(folder)
        self.num_items = num_items
        self.shapes: dict[str, tuple[tuple, object]] = {"labels": ((num_items, num_labels), np.uint8)}
        if regions is not None:
            count, dim = regions
            self.shapes.update({"regions": ((num_items, count, dim), dtype), "region_mask": ((num_items, count), np.uint8),
                                "region_boxes": ((num_items, count, 4), np.float32)})
            if region_labels:
                self.shapes["region_labels"] = ((num_items, count), np.int16)
        if image_dim:
            self.shapes["image"] = ((num_items, image_dim), dtype)
        if text_dim:
            self.shapes["text"] = ((num_items, text_dim), dtype)
        for name, (shape, array_dtype) in self.shapes.items():
            if not create:  # resuming: the arrays are there, rows already written are kept
                existing = np.load(self.folder / f"{name}.npy", mmap_mode="r")
                if existing.shape != shape or existing.dtype != np.dtype(array_dtype):
                    raise SemshareError(f"{self.folder / name}.npy: shape/dtype {existing.shape} {existing.dtype} do "
                                        f"not match {shape} {np.dtype(array_dtype)}; start over with --overwrite")
                continue
            array = np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=array_dtype, shape=shape)
            if name == "region_labels":
                array[:] = -1
            array.flush()
            del array
        self._captions = None
        self._caption_rows = 0

    def write_rows(self, start: int, **arrays: np.ndarray) -> None:
        """Rows start .. start + len - 1 of each named array (labels, regions, region_mask, ...)."""
        for name, values in arrays.items():
            if name not in self.shapes:
                raise ValueError(f"this dataset has no array {name!r}")
            target = np.load(self.folder / f"{name}.npy", mmap_mode="r+")
            values = np.asarray(values)
            if values.shape[1:] != target.shape[1:] and name in ("regions", "region_mask", "region_boxes", "region_labels"):
                # fewer regions than the padded width: fill the leading ones
                target[start : start + len(values), : values.shape[1]] = values
            else:
                target[start : start + len(values)] = values
            target.flush()
            del target

    def write_captions(self, texts_per_row: list) -> None:
        """Append rows of captions.jsonl, in row order: a list of sentences, or {"tokens": [...]} for tags."""
        if self._captions is None:
            self._captions = open(self.folder / "captions.jsonl", "w", encoding="utf-8")
        for texts in texts_per_row:
            record = texts if isinstance(texts, dict) else {"captions": list(texts)}
            self._captions.write(json.dumps({"id": self._caption_rows, **record}) + "\n")
            self._caption_rows += 1

    def write_image_files(self, paths: list[str]) -> None:
        (self.folder / "image_files.txt").write_text("".join(f"{p or ''}\n" for p in paths), encoding="utf-8")

    def finish(self, splits: dict[str, list[int]], label_names: list[str], name: str, extra: dict | None = None,
               sources: dict[str, object] | None = None) -> dict:
        """Write split.json, label_names.txt and meta.json, then validate the whole folder.

        `sources`: the user's input file(s) each written file came from ({"captions.jsonl": path, ...}): a
        problem the validation finds is reported on them, never on the temporary folder about to be removed."""
        if self._captions is not None:
            self._captions.close()
            if self._caption_rows != self.num_items:
                raise SemshareError(f"internal: {self._caption_rows} caption rows written for {self.num_items} items")
        (self.folder / "split.json").write_text(json.dumps({k: [int(i) for i in v] for k, v in splits.items()}) + "\n",
                                                encoding="utf-8")
        (self.folder / "label_names.txt").write_text("".join(f"{n}\n" for n in label_names), encoding="utf-8")
        try:
            meta = write_meta(self.folder, name=name, extra=extra)
            open_dataset(self.folder)  # every check of the format, before the folder is renamed into place
        except DataFormatError as exc:
            raise _on_the_input(exc, self.folder, sources or {}) from None
        return meta


def _on_the_input(exc: DataFormatError, folder: Path, sources: dict[str, object]) -> DataFormatError:
    """The validation error of a written file, told about the input it was written from."""
    written = Path(exc.path)
    if written.parent != folder:
        return exc
    source = sources.get(written.name)
    if isinstance(source, (list, tuple)):
        source = ", ".join(map(str, source))
    where = str(source) if source else "the imported data"
    return DataFormatError(where, f"{exc.field} (as written to {written.name})", exc.expected, exc.found)


def seeded_test_split(count: int, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Rows 0..count-1 -> {"train", "test"}: a seeded random `test_fraction` (at least one row) is test."""
    order = np.random.default_rng(seed).permutation(count)
    cut = max(1, int(round(test_fraction * count)))
    return {"train": sorted(order[cut:].tolist()), "test": sorted(order[:cut].tolist())}
