"""The Python API: load a finished run and embed texts and images with it; load an index and search it.

    import semshare

    run = semshare.load_run("runs/demo/ours-seed0")           # the run folder; nothing is unpickled
    texts = run.encode_texts(["two dogs in the snow"])        # (1, D) float32, unit rows
    images = run.encode_images(rows=[0, 1, 2])                # (3, D), rows of the run's dataset
    index = semshare.load_index("runs/demo/index")            # made by `semshare index build`
    for hit in index.search_text("two dogs in the snow", k=5):
        print(hit.rank, hit.score, hit.id, hit.labels)

Every embedding is L2-normalised, so a dot product is the cosine the indexes rank by. The CLI's `search`
and `serve` call these same functions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from semshare.data.dataset import WORD, Dataset, TextItems, open_dataset
from semshare.data.text import tokenize
from semshare.errors import SemshareError
from semshare.fileio import verify_files_manifest
from semshare.index.base import load_backend, normalize_rows
from semshare.search.gallery import MAX_QUERY_CHARS, SearchHit, read_manifest

__all__ = ["Run", "Index", "SearchHit", "load_run", "load_index"]


class Run:
    """A finished run (trained or closed-form) and what it needs to embed new queries.

    `config` is the run's resolved ExperimentConfig; `dataset` the data folder it was opened with;
    `loaded` the run as the library holds it (a training.experiment.PreparedRun with its `model`, or a
    training.closed_form.ClosedFormRun)."""

    def __init__(self, loaded, run_dir: str | Path, checkpoint: str = "best"):
        self.loaded, self._run_dir, self._checkpoint = loaded, Path(run_dir), checkpoint
        self.config = loaded.cfg
        self.dataset: Dataset = loaded.dataset
        self.closed_form = self.config.method_class.closed_form
        self._builder = None if self.closed_form else loaded.builder(training=False)
        self._segment_encoder = None  # loaded on the first free text of a run on pretrained token states

    @property
    def accepts_text(self) -> bool:
        """Whether free text can be embedded (runs on text.npy vectors read no words)."""
        if self.closed_form:
            return self.loaded.space.text_source in ("bow", "word-vectors")
        return self.config.inputs.text in ("words", "segments")

    @property
    def vocabulary(self):
        return self.loaded.space.vocab if self.closed_form else self.loaded.vocab

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) unit-norm embeddings of free texts; words outside the run's vocabulary are dropped."""
        encoded = self.encode_text_batch(texts)
        for emb, _ in encoded:
            if isinstance(emb, SemshareError):
                raise emb
        return np.stack([emb for emb, _ in encoded]) if encoded else np.zeros((0, 0), np.float32)

    @torch.no_grad()
    def encode_text_batch(self, texts: Sequence[str]) -> list[tuple[np.ndarray | SemshareError, list[str]]]:
        """Per text, its (D,) embedding (or the SemshareError that refuses it) and its unknown words; the
        texts that tokenise through the run's vocabulary go through the model in one batch."""
        results: list = []
        batched: list[tuple[int, list[str]]] = []
        for position, text in enumerate(texts):
            try:
                known, unknown = self._known_words(text)
            except SemshareError as exc:
                results.append((exc, []))
                continue
            if known is None or self.closed_form:  # queries through another encoder: one at a time
                results.append(self.encode_text(text))
            else:
                results.append((None, unknown))
                batched.append((position, known))
        if batched:
            batch = self._builder.build_query_words([known for _, known in batched])
            embs = normalize_rows(self.loaded.model.encode_text(batch).numpy().astype(np.float32))
            for (position, _), emb in zip(batched, embs):
                results[position] = (emb, results[position][1])
        return results

    def _known_words(self, text: str) -> tuple[list[str] | None, list[str]]:
        """Checks a free text; (its known words, its unknown words) for a words run, (None, []) otherwise."""
        if not self.accepts_text:
            raise SemshareError("this run reads precomputed text vectors (text.npy), not words: free-text "
                                "queries need a run trained on captions")
        text = text.strip()
        if not text:
            raise SemshareError("the text query is empty")
        if not WORD.search(text):
            raise SemshareError(f"the text query {text[:40]!r} has no word to search for")
        if len(text) > MAX_QUERY_CHARS:
            raise SemshareError(f"the text query has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        if not self.closed_form and self.config.inputs.text == "segments":
            return None, []
        vocab = self.vocabulary
        unknown = vocab.unknown_tokens(text)
        # unknown words are dropped, not fed as UNK: the query means what its known words say
        known = [token for token in tokenize(text) if token not in set(unknown)]
        if not known:
            raise SemshareError(f"none of the query's words is in the run's vocabulary ({len(vocab)} words): "
                                + ", ".join(unknown))
        return known, unknown

    @torch.no_grad()
    def encode_text(self, text: str) -> tuple[np.ndarray, list[str]]:
        """(D,) unit-norm embedding of one free text, and its words missing from the run's vocabulary."""
        known, unknown = self._known_words(text)
        if known is None:
            return self._encode_with_segment_encoder(text.strip()), []
        if self.closed_form:
            items = TextItems(rows=np.zeros(1, dtype=np.int64), item_ids=np.zeros(1, dtype=np.int64), texts=[known])
            emb = self.loaded.encoder.transform_text(self.loaded.space.text(self.dataset, items))
        else:
            emb = self.loaded.model.encode_text(self._builder.build_query_words([known])).numpy()
        return normalize_rows(np.asarray(emb, dtype=np.float32))[0], unknown

    def _encode_with_segment_encoder(self, text: str) -> np.ndarray:
        """Runs on pretrained token states (MiniLM): the query goes through the same encoder first."""
        from semshare.data.text_segments import SegmentEncoder

        store = self.loaded.text_segments
        if self._segment_encoder is None:
            self._segment_encoder = SegmentEncoder(store.meta["encoder"], int(store.meta["max_length"]))
        states, real, ids = self._segment_encoder([text])
        keep = max(1, int(real.sum()))
        states, real = states[:, :keep].astype(np.float32), real[:, :keep]
        sentence = states.sum(1) / keep  # as the store's sentence vector: the normalised mean of the states
        sentence /= max(float(np.linalg.norm(sentence)), 1e-12)
        batch = self._builder.build_query_segments(states, real, ids[:, :keep].astype(np.int64), sentence)
        return normalize_rows(self.loaded.model.encode_text(batch).numpy())[0]

    def encode_images(self, dataset: Dataset | str | Path | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """(len(rows), D) unit-norm embeddings of images of a dataset (default: the run's; all rows)."""
        loaded = self.loaded
        if dataset is not None:
            dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset, check_values=False)
            if dataset.root != self.dataset.root:
                from semshare.training.experiment import load_run as load_prepared

                loaded = load_prepared(self._run_dir, dataset.root, self._checkpoint, dataset=dataset)
        data = loaded.dataset
        rows = np.arange(data.num_items) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= data.num_items):
            raise SemshareError(f"image rows must lie in 0..{data.num_items - 1} of {data.root}; got "
                                f"{int(rows.min())}..{int(rows.max())}")
        img, _ = loaded.embed(rows, sides=("image",))
        return normalize_rows(np.asarray(img.emb, dtype=np.float32))

    @torch.no_grad()
    def encode_image_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        """(N, D) unit-norm embeddings of new image files, through the extractor that made the run's data
        (`semshare extract`: its backbone, weights and region settings are in the dataset's meta.json)."""
        from semshare.features.extract import features_of_image_file

        if self.closed_form:
            raise SemshareError("image files need a trained run; this run was fitted in closed form")
        out = []
        for path in paths:
            global_feature, regions, boxes, mask = features_of_image_file(path, self.dataset.meta)
            if self.config.inputs.image == "global":
                regions, boxes, mask = global_feature[None], np.array([[0, 0, 1, 1]], dtype=np.float32), np.ones(1, dtype=bool)
            batch = self._builder.build_query_images(regions[None], boxes[None], mask[None])
            out.append(normalize_rows(self.loaded.model.encode_image(batch).numpy())[0])
        return np.stack(out) if out else np.zeros((0, 0), np.float32)


