"""`semshare extract`: a folder of images + captions -> a semshare dataset with global and region features.

Regions are the annotated object boxes when the annotations give them (COCO instances JSON, Pascal VOC XML,
YOLO label files),
each crop run through the backbone and averaged over its feature map (largest boxes first, at most
`max_regions`); without boxes, a grid x grid average pooling of the whole image's last feature map (36 regions
with their cell boxes by default). The global feature is the mean of that map. Float16 output.

Images are decoded, cropped and resized in worker processes (a DataLoader over images, `workers`), while the
backbone runs on whole chunks: crops batched across images, channels-last, optionally in bf16.

Resumable: work happens in `.OUT.partial/` with `progress.json` (config + images done); a killed run started
again with the same arguments continues after the last finished chunk; the folder is validated and renamed
to OUT at the end.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.data

from semshare.errors import DataFormatError, SemshareError
from semshare.features.backbones import IMAGENET_MEAN, IMAGENET_STD, build_backbone
from semshare.fileio import atomic_write_json, check_replaceable, file_sha256, publish_directory
from semshare.progress import progress_bar
from semshare.features.annotations.base import (ExtractItem, annotation_flags, format_of, labels_of_items,
                                              read_captioned_images)
from semshare.importers.coco import read_karpathy_split
from semshare.options import paths_of
from semshare.importers.writer import DatasetLayout, DatasetWriter, seeded_test_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractConfig:
    backbone: str = "efficientnet-lite0"
    weights: str = ""  # a local weights file instead of the packaged one
    regions: str = "auto"  # auto (boxes when annotated, else grid) | boxes | grid
    grid: int = 6
    max_regions: int = 36
    chunk_images: int = 32  # images per resumable step
    test_fraction: float = 0.1
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast: fast on CPUs with bf16 matrix units; features differ slightly)


@dataclass(frozen=True)
class ExtractRequest:
    """What `semshare extract` reads and writes: the images, their captions and annotations (labels and
    boxes, in a registered annotation format: COCO instances, VOC XML, YOLO label files), a split file, the
    dataset folder to write and its name."""

    images_dir: Path
    captions_file: Path
    out_dir: Path
    annotations: object | None = None  # the inputs of one registered annotation format (features/annotations/)
    split_file: Path | None = None
    name: str | None = None
    overwrite: bool = False

    def inputs_record(self) -> dict:
        """Every input that changes what is written, each file or folder with its size and time of change:
        a resumed extraction must have been started on exactly these (a changed annotation or split would
        otherwise resume on stale label columns)."""
        annotations = self.annotations
        return {"images": _fingerprint(self.images_dir, files=False), "captions": _fingerprint(self.captions_file),
                "annotations": None if annotations is None else {
                    "format": type(annotations).__name__, "inputs": repr(annotations),
                    "files": [_fingerprint(path) for path in paths_of(annotations)]},
                "split": _fingerprint(self.split_file), "name": self.name or Path(self.out_dir).name}


def _fingerprint(path: Path | None, files: bool = True) -> dict | None:
    """A file's resolved path and the sha256 of its bytes (a folder's, `files`: of every file's name and
    bytes): a time of change can stay the same across a quick edit, the content cannot."""
    if path is None:
        return None
    path = Path(path)
    record = {"path": str(path.resolve())}
    if path.is_file():
        record["sha256"] = file_sha256(path)
    elif path.is_dir() and files:
        digest = hashlib.sha256()
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{member.relative_to(path)}\0{file_sha256(member)}\n".encode())
        record["sha256"] = digest.hexdigest()
    return record


def read_items(captions_file: str | Path, annotations: object | None = None, split_file: str | Path | None = None
               ) -> tuple[list[ExtractItem], list[str], dict]:
    """(items, label names, notes) from a COCO captions JSON or a .jsonl of {"file_name", "captions",
    "labels"?, "split"?}, with the labels and boxes of one registered annotation format (`annotations`: its
    inputs; None: the labels of the .jsonl lines)."""
    captioned = read_captioned_images(captions_file)
    annotation_format = format_of(annotations)
    if annotation_format is None:
        label_names = labels_of_items(captioned)
    else:
        label_names = annotation_format.attach(annotations, captioned)
    if not label_names:
        raise SemshareError(f"no labels: give {', '.join(annotation_flags())}, or 'labels' in the .jsonl lines")
    if split_file:
        if captioned.coco_ids is None:
            raise SemshareError("--split-file (Karpathy) needs COCO captions JSON image ids")
        karpathy = read_karpathy_split(split_file)
        for item, image_id in zip(captioned.items, captioned.coco_ids):
            item.split = karpathy.get(image_id)
    return captioned.items, label_names, captioned.notes


def _splits(items: list[ExtractItem], cfg: ExtractConfig) -> dict[str, list[int]]:
    if any(item.split for item in items):
        return {s: [r for r, item in enumerate(items) if item.split == s] for s in ("train", "val", "test")}
    if len(items) == 1:  # a single image trains
        return {"train": [0], "test": []}
    return seeded_test_split(len(items), cfg.test_fraction, cfg.seed)


class _Preprocess:
    def __init__(self, size: int):
        self.size = size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        resized = image.resize((self.size, self.size), Image.BICUBIC)  # no crop: boxes stay in frame
        array = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (array - self.mean) / self.std


def _grid_boxes(grid: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, grid + 1, dtype=np.float32)
    return np.array([[edges[c], edges[r], edges[c + 1], edges[r + 1]] for r in range(grid) for c in range(grid)],
                    dtype=np.float32)


PRECISIONS = ("fp32", "bf16")
# images per backbone call: small batches keep a layer's activations in cache; on 2 cores 8 ran 1.2-2x the
# crops/s of 64 (docs/PERFORMANCE.md); the values do not depend on it
BACKBONE_BATCH = 8


class _Encoder:
    """The backbone as extraction runs it: channels-last, inference mode, fp32 or bf16 autocast;
    batches of preprocessed images (B, 3, S, S) -> fp32 feature maps (B, D, h, w).
    (A TorchScript trace + freeze was measured slower here on the pipeline's mixed batch sizes, though
    faster on one fixed batch: docs/PERFORMANCE.md.)"""

    def __init__(self, cfg: ExtractConfig):
        if cfg.precision not in PRECISIONS:
            raise SemshareError(f"--precision must be one of {', '.join(PRECISIONS)}; got {cfg.precision!r}")
        self.backbone = build_backbone(cfg.backbone, cfg.weights or None).eval().to(memory_format=torch.channels_last)
        self.precision = cfg.precision
        self.dim, self.image_size = self.backbone.dim, self.backbone.image_size

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Any number of images, through the backbone `BACKBONE_BATCH` at a time."""
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            maps = [self.backbone.feature_map(images[b : b + BACKBONE_BATCH].contiguous(memory_format=torch.channels_last)).float()
                    for b in range(0, len(images), BACKBONE_BATCH)]
        return torch.cat(maps) if maps else torch.zeros(0, self.dim, 1, 1)


