"""One on-disk dataset format (docs/DATA.md), opened with memory maps and validated on open.

A dataset folder holds N items (rows). Every array's first axis is N; `split.json` lists row indices.
Texts: `captions.jsonl` gives each row one or several texts (sentences, or tag words as `tokens`);
each text is its own *text item* carrying its row's labels. `text.npy` gives one vector per row instead.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence, Union

import numpy as np

from semshare.errors import ConfigError, DataFormatError
from semshare.fileio import atomic_write_text, json_line

logger = logging.getLogger(__name__)

FORMAT_NAME = "semshare-dataset"
FORMAT_VERSION = 1
SPLIT_NAMES = ("train", "val", "test", "database")
# train/val/test must not share rows; a retrieval `database` may contain train rows (MIRFlickr's does).
DISJOINT_SPLITS = ("train", "val", "test")
# Rows scanned at once when checking values: bounds memory on 18 GB files.
VALUE_CHECK_CHUNK_BYTES = 64 * 2**20
BOX_TOLERANCE = 1e-3

# A text is a sentence (str) or a list of tag words already split by the data's owner.
Text = Union[str, list]


@dataclass(frozen=True)
class TextItems:
    """The text items of a set of rows: `rows[t]` is the image row that text t belongs to.

    `texts[t]` is the text itself (a sentence or a tag list) when the source is captions, else None.
    `item_ids[t]` is the text item's global index in the dataset (stable across splits).
    """

    rows: np.ndarray
    item_ids: np.ndarray
    texts: list | None


MAX_TEXT_FILE_BYTES = 8 << 30  # a captions file of tens of millions of captions; /dev/zero is refused before


def read_text_file(path: Path, what: str, max_bytes: int = MAX_TEXT_FILE_BYTES) -> str:
    """A UTF-8 text file of the dataset (a regular file of at most `max_bytes`); other bytes, a device or
    FIFO, or a larger file are one DataFormatError naming it."""
    from semshare.errors import SemshareError
    from semshare.fileio import read_bounded

    Path(path).stat()  # a missing file raises FileNotFoundError, as a plain read does
    try:
        return read_bounded(path, what, max_bytes).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, what, "UTF-8 text", f"other bytes (at byte {exc.start})") from None
    except SemshareError as exc:
        found = str(exc).split("found ", 1)[-1]
        raise DataFormatError(path, what, f"a regular file of at most {max_bytes >> 20} MB", found) from None


def load_npy(path: Path, field_name: str) -> np.ndarray:
    """A memory-mapped .npy array, never unpickled; an unreadable or truncated file is a DataFormatError."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, field_name, "a NumPy .npy file", "no such file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(path, field_name, "a readable NumPy .npy file", f"unreadable ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise DataFormatError(path, field_name, "a single array (.npy)", type(array).__name__)
    return array


def _expect_ndim(path: Path, field_name: str, array: np.ndarray, shape_doc: str, ndim: int) -> None:
    if array.ndim != ndim:
        raise DataFormatError(path, f"{field_name} shape", f"{ndim} axes {shape_doc}", f"shape {array.shape}")


def _expect_rows(path: Path, field_name: str, array: np.ndarray, num_items: int) -> None:
    if array.shape[0] != num_items:
        raise DataFormatError(
            path, f"{field_name} rows", f"{num_items} rows (as in labels.npy)", f"{array.shape[0]} rows"
        )


def _expect_dtype(path: Path, field_name: str, array: np.ndarray, kinds: str, expected: str) -> None:
    if array.dtype.kind not in kinds:
        raise DataFormatError(path, f"{field_name} dtype", expected, str(array.dtype))


def iterate_row_chunks(array: np.ndarray, max_bytes: int = VALUE_CHECK_CHUNK_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (start_row, rows) slices of a (memory-mapped) array, each at most ~max_bytes in memory."""
    row_bytes = max(1, int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize)
    rows_per_chunk = max(1, max_bytes // row_bytes)
    # a memory map's pages stay resident once touched; reading the file directly keeps a scan of an
    # 18 GB array at one chunk of memory
    direct = (isinstance(array, np.memmap) and getattr(array, "filename", None) and array.flags.c_contiguous
              and array.base is not None)
    for start in range(0, array.shape[0], rows_per_chunk):
        stop = min(array.shape[0], start + rows_per_chunk)
        if direct:
            count = (stop - start) * (row_bytes // array.dtype.itemsize)
            chunk = np.fromfile(array.filename, dtype=array.dtype, count=count, offset=array.offset + start * row_bytes)
            yield start, chunk.reshape((stop - start,) + array.shape[1:])
        else:
            yield start, np.asarray(array[start:stop])


def _check_finite(path: Path, field_name: str, array: np.ndarray) -> None:
    for start, chunk in iterate_row_chunks(array):
        finite = np.isfinite(chunk)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise DataFormatError(
                path, field_name, "finite values", f"{chunk[tuple(bad)]} at index {(start + bad[0],) + tuple(bad[1:])}"
            )


def _check_not_all_zero(path: Path, field_name: str, array: np.ndarray, expected: str) -> None:
    """A dataset whose every label (or every region) is off has nothing to learn or retrieve from."""
    if not any(chunk.any() for _, chunk in iterate_row_chunks(array)):
        raise DataFormatError(path, field_name, expected, f"all {array.shape[0]} rows zero")


def _check_binary(path: Path, field_name: str, array: np.ndarray) -> None:
    for start, chunk in iterate_row_chunks(array):
        bad = (chunk != 0) & (chunk != 1)
        if bad.any():
            where = np.argwhere(bad)[0]
            raise DataFormatError(
                path, field_name, "only 0 and 1", f"{chunk[tuple(where)]} at row {start + where[0]}, column {where[1]}"
            )


WORD = re.compile(r"\w")


def _expect_words(path: Path, where: str, text: str) -> None:
    """A text must say something: an empty, blank or punctuation-only one would embed like every other."""
    if not WORD.search(text):
        raise DataFormatError(path, where, "a text with at least one word (an empty 'tokens' list marks a row "
                                           "without text)", repr(text[:40]))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # JSON's "\ud800": valid JSON, but no character (every writer would fail)
        raise DataFormatError(path, where, "Unicode text", f"a lone surrogate {text[exc.start]!r} at character {exc.start}") from None


def _parse_text_line(path: Path, line_number: int, line: str, row: int) -> list:
    where = f"line {line_number}"
    record = json_line(path, line_number, line, "one JSON object per line")
    if not isinstance(record, dict):
        raise DataFormatError(path, where, "a JSON object", type(record).__name__)
    if "id" in record and record["id"] != row:
        raise DataFormatError(path, f"{where} 'id'", f"{row} (lines are in row order)", repr(record["id"]))
    if "captions" in record:
        captions = record["captions"]
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
            raise DataFormatError(path, f"{where} 'captions'", "a non-empty list of strings", repr(captions)[:80])
        for index, caption in enumerate(captions):
            _expect_words(path, f"{where} (row {row}) caption {index}", caption)
        return list(captions)
    if "tokens" in record:
        # an empty tag list is how a dataset says a row has no text (MIRFlickr images without tags)
        tokens = record["tokens"]
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataFormatError(path, f"{where} 'tokens'", "a list of strings", repr(tokens)[:80])
        for index, token in enumerate(tokens):
            _expect_words(path, f"{where} (row {row}) token {index}", token)
        return [list(tokens)]
    if "text" in record:
        if not isinstance(record["text"], str):
            raise DataFormatError(path, f"{where} 'text'", "a string", repr(record["text"])[:80])
        _expect_words(path, f"{where} (row {row}) text", record["text"])
        return [record["text"]]
    raise DataFormatError(path, where, "a 'captions', 'tokens' or 'text' field", f"keys {sorted(record)}")


@dataclass(repr=False)
class Dataset:
    """An opened, validated dataset folder. Arrays are read-only memory maps; nothing is loaded whole.

    Fields (None when the folder lacks them):
      regions (N, R, D) float, region_mask (N, R) bool-like, region_boxes (N, R, 4) normalised x0 y0 x1 y1,
      region_labels (N, R) int (-1 = none), image (N, D) float, text_vectors (N, Dt) float,
      labels (N, C) multi-hot.
    """

    root: Path
    labels: np.ndarray
    label_names: list[str]
    splits: dict[str, np.ndarray]
    regions: np.ndarray | None = None
    region_mask: np.ndarray | None = None
    region_boxes: np.ndarray | None = None
    region_labels: np.ndarray | None = None
    image: np.ndarray | None = None
    text_vectors: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    _has_captions: bool = False

    # ---- sizes -------------------------------------------------------------------------------------------
    def __repr__(self) -> str:  # the sizes, not the arrays
        image = (f"regions={tuple(self.regions.shape[1:])}" if self.regions is not None
                 else f"image_dim={self.image.shape[1]}" if self.image is not None else "no image features")
        text = "captions" if self._has_captions else "text vectors" if self.text_vectors is not None else "no text"
        return (f"Dataset({str(self.root)!r}, name={self.name!r}, items={self.num_items}, labels={self.num_labels}, "
                f"{image}, {text}, splits={ {k: len(v) for k, v in self.splits.items()} })")

    @property
    def name(self) -> str:
        return str(self.meta.get("name", self.root.name))

    @property
    def num_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_labels(self) -> int:
        return int(self.labels.shape[1])

    @property
    def has_regions(self) -> bool:
        return self.regions is not None

    @property
    def has_captions(self) -> bool:
        return self._has_captions

    @cached_property
    def image_files(self) -> list[str | None]:
        """Per row, the image file (absolute path) from the optional `image_files.txt`, else None. Entries
        that resolve outside `image_root` are None here: nothing reads a file the dataset does not own
        (`image_file_problems` says which, and which listed files are missing)."""
        return [path for path, _ in self._image_entries]

    @property
    def image_root(self) -> Path:
        """The folder every image file must lie in: meta.json's `image_root` (absolute, or relative to the
        dataset folder), else the dataset folder itself."""
        root = self.meta.get("image_root")
        return (self.root / root).resolve() if isinstance(root, str) and root else self.root.resolve()

    def image_file_problems(self) -> list[tuple[int, str]]:
        """(row, what is wrong) for every listed image file that escapes the image root or is not there."""
        return [(row, problem) for row, (_, problem) in enumerate(self._image_entries) if problem]

    @cached_property
    def _image_entries(self) -> list[tuple[str | None, str | None]]:
        path = self.root / "image_files.txt"
        if not path.exists():
            return [(None, None)] * self.num_items
        lines = read_text_file(path, "image_files.txt").splitlines()
        if len(lines) != self.num_items:
            raise DataFormatError(path, "lines", f"{self.num_items} lines (one per row of labels.npy; empty = no file)",
                                  f"{len(lines)}")
        root = self.image_root
        entries: list[tuple[str | None, str | None]] = []
        for line in lines:
            if not line.strip():
                entries.append((None, None))
                continue
            resolved = (self.root / line.strip()).resolve()
            if not resolved.is_relative_to(root):
                entries.append((None, f"{line.strip()!r} is outside the image root {root}"))
            elif not resolved.is_file():
                entries.append((str(resolved), f"{line.strip()!r} does not exist"))
            else:
                entries.append((str(resolved), None))
        return entries

    @cached_property
    def captions(self) -> list[list]:
        """Per row, its texts (str sentences or tag-word lists). Read once, on first use."""
        path = self.root / "captions.jsonl"
        rows: list[list] = []
        text = read_text_file(path, "captions.jsonl")
        lines = text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                raise DataFormatError(path, f"line {line_number}", "a JSON object", "an empty line")
            rows.append(_parse_text_line(path, line_number, line, len(rows)))
        if len(rows) != self.num_items:
            raise DataFormatError(path, "lines", f"{self.num_items} lines (one per row of labels.npy)", f"{len(rows)}")
        return rows

    @cached_property
    def caption_file_names(self) -> list[str | None]:
        """Per row, the `file_name` its captions.jsonl record carries (None where it has none): the image
        file a server may look for under an image root of its own choosing (`serve --image-root`)."""
        path = self.root / "captions.jsonl"
        if not self._has_captions:
            return [None] * self.num_items
        self.captions  # noqa: B018 (checks every line first: a broken file is its one clear error)
        names = []
        for line in read_text_file(path, "captions.jsonl").splitlines():
            if line.strip():
                name = json.loads(line).get("file_name")
                names.append(name if isinstance(name, str) and name.strip() else None)
        return names if len(names) == self.num_items else [None] * self.num_items

    @cached_property
    def caption_offsets(self) -> np.ndarray:
        """(N + 1,) int64: the text items of row i are item ids offsets[i] .. offsets[i+1]-1."""
        counts = np.array([len(texts) for texts in self.captions], dtype=np.int64)
        return np.concatenate([[0], np.cumsum(counts)])

    def split(self, name: str) -> np.ndarray:
        """Row indices (sorted as stored) of one split; an empty array when the split is absent."""
        if name not in SPLIT_NAMES:
            raise ConfigError(f"split {name!r}: expected one of {', '.join(SPLIT_NAMES)}, found no such split name")
        return self.splits.get(name, np.zeros(0, dtype=np.int64))

    def text_items(self, rows: np.ndarray, source: str = "captions") -> TextItems:
        """The text items of the given rows: every caption (source 'captions') or one vector per row ('vectors')."""
        rows = np.asarray(rows, dtype=np.int64)
        if source == "vectors":
            if self.text_vectors is None:
                raise DataFormatError(self.root / "text.npy", "text.npy", "a text vector file", "no such file")
            return TextItems(rows=rows, item_ids=rows.copy(), texts=None)
        if source != "captions":
            raise ValueError(f"unknown text source {source!r}; expected 'captions' or 'vectors'")
        if not self.has_captions:
            raise DataFormatError(self.root / "captions.jsonl", "captions.jsonl", "a captions file", "no such file")
        offsets = self.caption_offsets
        counts = offsets[rows + 1] - offsets[rows]
        item_rows = np.repeat(rows, counts)
        item_ids = np.concatenate([np.arange(offsets[r], offsets[r + 1]) for r in rows]) if len(rows) else rows
        texts = [text for r in rows for text in self.captions[r]]
        return TextItems(rows=item_rows, item_ids=item_ids.astype(np.int64), texts=texts)

    def label_frequencies(self) -> np.ndarray:
        """(C,) int64 count of rows carrying each label."""
        totals = np.zeros(self.num_labels, dtype=np.int64)
        for _, chunk in iterate_row_chunks(self.labels):
            totals += chunk.astype(np.int64).sum(axis=0)
        return totals

    def count_unlabeled(self) -> int:
        return int(sum((chunk.sum(axis=1) == 0).sum() for _, chunk in iterate_row_chunks(self.labels)))

    def summary(self) -> dict:
        """Sizes, dims and label statistics, as `semshare inspect` prints them."""
        info: dict = {
            "name": self.name,
            "path": str(self.root),
            "num_items": self.num_items,
            "num_labels": self.num_labels,
            "splits": {name: int(len(rows)) for name, rows in self.splits.items()},
            "unlabeled_items": self.count_unlabeled(),
        }
        frequencies = self.label_frequencies()
        info["labels_per_item"] = round(float(frequencies.sum()) / max(1, self.num_items), 3)
        info["label_frequencies"] = {n: int(f) for n, f in zip(self.label_names, frequencies)}
        if self.regions is not None:
            assert self.region_mask is not None
            per_item = np.concatenate([c.astype(bool).sum(axis=1) for _, c in iterate_row_chunks(self.region_mask)])
            info["regions"] = {
                "shape": list(self.regions.shape),
                "dtype": str(self.regions.dtype),
                "regions_per_item_mean": round(float(per_item.mean()), 3),
                "items_without_regions": int((per_item == 0).sum()),
                "region_labels": self.region_labels is not None,
            }
        if self.image is not None:
            info["image"] = {"shape": list(self.image.shape), "dtype": str(self.image.dtype)}
        if self.text_vectors is not None:
            info["text_vectors"] = {"shape": list(self.text_vectors.shape), "dtype": str(self.text_vectors.dtype)}
        if (self.root / "image_files.txt").exists():
            problems = self.image_file_problems()
            info["image_files"] = {"root": str(self.image_root),
                                   "readable": sum(1 for f, problem in self._image_entries if f and not problem),
                                   "outside_root": sum(1 for _, p in problems if "outside" in p),
                                   "missing": sum(1 for _, p in problems if "does not exist" in p)}
            if problems:
                info["image_files"]["first_problem"] = f"row {problems[0][0]}: {problems[0][1]}"
            if not self.image_root.is_relative_to(self.root.resolve()):
                info["image_files"]["note"] = ("image_root is outside the dataset folder: `serve` shows these images "
                                               "only when given --image-root to a folder that holds it")
        if self.has_captions:
            counts = np.diff(self.caption_offsets)
            tag_rows = sum(1 for texts in self.captions if texts and isinstance(texts[0], list))
            empty = sum(1 for texts in self.captions for t in texts if len(t) == 0)
            info["captions"] = {
                "text_items": int(self.caption_offsets[-1]),
                "texts_per_item_min": int(counts.min()),
                "texts_per_item_max": int(counts.max()),
                "tag_word_rows": int(tag_rows),
                "empty_texts": int(empty),
            }
        return info


def _read_label_names(root: Path, num_labels: int) -> list[str]:
    path = root / "label_names.txt"
    if not path.exists():
        return [f"label_{i}" for i in range(num_labels)]
    names = [line.strip() for line in read_text_file(path, "label_names.txt", 64 << 20).splitlines() if line.strip()]
    if len(names) != num_labels:
        raise DataFormatError(path, "lines", f"{num_labels} label names (columns of labels.npy)", f"{len(names)}")
    seen: dict[str, int] = {}
    for line, name in enumerate(names, start=1):  # two columns of one name would be one label in every count
        if name in seen:
            raise DataFormatError(path, f"line {line}", "each label name once", f"{name!r} again (line {seen[name]})")
        seen[name] = line
    return names


def _read_splits(root: Path, num_items: int) -> dict[str, np.ndarray]:
    path = root / "split.json"
    if not path.exists():
        raise DataFormatError(path, "split.json", "a split file {train, val, test[, database]: [rows]}", "no such file")
    try:
        raw = json.loads(read_text_file(path, "split.json"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, "split.json", "valid JSON", f"invalid JSON ({exc.msg})") from None
    if not isinstance(raw, dict):
        raise DataFormatError(path, "split.json", "a JSON object of split name -> row list", type(raw).__name__)
    splits: dict[str, np.ndarray] = {}
    for name, rows in raw.items():
        if name not in SPLIT_NAMES:
            raise DataFormatError(path, f"split {name!r}", f"one of {list(SPLIT_NAMES)}", repr(name))
        if not isinstance(rows, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in rows):
            raise DataFormatError(path, f"split {name!r}", "a list of integer row indices", repr(rows)[:60])
        outside = [r for r in rows if not 0 <= r < num_items]  # checked as Python ints: 2**70 fits no int64
        if outside:
            raise DataFormatError(path, f"split {name!r}", f"row indices in [0, {num_items})", f"{outside[0]}")
        array = np.asarray(rows, dtype=np.int64)
        if len(np.unique(array)) != len(array):
            raise DataFormatError(path, f"split {name!r}", "distinct row indices", "a repeated row index")
        splits[name] = array
    if "train" not in splits or len(splits["train"]) == 0:
        raise DataFormatError(path, "split 'train'", "a non-empty list of rows", "none")
    for i, first in enumerate(DISJOINT_SPLITS):
        for second in DISJOINT_SPLITS[i + 1 :]:
            if first in splits and second in splits:
                shared = np.intersect1d(splits[first], splits[second])
                if len(shared):
                    raise DataFormatError(
                        path, f"splits {first!r} and {second!r}", "disjoint rows", f"{len(shared)} shared, e.g. {shared[0]}"
                    )
    return splits


def _read_meta(root: Path) -> dict:
    path = root / "meta.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, "meta.json", "valid JSON", f"invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise DataFormatError(path, "meta.json", "UTF-8 JSON", "binary data") from None
    if not isinstance(meta, dict):
        raise DataFormatError(path, "meta.json", "a JSON object", type(meta).__name__)
    if meta.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise DataFormatError(path, "format", repr(FORMAT_NAME), repr(meta.get("format")))
    version = meta.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataFormatError(path, "version", f"an integer <= {FORMAT_VERSION}", repr(version))
    return meta


def open_dataset(root: str | Path, check_values: bool = True, announce: bool = True) -> Dataset:
    """Open and validate a dataset folder.

    Shapes, dtypes and splits are always checked; `check_values` also scans every array (in bounded
    chunks) for non-finite values, non-binary labels and boxes outside [0, 1].
    Raises DataFormatError naming the file, the field, what was expected and what was found.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataFormatError(root, "dataset folder", "an existing folder", "no such folder")
    labels = _open_labels(root, check_values)
    meta = _read_meta(root)
    _check_row_counts(root, labels.shape[0], meta)
    dataset = Dataset(root=root, labels=labels, label_names=_read_label_names(root, labels.shape[1]),
                      splits=_read_splits(root, labels.shape[0]), meta=meta,
                      _has_captions=(root / "captions.jsonl").exists())
    if (root / "regions.npy").exists():
        _open_regions(dataset, check_values)
    for file_name, attribute, shape_doc in (("image.npy", "image", "(N, D)"), ("text.npy", "text_vectors", "(N, Dt)")):
        path = root / file_name
        if path.exists():
            array = load_npy(path, attribute)
            _expect_ndim(path, attribute, array, shape_doc, 2)
            _expect_rows(path, attribute, array, dataset.num_items)
            _expect_dtype(path, attribute, array, "f", "a float dtype (float16/float32)")
            if check_values:
                _check_finite(path, attribute, array)
            setattr(dataset, attribute, array)
    if dataset.has_captions:
        _ = dataset.captions  # parse now: a broken captions file is an error at open, not mid-training
    _check_meta_agrees(dataset)
    if announce:  # not while a writer describes its own temporary folder (its name would be in the log)
        logger.info("opened dataset %s: %d items, %d labels", dataset.name, dataset.num_items, dataset.num_labels)
    return dataset


ROW_FILES = ("labels.npy", "regions.npy", "region_mask.npy", "region_boxes.npy", "region_labels.npy", "image.npy",
             "text.npy")
REGION_FILES = ("regions.npy", "region_mask.npy", "region_boxes.npy", "region_labels.npy")


def _odd_one_out(counts: dict[str, int], reference: int | None, what: str, root: Path) -> None:
    """Files that must agree on a size: the one that differs from meta.json (or from the others) is named."""
    if not counts:
        return
    values = list(counts.values())
    if reference is None:  # the size most files have; labels.npy decides a tie
        reference = max(values, key=lambda v: (values.count(v), v == values[0]))
    for name, count in counts.items():
        if count != reference:
            agreeing = [n for n, c in counts.items() if c == reference] or ["meta.json"]
            raise DataFormatError(root / name, what, f"{reference} (as {', '.join(agreeing)})", str(count))


def _check_row_counts(root: Path, num_labels_rows: int, meta: dict) -> None:
    """Every per-item file has one row per item; meta.json's counts, when there, are the reference."""
    rows = {"labels.npy": num_labels_rows}
    widths = {}
    for name in ROW_FILES[1:]:
        if (root / name).exists():
            shape = load_npy(root / name, name.removesuffix(".npy")).shape
            if shape:
                rows[name] = int(shape[0])
            if name in REGION_FILES and len(shape) >= 2:
                widths[name] = int(shape[1])
    _odd_one_out(rows, meta.get("num_items") if isinstance(meta.get("num_items"), int) else None, "rows", root)
    regions_meta = meta.get("regions") if isinstance(meta.get("regions"), dict) else {}
    width = regions_meta.get("num_regions") if isinstance(regions_meta.get("num_regions"), int) else None
    _odd_one_out(widths, width, "regions per item (axis 1)", root)


def _open_labels(root: Path, check_values: bool) -> np.ndarray:
    labels_path = root / "labels.npy"
    if not labels_path.exists():
        raise DataFormatError(labels_path, "labels.npy", "a multi-hot label array (N, C)", "no such file")
    labels = load_npy(labels_path, "labels")
    _expect_ndim(labels_path, "labels", labels, "(N, C)", 2)
    _expect_dtype(labels_path, "labels", labels, "biuf", "a numeric or bool dtype")
    if check_values:
        _check_binary(labels_path, "labels", labels)
        _check_not_all_zero(labels_path, "labels", labels, "at least one item with a label")
    return labels


def _open_regions(dataset: Dataset, check_values: bool) -> None:
    """regions.npy with region_mask.npy and region_boxes.npy beside it (and region_labels.npy if there)."""
    root, num_items = dataset.root, dataset.num_items
    regions_path = root / "regions.npy"
    regions = load_npy(regions_path, "regions")
    _expect_ndim(regions_path, "regions", regions, "(N, R, D)", 3)
    _expect_rows(regions_path, "regions", regions, num_items)
    _expect_dtype(regions_path, "regions", regions, "f", "a float dtype (float16/float32)")
    num_regions = regions.shape[1]
    mask_path, boxes_path = root / "region_mask.npy", root / "region_boxes.npy"
    for required in (mask_path, boxes_path):
        if not required.exists():
            raise DataFormatError(required, required.stem, "a file beside regions.npy", "no such file")
    region_mask = load_npy(mask_path, "region_mask")
    _expect_ndim(mask_path, "region_mask", region_mask, "(N, R)", 2)
    if region_mask.shape != (num_items, num_regions):
        raise DataFormatError(mask_path, "region_mask shape", f"{(num_items, num_regions)}", f"{region_mask.shape}")
    _expect_dtype(mask_path, "region_mask", region_mask, "biu", "a bool or integer dtype")
    boxes = load_npy(boxes_path, "region_boxes")
    if boxes.shape != (num_items, num_regions, 4):
        raise DataFormatError(boxes_path, "region_boxes shape", f"{(num_items, num_regions, 4)}", f"{boxes.shape}")
    _expect_dtype(boxes_path, "region_boxes", boxes, "f", "a float dtype")
    dataset.regions, dataset.region_mask, dataset.region_boxes = regions, region_mask, boxes
    region_labels_path = root / "region_labels.npy"
    if region_labels_path.exists():
        region_labels = load_npy(region_labels_path, "region_labels")
        if region_labels.shape != (num_items, num_regions):
            raise DataFormatError(
                region_labels_path, "region_labels shape", f"{(num_items, num_regions)}", f"{region_labels.shape}"
            )
        _expect_dtype(region_labels_path, "region_labels", region_labels, "iu", "an integer dtype")
        dataset.region_labels = region_labels
    if check_values:
        _check_finite(regions_path, "regions", regions)
        _check_binary(mask_path, "region_mask", region_mask)
        _check_not_all_zero(mask_path, "region_mask", region_mask, "at least one region marked present")
        _check_boxes(boxes_path, boxes, region_mask)
        if dataset.region_labels is not None:
            _check_region_labels(region_labels_path, dataset.region_labels)


def _check_boxes(path: Path, boxes: np.ndarray, region_mask: np.ndarray) -> None:
    for start, chunk in iterate_row_chunks(boxes):
        valid = np.asarray(region_mask[start : start + len(chunk)]).astype(bool)
        real = chunk[valid]
        if not np.isfinite(chunk).all():  # padding too: every slot goes through the box features
            row = start + int(np.flatnonzero(~np.isfinite(chunk).all(axis=(1, 2)))[0])
            raise DataFormatError(path, "region_boxes", "finite values (padding slots too)", f"NaN or inf in row {row}")
        outside = (real < -BOX_TOLERANCE) | (real > 1 + BOX_TOLERANCE)
        if outside.any():
            raise DataFormatError(path, "region_boxes", "normalised coordinates in [0, 1]", f"{real[outside][0]}")
        if ((real[:, 2] < real[:, 0]) | (real[:, 3] < real[:, 1])).any():
            raise DataFormatError(path, "region_boxes", "x0 <= x1 and y0 <= y1", "a box with negative size")


def _check_region_labels(path: Path, region_labels: np.ndarray) -> None:
    for _, chunk in iterate_row_chunks(region_labels):
        if (chunk < -1).any():
            raise DataFormatError(path, "region_labels", "class ids >= 0, or -1 for none", f"{chunk.min()}")


def _check_meta_agrees(dataset: Dataset) -> None:
    meta = dataset.meta
    path = dataset.root / "meta.json"
    for key, actual in (("num_items", dataset.num_items), ("num_labels", dataset.num_labels)):
        if key in meta and meta[key] != actual:
            raise DataFormatError(path, key, f"{actual} (from labels.npy)", repr(meta[key]))


def write_meta(root: str | Path, name: str, extra: dict | None = None) -> dict:
    """Write meta.json describing the arrays present in `root` (our own tools call this last)."""
    root = Path(root)
    dataset = open_dataset(root, check_values=False, announce=False)
    meta = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": name,
        "num_items": dataset.num_items,
        "num_labels": dataset.num_labels,
    }
    if dataset.regions is not None:
        meta["regions"] = {"num_regions": int(dataset.regions.shape[1]), "dim": int(dataset.regions.shape[2]),
                           "dtype": str(dataset.regions.dtype)}
    if dataset.image is not None:
        meta["image_dim"] = int(dataset.image.shape[1])
    if dataset.text_vectors is not None:
        meta["text_vector_dim"] = int(dataset.text_vectors.shape[1])
    if dataset.has_captions:
        meta["num_text_items"] = int(dataset.caption_offsets[-1])
    meta.update(extra or {})
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


