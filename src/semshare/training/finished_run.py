"""The one finished run: what every loaded run is and can do, trained and closed-form alike.

`Run` is what `semshare.load_run` returns and what the CLI, the service, evaluation and the benchmark hold.
Its two implementations (training/trained_run.py TrainedRun, training/closed_form.py ClosedFormRun) answer
a small set of hooks on their label space (`embed_label_space`, `encode_word_batch`, ...); everything a
user calls is written here once:

  embed(rows)               dataset rows -> (image table, text table), through the run's ranking stage
  query_texts(texts)        free texts -> TextQuery (embedding and label probabilities from one forward pass,
                            each text tokenised once): the query path of the CLI, the API and HTTP
  encode_texts / encode_images / encode_image_files / predict_labels / read_text / read_image

What a run can do is declared (`capabilities`), never probed; the instance head is a ranking stage the run
holds (`ranking_stage`: training/instance_head.py InstanceRanking, or the label space alone).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from semshare.data.dataset import WORD, Dataset, open_dataset
from semshare.data.text import tokenize
from semshare.errors import SemshareError
from semshare.evaluation.protocols import EmbeddingTable
from semshare.evaluation.reading import QueryReading, read_query, validation_threshold
from semshare.index.base import normalize_rows
from semshare.training.run_folder import require_dataset

logger = logging.getLogger(__name__)
MAX_QUERY_CHARS = 1000


def row_numbers(rows) -> np.ndarray:
    """A sequence of whole row numbers as int64, or one SemshareError (1.5 is not row 1, "abc" not rows)."""
    if isinstance(rows, (str, bytes)):
        raise SemshareError(f"rows: expected a sequence of row numbers, found {type(rows).__name__} {rows[:40]!r}")
    values = np.asarray(rows)
    if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
        raise SemshareError(f"rows: expected a 1-D sequence of integers, found {values.dtype} of shape {values.shape}")
    return values.astype(np.int64)


@dataclass(frozen=True)
class RunCapabilities:
    """What a finished run accepts, declared by its implementation."""

    free_text: bool  # free-text queries (runs on precomputed text vectors read no words)
    token_states: bool  # free text goes through the pretrained token encoder of its segments (no vocabulary)
    image_files: bool  # new image files, through the extractor that made the run's data
    label_classifier: bool  # it reads label probabilities in a query (predict_labels, the reading)
    pairwise_scoring: bool  # it scores (image, text) pairs jointly: evaluation re-ranks a shortlist


class RankingStage(Protocol):
    """A stage after the label space: the label embeddings of rows or queries in, the ranked embeddings out."""

    name: str  # "combined" (the instance head) or "label"

    def rows(self, run: "Run", rows: np.ndarray, img: EmbeddingTable, txt: EmbeddingTable,
             sides: tuple[str, ...]) -> tuple[EmbeddingTable, EmbeddingTable]: ...

    def word_queries(self, run: "Run", texts: list[list[str]], emb: np.ndarray) -> np.ndarray: ...

    def segment_queries(self, sentence: np.ndarray, emb: np.ndarray) -> np.ndarray: ...

    def image_queries(self, regions: np.ndarray, mask: np.ndarray, global_features: np.ndarray | None,
                      emb: np.ndarray) -> np.ndarray: ...


class LabelRanking:
    """The label space alone: every embedding passes unchanged."""

    name = "label"
    reads_global_feature = False

    def rows(self, run, rows, img, txt, sides):
        return img, txt

    def word_queries(self, run, texts, emb):
        return emb

    def segment_queries(self, sentence, emb):
        return emb

    def image_queries(self, regions, mask, global_features, emb):
        return emb


LABEL_RANKING = LabelRanking()


@dataclass
class TextQuery:
    """One free text as the run read it: its (D,) unit embedding, its (C,) label probabilities (None for a
    run without a label classifier), its known words (None: through a pretrained token encoder) and the
    words outside the run's vocabulary (dropped)."""

    text: str
    emb: np.ndarray
    probabilities: np.ndarray | None
    known: list[str] | None
    unknown: list[str]