@functools.lru_cache(maxsize=2)
def _encoder_for(cfg: ExtractConfig) -> _Encoder:
    """One encoder per extract config: query images (search, `encode_image_files`) reuse the loaded, folded
    backbone instead of rebuilding it for every file (~0.2 s each)."""
    return _Encoder(cfg)


MAX_QUERY_PIXELS = 40_000_000  # a query image larger than this is refused (a decompression bomb, or no photo)


def open_query_image(source: str | Path | bytes):
    """A query image, a file or uploaded bytes, decoded to RGB: its format by its first bytes, at most
    40 megapixels (PIL's decompression-bomb guard below that), one error naming it otherwise."""
    import io

    from PIL import Image, UnidentifiedImageError

    from semshare.features.image_types import FORMATS, media_type

    name = "the uploaded image" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        head, opened = bytes(source[:12]), io.BytesIO(source)
    else:
        if not Path(source).is_file():
            raise DataFormatError(name, "image", "an image file", "a folder" if Path(source).is_dir() else "no such file")
        with open(source, "rb") as handle:
            head = handle.read(12)
        opened = source
    if not media_type(head):
        raise DataFormatError(name, "image", f"a {FORMATS} image (by its first bytes)", f"{head[:8]!r}")
    try:
        image = Image.open(opened)
        if image.width * image.height > MAX_QUERY_PIXELS:
            raise DataFormatError(name, "size", f"at most {MAX_QUERY_PIXELS // 1_000_000} megapixels",
                                  f"{image.width} x {image.height}")
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DataFormatError(name, "image", "a readable image", f"{type(exc).__name__}: {exc}") from None


