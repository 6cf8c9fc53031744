"""Batches of items for the neural methods: named fields, padding masks, deterministic sampling.

Every random choice (which caption of an image, which segments to mask) is drawn from a generator seeded
by (seed, epoch, row), never from a process-wide stream: a resumed run, or the same global batch split
over several processes, sees exactly the same data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np
import torch

from semshare.data.dataset import Dataset, gather_rows
from semshare.data.text import Vocabulary
from semshare.data.text_segments import TextSegments

BOX_FEATURES = 5  # x0, y0, x1, y1, area


@dataclass
class Batch:
    """One mini-batch; B items, R regions (trimmed to the batch's longest), L tokens.

    img_regions (B, R, D) float32, img_boxes (B, R, 5) float32, img_mask (B, R) bool (True = real),
    img_region_targets (B, R) int64 class per region (-1 = none),
    txt_tokens (B, L) int64 token ids (text_input "words"; None for token states), txt_mask (B, L) bool,
    txt_targets (B, L) int64 the masked-word targets (the token ids of a words batch, the same tensor; the
    word-piece classes of token states, -1 = not a target), txt_vectors (B, Dt) float32 or None,
    txt_segments (B, L, Dt) float32 or None: pretrained token states (text_input "segments"),
    img_masked (B, R) bool / txt_masked (B, L) bool: segments replaced by MASK for context prediction,
    labels (B, C) float32, img_rows (B,) int64, txt_ids (B,) int64 (global text item ids).
    A one-sided batch (`build_images` / `build_texts`) leaves the other side's fields None.
    """

    labels: torch.Tensor
    img_regions: torch.Tensor | None = None
    img_boxes: torch.Tensor | None = None
    img_mask: torch.Tensor | None = None
    img_region_targets: torch.Tensor | None = None
    img_masked: torch.Tensor | None = None
    img_rows: torch.Tensor | None = None
    txt_tokens: torch.Tensor | None = None
    txt_targets: torch.Tensor | None = None
    txt_mask: torch.Tensor | None = None
    txt_vectors: torch.Tensor | None = None
    txt_masked: torch.Tensor | None = None
    txt_ids: torch.Tensor | None = None
    txt_segments: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        return Batch(**moved)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def draw_masks(keys: list[tuple] | None, eligible: np.ndarray, prob: float, stream: int) -> np.ndarray:
    """(B, S) bool: which segments to replace by MASK. Item i draws from its own generator seeded by
    keys[i] + [stream] (one stream per modality), so its masks never depend on the rest of its batch."""
    masked = np.zeros(eligible.shape, dtype=bool)
    if keys is None or prob <= 0:
        return masked
    for i, key in enumerate(keys):
        draws = np.random.default_rng(list(key) + [stream]).random(eligible.shape[1])
        masked[i] = (draws < prob) & eligible[i]
    return masked


IMAGE_MASK_STREAM, TEXT_MASK_STREAM, FILE_LAYOUT_STREAM = 1, 2, 3


def draw_file_layouts(keys: list[tuple] | None, prob: float) -> np.ndarray:
    """(B,) bool: which items are shown as a new image file would be, each drawn from its own generator."""
    if keys is None or prob <= 0:
        return np.zeros(0 if keys is None else len(keys), dtype=bool)
    return np.array([np.random.default_rng(list(key) + [FILE_LAYOUT_STREAM]).random() < prob for key in keys])


def box_features(boxes: np.ndarray) -> np.ndarray:
    """(..., 4) normalised x0 y0 x1 y1 -> (..., 5) with the covered area fraction appended."""
    area = (boxes[..., 2] - boxes[..., 0]).clip(0) * (boxes[..., 3] - boxes[..., 1]).clip(0)
    return np.concatenate([boxes, area[..., None]], axis=-1).astype(np.float32)


def text_source_for(text_input: str) -> str:
    """The dataset's text items a text input reads: one per caption, or one vector per row (text.npy)."""
    return "vectors" if text_input == "vector" else "captions"


@dataclass(frozen=True)
class BatchOptions:
    image_input: str = "regions"  # regions | global
    text_input: str = "words"  # words | vector | segments (pretrained token states, data/text_segments.py)
    max_text_length: int = 64
    mask_prob: float = 0.0  # 0 at evaluation
    sentence_segment: bool = False  # segments: the encoder's sentence vector as one more segment, first
    # share of training images shown in the layout a new image file gets (the global feature as its one
    # region, no boxes): a run trained on annotated boxes then also knows the photos it will be asked about
    file_layout_prob: float = 0.0  # 0 at evaluation


def _tensors(**arrays) -> dict:
    return {name: None if value is None else torch.from_numpy(value) for name, value in arrays.items()}


class BatchBuilder:
    """Reads items of a Dataset into Batches (the memory maps are sliced, never loaded whole).

    `build(rows, txt_ids)` makes (image, text) pairs for training; `build_images(rows)` and
    `build_texts(txt_ids)` one side only, for embedding; `build_query_*` items that are not in the dataset.
    """

    def __init__(self, dataset: Dataset | None, vocab: Vocabulary | None, options: BatchOptions,
                 region_targets: np.ndarray | None = None, text_segments: TextSegments | None = None,
                 segment_targets: np.ndarray | None = None, num_labels: int | None = None):
        """`dataset` None: a builder of queries only (`build_query_*`, `num_labels` wide), for a run loaded
        without its data."""
        self.dataset = dataset
        self.num_labels = num_labels if num_labels is not None else (dataset.num_labels if dataset is not None else 0)
        self.vocab = vocab
        self.options = options
        self.region_targets = region_targets  # (N, R) int, or None
        self.text_segments = text_segments  # rows = global text item ids
        self.segment_targets = segment_targets  # word-piece id -> masked-word class (-1 = none)
        if dataset is None:
            return
        if options.image_input == "regions" and dataset.regions is None:
            raise ValueError(f"{dataset.root}: image_input 'regions' needs regions.npy")
        if options.file_layout_prob > 0 and (options.image_input != "regions" or dataset.image is None):
            raise ValueError(f"{dataset.root}: file_layout_prob needs region inputs and image.npy")
        if options.image_input == "global" and dataset.image is None:
            raise ValueError(f"{dataset.root}: image_input 'global' needs image.npy")
        if options.text_input == "words" and (not dataset.has_captions or vocab is None):
            raise ValueError(f"{dataset.root}: text_input 'words' needs captions.jsonl and a vocabulary")
        if options.text_input == "vector" and dataset.text_vectors is None:
            raise ValueError(f"{dataset.root}: text_input 'vector' needs text.npy")
        if options.text_input == "segments" and (text_segments is None or segment_targets is None):
            raise ValueError(f"{dataset.root}: text_input 'segments' needs extracted text segments and their targets")

    @property
    def text_source(self) -> str:
        return text_source_for(self.options.text_input)

    # ---- which dataset items ----
    def first_text_ids(self, rows: np.ndarray) -> np.ndarray:
        """The first text item of each row (its first caption, or its text vector)."""
        rows = np.asarray(rows, dtype=np.int64)
        return rows.copy() if self.text_source == "vectors" else self.dataset.caption_offsets[rows].astype(np.int64)

    def text_rows(self, txt_ids: np.ndarray) -> np.ndarray:
        """The image row each text item belongs to."""
        txt_ids = np.asarray(txt_ids, dtype=np.int64)
        if self.text_source == "vectors":
            return txt_ids.copy()
        return np.searchsorted(self.dataset.caption_offsets, txt_ids, side="right").astype(np.int64) - 1

    def _texts(self, txt_ids: np.ndarray) -> list:
        offsets, captions = self.dataset.caption_offsets, self.dataset.captions
        return [captions[r][int(t - offsets[r])] for r, t in zip(self.text_rows(txt_ids).tolist(), txt_ids.tolist())]

    # ---- image side ----
    def _image_fields(self, rows: np.ndarray, mask_keys: list[tuple] | None) -> dict:
        if self.options.image_input == "global":
            features = gather_rows(self.dataset.image, rows).astype(np.float32)[:, None, :]
            boxes = np.tile(np.array([0, 0, 1, 1, 1], dtype=np.float32), (len(rows), 1, 1))
            mask = np.ones((len(rows), 1), dtype=bool)
            targets = np.full((len(rows), 1), -1, dtype=np.int64)
        else:
            region_mask = gather_rows(self.dataset.region_mask, rows).astype(bool)
            # real regions first (stable), then cut to the batch's longest: padding costs nothing
            order = np.argsort(~region_mask, axis=1, kind="stable")
            keep = max(1, int(region_mask.sum(1).max()))
            order = order[:, :keep]
            # regions stored real-first (extract and the importers write them so) need no reordering copy
            in_place = bool((order == np.arange(keep)).all())

            def arranged(array: np.ndarray) -> np.ndarray:
                if in_place:  # only the slots kept are read
                    return gather_rows(array, rows, keep)
                values = gather_rows(array, rows)
                return np.take_along_axis(values, order.reshape(order.shape + (1,) * (values.ndim - 2)), axis=1)

            features = arranged(self.dataset.regions).astype(np.float32)
            boxes = box_features(arranged(self.dataset.region_boxes))
            mask = region_mask[:, :keep] if in_place else np.take_along_axis(region_mask, order, axis=1)
            mask = np.ascontiguousarray(mask)
            if self.region_targets is not None:
                targets = arranged(self.region_targets).astype(np.int64)
                targets[~mask] = -1
            else:
                targets = np.full(mask.shape, -1, dtype=np.int64)
            as_file = draw_file_layouts(mask_keys, self.options.file_layout_prob)
            if as_file.any():  # the global feature alone in slot 0, the whole image as its box
                features[as_file], boxes[as_file], mask[as_file], targets[as_file] = 0, 0, False, -1
                features[as_file, 0] = gather_rows(self.dataset.image, np.asarray(rows)[as_file]).astype(np.float32)
                boxes[as_file, 0], mask[as_file, 0] = box_features(np.array([0, 0, 1, 1], dtype=np.float32)), True
        masked = draw_masks(mask_keys, mask & (targets >= 0), self.options.mask_prob, IMAGE_MASK_STREAM)
        return _tensors(img_regions=features, img_boxes=boxes, img_mask=mask, img_region_targets=targets,
                        img_masked=masked, img_rows=np.asarray(rows, dtype=np.int64))

    # ---- text side ----
    def _text_fields(self, txt_ids: np.ndarray, mask_keys: list[tuple] | None) -> dict:
        """The text items `txt_ids` (global ids: a row's own id for text vectors)."""
        txt_ids = np.asarray(txt_ids, dtype=np.int64)
        if self.options.text_input == "vector":
            count = len(txt_ids)
            vectors = gather_rows(self.dataset.text_vectors, txt_ids).astype(np.float32)
            return _tensors(txt_tokens=np.zeros((count, 1), dtype=np.int64), txt_mask=np.ones((count, 1), dtype=bool),
                            txt_vectors=vectors, txt_masked=np.zeros((count, 1), dtype=bool), txt_ids=txt_ids)
        if self.options.text_input == "segments":
            return self._segment_fields(txt_ids, mask_keys)
        return self._word_fields(self._texts(txt_ids), mask_keys) | _tensors(txt_ids=txt_ids)

    def _word_fields(self, texts: list, mask_keys: list[tuple] | None) -> dict:
        encoded = [self.vocab.encode(t, self.options.max_text_length) or [self.vocab.unk_id] for t in texts]
        length = max(len(ids) for ids in encoded)
        tokens = np.full((len(encoded), length), self.vocab.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), length), dtype=bool)
        for i, ids in enumerate(encoded):
            tokens[i, : len(ids)] = ids
            mask[i, : len(ids)] = True
        masked = draw_masks(mask_keys, mask, self.options.mask_prob, TEXT_MASK_STREAM)
        fields = _tensors(txt_tokens=tokens, txt_mask=mask, txt_masked=masked)
        return fields | {"txt_targets": fields["txt_tokens"]}  # a masked word's target is its own id

    def _segment_fields(self, txt_ids: np.ndarray, mask_keys: list[tuple] | None) -> dict:
        store = self.text_segments
        mask = gather_rows(store.mask, txt_ids).astype(bool)
        keep = max(1, int(mask.sum(1).max()))  # word pieces are left-aligned: cut the common padding
        segments = gather_rows(store.segments, txt_ids)[:, :keep].astype(np.float32)
        word_pieces = gather_rows(store.token_ids, txt_ids)[:, :keep].astype(np.int64)
        sentence = gather_rows(store.sentence, txt_ids).astype(np.float32) if self.options.sentence_segment else None
        return self._segment_arrays(segments, mask[:, :keep], word_pieces, sentence, mask_keys) | _tensors(txt_ids=txt_ids)

    def _segment_arrays(self, segments: np.ndarray, mask: np.ndarray, word_pieces: np.ndarray,
                        sentence: np.ndarray | None, mask_keys: list[tuple] | None) -> dict:
        tokens = self.segment_targets[word_pieces]
        tokens[~mask] = -1
        if sentence is not None:  # never masked: it has no word-piece target
            segments = np.concatenate([sentence[:, None, :], segments], axis=1)
            mask = np.concatenate([np.ones((len(mask), 1), dtype=bool), mask], axis=1)
            tokens = np.concatenate([np.full((len(tokens), 1), -1, dtype=np.int64), tokens], axis=1)
        masked = draw_masks(mask_keys, mask & (tokens >= 0), self.options.mask_prob, TEXT_MASK_STREAM)
        return _tensors(txt_targets=tokens, txt_mask=mask, txt_masked=masked, txt_segments=segments)

    def _labels(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(gather_rows(self.dataset.labels, rows).astype(np.float32))

    # ---- batches ----
    def build(self, rows: np.ndarray, txt_ids: np.ndarray, mask_keys: list[tuple] | None = None) -> Batch:
        """(image row, text item of that row) pairs -> Batch.

        `mask_keys`, one integer tuple per item (None: no masking), seed that item's own mask draws.
        """
        rows = np.asarray(rows, dtype=np.int64)
        return Batch(labels=self._labels(rows), **self._image_fields(rows, mask_keys),
                     **self._text_fields(txt_ids, mask_keys))

    def build_images(self, rows: np.ndarray) -> Batch:
        """Images only (no masks): for embedding the image side."""
        rows = np.asarray(rows, dtype=np.int64)
        return Batch(labels=self._labels(rows), **self._image_fields(rows, None))

    def build_texts(self, txt_ids: np.ndarray) -> Batch:
        """Text items (global ids) only (no masks): for embedding the text side."""
        return Batch(labels=self._labels(self.text_rows(txt_ids)), **self._text_fields(txt_ids, None))

    def _unlabelled(self, count: int) -> torch.Tensor:
        return torch.zeros((count, self.num_labels), dtype=torch.float32)

    def build_query_words(self, texts: list) -> Batch:
        """Free texts (strings or token lists) through the run's vocabulary (text input "words")."""
        return Batch(labels=self._unlabelled(len(texts)), **self._word_fields(texts, None))

    def build_query_segments(self, segments: np.ndarray, mask: np.ndarray, word_pieces: np.ndarray,
                             sentence: np.ndarray | None) -> Batch:
        """Free texts already through the segment encoder: (B, L, Dt) states, (B, L) mask and word-piece ids."""
        if not self.options.sentence_segment:
            sentence = None
        return Batch(labels=self._unlabelled(len(segments)),
                     **self._segment_arrays(segments, mask, word_pieces, sentence, None))

    def build_query_images(self, regions: np.ndarray, boxes: np.ndarray, mask: np.ndarray) -> Batch:
        """Images not in the dataset: (B, R, D) features, (B, R, 4) normalised boxes, (B, R) mask."""
        count = len(regions)
        return Batch(labels=self._unlabelled(count), **_tensors(
            img_regions=regions.astype(np.float32), img_boxes=box_features(boxes), img_mask=mask.astype(bool),
            img_region_targets=np.full(mask.shape, -1, dtype=np.int64), img_masked=np.zeros(mask.shape, dtype=bool)))


def item_key(seed: int, epoch: int, row: int) -> tuple:
    """The seed of every random choice about one item in one epoch."""
    return (int(seed), int(epoch), int(row))


def epoch_order(rows: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The training rows in this epoch's order (a seeded permutation)."""
    return rows[np.random.default_rng([seed, epoch, 0x5EED]).permutation(len(rows))]


class TrainingBatches:
    """Training batches: each training row once per epoch with one of its captions chosen at random.

    Distributed: the global batch (batch_size items) is cut into world_size equal shards; rank r takes
    shard r. The last incomplete global batch is dropped so every step has the same global size.
    """

    def __init__(self, builder: BatchBuilder, rows: np.ndarray, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} must divide evenly over {world_size} processes")
        if len(rows) < batch_size:
            raise ValueError(f"{len(rows)} training items are fewer than one batch of {batch_size}")
        self.builder, self.rows, self.batch_size, self.seed = builder, np.asarray(rows), batch_size, seed
        self.rank, self.world_size = rank, world_size

    def steps_per_epoch(self) -> int:
        return len(self.rows) // self.batch_size

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        order = epoch_order(self.rows, self.seed, epoch)
        dataset = self.builder.dataset
        local = self.batch_size // self.world_size
        for step in range(start_step, self.steps_per_epoch()):
            global_rows = order[step * self.batch_size : (step + 1) * self.batch_size]
            rows = global_rows[self.rank * local : (self.rank + 1) * local]
            keys = [item_key(self.seed, epoch, r) for r in rows]
            if self.builder.text_source == "captions":  # one caption of the row
                offsets = dataset.caption_offsets
                choice = [int(np.random.default_rng(list(key) + [0]).integers(offsets[r + 1] - offsets[r]))
                          for key, r in zip(keys, rows)]
                txt_ids = np.array([offsets[r] + c for r, c in zip(rows, choice)], dtype=np.int64)
            else:
                txt_ids = rows.copy()
            yield self.builder.build(rows, txt_ids, keys)
