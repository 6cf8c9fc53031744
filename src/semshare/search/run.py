"""A finished run as the Python API and the search service use it: free texts, dataset images and new image
files -> unit-norm embeddings. Trained and closed-form runs answer through one interface (nothing here
asks which kind a run is); nothing is unpickled.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from semshare.data.dataset import WORD, Dataset, open_dataset
from semshare.data.text import tokenize
from semshare.errors import SemshareError
from semshare.index.base import normalize_rows
from semshare.search.reading import QueryReading, read_query, validation_threshold
from semshare.training.experiment import load_run as load_trained_or_fitted, load_run_from_folder
from semshare.training.instance_head import ranking_of
from semshare.training.run_folder import require_dataset

logger = logging.getLogger(__name__)
MAX_QUERY_CHARS = 1000


class Run:
    """A finished run (trained or closed-form: both answer the same questions) and what it needs to embed
    new queries.

    `config` is the run's resolved ExperimentConfig; `dataset` the data folder it was opened with;
    `loaded` the run as the library holds it (training.experiment.load_run: a PreparedRun with its `model`,
    or a ClosedFormRun)."""

    def __init__(self, loaded, run_dir: str | Path, checkpoint: str = "best"):
        self.loaded, self._run_dir, self._checkpoint = loaded, Path(run_dir), checkpoint
        self.ranking = ranking_of(loaded)  # what it ranks by: the label space with its instance head, or alone
        self.config = loaded.cfg
        self.dataset: Dataset | None = loaded.dataset  # None: loaded without its data (text queries still work)
        self._segment_encoder = None  # loaded on the first free text of a run on pretrained token states
        self._weak_threshold: float | None = None

    @property
    def accepts_text(self) -> bool:
        """Whether free text can be embedded (runs on text.npy vectors read no words)."""
        return self.loaded.accepts_text

    @property
    def vocabulary(self):
        return self.loaded.vocab

    def __repr__(self) -> str:
        return (f"Run({str(self._run_dir)!r}, method={self.config.name!r}, checkpoint={self._checkpoint!r}, "
                f"text={self.config.inputs.text!r}, image={self.config.inputs.image!r}, "
                f"dataset={self.dataset.name if self.dataset is not None else None!r})")

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(N, D) unit-norm embeddings of free texts, `batch_size` texts through the model at a time; words
        outside the run's vocabulary are dropped.

        The batch contract: a text the run cannot read (empty, no word, none of its words known, over
        1,000 characters) does not fail the others: its row is NaN (never a silent zero, which would score
        0 against everything) and one warning counts them; `encode_text_batch` says why for each text. Only
        when no text at all can be read is it an error (the first text's reason)."""
        if isinstance(texts, str):
            raise SemshareError("encode_texts takes a list of texts; for one text use [text] or encode_text(text)")
        if batch_size < 1:
            raise SemshareError(f"batch_size: expected an integer >= 1, found {batch_size}")
        encoded = [result for start in range(0, len(texts), batch_size)
                   for result in self.encode_text_batch(texts[start : start + batch_size])]
        usable = [emb for emb, _ in encoded if not isinstance(emb, SemshareError)]
        if not encoded:
            return np.zeros((0, 0), np.float32)
        if not usable:
            raise encoded[0][0]
        out = np.full((len(encoded), len(usable[0])), np.nan, dtype=np.float32)
        failed = []
        for position, (emb, _) in enumerate(encoded):
            if isinstance(emb, SemshareError):
                failed.append(position)
            else:
                out[position] = emb
        if failed:
            logger.warning("%d of %d texts could not be read (rows left NaN), e.g. text %d: %s", len(failed),
                           len(encoded), failed[0], encoded[failed[0]][0])
        return out

    @torch.no_grad()
    def encode_text_batch(self, texts: Sequence[str]) -> list[tuple[np.ndarray | SemshareError, list[str]]]:
        """Per text, its (D,) embedding (or the SemshareError that says why the run cannot read it) and its
        unknown words; the texts that tokenise through the run's vocabulary go through the model in one
        batch."""
        results: list = []
        batched: list[tuple[int, list[str]]] = []
        for position, text in enumerate(texts):
            try:
                known, unknown = self._known_words(text)
            except SemshareError as exc:
                results.append((exc, []))
                continue
            if known is None:  # queries through the run's pretrained token encoder: one at a time
                results.append(self.encode_text(text))
            else:
                results.append((None, unknown))
                batched.append((position, known))
        if batched:
            embs = normalize_rows(self.loaded.encode_word_queries([known for _, known in batched]).astype(np.float32))
            for (position, _), emb in zip(batched, embs):
                results[position] = (emb, results[position][1])
        return results

    @property
    def label_names(self) -> list[str]:
        if self.dataset is not None:
            return list(self.dataset.label_names)
        return [f"label {i}" for i in range(int(getattr(self.loaded, "num_labels", 0) or 0))]

    @torch.no_grad()
    def predict_labels(self, texts: Sequence[str] | None = None, images: Sequence[int] | None = None) -> np.ndarray:
        """(N, C) label probabilities: what the model reads in free texts, or in images (rows of the run's
        dataset). Runs without a label classifier (closed-form fits, most baselines) say so."""
        if (texts is None) == (images is None):
            raise SemshareError("predict_labels takes texts= (a list of texts) or images= (dataset rows)")
        if images is not None:
            return self.loaded.predict_rows(np.asarray(images, dtype=np.int64), "image")
        if isinstance(texts, str):
            raise SemshareError("predict_labels takes a list of texts; for one text use [text]")
        out = []
        for text in texts:
            known, _ = self._known_words(text)
            if known is None:  # pretrained token states: through the run's encoder first
                states, real, ids, sentence = self._segment_arrays(text.strip())
                out.append(self.loaded.predict_segment_queries(states, real, ids, sentence)[0])
            else:
                out.append(self.loaded.predict_word_queries([known])[0])
        return np.stack(out) if out else np.zeros((0, len(self.label_names)), np.float32)

    def weak_threshold(self) -> float:
        """The best-label probability 95% of the validation captions reach (0.5 without the dataset)."""
        if self._weak_threshold is None:
            if self.dataset is None:
                self._weak_threshold = 0.5
            else:
                self._weak_threshold = validation_threshold(self.loaded)
        return self._weak_threshold

    def read_text(self, text: str, threshold: float | None = None) -> QueryReading:
        """What the model read in a free text (labels, unknown words) and whether the query is weak."""
        known, unknown = self._known_words(text)
        probabilities = self.predict_labels(texts=[text])[0]
        words = known if known is not None else tokenize(text)
        return read_query(probabilities, self.label_names, words, unknown,
                          self.weak_threshold() if threshold is None else threshold)

    def read_image(self, row: int, threshold: float | None = None) -> QueryReading:
        probabilities = self.predict_labels(images=[row])[0]
        return read_query(probabilities, self.label_names, None, [],
                          self.weak_threshold() if threshold is None else threshold)

    def _known_words(self, text: str) -> tuple[list[str] | None, list[str]]:
        """Checks a free text; (its known words, its unknown words) for a words run, (None, []) otherwise."""
        if not isinstance(text, str):
            raise SemshareError(f"a text query is a string, not {type(text).__name__}")
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
        if self.loaded.reads_token_states:
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
        emb = self.loaded.encode_word_queries([known])
        return normalize_rows(np.asarray(emb, dtype=np.float32))[0], unknown

    def _segment_arrays(self, text: str):
        """A free text through the run's pretrained token encoder (MiniLM): (states, mask, word pieces,
        sentence vector), as the run's segment store holds them."""
        from semshare.data.text_segments import SegmentEncoder

        store = self.loaded.text_segments
        if self._segment_encoder is None:
            self._segment_encoder = SegmentEncoder(store.meta["encoder"], int(store.meta["max_length"]))
        states, real, ids = self._segment_encoder([text])
        keep = max(1, int(real.sum()))
        states, real = states[:, :keep].astype(np.float32), real[:, :keep]
        sentence = states.sum(1) / keep  # as the store's sentence vector: the normalised mean of the states
        sentence /= max(float(np.linalg.norm(sentence)), 1e-12)
        return states, real, ids[:, :keep].astype(np.int64), sentence

    def _encode_with_segment_encoder(self, text: str) -> np.ndarray:
        """Runs on pretrained token states (MiniLM): the query goes through the same encoder first."""
        return normalize_rows(self.loaded.encode_segment_queries(*self._segment_arrays(text)))[0]

    def encode_images(self, dataset: Dataset | str | Path | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """(len(rows), D) unit-norm embeddings of images of a dataset (default: the run's; all rows)."""
        loaded = self.loaded
        if dataset is not None:
            dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset, check_values=False)
            if self.dataset is None or dataset.root != self.dataset.root:
                loaded = load_trained_or_fitted(self._run_dir, dataset, self._checkpoint, self.ranking)
        data = loaded.dataset
        if data is None:
            require_dataset(loaded)
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

        if not self.loaded.reads_image_features:
            raise SemshareError("image files need a trained run; this run was fitted in closed form")
        if self.dataset is None:
            raise SemshareError(f"{self._run_dir}: image files are encoded as the run's dataset was extracted (its "
                                "meta.json), and the dataset is not there: give the dataset folder (data_dir)")
        out = []
        for path in paths:
            global_feature, regions, boxes, mask = features_of_image_file(path, self.dataset.meta)
            if self.config.inputs.image == "global":
                regions, boxes, mask = global_feature[None], np.array([[0, 0, 1, 1]], dtype=np.float32), np.ones(1, dtype=bool)
            extra = {"global_features": global_feature[None]} if self.ranking == "combined" else {}
            out.append(normalize_rows(self.loaded.encode_image_queries(regions[None], boxes[None], mask[None], **extra))[0])
        return np.stack(out) if out else np.zeros((0, 0), np.float32)


def load_run(run_dir: str | Path, data_dir: str | Path | None = None, checkpoint: str = "best",
             ranking: str = "combined") -> Run:
    """Open a finished run folder (config.yaml, model_spec.json, safetensors weights: nothing is unpickled).

    `data_dir`: the dataset folder; default the one the run was trained on (recorded in splits.json). When
    that folder is gone, the run still loads on its own and encodes free text (its folder holds the
    vocabulary, word vectors and weights); images of the dataset then need `data_dir`. `ranking`:
    "combined" (default) adds the run's instance head when it has one (`semshare fit-instance`), "label"
    ranks by the label space alone."""
    return Run(load_run_from_folder(run_dir, data_dir, checkpoint, ranking), run_dir, checkpoint)
