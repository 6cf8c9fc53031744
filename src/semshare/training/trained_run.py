"""A trained method's run as the library holds it: config, data, model and the inputs its batches come from.

One of the two implementations of the finished run (training/finished_run.py Run; ClosedFormRun is the
other): its label space through the method's model, for rows of its dataset and for new queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from functools import cached_property
from typing import Sequence

import numpy as np
import torch

from semshare.data.batches import BatchBuilder, BatchOptions, text_source_for
from semshare.data.dataset import Dataset
from semshare.data.text import Vocabulary
from semshare.data.text_segments import TextSegments
from semshare.evaluation.embed import embed_rows
from semshare.evaluation.evaluate import evaluate_run
from semshare.evaluation.protocols import EmbeddingTable
from semshare.evaluation.retrieval import MetricSpec
from semshare.names import BEST
from semshare.training.finished_run import LABEL_RANKING, RankingStage, Run, RunCapabilities
from semshare.training.recipes import ExperimentConfig
from semshare.training.run_folder import require_dataset
from semshare.names import SELECTION_METRIC


@dataclass(repr=False)  # Run's repr: the folder, method and inputs
class TrainedRun(Run):
    """A trained method's run: config, data, model and the inputs its batches are built from (while it is
    trained, and once it is loaded from its folder)."""

    cfg: ExperimentConfig
    dataset: Dataset | None  # None: loaded without its data (it encodes queries; embedding rows needs the data)
    model: torch.nn.Module
    vocab: Vocabulary | None
    train_rows: np.ndarray
    val_rows: np.ndarray
    region_targets: np.ndarray | None
    text_segments: TextSegments | None = None
    segment_targets: np.ndarray | None = None  # word-piece id -> masked-word class
    run_dir: Path | None = None  # the folder it was loaded from (None while it is being trained)
    checkpoint: str = BEST
    num_labels: int | None = None  # the model's label count (None: the dataset's)
    ranking_stage: RankingStage = LABEL_RANKING

    @property
    def capabilities(self) -> RunCapabilities:
        method = self.cfg.method_class
        return RunCapabilities(free_text=self.cfg.inputs.text in ("words", "segments"),
                               token_states=self.cfg.inputs.text == "segments", image_files=True,
                               label_classifier=method.label_classifier, pairwise_scoring=method.pairwise_scoring)

    @property
    def text_source(self) -> str:
        return text_source_for(self.cfg.inputs.text)

    def batch_options(self, training: bool) -> BatchOptions:
        mask_prob = self.cfg.method_class.training_mask_prob(self.cfg.model) if training else 0.0
        return BatchOptions(image_input=self.cfg.inputs.image, text_input=self.cfg.inputs.text,
                            max_text_length=self.cfg.inputs.max_text_length, mask_prob=mask_prob,
                            sentence_segment=self.cfg.text.segments_sentence,
                            file_layout_prob=self.file_layout_prob if training else 0.0)

    @property
    def file_layout_prob(self) -> float:
        """The share of training images shown in a new file's layout: only where a file's layout differs
        from the rows' (regions from annotated boxes) and the global feature is there to show."""
        boxed = (self.cfg.inputs.image == "regions" and self.dataset is not None and self.dataset.image is not None
                 and self.dataset.meta.get("regions_from") == "boxes")
        return float(self.cfg.inputs.file_layout_prob) if boxed else 0.0

    def builder(self, training: bool) -> BatchBuilder:
        return BatchBuilder(self.dataset, self.vocab, self.batch_options(training),
                            self.region_targets if training else None, self.text_segments, self.segment_targets,
                            self.num_labels)

    @cached_property
    def _query_builder(self) -> BatchBuilder:
        return self.builder(training=False)

    def embed_label_space(self, rows: np.ndarray, sides: tuple[str, ...], device="cpu",
                          batch_size: int = 256) -> tuple[EmbeddingTable, EmbeddingTable]:
        return embed_rows(self.model, self.builder(training=False), rows, batch_size, device, sides)

    def _encode_query_batch(self, batch, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if with_labels:
            emb, probabilities = self.model.encode_with_labels(batch, "text")
            return emb.numpy(), probabilities.numpy()
        return self.model.encode_text(batch).numpy(), None

    @torch.no_grad()
    def encode_word_batch(self, texts: Sequence[list[str]], with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return self._encode_query_batch(self._query_builder.build_query_words(list(texts)), with_labels)

    @torch.no_grad()
    def encode_segment_batch(self, states: np.ndarray, real: np.ndarray, word_pieces: np.ndarray,
                             sentence: np.ndarray, with_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        batch = self._query_builder.build_query_segments(states, real, word_pieces, sentence)
        return self._encode_query_batch(batch, with_labels)

    @torch.no_grad()
    def encode_image_batch(self, regions: np.ndarray, boxes: np.ndarray, mask: np.ndarray,
                           with_labels: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, D) raw embeddings of new images given as region features (N, R, D), boxes (N, R, 4), mask (N, R),
        and (`with_labels`) their label probabilities from the same forward pass."""
        batch = self._query_builder.build_query_images(regions, boxes, mask)
        if with_labels:
            emb, probabilities = self.model.encode_with_labels(batch, "image")
            return emb.numpy(), probabilities.numpy()
        return self.model.encode_image(batch).numpy(), None

    @torch.no_grad()
    def predict_rows(self, rows: np.ndarray, side: str, batch_size: int = 256) -> np.ndarray:
        """(len(rows), C) label probabilities of dataset rows' images (`side="image"`) or of their text
        items (`"text"`, every caption of the rows, in item order)."""
        require_dataset(self)
        builder, rows = self._query_builder, np.asarray(rows, dtype=np.int64)
        ids = rows if side == "image" else self.dataset.text_items(rows, self.text_source).item_ids
        build = builder.build_images if side == "image" else builder.build_texts
        parts = [self.model.predict_labels(build(ids[start : start + batch_size]), side).numpy()
                 for start in range(0, len(ids), batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.num_labels or 0), np.float32)




def validation_function(run: TrainedRun, batch_size: int = 256):
    """Model selection on the validation rows: Ave NDCG@500 and mAP@all, pair scorers re-ranking. A method
    with several retrieval spaces has each scored; the best one is kept in the model, all are returned
    (`SPACE/ave/NDCG@500`, ...) so the log holds both."""
    builder = run.builder(training=False)
    spec = MetricSpec(ndcg_k=(500,), map_k=(None,))

    def score(device) -> dict[str, float]:
        return evaluate_run(run, spec=spec, rows=run.val_rows, validation=True, device=device,
                            batch_size=batch_size)[0]

    def validate(model) -> dict[str, float]:
        device = next(model.parameters()).device
        model.fit_retrieval(builder, run.train_rows)
        spaces = model.retrieval_spaces()
        if not spaces:
            return score(device)
        tables = {}
        for space in spaces:
            model.use_retrieval_space(space)
            tables[space] = score(device)
        best = max(spaces, key=lambda space: tables[space][SELECTION_METRIC])  # ties: the first listed
        model.use_retrieval_space(best)
        return {**tables[best], **{f"{space}/{key}": value for space in spaces for key, value in tables[space].items()}}

    return validate