FILE_LAYOUTS = ("auto", "global", "grid", "grid+global")


@torch.no_grad()
def features_of_image_file(path: str | Path | bytes, meta: dict, layout: str = "auto"
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A new image, encoded as `semshare extract` encoded the dataset described by `meta` (its meta.json):
    (global (D,), regions (R, D), boxes (R, 4), mask (R,)). A new file has no annotated boxes; its regions
    (`layout`): "global", the global feature as its one region (as extract does for an image without boxes);
    "grid", the grid cells; "grid+global", the global feature, then the cells; "auto", a grid dataset's cells
    and a boxed dataset's global feature."""
    if meta.get("source") != "semshare extract":
        raise SemshareError("this run's data did not come from `semshare extract`, so a new image file cannot be "
                            "encoded the way its features were; query with an image id of the dataset instead")
    if layout not in FILE_LAYOUTS:
        raise SemshareError(f"layout: expected one of {', '.join(FILE_LAYOUTS)}, found {layout!r}")
    cfg = ExtractConfig(**meta["extract"])
    encoder = _encoder_for(cfg)
    image = open_query_image(path)
    feature_map = encoder(_Preprocess(encoder.image_size)(image)[None])
    global_feature = feature_map.mean(dim=(2, 3))[0].numpy()
    if layout == "auto":
        layout = "global" if meta.get("regions_from") == "boxes" else "grid"
    whole = np.array([[0, 0, 1, 1]], dtype=np.float32)
    if layout == "global":
        return global_feature, global_feature[None], whole, np.ones(1, dtype=bool)
    cells = F.adaptive_avg_pool2d(feature_map, cfg.grid).flatten(2).transpose(1, 2)[0].numpy()
    cell_boxes = _grid_boxes(cfg.grid)
    if layout == "grid+global":
        cells, cell_boxes = np.concatenate([global_feature[None], cells]), np.concatenate([whole, cell_boxes])
    return global_feature, cells, cell_boxes, np.ones(len(cells), dtype=bool)


@dataclass
class _PreparedImage:
    """One image ready for the backbone: the whole image and its box crops, preprocessed."""

    whole: torch.Tensor  # (3, S, S)
    crops: torch.Tensor  # (n, 3, S, S), n <= max_regions (0 without boxes or in grid mode)
    boxes: np.ndarray  # (n, 4) normalised x0 y0 x1 y1
    labels: np.ndarray  # (n,) label column of each box, -1 when not a label
    error: tuple[str, str, str] | None = None  # (field, expected, found): raised by the main process, naming the file


def _failed(error: tuple[str, str, str]) -> _PreparedImage:
    return _PreparedImage(torch.zeros(0), torch.zeros(0), np.zeros(0), np.zeros(0), error)


def _box_outside(item: ExtractItem, width: int, height: int) -> tuple[str, str, str] | None:
    """(field, expected, found) for the first box that is inverted or lies wholly outside the image (a box that
    crosses the border is clipped to it); None when every box is usable."""
    sx, sy = (width, height) if item.normalized_boxes else (1, 1)
    for index, (x0, y0, x1, y1, label) in enumerate(item.boxes):
        x0, y0, x1, y1 = x0 * sx, y0 * sy, x1 * sx, y1 * sy
        if not (x0 <= x1 and y0 <= y1 and x0 < width and y0 < height and x1 > 0 and y1 > 0):
            return (f"{item.file_name} box {index} ({label})", f"x0 <= x1, y0 <= y1 overlapping the {width}x{height} image",
                    f"{x0:g} {y0:g} {x1:g} {y1:g}")
    return None


def _pixel_crops(item: ExtractItem, width: int, height: int, max_regions: int) -> list[tuple[int, int, int, int, str, list]]:
    """The largest `max_regions` boxes as integer crop boxes inside the image, with their normalised boxes."""
    sx, sy = (width, height) if item.normalized_boxes else (1, 1)
    # rounded: a box drawn at pixel 50 comes back as 50, not 50.000000001 (one more pixel when cropped)
    pixel_boxes = [(round(x0 * sx, 4), round(y0 * sy, 4), round(x1 * sx, 4), round(y1 * sy, 4), label)
                   for x0, y0, x1, y1, label in item.boxes]
    crops = []
    for x0, y0, x1, y1, label in sorted(pixel_boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))[:max_regions]:
        x0, x1 = sorted((min(max(x0, 0), width - 1), min(max(x1, 1), width)))
        y0, y1 = sorted((min(max(y0, 0), height - 1), min(max(y1, 1), height)))
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        crops.append((int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1)), label,
                      [x0 / width, y0 / height, x1 / width, y1 / height]))
    return crops