def gather_rows(array: np.ndarray, rows: Sequence[int] | np.ndarray, leading: int | None = None) -> np.ndarray:
    """Read the given rows of a memory map in sorted order (sequential disk access), returned in request order;
    `leading`: only the first that many entries of each row's second axis (the rest is never read).

    A whole-file memory map is read through a fresh map of the same file, dropped after the read: pages a
    long-lived map has touched count as the process's resident memory, and over an 18 GB file that grows
    with every batch (docs/PERFORMANCE.md); a short-lived map returns them at once.
    """
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    inner = array.shape[1:] if leading is None else (min(leading, array.shape[1]),) + array.shape[2:]
    out = np.empty((len(rows),) + inner, dtype=array.dtype)
    source = _fresh_map(array)
    out[order] = source[rows[order]] if leading is None else source[rows[order], :leading]
    del source
    return out


def _fresh_map(array: np.ndarray) -> np.ndarray:
    filename = getattr(array, "filename", None)
    if not isinstance(array, np.memmap) or not filename or array.nbytes < FRESH_MAP_BYTES:
        return array
    fresh = np.load(filename, mmap_mode="r")
    return fresh if fresh.shape == array.shape and fresh.dtype == array.dtype else array


FRESH_MAP_BYTES = 256 << 20  # smaller files stay mapped: their pages are bounded by their size
