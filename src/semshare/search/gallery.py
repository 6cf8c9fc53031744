"""Index folders: their writer (`build_gallery`) and their reader (`Index`, `load_index`), side by side.

An index folder (written atomically by `build_gallery`):
  manifest.json   kind, search parameters, side, size, dim, the run (folder, checkpoint) and the dataset
  ids.npy         (G,) int64 item id of each gallery position (image: dataset row; text: global text item id)
  items.jsonl     one JSON object per position: id, row, labels (names), captions, image_file
  index.faiss | vectors.safetensors   the backend's own file

`load_index` opens a folder with the run it came from and answers text queries (tokenised with the run's
vocabulary) and item queries (an image row of the dataset, encoded with the run's image side).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np

from semshare.data.text import as_sentence
from semshare.errors import OutputExistsError, SemshareError
from semshare.fileio import (atomic_directory, atomic_write_json, read_tensors, safetensors_bytes, verify_files_manifest,
                             write_files_manifest)
from semshare.index.base import normalize_rows
from semshare.index import build_backend
from semshare.names import SIDES
from semshare.index.base import load_backend, search_time_parameters
from semshare.evaluation.reading import QueryReading, read_query, validation_threshold
from semshare.training.experiment import load_run
from semshare.training.finished_run import MAX_QUERY_CHARS, Run
from semshare.training.run_folder import recorded_path, recorded_paths

__all__ = ["MAX_QUERY_CHARS", "SIDES", "IndexManifest", "SearchHit", "QueryRequest", "Answer", "Index", "build_gallery",
           "load_index", "read_manifest"]

logger = logging.getLogger(__name__)
MANIFEST = "manifest.json"
MAX_K = 1000  # hits one query may ask for (the CLI's -k and HTTP's k share it)


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
    run_dir_absolute: str = ""  # run_dir and data_dir are relative to the index folder; these, absolute
    data_dir_absolute: str = ""
    ranking: str = "label"  # the run's embeddings it holds: "combined" (with its instance head) or "label"
    weak_threshold: float = -1.0  # a query whose best label is below this is weak (-1: the run reads no labels)
    source: str = "dataset"  # "dataset": rows of the run's dataset; "images": a folder of new photos (search/photos.py)
    label_threshold: float = -1.0  # "images": the reading's threshold for an item's labels (-1: none read)
    generation: int = 0  # how many `index add` / `index remove` made this version from the one built
    run_id: str = ""  # the run that embedded the gallery (its identity.json) and its checkpoint's weights
    checkpoint_sha256: str = ""  # ("": an index built before identities: the run it names is taken as it is)
    bytes_per_item: int = 0  # what the backend holds per item beside its id (float32: 4 D; codes: B / 8; 0: unrecorded)


@dataclass
class SearchHit:
    """One ranked gallery item: rank (1 = best), score (cosine), id (image row or global text item id) and
    the item's record (labels, captions, image_file, row) as stored in the index's items.jsonl."""

    rank: int
    score: float
    id: int
    item: dict = field(default_factory=dict)
    caption_order: list[int] | None = None  # the item's captions, closest to the query first (None: as stored)

    @property
    def labels(self) -> list[str]:
        return list(self.item.get("labels", []))

    @property
    def captions(self) -> list[str]:
        """The item's captions, the one closest to the query first when the index keeps caption embeddings."""
        captions = list(self.item.get("captions") or [])
        return [captions[i] for i in self.caption_order] if self.caption_order is not None else captions

    @property
    def image_file(self) -> str | None:
        """The image's file on this machine (None without one); never serialised: see `as_dict`."""
        return self.item.get("image_file")

    def as_dict(self) -> dict:
        """The one hit schema, for `semshare search --json`, HTTP /search and Python alike: rank, score, id,
        row, labels, captions and image_url (the path a semshare server of this index serves the image at;
        None without an image file), and whether its captions come closest to the query first
        (`captions_ranked`). No file path of this machine is in it."""
        return item_record(self.item) | {"captions": self.captions, "captions_ranked": self.caption_order is not None,
                                         "rank": self.rank, "score": self.score}