class Run:
    """A finished run folder, loaded (semshare.load_run). Implementations set `cfg`, `dataset` (None: loaded
    without its data), `run_dir`, `checkpoint`, `train_rows`, `val_rows`, `ranking_stage` and the hooks
    below; `capabilities` says what it accepts."""

    cfg: object
    dataset: Dataset | None
    run_dir: Path | None
    checkpoint: str
    ranking_stage: RankingStage

    # ---- what an implementation answers (its label space) -----------------------------------------------
    capabilities: RunCapabilities
    text_source: str
    vocab: object
    num_labels: int | None

    def embed_label_space(self, rows: np.ndarray, sides: tuple[str, ...], device, batch_size: int
                          ) -> tuple[EmbeddingTable, EmbeddingTable]:
        raise NotImplementedError

    def encode_word_batch(self, texts: list[list[str]], with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, D) raw label-space embeddings of tokenised texts and, `with_labels`, their (N, C) label
        probabilities from the same forward pass."""
        raise NotImplementedError

    def encode_segment_batch(self, states: np.ndarray, real: np.ndarray, word_pieces: np.ndarray,
                             sentence: np.ndarray, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raise SemshareError("this run reads no token states")

    def encode_image_batch(self, regions: np.ndarray, boxes: np.ndarray, mask: np.ndarray,
                           with_labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        raise SemshareError("image files need a trained run; this run was fitted in closed form")

    def predict_rows(self, rows: np.ndarray, side: str, batch_size: int = 256) -> np.ndarray:
        raise self._no_classifier()

    # ---- declared capabilities, as names the rest of the code reads ----------------------------------------
    @property
    def config(self):
        return self.cfg

    @property
    def accepts_text(self) -> bool:
        return self.capabilities.free_text

    @property
    def reads_token_states(self) -> bool:
        return self.capabilities.token_states

    @property
    def pairwise_scoring(self) -> bool:
        return self.capabilities.pairwise_scoring

    @property
    def ranking(self) -> str:
        """What it ranks by: "combined" (the label space with its instance head) or "label"."""
        return self.ranking_stage.name

    @property
    def vocabulary(self):
        return self.vocab

    @cached_property  # per query it is read (the reading): a package's file is read once
    def label_names(self) -> list[str]:
        if self.dataset is not None:
            return list(self.dataset.label_names)
        saved = Path(self.run_dir or ".") / "label_names.txt"  # a package (semshare export) keeps its label set
        if self.run_dir is not None and saved.is_file():
            return [line for line in saved.read_text(encoding="utf-8").splitlines() if line]
        return [f"label {i}" for i in range(int(self.num_labels or 0))]

    def provenance(self) -> dict:
        """Where the run came from: its folder, checkpoint and ranking, the data it was trained on (its
        fingerprint: path, sizes, sha256 of labels, splits and files) and the semshare that exports or
        describes it (the code that trained it is in its benchmark result.json, `code_version`)."""
        fingerprint = Path(self.run_dir or ".") / "data_fingerprint.json"
        return {"run_dir": str(self.run_dir), "method": self.cfg.name, "checkpoint": self.checkpoint,
                "ranking": self.ranking,
                "data": json.loads(fingerprint.read_text()) if self.run_dir is not None and fingerprint.is_file() else None}

    def extractor_meta(self) -> dict:
        """How the run's image features were made: its dataset's meta.json, or a package's extractor.json
        ({} when neither is at hand)."""
        if self.dataset is not None:
            return dict(self.dataset.meta)
        return dict(self._packaged_extractor)

    @cached_property
    def _packaged_extractor(self) -> dict:
        saved = Path(self.run_dir or ".") / "extractor.json"
        return json.loads(saved.read_text()) if self.run_dir is not None and saved.is_file() else {}

    def file_layout_note(self) -> str:
        """One line when the layout a new image file gets (its global feature alone, for data extracted with
        annotated boxes) is one this run never trained on; '' when it did (inputs.file_layout_prob > 0), or
        when files and rows share a layout (grid regions, global inputs)."""
        if (not self.capabilities.image_files or self.cfg.inputs.image != "regions"
                or self.extractor_meta().get("regions_from") != "boxes" or self.cfg.inputs.file_layout_prob > 0):
            return ""
        return ("note: this run was trained on annotated boxes only; a new image file has none and comes in as its "
                "global feature alone, a layout it never trained on: its matches are weaker than a dataset row's "
                "(train with inputs.file_layout_prob > 0, the presets' 0.5; docs/OWN_PHOTOS.md)")

    def __repr__(self) -> str:
        return (f"Run({str(self.run_dir)!r}, method={self.cfg.name!r}, checkpoint={self.checkpoint!r}, "
                f"text={self.cfg.inputs.text!r}, image={self.cfg.inputs.image!r}, "
                f"dataset={self.dataset.name if self.dataset is not None else None!r})")

    def _no_classifier(self) -> SemshareError:
        return SemshareError(f"{self.cfg.name} has no label classifier to read a query with")

    # ---- rows of a dataset --------------------------------------------------------------------------------
    def embed(self, rows: np.ndarray, sides: tuple[str, ...] = ("image", "text"), device="cpu",
              batch_size: int = 256) -> tuple[EmbeddingTable, EmbeddingTable]:
        """(image table, text table) of `rows` and all their text items, ranked as the run ranks."""
        require_dataset(self)
        img, txt = self.embed_label_space(np.asarray(rows, dtype=np.int64), tuple(sides), device, batch_size)
        return self.ranking_stage.rows(self, rows, img, txt, tuple(sides))

    def ranked_by(self, stage: RankingStage | None) -> "Run":
        """The same run ranking through `stage` (None: as it is)."""
        return self if stage is None else dataclasses.replace(self, ranking_stage=stage)

    def with_dataset(self, dataset: Dataset) -> "Run":
        """The same run over another dataset with its label set (its rows, features and files)."""
        if self.num_labels is not None and dataset.num_labels != self.num_labels:
            raise SemshareError(f"{dataset.root}: {dataset.num_labels} labels, but the run was trained on {self.num_labels}")
        return dataclasses.replace(self, dataset=dataset)

    def encode_images(self, dataset: Dataset | str | Path | None = None, rows: Sequence[int] | None = None) -> np.ndarray:
        """(len(rows), D) unit-norm embeddings of images of a dataset (default: the run's; all rows)."""
        run = self
        if dataset is not None:
            dataset = dataset if isinstance(dataset, Dataset) else open_dataset(dataset, check_values=False)
            if self.dataset is None or dataset.root != self.dataset.root:
                run = self.with_dataset(dataset)
        require_dataset(run)
        data = run.dataset
        rows = np.arange(data.num_items) if rows is None else row_numbers(rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= data.num_items):
            raise SemshareError(f"image rows must lie in 0..{data.num_items - 1} of {data.root}; got "
                                f"{int(rows.min())}..{int(rows.max())}")
        img, _ = run.embed(rows, sides=("image",))
        return normalize_rows(np.asarray(img.emb, dtype=np.float32))

    # ---- free texts: the one query path -------------------------------------------------------------------
    def query_texts(self, texts: Sequence[str], with_labels: bool = True) -> list[TextQuery | SemshareError]:
        """Per text, a TextQuery (or the SemshareError that says why the run cannot read it). Each text is
        checked and tokenised once; word texts go through the model in one batch whose forward pass gives
        both the embeddings and (`with_labels`, for a run with a classifier) the label probabilities."""
        with_labels = with_labels and self.capabilities.label_classifier
        results: list = [None] * len(texts)
        words: list[tuple[int, list[str], list[str]]] = []
        for position, text in enumerate(texts):
            try:
                known, unknown = self._known_words(text)
            except SemshareError as exc:
                results[position] = exc
                continue
            if known is None:  # queries through the run's pretrained token encoder: one at a time
                results[position] = self._query_segments(text.strip(), with_labels)
            else:
                words.append((position, known, unknown))
        if words:
            emb, probabilities = self.encode_word_batch([known for _, known, _ in words], with_labels)
            emb = normalize_rows(self.ranking_stage.word_queries(self, [known for _, known, _ in words], emb))
            for index, (position, known, unknown) in enumerate(words):
                results[position] = TextQuery(texts[position], emb[index], None if probabilities is None else probabilities[index],
                                              known, unknown)
        return results

    def _query_segments(self, text: str, with_labels: bool) -> TextQuery:
        states, real, pieces, sentence = self._segment_arrays(text)
        emb, probabilities = self.encode_segment_batch(states, real, pieces, sentence, with_labels)
        emb = normalize_rows(self.ranking_stage.segment_queries(sentence, emb))[0]
        return TextQuery(text, emb, None if probabilities is None else probabilities[0], None, [])

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
                   for result in self.query_texts(texts[start : start + batch_size], with_labels=False)]
        usable = [query.emb for query in encoded if not isinstance(query, SemshareError)]
        if not encoded:
            return np.zeros((0, 0), np.float32)
        if not usable:
            raise encoded[0]
        out = np.full((len(encoded), len(usable[0])), np.nan, dtype=np.float32)
        failed = [position for position, query in enumerate(encoded) if isinstance(query, SemshareError)]
        for position, query in enumerate(encoded):
            if not isinstance(query, SemshareError):
                out[position] = query.emb
        if failed:
            logger.warning("%d of %d texts could not be read (rows left NaN), e.g. text %d: %s", len(failed),
                           len(encoded), failed[0], encoded[failed[0]])
        return out

    def encode_text_batch(self, texts: Sequence[str]) -> list[tuple[np.ndarray | SemshareError, list[str]]]:
        """Per text, its (D,) embedding (or the SemshareError that says why the run cannot read it) and its
        unknown words."""
        return [(query, []) if isinstance(query, SemshareError) else (query.emb, query.unknown)
                for query in self.query_texts(texts, with_labels=False)]

    def encode_text(self, text: str) -> tuple[np.ndarray, list[str]]:
        """(D,) unit-norm embedding of one free text, and its words missing from the run's vocabulary."""
        query = self.query_texts([text], with_labels=False)[0]
        if isinstance(query, SemshareError):
            raise query
        return query.emb, query.unknown

    def predict_labels(self, texts: Sequence[str] | None = None, images: Sequence[int] | None = None) -> np.ndarray:
        """(N, C) label probabilities: what the model reads in free texts, or in images (rows of the run's
        dataset). Runs without a label classifier (closed-form fits, most baselines) say so."""
        if (texts is None) == (images is None):
            raise SemshareError("predict_labels takes texts= (a list of texts) or images= (dataset rows)")
        if not self.capabilities.label_classifier:
            raise self._no_classifier()
        if images is not None:
            return self.predict_rows(np.asarray(images, dtype=np.int64), "image")
        if isinstance(texts, str):
            raise SemshareError("predict_labels takes a list of texts; for one text use [text]")
        queries = self.query_texts(texts)
        for query in queries:
            if isinstance(query, SemshareError):
                raise query
        return np.stack([q.probabilities for q in queries]) if queries else np.zeros((0, len(self.label_names)), np.float32)

    def weak_threshold(self) -> float:
        """The best-label probability 95% of the validation captions reach (0.5 without the dataset)."""
        if "_weak_threshold" not in self.__dict__:
            self._weak_threshold = 0.5 if self.dataset is None else validation_threshold(self)
        return self._weak_threshold

    def reading_of(self, query: TextQuery, threshold: float | None = None) -> QueryReading | None:
        """What the model read in a text query (None for a run without a label classifier)."""
        if query.probabilities is None:
            return None
        # a token-state run reads no vocabulary: the content-word rule reads the text's own tokens
        words = query.known if query.known is not None else tokenize(query.text)
        return read_query(query.probabilities, self.label_names, words, query.unknown,
                          self.weak_threshold() if threshold is None else threshold)

    def read_text(self, text: str, threshold: float | None = None) -> QueryReading:
        """What the model read in a free text (labels, unknown words) and whether the query is weak."""
        if not self.capabilities.label_classifier:
            raise self._no_classifier()
        query = self.query_texts([text])[0]
        if isinstance(query, SemshareError):
            raise query
        return self.reading_of(query, threshold)

    def read_image(self, row: int, threshold: float | None = None) -> QueryReading:
        probabilities = self.predict_labels(images=[row])[0]
        return read_query(probabilities, self.label_names, None, [],
                          self.weak_threshold() if threshold is None else threshold)

    def _known_words(self, text: str) -> tuple[list[str] | None, list[str]]:
        """Checks a free text; (its known words, its unknown words) for a words run, (None, []) otherwise.
        The text is tokenised once."""
        if not isinstance(text, str):
            raise SemshareError(f"a text query is a string, not {type(text).__name__}")
        if not self.capabilities.free_text:
            raise SemshareError("this run reads precomputed text vectors (text.npy), not words: free-text "
                                "queries need a run trained on captions")
        text = text.strip()
        if not text:
            raise SemshareError("the text query is empty")
        if not WORD.search(text):
            raise SemshareError(f"the text query {text[:40]!r} has no word to search for")
        if len(text) > MAX_QUERY_CHARS:
            raise SemshareError(f"the text query has {len(text)} characters; the limit is {MAX_QUERY_CHARS}")
        if self.capabilities.token_states:
            return None, []
        vocab = self.vocab
        tokens = tokenize(text)
        unknown = [token for token in tokens if token not in vocab]
        # unknown words are dropped, not fed as UNK: the query means what its known words say
        known = [token for token in tokens if token in vocab]
        if not known:
            raise SemshareError(f"none of the query's words is in the run's vocabulary ({len(vocab)} words): "
                                + ", ".join(unknown))
        return known, unknown

    @cached_property
    def _segment_encoder(self):
        from semshare.data.text_segments import SegmentEncoder

        store = self.text_segments
        return SegmentEncoder(store.meta["encoder"], int(store.meta["max_length"]))

    def _segment_arrays(self, text: str):
        """A free text through the run's pretrained token encoder (MiniLM): (states, mask, word pieces,
        sentence vector), as the run's segment store holds them."""
        states, real, ids = self._segment_encoder([text])
        keep = max(1, int(real.sum()))
        states, real = states[:, :keep].astype(np.float32), real[:, :keep]
        sentence = states.sum(1) / keep  # as the store's sentence vector: the normalised mean of the states
        sentence /= max(float(np.linalg.norm(sentence)), 1e-12)
        return states, real, ids[:, :keep].astype(np.int64), sentence

    # ---- new image files ----------------------------------------------------------------------------------
    def encode_image_files(self, paths: Sequence[str | Path]) -> np.ndarray:
        """(N, D) unit-norm embeddings of new image files, through the extractor that made the run's data
        (`semshare extract`: its backbone, weights and region settings are in the dataset's meta.json)."""
        return self.query_image_files(paths, with_labels=False)[0]

    def query_image_files(self, paths: Sequence[str | Path], with_labels: bool = True, layout: str = "auto"
                          ) -> tuple[np.ndarray, np.ndarray | None]:
        """New image files -> (N, D) unit embeddings and (N, C) label probabilities from the same forward pass
        (None without a label classifier, or `with_labels` False). `layout`: the regions a file is given
        (features.extract.FILE_LAYOUTS; auto: the dataset's grid cells, or a boxed dataset's global feature)."""
        from semshare.features.extract import features_of_image_file

        if not self.capabilities.image_files:
            raise SemshareError("image files need a trained run; this run was fitted in closed form")
        meta = self.extractor_meta()
        if not meta:
            raise SemshareError(f"{self.run_dir}: image files are encoded as the run's dataset was extracted (its "
                                "meta.json), and the dataset is not there: give the dataset folder (data_dir)")
        with_labels = with_labels and self.capabilities.label_classifier
        embs, readings = [], []
        for path in paths:
            global_feature, regions, boxes, mask = features_of_image_file(path, meta, layout)
            if self.cfg.inputs.image == "global":
                regions, boxes, mask = global_feature[None], np.array([[0, 0, 1, 1]], dtype=np.float32), np.ones(1, dtype=bool)
            emb, probabilities = self.encode_image_batch(regions[None], boxes[None], mask[None], with_labels)
            global_features = global_feature[None] if self.ranking_stage.reads_global_feature else None
            embs.append(normalize_rows(self.ranking_stage.image_queries(regions[None], mask[None], global_features, emb))[0])
            if probabilities is not None:
                readings.append(probabilities[0])
        if not embs:
            return np.zeros((0, 0), np.float32), None
        return np.stack(embs), (np.stack(readings) if readings else None)