def load_run(run_dir: str | Path, data_dir: str | Path | None = None, checkpoint: str = "best") -> Run:
    """Open a finished run folder (config.yaml, model_spec.json, safetensors weights: nothing is unpickled).

    `data_dir`: the dataset folder; default the one the run was trained on (recorded in splits.json)."""
    from semshare.training.experiment import load_run as load_prepared

    run_dir = Path(run_dir)
    if data_dir is None:
        splits = run_dir / "splits.json"
        if not splits.exists():
            raise SemshareError(f"{run_dir}: not a run folder (splits.json missing)")
        data_dir = json.loads(splits.read_text())["data_dir"]
    return Run(load_prepared(run_dir, data_dir, checkpoint), run_dir, checkpoint)


class Index:
    """An index folder plus the run that embedded it: text and image queries -> ranked gallery items."""

    def __init__(self, folder: str | Path, search_params: dict | None = None, data_dir: str | Path | None = None):
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        verify_files_manifest(self.folder, "index")
        params = {**{k: v for k, v in self.manifest.params.items() if k in ("ef_search", "nprobe")},
                  **(search_params or {})}
        self.backend = load_backend(self.manifest.kind, self.folder, params)
        self.ids, self.items = _read_ids(self.folder / "ids.npy"), _read_items(self.folder / "items.jsonl")
        if not (len(self.ids) == len(self.items) == self.backend.size):
            raise SemshareError(f"{self.folder}: ids.npy ({len(self.ids)}), items.jsonl ({len(self.items)}) and the "
                                f"index ({self.backend.size}) disagree in size; rebuild the index")
        self.position_of = {int(item_id): position for position, item_id in enumerate(self.ids.tolist())}
        self.run = load_run(self.manifest.run_dir, data_dir or self.manifest.data_dir, self.manifest.checkpoint)

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

    def image_row_error(self, row: int) -> SemshareError | None:
        """Why `row` cannot be an image query (None when it can)."""
        dataset = self.run.dataset
        if 0 <= row < dataset.num_items:
            return None
        return SemshareError(f"image id {row} is not a row of dataset {dataset.name} (0..{dataset.num_items - 1})")

    def encode_image_row(self, row: int) -> np.ndarray:
        error = self.image_row_error(row)
        if error is not None:
            raise error
        return self.run.encode_images(rows=[row])[0]

    def encode_image_file(self, path: str | Path) -> np.ndarray:
        return self.run.encode_image_files([path])[0]

    def search(self, query: np.ndarray, k: int) -> list[SearchHit]:
        """The k best gallery items for a (D,) query embedding."""
        return self.search_batch(np.asarray(query)[None], [k])[0]

    def search_batch(self, queries: np.ndarray, ks: Sequence[int]) -> list[list[SearchHit]]:
        """(Q, D) query embeddings, each with its own k: one backend search for all of them."""
        scores, positions = self.backend.search(np.ascontiguousarray(queries, dtype=np.float32), max(ks))
        return [[SearchHit(rank=rank, score=float(score), id=int(self.ids[position]), item=self.items[position])
                 for rank, (score, position) in enumerate(zip(row_scores[:k], row_positions[:k]), start=1)
                 if position >= 0] for row_scores, row_positions, k in zip(scores, positions, ks)]

    def search_text(self, text: str, k: int = 10) -> list[SearchHit]:
        return self.search(self.encode_text(text)[0], k)

    def search_image(self, row: int, k: int = 10) -> list[SearchHit]:
        """Query with image `row` of the index's dataset."""
        return self.search(self.encode_image_row(row), k)

    def search_image_file(self, path: str | Path, k: int = 10) -> list[SearchHit]:
        return self.search(self.encode_image_file(path), k)


def _read_ids(path: Path) -> np.ndarray:
    try:
        ids = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise SemshareError(f"{path}: file: expected the gallery's item ids, found no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise SemshareError(f"{path}: ids: expected a NumPy int64 array, found an unreadable file ({exc})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise SemshareError(f"{path}: ids: expected a 1-D integer array, found shape {ids.shape} dtype {ids.dtype}")
    return ids


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
    return Index(index_dir, search_params, data_dir)