@dataclass(frozen=True)
class LabelFacet:
    """Restrict (or, with `boost`, reorder) a search to the gallery items that carry `labels`: all of them
    (`match="all"`) or any (`match="any"`)."""

    labels: tuple[str, ...]
    match: str = "all"
    boost: bool = False

    def __post_init__(self):
        if not self.labels:
            raise SemshareError("a label facet needs at least one label")
        if self.match not in ("all", "any"):
            raise SemshareError(f"label match: expected all or any, found {self.match!r}")


def item_record(item: dict) -> dict:
    """A gallery item as every client sees it (the hit schema without rank and score)."""
    return {"id": item["id"], "row": item["row"], "labels": list(item.get("labels", [])),
            "captions": list(item.get("captions") or []),
            "image_url": f"/items/{item['id']}/image" if item.get("image_file") else None}


@dataclass(frozen=True)
class QueryRequest:
    """One query: exactly one of `text` (a sentence or tag words), `item_id` (an image row of the index's
    dataset) and `image_file` (a new image: a path, or its bytes as uploaded), the k best hits wanted, and an
    optional label facet."""

    text: str | None = None
    item_id: int | None = None
    image_file: str | Path | bytes | None = None
    k: int = 10
    facet: LabelFacet | None = None

    def __post_init__(self):
        if sum(value is not None for value in (self.text, self.item_id, self.image_file)) != 1:
            raise SemshareError("a query is exactly one of a text, an image id and an image file")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or not 1 <= self.k <= MAX_K:
            raise SemshareError(f"k: expected an integer in 1..{MAX_K}, found {self.k!r}"[:120])
        if self.text is not None and not isinstance(self.text, str):
            raise SemshareError(f"text: expected a string, found {type(self.text).__name__}")
        if self.item_id is not None and (isinstance(self.item_id, bool) or not isinstance(self.item_id, (int, np.integer))):
            raise SemshareError(f"item_id: expected an integer, found {self.item_id!r}"[:120])


@dataclass
class Answer:
    """The answer to one QueryRequest: the hits, the text's words outside the run's vocabulary (dropped) and
    what the model read in the query (None for a run without a label classifier, or an image file)."""

    hits: list[SearchHit]
    unknown_words: list[str] = field(default_factory=list)
    reading: QueryReading | None = None
    notes: list[str] = field(default_factory=list)  # one line each about how the query was read

    @property
    def weak(self) -> bool:
        return bool(self.reading is not None and self.reading.weak)

    def as_dict(self, request: QueryRequest, gallery_side: str) -> dict:
        """The one answer schema: `semshare search --json` prints it and HTTP /search returns it."""
        facet = request.facet
        query = {"text": request.text, "item_id": request.item_id, "k": request.k,
                 "labels": list(facet.labels) if facet else None, "label_match": facet.match if facet else "all",
                 "label_boost": facet.boost if facet else False}
        return {"query": query, "gallery_side": gallery_side, "unknown_words": list(self.unknown_words),
                "reading": self.reading.as_dict() if self.reading is not None else None, "notes": list(self.notes),
                "results": [hit.as_dict() for hit in self.hits]}


def gallery_rows(dataset, split: str) -> np.ndarray:
    """The rows of `split` (all: every row), or one error listing the splits there are."""
    if split == "all":
        return np.arange(dataset.num_items, dtype=np.int64)
    if split not in dataset.splits:
        raise SemshareError(f"{dataset.root}: no split {split!r}; known: all, {', '.join(dataset.splits)}")
    return np.asarray(dataset.splits[split], dtype=np.int64)


def item_records_of(dataset, side: str, ids: np.ndarray, item_rows: np.ndarray) -> list[dict]:
    """The record of each gallery item (id, row, labels, captions, image_file) as items.jsonl holds it."""
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