class _ImageInputs(torch.utils.data.Dataset):
    """Decoding, cropping and resizing of item i (runs in DataLoader workers)."""

    def __init__(self, items: list[ExtractItem], images_dir: Path, use_boxes: bool, max_regions: int,
                 column: dict[str, int], image_size: int):
        self.items, self.images_dir, self.use_boxes = items, images_dir, use_boxes
        self.max_regions, self.column, self.preprocess = max_regions, column, _Preprocess(image_size)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> _PreparedImage:
        from PIL import Image, UnidentifiedImageError

        item = self.items[index]
        size = self.preprocess.size
        try:
            image = Image.open(self.images_dir / item.file_name).convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            return _failed(("image", "a readable image file", f"{type(exc).__name__}: {exc}"))
        outside = _box_outside(item, *image.size)
        if outside:
            return _failed(outside)
        crops = _pixel_crops(item, *image.size, self.max_regions) if self.use_boxes else []
        crop_tensors = [self.preprocess(image.crop(box[:4])) for box in crops]
        return _PreparedImage(
            whole=self.preprocess(image),
            crops=torch.stack(crop_tensors) if crop_tensors else torch.zeros(0, 3, size, size),
            boxes=np.array([box[5] for box in crops], dtype=np.float32).reshape(-1, 4),
            labels=np.array([self.column.get(box[4], -1) for box in crops], dtype=np.int16))


def _chunk_arrays(prepared: list[_PreparedImage], encoder: _Encoder, region_count: int, use_boxes: bool,
                  cfg: ExtractConfig) -> dict[str, np.ndarray]:
    """The backbone over one chunk: its whole images, then every crop of the chunk."""
    maps = encoder(torch.stack([p.whole for p in prepared]))
    global_features = maps.mean(dim=(2, 3)).numpy()
    count, dim = len(prepared), encoder.dim
    arrays = {"regions": np.zeros((count, region_count, dim), dtype=np.float16),
              "region_boxes": np.zeros((count, region_count, 4), dtype=np.float32),
              "region_mask": np.zeros((count, region_count), dtype=np.uint8),
              "image": global_features.astype(np.float16)}
    if not use_boxes:
        arrays["regions"][:] = F.adaptive_avg_pool2d(maps, cfg.grid).flatten(2).transpose(1, 2).numpy()
        arrays["region_boxes"][:], arrays["region_mask"][:] = _grid_boxes(cfg.grid), 1
        return arrays
    arrays["region_labels"] = np.full((count, region_count), -1, dtype=np.int16)
    features = encoder(torch.cat([p.crops for p in prepared])).mean(dim=(2, 3)).numpy()
    offset = 0
    for i, p in enumerate(prepared):
        n = len(p.crops)
        if n == 0:  # an image without boxes: its global feature is its one region
            arrays["regions"][i, 0], arrays["region_boxes"][i, 0], arrays["region_mask"][i, 0] = global_features[i], [0, 0, 1, 1], 1
            continue
        arrays["regions"][i, :n], arrays["region_boxes"][i, :n] = features[offset : offset + n], p.boxes
        arrays["region_mask"][i, :n], arrays["region_labels"][i, :n] = 1, p.labels
        offset += n
    return arrays


