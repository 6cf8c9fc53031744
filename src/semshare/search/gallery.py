"""Index folders and the queries run against them.

An index folder (written atomically by `build_gallery`):
  manifest.json   kind, search parameters, side, size, dim, the run (folder, checkpoint) and the dataset
  ids.npy         (G,) int64 item id of each gallery position (image: dataset row; text: global text item id)
  items.jsonl     one JSON object per position: id, row, labels (names), captions, image_file
  index.faiss | vectors.safetensors   the backend's own file

`Searcher` opens a folder with the run it came from and answers text queries (tokenised with the run's
vocabulary) and item queries (an image row of the dataset, encoded with the run's image side).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from semshare.data.text import as_sentence
from semshare.errors import SemshareError
from semshare.fileio import atomic_directory, atomic_write_json
from semshare.index import build_backend
from semshare.index.base import load_backend, normalize_rows

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
    rank: int
    score: float
    id: int
    item: dict = field(default_factory=dict)


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
    return manifest


def read_manifest(folder: str | Path) -> IndexManifest:
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise SemshareError(f"{path}: no such file; {folder} is not an index folder (make one with `semshare index build`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        manifest = IndexManifest(**raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise SemshareError(f"{path}: manifest: expected the fields of IndexManifest, found an unreadable file ({exc})") from None
    if manifest.format != "semshare-index" or manifest.side not in SIDES:
        raise SemshareError(f"{path}: format/side: expected semshare-index with side image|text, found "
                            f"{manifest.format!r} / {manifest.side!r}")
    return manifest


class Searcher:
    """An index folder plus the run that embedded it: text and item queries -> ranked gallery items."""

    def __init__(self, folder: str | Path, search_params: dict | None = None, data_dir: str | Path | None = None):
        from semshare.training.experiment import load_run

        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        params = {**{k: v for k, v in self.manifest.params.items() if k in ("ef_search", "nprobe")},
                  **(search_params or {})}
        self.backend = load_backend(self.manifest.kind, self.folder, params)
        self.ids = np.load(self.folder / "ids.npy", allow_pickle=False)
        with open(self.folder / "items.jsonl", encoding="utf-8") as handle:
            self.items = [json.loads(line) for line in handle]
        if not (len(self.ids) == len(self.items) == self.backend.size):
            raise SemshareError(f"{self.folder}: ids.npy ({len(self.ids)}), items.jsonl ({len(self.items)}) and the "
                                f"index ({self.backend.size}) disagree in size; rebuild the index")
        self.position_of = {int(item_id): position for position, item_id in enumerate(self.ids.tolist())}
        self.run = load_run(self.manifest.run_dir, data_dir or self.manifest.data_dir, self.manifest.checkpoint)
        self.closed_form = self.run.cfg.method_class.closed_form
        self.builder = None if self.closed_form else self.run.builder(training=False)
        self._segment_encoder = None  # loaded on the first text query of a run on pretrained token states

    @property
    def accepts_text(self) -> bool:
        if self.closed_form:
            return self.run.space.text_source in ("bow", "word-vectors")
        return self.run.cfg.inputs.text in ("words", "segments")

    def item(self, item_id: int) -> dict:
        if item_id not in self.position_of:
            raise KeyError(item_id)
        return self.items[self.position_of[item_id]]

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[np.ndarray, list[str]]:
        """(D,) normalised query embedding and the query's words missing from the run's vocabulary."""
        if not self.accepts_text:
            raise SemshareError("this run reads precomputed text vectors (text.npy), not words: free-text "
                                "queries need a run trained on captions")
        text = text.strip()
        if not text:
            raise SemshareError("the text query is empty")
        if len(text) > MAX_QUERY_CHARS:
            raise SemshareError(f"the text query has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        if not self.closed_form and self.run.cfg.inputs.text == "segments":
            return self._encode_with_segment_encoder(text), []
        from semshare.data.text import tokenize

        vocab = self.run.space.vocab if self.closed_form else self.run.vocab
        unknown = vocab.unknown_tokens(text)
        # unknown words are dropped, not fed as UNK: the query means what its known words say
        known = [token for token in tokenize(text) if token not in set(unknown)]
        if not known:
            raise SemshareError(f"none of the query's words is in the run's vocabulary ({len(vocab)} words): "
                                + ", ".join(unknown))
        if self.closed_form:
            from semshare.data.dataset import TextItems

            items = TextItems(rows=np.zeros(1, dtype=np.int64), item_ids=np.zeros(1, dtype=np.int64), texts=[known])
            emb = self.run.encoder.transform_text(self.run.space.text(self.run.dataset, items))
            return normalize_rows(emb.astype(np.float32))[0], unknown
        batch = self.builder.build_query_words([known])
        return normalize_rows(self.run.model.encode_text(batch).numpy())[0], unknown

    @torch.no_grad()
    def _encode_with_segment_encoder(self, text: str) -> np.ndarray:
        """Runs on pretrained token states (MiniLM): the query goes through the same encoder first."""
        from semshare.data.text_segments import SegmentEncoder

        store = self.run.text_segments
        if self._segment_encoder is None:
            self._segment_encoder = SegmentEncoder(store.meta["encoder"], int(store.meta["max_length"]))
        states, real, ids = self._segment_encoder([text])
        keep = max(1, int(real.sum()))
        states, real = states[:, :keep].astype(np.float32), real[:, :keep]
        sentence = states.sum(1) / keep  # as the store's sentence vector: the normalised mean of the states
        sentence /= max(float(np.linalg.norm(sentence)), 1e-12)
        batch = self.builder.build_query_segments(states, real, ids[:, :keep].astype(np.int64), sentence)
        return normalize_rows(self.run.model.encode_text(batch).numpy())[0]

    @torch.no_grad()
    def encode_image_row(self, row: int) -> np.ndarray:
        dataset = self.run.dataset
        if not 0 <= row < dataset.num_items:
            raise SemshareError(f"image id {row} is not a row of {dataset.root} (0..{dataset.num_items - 1})")
        img, _ = self.run.embed(np.array([row]), sides=("image",))
        return normalize_rows(np.asarray(img.emb, dtype=np.float32))[0]

    @torch.no_grad()
    def encode_image_file(self, path: str | Path) -> np.ndarray:
        """A new image file, through the extractor that made the run's data, then the run's image side."""
        from semshare.features.extract import features_of_image_file

        if self.closed_form:
            raise SemshareError("--image-file needs a trained run; this index was built with a closed-form method")
        global_feature, regions, boxes, mask = features_of_image_file(path, self.run.dataset.meta)
        if self.run.cfg.inputs.image == "global":
            regions, boxes, mask = global_feature[None], np.array([[0, 0, 1, 1]], dtype=np.float32), np.ones(1, dtype=bool)
        batch = self.builder.build_query_images(regions[None], boxes[None], mask[None])
        return normalize_rows(self.run.model.encode_image(batch).numpy())[0]

    def search(self, query: np.ndarray, k: int) -> list[SearchHit]:
        scores, positions = self.backend.search(query, k)
        return [SearchHit(rank=rank, score=float(score), id=int(self.ids[position]), item=self.items[position])
                for rank, (score, position) in enumerate(zip(scores[0], positions[0]), start=1) if position >= 0]