def build_gallery(run: Run, side: str, out_dir: str | Path, kind: str = "faiss-flat", params: dict | None = None,
                  split: str = "all", overwrite: bool = False, batch_size: int = 256) -> IndexManifest:
    """Embed the gallery (`side` items of `split` of the run's dataset) with a loaded run (load_run) and
    write an index folder."""
    if side not in SIDES:
        raise SemshareError(f"--side must be one of {SIDES}; got {side!r}")
    if Path(out_dir).exists() and not overwrite:  # before the gallery is embedded, not after
        raise OutputExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    rows = gallery_rows(run.dataset, split)
    img, txt = run.embed(rows, sides=(side,), batch_size=batch_size)
    table = img if side == "image" else txt
    item_rows = table.ids if side == "image" else run.dataset.text_items(rows, run.text_source).rows
    backend = build_backend(kind, table.emb, params)
    # the run and the dataset are recorded relative to the index folder and absolute (recorded_path picks)
    paths = {**recorded_paths(out_dir, "run_dir", run.run_dir), **recorded_paths(out_dir, "data_dir", run.dataset.root)}
    manifest = IndexManifest(kind=kind, params=dict(params or {}), side=side, size=backend.size, dim=backend.dim,
                             checkpoint=run.checkpoint, split=split,
                             ranking=run.ranking,
                             created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **paths, **run_record(run),
                             bytes_per_item=bytes_per_item(backend))
    records = item_records_of(run.dataset, side, table.ids, item_rows)
    manifest.weak_threshold = weak_threshold_of(run)
    captions = _caption_vectors(run, rows, table.ids, batch_size) if side == "image" else None
    write_index_folder(out_dir, backend, table.ids, records, manifest, captions, overwrite)
    return manifest


