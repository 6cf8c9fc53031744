"""Evaluation protocols: which items are queries and which form the gallery.

- Default (MIRFlickr, NUS-WIDE, Wikipedia, Pascal): the query split is also the gallery; I2T ranks the
  split's text items for each of its images, T2I the reverse.
- A separate gallery split (e.g. MIRFlickr's `database`): queries from one split, gallery from another.
- COCO 5K / 1K: 5K = the whole test split (every caption a text item); 1K = the test split cut into
  `folds` consecutive equal parts, each its own query and gallery set, metrics averaged over folds.
- `dedupe_texts`: identical texts (after tokenisation) are kept once per set, the first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.dataset import Dataset, TextItems
from semshare.data.text import tokenize
from semshare.errors import DataFormatError, SemshareError
from semshare.evaluation.instance import instance_recall
from semshare.evaluation.retrieval import DirectionResult, MetricSpec, evaluate_direction


@dataclass(frozen=True)
class ProtocolConfig:
    query_split: str = "test"
    gallery_split: str | None = None  # None: the query split is the gallery
    text_source: str = "captions"  # "captions" (every caption an item) or "vectors" (text.npy, one per row)
    folds: int = 1  # 5 gives COCO 1K from a 5K test split
    dedupe_texts: bool = False


@dataclass(frozen=True)
class EvalSet:
    """Rows and text items of one evaluation set (one fold)."""

    query_img_rows: np.ndarray
    query_txt: TextItems
    gallery_img_rows: np.ndarray
    gallery_txt: TextItems


def _dedupe(items: TextItems) -> TextItems:
    if items.texts is None:
        return items
    seen: set[tuple] = set()
    keep = []
    for i, text in enumerate(items.texts):
        key = tuple(tokenize(text))
        if key not in seen:
            seen.add(key)
            keep.append(i)
    keep_index = np.asarray(keep, dtype=np.int64)
    return TextItems(rows=items.rows[keep_index], item_ids=items.item_ids[keep_index],
                     texts=[items.texts[i] for i in keep])


def build_eval_sets(dataset: Dataset, protocol: ProtocolConfig) -> list[EvalSet]:
    query_rows = dataset.split(protocol.query_split)
    if len(query_rows) == 0:
        raise SemshareError(f"{dataset.root}: split {protocol.query_split!r} is empty or absent; nothing to evaluate")
    gallery_split = protocol.gallery_split or protocol.query_split
    if protocol.folds > 1:
        if gallery_split != protocol.query_split:
            raise SemshareError("folds need the query split to be its own gallery")
        if len(query_rows) % protocol.folds:
            raise SemshareError(f"{len(query_rows)} query rows do not split into {protocol.folds} equal folds")
        fold_rows = np.split(query_rows, protocol.folds)
        pairs = [(rows, rows) for rows in fold_rows]
    else:
        pairs = [(query_rows, dataset.split(gallery_split))]
    sets = []
    for queries, gallery in pairs:
        query_txt = dataset.text_items(queries, protocol.text_source)
        gallery_txt = dataset.text_items(gallery, protocol.text_source)
        if protocol.dedupe_texts:
            query_txt, gallery_txt = _dedupe(query_txt), _dedupe(gallery_txt)
        sets.append(EvalSet(queries, query_txt, gallery, gallery_txt))
    return sets


@dataclass(frozen=True)
class EmbeddingTable:
    """Embeddings keyed by item id (image row, or global text item id)."""

    ids: np.ndarray
    emb: np.ndarray

    def take(self, wanted: np.ndarray, what: str) -> np.ndarray:
        position = {int(i): p for p, i in enumerate(self.ids)}
        missing = [int(i) for i in wanted if int(i) not in position]
        if missing:
            raise SemshareError(f"{what} embeddings lack {len(missing)} needed items, e.g. id {missing[0]}")
        return np.asarray(self.emb)[[position[int(i)] for i in wanted]]


def load_embedding_table(path, expected_rows: int | None = None, what: str = "embedding") -> EmbeddingTable:
    """Read `.npz` (arrays `emb` (M, D) and `ids` (M,)) or `.npy` (M, D) covering every item of the dataset."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, what, "an existing .npz or .npy file", "no such file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataFormatError(path, what, "a NumPy .npz or .npy file", f"unreadable ({exc})") from None
    if isinstance(loaded, np.ndarray):
        if loaded.dtype.kind not in "fiu":
            raise DataFormatError(path, what, "a numeric (items, dim) array", f"dtype {loaded.dtype}")
        if loaded.ndim != 2:
            raise DataFormatError(path, what, "a 2-D array (items, dim)", f"shape {loaded.shape}")
        if expected_rows is not None and len(loaded) != expected_rows:
            raise DataFormatError(path, what, f"{expected_rows} rows (every item of the dataset) or an .npz with ids",
                                  f"{len(loaded)} rows")
        return EmbeddingTable(ids=np.arange(len(loaded)), emb=loaded)
    for key in ("emb", "ids"):
        if key not in loaded.files:
            raise DataFormatError(path, key, "arrays 'emb' (M, D) and 'ids' (M,)", f"arrays {loaded.files}")
    try:
        emb, ids = loaded["emb"], loaded["ids"]
    except ValueError as exc:  # an object array: never unpickled
        raise DataFormatError(path, "emb/ids", "numeric arrays", f"unreadable ({exc})") from None
    if emb.dtype.kind not in "fiu" or ids.dtype.kind not in "iu":
        raise DataFormatError(path, "emb/ids", "a float emb and integer ids", f"dtypes {emb.dtype} and {ids.dtype}")
    if emb.ndim != 2 or ids.shape != (len(emb),):
        raise DataFormatError(path, "emb/ids", "emb (M, D) and ids (M,)", f"{emb.shape} and {ids.shape}")
    if not np.isfinite(emb).all():
        raise DataFormatError(path, "emb", "finite values", "NaN or inf")
    return EmbeddingTable(ids=ids.astype(np.int64), emb=emb)