def _resume_point(partial: Path, config_record: dict, overwrite: bool, total: int) -> int:
    """Images already done in `partial` by a run of the same config (0: start over in a fresh folder)."""
    state_path = partial / "progress.json"
    if partial.exists():
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
        if state.get("config") == config_record and not overwrite:
            logger.info("resuming %s: %d of %d images done", partial, int(state["done"]), total)
            return int(state["done"])
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    return 0


def _present_items(items: list[ExtractItem], images_dir: Path, captions_file, notes: dict) -> list[ExtractItem]:
    """The items whose image file is there (the rest counted in notes); none at all is an error."""
    root = images_dir.resolve()
    for item in items:  # a listed name may not reach outside --images (../, an absolute path, a symlink)
        if not (images_dir / item.file_name).resolve().is_relative_to(root):
            raise DataFormatError(captions_file, f"file_name {item.file_name!r}", f"a file inside --images {images_dir}",
                                  "a path that leads outside it")
    present = [item for item in items if (images_dir / item.file_name).is_file()]
    notes["missing_image_files"] = len(items) - len(present)
    if not present:
        raise SemshareError(f"{images_dir}: none of the images named in {captions_file} is there")
    return present


@dataclass
class _ChunkWriter:
    """Encodes decoded images chunk by chunk and writes their rows (features, boxes, labels)."""

    writer: DatasetWriter
    images_dir: Path
    encoder: object
    region_count: int
    use_boxes: bool
    cfg: ExtractConfig
    column: dict[str, int]  # label name -> label column

    def write(self, start: int, chunk: list[ExtractItem], prepared: list) -> None:
        """Encode one chunk of decoded images and write its rows from `start`."""
        for item, p in zip(chunk, prepared):
            if p.error:
                where = (self.images_dir / item.file_name if p.error[0] == "image"
                         else (item.box_source or self.images_dir / item.file_name))
                raise DataFormatError(where, *p.error)
        arrays = _chunk_arrays(prepared, self.encoder, self.region_count, self.use_boxes, self.cfg)
        labels = np.zeros((len(chunk), len(self.column)), dtype=np.uint8)
        for i, item in enumerate(chunk):
            labels[i, [self.column[n] for n in item.labels if n in self.column]] = 1
        self.writer.write_rows(start, labels=labels, **arrays)


THUMBNAIL_SIZE = 256  # the longest side of the copies a dataset keeps of its photos, for the page and figures


def write_thumbnails(folder: Path, images_dir: Path, items: list[ExtractItem]) -> list[str]:
    """A small JPEG copy of every photo in `folder`/thumbnails/ (longest side 256 px), so the dataset serves
    its own images wherever the originals are; -> image_files.txt's entries, relative to the dataset."""
    from PIL import Image

    (folder / "thumbnails").mkdir(exist_ok=True)
    names = []
    for row, item in enumerate(items):
        name = f"thumbnails/{row:07d}.jpg"
        with Image.open(images_dir / item.file_name) as image:
            copy = image.convert("RGB")
            copy.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            copy.save(folder / name, format="JPEG", quality=85)
        names.append(name)
    return names


def check_extract_config(cfg: ExtractConfig) -> None:
    """Every number in range before anything is read or written (one line naming the flag)."""
    for flag, value, low, high in (("--grid", cfg.grid, 1, 32), ("--max-regions", cfg.max_regions, 1, 1000),
                                   ("--chunk", cfg.chunk_images, 1, 100_000)):
        if not low <= value <= high:
            raise SemshareError(f"{flag}: expected an integer in {low}..{high}, found {value}")
    if cfg.regions not in ("auto", "boxes", "grid"):
        raise SemshareError(f"--regions: expected auto, boxes or grid, found {cfg.regions!r}")
    if not 0 <= cfg.test_fraction < 1:
        raise SemshareError(f"--test-fraction: expected a fraction in [0, 1), found {cfg.test_fraction}")


