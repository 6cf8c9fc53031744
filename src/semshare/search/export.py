"""Embeddings for the tools people already run: an Apache Parquet table of items and their vectors
(`semshare embed --format parquet`, `semshare index export`), readable by pandas, polars, DuckDB and the usual
vector stores' loaders.

Columns: id (int64: image row, or global text item id), row (int64: the dataset row), side (image | text),
labels (list<string>: the item's given labels), captions (list<string>: an image's captions, a text item's own
text), image_file (string, null without one), embedding (fixed_size_list<float32>[D], unit rows). The file's
metadata key "semshare" holds a JSON record of where the vectors came from (run, checkpoint, ranking, split
or index). Written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from semshare.errors import SemshareError
from semshare.fileio import atomic_file


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise SemshareError("Parquet output needs Apache Arrow's library: pip install 'semshare[parquet]'") from None
    return pyarrow


def write_items_parquet(path: str | Path, records: list[dict], emb: np.ndarray, side: str, provenance: dict) -> None:
    """One row per item: `records` (id, row, labels, captions, image_file) beside its (D,) embedding."""
    pa = _pyarrow()
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if len(records) != len(emb):
        raise SemshareError(f"internal: {len(records)} item records for {len(emb)} embeddings")
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), type=pa.float32()), emb.shape[1] if emb.ndim == 2 else 0)
    table = pa.table({
        "id": pa.array([int(r["id"]) for r in records], type=pa.int64()),
        "row": pa.array([int(r["row"]) for r in records], type=pa.int64()),
        "side": pa.array([side] * len(records), type=pa.string()),
        "labels": pa.array([list(r.get("labels", [])) for r in records], type=pa.list_(pa.string())),
        "captions": pa.array([list(r.get("captions") or []) for r in records], type=pa.list_(pa.string())),
        "image_file": pa.array([r.get("image_file") or None for r in records], type=pa.string()),
        "embedding": vectors,
    }).replace_schema_metadata({"semshare": json.dumps(provenance)})
    with atomic_file(path, "wb") as handle:
        pa.parquet.write_table(table, handle)


def embedded_parquet(run, rows: np.ndarray, img, txt, out_dir: Path, split: str) -> None:
    """img_emb.parquet and txt_emb.parquet of a run's embedded rows (semshare embed --format parquet)."""
    from semshare.index.base import normalize_rows
    from semshare.search.gallery import item_records_of

    provenance = {"run_dir": str(Path(run.run_dir).resolve()), "checkpoint": run.checkpoint, "ranking": run.ranking,
                  "dataset": str(Path(run.dataset.root).resolve()), "split": split}
    item_rows = run.dataset.text_items(np.asarray(rows, dtype=np.int64), run.text_source).rows
    for side, table, owners in (("image", img, img.ids), ("text", txt, item_rows)):
        records = item_records_of(run.dataset, side, np.asarray(table.ids), np.asarray(owners))
        name = "img_emb.parquet" if side == "image" else "txt_emb.parquet"
        write_items_parquet(Path(out_dir) / name, records, normalize_rows(table.emb), side, provenance)


def export_index_parquet(index, path: str | Path) -> int:
    """An index's items and stored vectors as one Parquet table (semshare index export); -> the row count."""
    manifest = index.manifest
    provenance = {"index": str(Path(index.folder).resolve()), "kind": manifest.kind, "run_dir": str(index.run_dir),
                  "checkpoint": manifest.checkpoint, "ranking": manifest.ranking, "split": manifest.split}
    write_items_parquet(path, index.items, index.backend.vectors(), manifest.side, provenance)
    return len(index.items)
