"""A gallery that grows and shrinks: `semshare index add` / `semshare index remove` on an index folder.

The new version is written beside the old one and put in place by renames (fileio.atomic_directory): a
killed add or remove leaves the old index whole, and a reader opens either version, never a mix. One writer
at a time (a lock on the folder). What an update keeps equal to a full rebuild over the same items:

- exact backends (exact-torch, faiss-flat): the same vectors in the same order, so the same results;
- faiss-hnsw: new vectors linked into the graph as a build links them; a removal builds the graph again over
  the vectors kept (FAISS cannot unlink a node);
- faiss-ivfpq: new vectors encoded with the trained quantiser and lists (not trained again), a removal drops
  entries from their lists; recall against a rebuild in docs/PERFORMANCE.md;
- a backend without `extended` / `without` is built again over its stored vectors.

Added items: photos (`--images DIR`, a gallery built from photos: embedded and labelled as `index build
--images` does; files already in it are skipped) or rows of the index's dataset (`--rows`, a gallery built
from a dataset). The manifest's `generation` counts the updates; `serve` answers from a new version from
its next batch of queries on (search/service.py).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.fileio import folder_lock
from semshare.index.base import build_backend, normalize_rows
from semshare.search.gallery import Index, IndexManifest, item_records_of, write_index_folder


def add_to_index(folder: str | Path, *, images_dir: str | Path | None = None, captions_file: str | Path | None = None,
                 rows: list[int] | None = None, data_dir: str | Path | None = None, batch_size: int = 256) -> tuple[IndexManifest, int]:
    """Add photos (`images_dir`, a photo gallery) or dataset rows (`rows`, a dataset gallery) to the index
    at `folder`: -> (the new manifest, how many items were added)."""
    folder = Path(folder)
    if (images_dir is None) == (rows is None):
        raise SemshareError("index add: give the photos (--images DIR) or the dataset rows (--rows)")
    with folder_lock(folder, "index"):
        index = Index(folder, data_dir)
        if images_dir is not None:
            vectors, records, captions = _new_photos(index, Path(images_dir), captions_file)
        else:
            vectors, records, captions = _new_rows(index, rows, batch_size)
        if not records:
            return index.manifest, 0
        backend = _extended(index, vectors)
        position_base = len(index.items)
        caption_vectors = _caption_tensors(index)
        if caption_vectors is not None and captions is not None:
            added_vectors, added_positions = captions
            caption_vectors = (np.concatenate([caption_vectors[0], added_vectors]),
                               np.concatenate([caption_vectors[1], added_positions + position_base]))
        elif caption_vectors is not None:  # photos without caption vectors: none of theirs to rank
            caption_vectors = None
        ids = np.concatenate([index.ids, np.array([r["id"] for r in records], dtype=np.int64)])
        manifest = _write(index, backend, ids, index.items + records, caption_vectors)
    return manifest, len(records)


def remove_from_index(folder: str | Path, ids: list[int], data_dir: str | Path | None = None) -> IndexManifest:
    """Remove the items `ids` from the index at `folder` (every id must be in it; at least one item stays)."""
    folder = Path(folder)
    with folder_lock(folder, "index"):
        index = Index(folder, data_dir)
        unknown = sorted({int(i) for i in ids} - set(index.position_of))
        if unknown:
            raise SemshareError(f"{folder}: --ids: expected ids of this gallery's items, found {len(unknown)} that are "
                                f"not, e.g. {unknown[0]}")
        positions = np.array(sorted({index.position_of[int(i)] for i in ids}), dtype=np.int64)
        if len(positions) == len(index.items):
            raise SemshareError(f"{folder}: --ids: this would remove every item; an index holds at least one "
                                "(build a new one instead)")
        if hasattr(index.backend, "without"):
            backend = index.backend.without(positions, dict(index.manifest.params))
        else:
            backend = build_backend(index.manifest.kind, np.delete(index.backend.vectors(), positions, axis=0),
                                    dict(index.manifest.params))
        keep = np.ones(len(index.items), dtype=bool)
        keep[positions] = False
        new_position = np.cumsum(keep) - 1
        caption_vectors = _caption_tensors(index)
        if caption_vectors is not None:
            vectors, owners = caption_vectors
            kept = keep[owners]
            caption_vectors = (vectors[kept], new_position[owners[kept]])
        items = [item for item, k in zip(index.items, keep) if k]
        return _write(index, backend, index.ids[keep], items, caption_vectors)


def _extended(index: Index, vectors: np.ndarray):
    vectors = normalize_rows(vectors)
    if hasattr(index.backend, "extended"):
        return index.backend.extended(vectors, dict(index.manifest.params))
    return build_backend(index.manifest.kind, np.concatenate([index.backend.vectors(), vectors]),
                         dict(index.manifest.params))


def _new_photos(index: Index, images_dir: Path, captions_file) -> tuple[np.ndarray, list[dict], None]:
    from semshare.search.photos import photo_files, photo_items

    if index.manifest.source != "images":
        raise SemshareError(f"{index.folder}: this index holds rows of a dataset: add rows with --rows, or make a "
                            "gallery of photos with `semshare index build RUN --images DIR`")
    gallery_folder = Path(index.data_dir).resolve()
    images_dir = images_dir.resolve()
    if not images_dir.is_relative_to(gallery_folder):
        raise SemshareError(f"--images {images_dir}: expected a folder inside the gallery's photo folder "
                            f"{gallery_folder} (serve shows only files there); put the photos there first")
    present = {str(Path(item["image_file"]).resolve()) for item in index.items if item.get("image_file")}
    files = [path for path in photo_files(images_dir) if str(path) not in present]
    if not files:
        return np.zeros((0, index.manifest.dim), np.float32), [], None
    first_id = int(index.ids.max()) + 1 if len(index.ids) else 0
    embs, records = photo_items(index.run, files, gallery_folder, captions_file, index.manifest.label_threshold,
                                first_id)
    return embs, records, None


def _new_rows(index: Index, rows: list[int], batch_size: int) -> tuple[np.ndarray, list[dict], tuple | None]:
    from semshare.search.gallery import _caption_vectors

    if index.manifest.source != "dataset":
        raise SemshareError(f"{index.folder}: this index holds photos: add photos with --images DIR")
    run, dataset = index.run, index.run.dataset
    if dataset is None:
        raise SemshareError(f"{index.folder}: --rows are rows of the index's dataset, and it is not there "
                            f"({index.manifest.data_dir}): give it with --data DIR")
    rows = np.array(sorted({int(r) for r in rows}), dtype=np.int64)
    outside = rows[(rows < 0) | (rows >= dataset.num_items)]
    if len(outside):
        raise SemshareError(f"--rows: expected rows of {dataset.name} (0..{dataset.num_items - 1}), found {int(outside[0])}")
    side = index.manifest.side
    img, txt = run.embed(rows, sides=(side,), batch_size=batch_size)
    table = img if side == "image" else txt
    already = [int(i) for i in table.ids if int(i) in index.position_of]
    if already:
        raise SemshareError(f"--rows: {len(already)} of these items are in the index already (e.g. id {already[0]}); "
                            "remove them first to add them again")
    item_rows = table.ids if side == "image" else dataset.text_items(rows, run.text_source).rows
    records = item_records_of(dataset, side, table.ids, item_rows)
    captions = None
    if side == "image" and index.caption_vectors is not None:
        added = _caption_vectors(run, rows, table.ids, batch_size)
        captions = None if added is None else (added["vectors"].numpy(), added["positions"].numpy())
    return table.emb, records, captions


def _caption_tensors(index: Index) -> tuple[np.ndarray, np.ndarray] | None:
    """The index's caption vectors and the gallery position of each, in stored order (None without)."""
    if index.caption_vectors is None:
        return None
    vectors = [v for v in index.caption_vectors]
    owners = np.concatenate([np.full(len(v), p, dtype=np.int64) for p, v in enumerate(vectors)])
    dim = index.manifest.dim
    return (np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32)), owners


def _write(index: Index, backend, ids: np.ndarray, items: list[dict], caption_vectors) -> IndexManifest:
    import torch

    from semshare.search.gallery import bytes_per_item

    manifest = IndexManifest(**{**asdict(index.manifest), "size": backend.size, "bytes_per_item": bytes_per_item(backend),
                                "generation": index.manifest.generation + 1,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    captions = None if caption_vectors is None else {
        "vectors": torch.from_numpy(np.ascontiguousarray(caption_vectors[0], dtype=np.float32)),
        "positions": torch.from_numpy(np.ascontiguousarray(caption_vectors[1], dtype=np.int64))}
    write_index_folder(index.folder, backend, ids, items, manifest, captions, overwrite=True)
    return manifest