def extract_dataset(request: ExtractRequest, cfg: ExtractConfig = ExtractConfig(), progress: bool = True,
                    workers: int = -1, stop_after_chunks: int | None = None) -> Path | None:
    """Write the dataset; returns its folder, or None when `stop_after_chunks` stopped it early (tests).
    `workers`: processes decoding and cropping ahead of the backbone (0: in this process; -1: auto, the
    cores beyond two, at most 4: on 2 cores a worker competes with the backbone's threads and measured
    slower, docs/PERFORMANCE.md); no effect on the features."""
    if workers < 0:
        workers = max(0, min(4, (os.cpu_count() or 1) - 2))
    check_extract_config(cfg)
    images_dir, out_dir, captions_file = Path(request.images_dir), Path(request.out_dir), Path(request.captions_file)
    split_file, overwrite = request.split_file, request.overwrite
    if out_dir.exists() and not overwrite:
        raise SemshareError(f"{out_dir} already exists; pass --overwrite to replace it")
    check_replaceable(out_dir, "meta.json")  # --overwrite replaces a dataset, never a run or other files
    items, label_names, notes = read_items(captions_file, request.annotations, split_file)
    items = _present_items(items, images_dir, captions_file, notes)
    use_boxes = cfg.regions == "boxes" or (cfg.regions == "auto" and any(item.boxes for item in items))
    encoder = _Encoder(cfg)
    region_count = cfg.max_regions if use_boxes else cfg.grid * cfg.grid
    column = {n: i for i, n in enumerate(label_names)}
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    state_path = partial / "progress.json"
    config_record = {"extract": asdict(cfg), **request.inputs_record(), "items": len(items), "use_boxes": use_boxes}
    done = _resume_point(partial, config_record, overwrite, len(items))
    writer = DatasetWriter(partial, len(items), len(label_names), DatasetLayout(
        regions=(region_count, encoder.dim), image_dim=encoder.dim, region_labels=use_boxes), create=done == 0)
    if done == 0:
        atomic_write_json(state_path, {"config": config_record, "done": 0})
    chunks_out = _ChunkWriter(writer, images_dir, encoder, region_count, use_boxes, cfg, column)
    inputs = _ImageInputs(items[done:], images_dir, use_boxes, cfg.max_regions, column, encoder.image_size)
    loader = torch.utils.data.DataLoader(inputs, batch_size=cfg.chunk_images, num_workers=workers, collate_fn=list,
                                         prefetch_factor=2 if workers else None)
    with progress_bar(progress, total=len(items), initial=done, unit="image", desc=f"extract {cfg.backbone}") as bar:
        for chunks, prepared in enumerate(loader, start=1):
            start = done + (chunks - 1) * cfg.chunk_images
            chunk = items[start : start + len(prepared)]
            chunks_out.write(start, chunk, prepared)
            atomic_write_json(state_path, {"config": config_record, "done": start + len(chunk)})
            bar.update(len(chunk))
            if stop_after_chunks is not None and chunks >= stop_after_chunks and start + len(chunk) < len(items):
                return None
    writer.write_captions([item.captions for item in items])
    writer.write_image_files(write_thumbnails(partial, images_dir, items))
    state_path.unlink()
    writer.finish(_splits(items, cfg), label_names, request.name or out_dir.name, {
        "source": "semshare extract", "source_images": str(images_dir.resolve()), "backbone": cfg.backbone,
        "regions_from": "boxes" if use_boxes else f"{cfg.grid}x{cfg.grid} grid", "thumbnails": THUMBNAIL_SIZE,
        "extract": asdict(cfg), **notes},
        sources={"captions.jsonl": captions_file,
                 "labels.npy": (paths_of(request.annotations) if request.annotations else None) or captions_file,
                 "split.json": split_file or captions_file})
    publish_directory(partial, out_dir)  # resumable until here; then put in place as every atomic folder write
    return out_dir