def write_index_folder(out_dir: Path, backend, ids: np.ndarray, records: list[dict], manifest: IndexManifest,
                       captions: dict | None = None, overwrite: bool = False) -> None:
    """The one writer of an index folder (build, photos, add / remove): atomic, files.json last;
    `captions`: {"vectors", "positions"} tensors of an image gallery's captions, or None."""
    with atomic_directory(out_dir, overwrite=overwrite, replaces=MANIFEST) as tmp:
        backend.save(tmp)
        if captions is not None:
            (tmp / CAPTIONS_FILE).write_bytes(safetensors_bytes(captions))
        np.save(tmp / "ids.npy", np.asarray(ids, dtype=np.int64))
        with open(tmp / "items.jsonl", "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        atomic_write_json(tmp / MANIFEST, asdict(manifest))
        write_files_manifest(tmp)


CAPTIONS_FILE = "caption_vectors.safetensors"


def _caption_vectors(run: Run, rows: np.ndarray, image_ids: np.ndarray, batch_size: int) -> dict | None:
    """The run's embedding of every caption of an image gallery (unit rows, the gallery's ranking space) and
    the gallery position each belongs to, in caption order: a hit's captions are then shown closest to the
    query first ("why it matched") with no model pass at query time. None for images without captions."""
    import torch

    if not run.dataset.has_captions or run.text_source != "captions":
        return None
    _, txt = run.embed(rows, sides=("text",), batch_size=batch_size)
    owners = run.dataset.text_items(rows, run.text_source).rows
    position = {int(row): p for p, row in enumerate(np.asarray(image_ids).tolist())}
    return {"vectors": torch.from_numpy(normalize_rows(txt.emb)),
            "positions": torch.from_numpy(np.array([position[int(r)] for r in owners], dtype=np.int64))}


def weak_threshold_of(run: Run) -> float:
    """The best-label probability 95% of the run's validation captions reach; -1 for a run that reads no
    labels (no classifier) or has no validation captions."""
    if not run.capabilities.label_classifier:
        return -1.0
    threshold = validation_threshold(run)
    return round(threshold, 6) if np.isfinite(threshold) else -1.0


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
    for key, kind, low in (("size", int, 1), ("dim", int, 1), ("version", int, 1), ("params", dict, None),
                           ("generation", int, 0), ("run_id", str, None), ("checkpoint_sha256", str, None),
                           ("bytes_per_item", int, 0),
                           ("kind", str, None), ("run_dir", str, None), ("checkpoint", str, None),
                           ("data_dir", str, None), ("split", str, None), ("run_dir_absolute", str, None),
                           ("data_dir_absolute", str, None), ("ranking", str, None)):
        value = getattr(manifest, key)
        if type(value) is not kind or (low is not None and value < low):
            expected = f"an integer >= {low}" if kind is int else f"a {kind.__name__}"
            raise SemshareError(f"{path}: {key}: expected {expected}, found {value!r}"[:300])
    if type(manifest.weak_threshold) not in (int, float) or not -1 <= manifest.weak_threshold <= 1:
        raise SemshareError(f"{path}: weak_threshold: expected a probability (or -1), found {manifest.weak_threshold!r}")
    if manifest.ranking not in ("combined", "label") and not (
            manifest.ranking.startswith("hash:") and manifest.ranking[5:].isdigit()):
        raise SemshareError(f"{path}: ranking: expected combined, label or hash:BITS, found {manifest.ranking!r}")
    if manifest.source not in ("dataset", "images"):
        raise SemshareError(f"{path}: source: expected dataset or images, found {manifest.source!r}")
    return manifest


class Index:
    """An index folder plus the run that embedded it: text and image queries -> ranked gallery items."""

    def __init__(self, folder: str | Path, data_dir: str | Path | None = None, search_params: dict | None = None,
                 run: Run | None = None):
        """`run`: an already loaded run, used when it is the one the manifest names (a reopened version)."""
        self.folder = Path(folder)
        self.opened_with = (data_dir, search_params)
        self.stamp = manifest_stamp(self.folder)
        self.manifest = read_manifest(folder)
        verify_files_manifest(self.folder, "index")
        search_time = search_time_parameters(self.manifest.kind)
        params = {**{k: v for k, v in self.manifest.params.items() if k in search_time}, **(search_params or {})}
        self.backend = load_backend(self.manifest.kind, self.folder, params)
        self.ids, self.items = _read_ids(self.folder / "ids.npy"), _read_items(self.folder / "items.jsonl")
        if not (len(self.ids) == len(self.items) == self.backend.size == self.manifest.size):
            raise SemshareError(f"{self.folder}: ids.npy ({len(self.ids)}), items.jsonl ({len(self.items)}), the "
                                f"index ({self.backend.size}) and {MANIFEST} ({self.manifest.size}) disagree in size; "
                                "rebuild the index")
        if self.backend.dim != self.manifest.dim:
            raise SemshareError(f"{self.folder / MANIFEST}: dim: expected the index's vector size {self.backend.dim}, "
                                f"found {self.manifest.dim}; rebuild the index")
        self.position_of = {int(item_id): position for position, item_id in enumerate(self.ids.tolist())}
        self.caption_vectors = self._read_caption_vectors()
        record = asdict(self.manifest)
        self.run_dir = recorded_path(self.folder, record, "run_dir")
        self.data_dir = recorded_path(self.folder, record, "data_dir")
        recorded = recorded_path(self.folder, record, "data_dir")  # gone: the run answers text queries on its own
        if self.manifest.source == "images":  # data_dir is the photos' folder: the run brings its own dataset
            data = data_dir
        else:
            data = data_dir or (recorded if Path(recorded).is_dir() else None)
        same = (run is not None and run.run_dir is not None and Path(run.run_dir).resolve() == Path(self.run_dir).resolve()
                and run.checkpoint == self.manifest.checkpoint and run.ranking == self.manifest.ranking)
        self.run = run if same else load_run(self.run_dir, data, self.manifest.checkpoint, self.manifest.ranking)
        check_index_of_run(self.folder, self.manifest, self.run)
        if self.run.dataset is not None and self.manifest.source == "dataset":  # where its images are now
            files = self.run.dataset.image_files
            for item in self.items:
                item["image_file"] = files[item["row"]] if 0 <= item["row"] < len(files) else None

    def _read_caption_vectors(self) -> list[np.ndarray] | None:
        """Per gallery position, its captions' (n, D) embeddings (an index built before they were kept: None)."""
        path = self.folder / CAPTIONS_FILE
        if not path.exists():
            return None
        tensors = read_tensors(path, "the gallery's caption embeddings")
        vectors, positions = tensors["vectors"].numpy(), tensors["positions"].numpy()
        order = np.argsort(positions, kind="stable")  # captions in their own order within each item
        bounds = np.searchsorted(positions[order], np.arange(len(self.items) + 1))
        grouped = [vectors[order[bounds[p] : bounds[p + 1]]] for p in range(len(self.items))]
        if any(len(g) != len(item.get("captions") or []) for g, item in zip(grouped, self.items)):
            raise SemshareError(f"{path}: positions: expected one vector per caption of each item of items.jsonl, "
                                "found other counts; rebuild the index")
        return grouped

    def rank_captions(self, hits: list[SearchHit], query: np.ndarray) -> None:
        """Each hit's captions ordered by cosine to the query, closest first (ties: as stored)."""
        if self.caption_vectors is None:
            return
        for hit in hits:
            vectors = self.caption_vectors[self.position_of[hit.id]]
            if len(vectors):
                hit.caption_order = np.argsort(-(vectors @ np.asarray(query, dtype=np.float32)), kind="stable").tolist()

    def __repr__(self) -> str:
        m = self.manifest
        return f"Index({str(self.folder)!r}, side={m.side!r}, kind={m.kind!r}, size={m.size}, dim={m.dim}, split={m.split!r})"

    @property
    def accepts_text(self) -> bool:
        return self.run.accepts_text

    def item(self, item_id: int) -> dict:
        if item_id not in self.position_of:
            raise KeyError(item_id)
        return self.items[self.position_of[item_id]]

    def encode_text(self, text: str) -> tuple[np.ndarray, list[str]]:
        """(D,) query embedding and the query's unknown (dropped) words."""
        return self.run.encode_text(text)

    def read_text(self, text: str) -> QueryReading | None:
        """What the run read in a text query (evaluation.reading.QueryReading), None when it reads no labels."""
        return self.query(QueryRequest(text=text, k=1)).reading

    def query(self, request: QueryRequest) -> Answer:
        """The one query path (the CLI, the Python API and HTTP): the request's embedding, reading and hits."""
        answer = self.query_batch([request])[0]
        if isinstance(answer, SemshareError):
            raise answer
        return answer

    def query_batch(self, requests: Sequence[QueryRequest]) -> list[Answer | SemshareError]:
        """Each request's Answer (or the SemshareError that refuses it), the whole batch at once: the texts
        tokenised once each and through the model in one batch whose forward pass also gives their
        readings, the image rows in one batch, one backend search for every request without a facet."""
        readings = self.manifest.weak_threshold >= 0
        queries: list = [None] * len(requests)
        answers: list = [Answer([]) for _ in requests]
        texts = [i for i, r in enumerate(requests) if r.text is not None]
        for i, query in zip(texts, self.run.query_texts([requests[i].text for i in texts], with_labels=readings)):
            if isinstance(query, SemshareError):
                queries[i] = query
                continue
            queries[i] = query.emb
            answers[i] = Answer([], query.unknown, self.run.reading_of(query, self.manifest.weak_threshold))
        rows = [i for i, r in enumerate(requests) if r.item_id is not None]
        for i in rows:
            queries[i] = self.image_row_error(requests[i].item_id)
        rows = [i for i in rows if queries[i] is None]
        if rows and self.manifest.source == "images":
            for i in rows:
                queries[i] = self.encode_image_row(requests[i].item_id)
        elif rows:  # one batch through the image side
            for i, emb in zip(rows, self.run.encode_images(rows=[requests[i].item_id for i in rows])):
                queries[i], answers[i].reading = emb, self.read_image(requests[i].item_id)
        for i in (i for i, r in enumerate(requests) if r.image_file is not None):
            try:  # one pass: the embedding and what the model read in the image
                emb, probabilities = self.run.query_image_files([requests[i].image_file], with_labels=readings)
            except SemshareError as exc:
                queries[i] = exc
                continue
            queries[i] = emb[0]
            answers[i].notes += [line for line in (self.run.file_layout_note(),) if line]
            if probabilities is not None:
                answers[i].reading = read_query(probabilities[0], self.run.label_names, None, [],
                                                self.manifest.weak_threshold)
        good = [i for i, q in enumerate(queries) if not isinstance(q, SemshareError)]
        plain = [i for i in good if requests[i].facet is None]
        if plain:
            found = self.search_batch(np.stack([queries[i] for i in plain]), [requests[i].k for i in plain])
            for i, hits in zip(plain, found):
                answers[i].hits = hits
        for i in (i for i in good if requests[i].facet is not None):  # label facets: each on its own
            try:
                answers[i].hits = self.search_with_facet(queries[i], requests[i].k, requests[i].facet)
            except SemshareError as exc:  # an unknown label
                queries[i] = exc
        for i in (i for i in good if not isinstance(queries[i], SemshareError)):  # why each hit matched
            self.rank_captions(answers[i].hits, queries[i])
        return [query if isinstance(query, SemshareError) else answer for query, answer in zip(queries, answers)]

    def read_image(self, row: int) -> QueryReading | None:
        if self.manifest.weak_threshold < 0 or self.run.dataset is None:
            return None
        return self.run.read_image(row, self.manifest.weak_threshold)

    def image_row_error(self, row: int) -> SemshareError | None:
        """Why `row` cannot be an image query (None when it can)."""
        if self.manifest.source == "images":  # a photo gallery: an item id is one of its photos
            return None if row in self.position_of else SemshareError(
                f"item {row} is not a photo of this gallery (0..{len(self.items) - 1})")
        dataset = self.run.dataset
        if dataset is None:
            return SemshareError(f"image id queries need the index's dataset ({self.manifest.data_dir} is not there): "
                                 "give the dataset folder (--data / data_dir); text queries work without it")
        if 0 <= row < dataset.num_items:
            return None
        return SemshareError(f"image id {row} is not a row of dataset {dataset.name} (0..{dataset.num_items - 1})")

    def encode_image_row(self, row: int) -> np.ndarray:
        error = self.image_row_error(row)
        if error is not None:
            raise error
        if self.manifest.source == "images":  # "find similar": the photo's own stored vector
            return self.stored_vectors[self.position_of[row]]
        return self.run.encode_images(rows=[row])[0]

    @cached_property
    def stored_vectors(self) -> np.ndarray:
        return normalize_rows(self.backend.vectors())

    def encode_image_file(self, path: str | Path) -> np.ndarray:
        return self.run.encode_image_files([path])[0]

    def search(self, query: np.ndarray, k: int, facet: "LabelFacet | None" = None) -> list[SearchHit]:
        """The k best gallery items for a (D,) query embedding; `facet`: only (or first) the items that carry
        its labels."""
        if facet is not None:
            return self.search_with_facet(query, k, facet)
        return self.search_batch(np.asarray(query)[None], [k])[0]

    def label_positions(self, facet: "LabelFacet") -> np.ndarray:
        """(size,) bool: the gallery positions whose items carry the facet's labels (all of them, or any)."""
        known = self._label_columns
        unknown = [name for name in facet.labels if name not in known]
        if unknown:
            raise SemshareError(f"unknown label {unknown[0]!r}; this gallery's labels: {', '.join(sorted(known))}")
        columns = self._item_labels[:, [known[name] for name in facet.labels]]
        return columns.all(axis=1) if facet.match == "all" else columns.any(axis=1)

    def search_with_facet(self, query: np.ndarray, k: int, facet: "LabelFacet") -> list[SearchHit]:
        """Exact with every index kind: the index's own ranking, read deeper until k matching items are
        found (or the whole gallery is read), then filtered; `boost` puts the matching items first and the
        best others after them."""
        allowed = self.label_positions(facet)
        wanted = min(k, int(allowed.sum()))
        depth = min(self.backend.size, max(4 * k, 64))
        while True:
            scores, positions = self.backend.search(np.ascontiguousarray(np.asarray(query)[None], dtype=np.float32), depth)
            pairs = [(float(score), int(position)) for score, position in zip(scores[0], positions[0]) if position >= 0]
            matching = [pair for pair in pairs if allowed[pair[1]]]
            if len(matching) >= wanted or depth >= self.backend.size:
                break
            depth = min(self.backend.size, 4 * depth)
        chosen = matching[:k]
        if facet.boost:
            chosen += [pair for pair in pairs if not allowed[pair[1]]][: k - len(chosen)]
        return [SearchHit(rank=rank, score=score, id=int(self.ids[position]), item=self.items[position])
                for rank, (score, position) in enumerate(chosen, start=1)]

    @cached_property
    def _label_columns(self) -> dict[str, int]:
        return {name: column for column, name in enumerate(sorted({n for item in self.items for n in item["labels"]}))}

    @cached_property
    def _item_labels(self) -> np.ndarray:
        """(size, labels) bool: which labels each gallery position's item carries."""
        table = np.zeros((len(self.items), len(self._label_columns)), dtype=bool)
        for position, item in enumerate(self.items):
            table[position, [self._label_columns[n] for n in item["labels"]]] = True
        return table

    def search_batch(self, queries: np.ndarray, ks: Sequence[int]) -> list[list[SearchHit]]:
        """(Q, D) query embeddings, each with its own k: one backend search for all of them."""
        scores, positions = self.backend.search(np.ascontiguousarray(queries, dtype=np.float32), max(ks))
        return [[SearchHit(rank=rank, score=float(score), id=int(self.ids[position]), item=self.items[position])
                 for rank, (score, position) in enumerate(zip(row_scores[:k], row_positions[:k]), start=1)
                 if position >= 0] for row_scores, row_positions, k in zip(scores, positions, ks)]

    def search_text(self, text: str, k: int = 10, facet: LabelFacet | None = None) -> list[SearchHit]:
        return self.query(QueryRequest(text=text, k=k, facet=facet)).hits

    def search_image(self, row: int, k: int = 10, facet: LabelFacet | None = None) -> list[SearchHit]:
        """Query with image `row` of the index's dataset."""
        return self.query(QueryRequest(item_id=row, k=k, facet=facet)).hits

    def search_image_file(self, image, k: int = 10, facet: LabelFacet | None = None) -> list[SearchHit]:
        """Query with a new image: a path, its bytes, or a PIL image."""
        return self.query(QueryRequest(image_file=image_source(image), k=k, facet=facet)).hits


def image_source(image) -> str | Path | bytes:
    """A query image as the query path takes it: a path or bytes as they are, a PIL image as PNG bytes."""
    if isinstance(image, (str, Path, bytes)):
        return image
    if hasattr(image, "save") and hasattr(image, "mode"):  # a PIL image
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    raise SemshareError(f"an image query is a path, bytes or a PIL image, not {type(image).__name__}")


def bytes_per_item(backend) -> int:
    """What a backend holds per gallery item (a backend may say; float32 vectors otherwise)."""
    return int(getattr(backend, "bytes_per_item", 4 * backend.dim))


def run_record(run: Run) -> dict:
    """What an index records of the run that embeds its gallery: its id and its checkpoint's weights."""
    from semshare.training.run_folder import checkpoint_digest, run_identity

    if run.run_dir is None:
        return {}
    folder = Path(run.run_dir) / run.checkpoint
    return {"run_id": run_identity(Path(run.run_dir)) or "",
            "checkpoint_sha256": checkpoint_digest(folder) if (folder / "model.safetensors").is_file() else ""}


def check_index_of_run(folder: Path, manifest: IndexManifest, run: Run) -> None:
    """An index answers only with the run that made it: the same run id and the same checkpoint weights
    (a run retrained at the same path, or another run's folder, is one line naming both)."""
    if not manifest.run_id:
        logger.info("%s: built before indexes recorded their run's identity: the run it names (%s) is taken as "
                    "the one that made it", folder, manifest.run_dir)
        return
    now = run_record(run)
    if now.get("run_id") != manifest.run_id:
        raise SemshareError(f"{folder / MANIFEST}: run_id: the gallery was embedded by run {manifest.run_id}, but "
                            f"{run.run_dir} is run {now.get('run_id') or 'without an identity'}; rebuild the index "
                            "with this run, or point it at the run that made it")
    if manifest.checkpoint_sha256 and now.get("checkpoint_sha256") != manifest.checkpoint_sha256:
        raise SemshareError(f"{folder / MANIFEST}: checkpoint_sha256: the gallery was embedded with other weights "
                            f"than {run.run_dir}/{run.checkpoint} holds now (trained on since, or replaced); "
                            "rebuild the index (`semshare index build`)")


def manifest_stamp(folder: Path) -> tuple | None:
    """What identifies the version of an index folder on disk: its manifest file's inode and time of change
    (every write puts a new folder in place by rename), None while none is there."""
    try:
        stat = (Path(folder) / MANIFEST).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def reopened(index: Index) -> Index | None:
    """The index folder's newest complete version when it changed since `index` was opened (reusing its run
    when the new version names the same); None when it did not change, or is being replaced right now."""
    stamp = manifest_stamp(index.folder)
    if stamp is None or stamp == index.stamp:
        return None
    data_dir, search_params = index.opened_with
    try:
        fresh = Index(index.folder, data_dir, search_params, run=index.run)
    except SemshareError:  # caught between the two renames of a replacement: the next check finds it whole
        return None
    return fresh if fresh.stamp == stamp == manifest_stamp(index.folder) else None


def _read_ids(path: Path) -> np.ndarray:
    try:
        ids = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SemshareError(f"{path}: file: expected the gallery's item ids, found no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise SemshareError(f"{path}: ids: expected a NumPy int64 array, found an unreadable file ({exc})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise SemshareError(f"{path}: ids: expected a 1-D integer array, found shape {ids.shape} dtype {ids.dtype}")
    if len(ids) and int(ids.min()) < 0:
        raise SemshareError(f"{path}: ids: expected item ids >= 0, found {int(ids.min())}; rebuild the index")
    unique, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise SemshareError(f"{path}: ids: expected each item once, found id {int(unique[counts > 1][0])} "
                            f"{int(counts.max())} times; rebuild the index")
    return ids.astype(np.int64)


def _read_items(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SemshareError(f"{path}: file: expected one JSON record per gallery item, found no such file") from None
    except UnicodeDecodeError:
        raise SemshareError(f"{path}: text: expected UTF-8 JSON lines, found other bytes") from None
    items = []
    for number, line in enumerate(lines, start=1):
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError:
            raise SemshareError(f"{path}: line {number}: expected a JSON record, found {line[:60]!r} (truncated?)") from None
    return items


def load_index(index_dir: str | Path, data_dir: str | Path | None = None, search_params: dict | None = None) -> Index:
    """Open an index folder made by `semshare index build` (`data_dir` when the dataset moved since)."""
    return Index(index_dir, data_dir, search_params)
