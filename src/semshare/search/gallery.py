"""Index folders and the queries run against them.

An index folder (written atomically by `build_gallery`):
  manifest.json   kind, search parameters, side, size, dim, the run (folder, checkpoint) and the dataset
  ids.npy         (G,) int64 item id of each gallery position (image: dataset row; text: global text item id)
  items.jsonl     one JSON object per position: id, row, labels (names), captions, image_file
  index.faiss | vectors.safetensors   the backend's own file

`semshare.api.load_index` opens a folder with the run it came from and answers text queries (tokenised
with the run's vocabulary) and item queries (an image row of the dataset, encoded with the run's image side).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from semshare.data.text import as_sentence
from semshare.errors import OutputExistsError, SemshareError
from semshare.fileio import atomic_directory, atomic_write_json, write_files_manifest
from semshare.index import build_backend

MANIFEST = "manifest.json"
MAX_QUERY_CHARS = 1000
SIDES = ("image", "text")


@dataclass
class IndexManifest:
    kind: str
    params: dict
    side: str
    size: int
    dim: int
    run_dir: str
    checkpoint: str
    data_dir: str
    split: str
    created: str = ""
    format: str = "semshare-index"
    version: int = 1


@dataclass
class SearchHit:
    """One ranked gallery item: rank (1 = best), score (cosine), id (image row or global text item id) and
    the item's record (labels, captions, image_file, row) as stored in the index's items.jsonl."""

    rank: int
    score: float
    id: int
    item: dict = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return list(self.item.get("labels", []))

    @property
    def captions(self) -> list[str]:
        return list(self.item.get("captions") or [])

    @property
    def image_file(self) -> str | None:
        return self.item.get("image_file")


def _gallery_rows(dataset, split: str) -> np.ndarray:
    if split == "all":
        return np.arange(dataset.num_items, dtype=np.int64)
    if split not in dataset.splits:
        raise SemshareError(f"{dataset.root}: no split {split!r}; known: all, {', '.join(dataset.splits)}")
    return np.asarray(dataset.splits[split], dtype=np.int64)


def _item_records(dataset, side: str, ids: np.ndarray, item_rows: np.ndarray) -> list[dict]:
    labels = np.asarray(dataset.labels)
    names = dataset.label_names
    captions = dataset.captions if dataset.has_captions else None
    files = dataset.image_files
    records = []
    for item_id, row in zip(ids.tolist(), item_rows.tolist()):
        record = {"id": item_id, "row": row, "labels": [names[c] for c in np.flatnonzero(labels[row])],
                  "image_file": files[row]}
        if captions is not None:
            if side == "image":
                record["captions"] = [as_sentence(c) for c in captions[row]]
            else:
                record["captions"] = [as_sentence(captions[row][item_id - int(dataset.caption_offsets[row])])]
        records.append(record)
    return records


def build_gallery(run_dir: str | Path, data_dir: str | Path, side: str, out_dir: str | Path,
                  kind: str = "faiss-flat", params: dict | None = None, split: str = "all",
                  checkpoint: str = "best", overwrite: bool = False, batch_size: int = 256) -> IndexManifest:
    """Embed the gallery (`side` items of `split`) with the run's model and write an index folder."""
    from semshare.training.experiment import load_run

    if side not in SIDES:
        raise SemshareError(f"--side must be one of {SIDES}; got {side!r}")
    if Path(out_dir).exists() and not overwrite:  # before the gallery is embedded, not after
        raise OutputExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    run = load_run(run_dir, data_dir, checkpoint)
    rows = _gallery_rows(run.dataset, split)
    img, txt = run.embed(rows, sides=(side,), batch_size=batch_size)
    table = img if side == "image" else txt
    item_rows = table.ids if side == "image" else run.dataset.text_items(rows, run.text_source).rows
    backend = build_backend(kind, table.emb, params)
    manifest = IndexManifest(kind=kind, params=dict(params or {}), side=side, size=backend.size, dim=backend.dim,
                             run_dir=str(Path(run_dir).resolve()), checkpoint=checkpoint,
                             data_dir=str(Path(data_dir).resolve()), split=split,
                             created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    records = _item_records(run.dataset, side, table.ids, item_rows)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        backend.save(tmp)
        np.save(tmp / "ids.npy", np.asarray(table.ids, dtype=np.int64))
        with open(tmp / "items.jsonl", "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        atomic_write_json(tmp / MANIFEST, asdict(manifest))
        write_files_manifest(tmp)
    return manifest


def read_manifest(folder: str | Path) -> IndexManifest:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise SemshareError(f"{path}: no such file; {folder} is not an index folder (make one with `semshare index build`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        manifest = IndexManifest(**raw)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise SemshareError(f"{path}: manifest: expected the fields of IndexManifest, found an unreadable file ({exc})") from None
    if manifest.format != "semshare-index" or manifest.side not in SIDES:
        raise SemshareError(f"{path}: format/side: expected semshare-index with side image|text, found "
                            f"{manifest.format!r} / {manifest.side!r}")
    return manifest