def _evaluate_set(dataset: Dataset, img_table: EmbeddingTable, txt_table: EmbeddingTable, eval_set: EvalSet,
                  spec: MetricSpec) -> dict[str, DirectionResult]:
    labels = dataset.labels
    img_query = img_table.take(eval_set.query_img_rows, "image")
    img_gallery = img_table.take(eval_set.gallery_img_rows, "image")
    txt_query = txt_table.take(eval_set.query_txt.item_ids, "text")
    txt_gallery = txt_table.take(eval_set.gallery_txt.item_ids, "text")
    results = {
        "i2t": evaluate_direction(img_query, txt_gallery, labels[eval_set.query_img_rows],
                                  labels[eval_set.gallery_txt.rows], spec),
        "t2i": evaluate_direction(txt_query, img_gallery, labels[eval_set.query_txt.rows],
                                  labels[eval_set.gallery_img_rows], spec),
    }
    # instance-level recall where every query's own items are in the gallery (a query split that is its own
    # gallery); another gallery split holds no query's own item, so R@k is left out there
    if spec.recall_k and np.isin(eval_set.query_img_rows, eval_set.gallery_txt.rows).all() \
            and np.isin(eval_set.query_txt.rows, eval_set.gallery_img_rows).all():
        results["i2t"].per_query.update(instance_recall(img_query, txt_gallery, eval_set.query_img_rows,
                                                        eval_set.gallery_txt.rows, spec.recall_k, spec.similarity))
        results["t2i"].per_query.update(instance_recall(txt_query, img_gallery, eval_set.query_txt.rows,
                                                        eval_set.gallery_img_rows, spec.recall_k, spec.similarity))
    return results


def table_from_folds(fold_results: list[dict[str, DirectionResult]]) -> dict[str, float]:
    table: dict[str, float] = {}
    for name in fold_results[0]["i2t"].per_query:
        for direction in ("i2t", "t2i"):
            table[f"{direction}/{name}"] = float(np.mean([f[direction].means()[name] for f in fold_results]))
        table[f"ave/{name}"] = (table[f"i2t/{name}"] + table[f"t2i/{name}"]) / 2
    return table


def evaluate_tables(
    dataset: Dataset,
    img_table: EmbeddingTable,
    txt_table: EmbeddingTable,
    protocol: ProtocolConfig = ProtocolConfig(),
    spec: MetricSpec = MetricSpec(),
    rows: np.ndarray | None = None,
) -> tuple[dict[str, float], list[dict[str, DirectionResult]]]:
    """Metric means (averaged over folds) and the per-fold direction results.

    `rows` given: one set of explicit rows, queries and gallery alike (e.g. a validation set carved from
    train), instead of the protocol's splits."""
    if rows is not None:
        items = dataset.text_items(rows, protocol.text_source)
        eval_sets = [EvalSet(np.asarray(rows), items, np.asarray(rows), items)]
    else:
        eval_sets = build_eval_sets(dataset, protocol)
    fold_results = [_evaluate_set(dataset, img_table, txt_table, eval_set, spec) for eval_set in eval_sets]
    return table_from_folds(fold_results), fold_results


def evaluate_rows(dataset: Dataset, img_table: EmbeddingTable, txt_table: EmbeddingTable, rows: np.ndarray,
                  text_source: str = "captions", spec: MetricSpec = MetricSpec()) -> dict[str, float]:
    """The default protocol on explicit rows: rows are queries and gallery."""
    return evaluate_tables(dataset, img_table, txt_table, ProtocolConfig(text_source=text_source), spec, rows)[0]
