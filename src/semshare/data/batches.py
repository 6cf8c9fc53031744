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
    txt_tokens (B, L) int64, txt_mask (B, L) bool, txt_vectors (B, Dt) float32 or None,
    txt_segments (B, L, Dt) float32 or None: pretrained token states (text_input "segments"); txt_tokens then
    holds their masked-word targets (class ids, -1 = not a target),
    img_masked (B, R) bool / txt_masked (B, L) bool: segments replaced by MASK for context prediction,
    labels (B, C) float32, img_rows (B,) int64, txt_ids (B,) int64 (global text item ids).
    """

    img_regions: torch.Tensor
    img_boxes: torch.Tensor
    img_mask: torch.Tensor
    img_region_targets: torch.Tensor
    txt_tokens: torch.Tensor
    txt_mask: torch.Tensor
    txt_vectors: torch.Tensor | None
    img_masked: torch.Tensor
    txt_masked: torch.Tensor
    labels: torch.Tensor
    img_rows: torch.Tensor
    txt_ids: torch.Tensor
    txt_segments: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            moved[f.name] = value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
        return Batch(**moved)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


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


class BatchBuilder:
    """Reads items of a Dataset into Batches (the memory maps are sliced, never loaded whole)."""

    def __init__(self, dataset: Dataset, vocab: Vocabulary | None, options: BatchOptions,
                 region_targets: np.ndarray | None = None, text_segments: TextSegments | None = None,
                 segment_targets: np.ndarray | None = None):
        self.dataset = dataset
        self.vocab = vocab
        self.options = options
        self.region_targets = region_targets  # (N, R) int, or None
        self.text_segments = text_segments  # rows = global text item ids
        self.segment_targets = segment_targets  # word-piece id -> masked-word class (-1 = none)
        if options.image_input == "regions" and dataset.regions is None:
            raise ValueError(f"{dataset.root}: image_input 'regions' needs regions.npy")
        if options.image_input == "global" and dataset.image is None:
            raise ValueError(f"{dataset.root}: image_input 'global' needs image.npy")
        if options.text_input == "words" and (not dataset.has_captions or vocab is None):
            raise ValueError(f"{dataset.root}: text_input 'words' needs captions.jsonl and a vocabulary")
        if options.text_input == "vector" and dataset.text_vectors is None:
            raise ValueError(f"{dataset.root}: text_input 'vector' needs text.npy")
        if options.text_input == "segments" and (text_segments is None or segment_targets is None):
            raise ValueError(f"{dataset.root}: text_input 'segments' needs extracted text segments and their targets")

    # ---- image side ----
    def _image_part(self, rows: np.ndarray, mask_keys: list[tuple] | None):
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
            regions = gather_rows(self.dataset.regions, rows)
            features = np.take_along_axis(regions, order[..., None], axis=1).astype(np.float32)
            boxes = box_features(np.take_along_axis(gather_rows(self.dataset.region_boxes, rows), order[..., None], axis=1))
            mask = np.take_along_axis(region_mask, order, axis=1)
            if self.region_targets is not None:
                targets = np.take_along_axis(gather_rows(self.region_targets, rows), order, axis=1).astype(np.int64)
                targets[~mask] = -1
            else:
                targets = np.full(mask.shape, -1, dtype=np.int64)
        masked = np.zeros(mask.shape, dtype=bool)
        if mask_keys is not None and self.options.mask_prob > 0:
            for i, key in enumerate(mask_keys):
                draws = np.random.default_rng(list(key) + [1]).random(mask.shape[1])
                masked[i] = (draws < self.options.mask_prob) & mask[i] & (targets[i] >= 0)
        return features, boxes, mask, targets, masked

    # ---- text side ----
    def _text_part(self, rows: np.ndarray, txt_ids: np.ndarray, texts: list | None,
                   mask_keys: list[tuple] | None):
        if self.options.text_input == "vector":
            vectors = gather_rows(self.dataset.text_vectors, rows).astype(np.float32)
            tokens = np.zeros((len(rows), 1), dtype=np.int64)
            return tokens, np.ones((len(rows), 1), dtype=bool), vectors, np.zeros((len(rows), 1), dtype=bool), None
        if self.options.text_input == "segments":
            return self._segment_part(np.asarray(txt_ids, dtype=np.int64), mask_keys)
        assert self.vocab is not None and texts is not None
        encoded = [self.vocab.encode(t, self.options.max_text_length) or [self.vocab.unk_id] for t in texts]
        length = max(len(ids) for ids in encoded)
        tokens = np.full((len(encoded), length), self.vocab.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), length), dtype=bool)
        for i, ids in enumerate(encoded):
            tokens[i, : len(ids)] = ids
            mask[i, : len(ids)] = True
        masked = np.zeros(mask.shape, dtype=bool)
        if mask_keys is not None and self.options.mask_prob > 0:
            for i, key in enumerate(mask_keys):
                draws = np.random.default_rng(list(key) + [2]).random(length)
                masked[i] = (draws < self.options.mask_prob) & mask[i]
        return tokens, mask, None, masked, None

    def _segment_part(self, txt_ids: np.ndarray, mask_keys: list[tuple] | None):
        store = self.text_segments
        mask = gather_rows(store.mask, txt_ids).astype(bool)
        keep = max(1, int(mask.sum(1).max()))  # word pieces are left-aligned: cut the common padding
        mask = mask[:, :keep]
        segments = gather_rows(store.segments, txt_ids)[:, :keep].astype(np.float32)
        tokens = self.segment_targets[gather_rows(store.token_ids, txt_ids)[:, :keep].astype(np.int64)]
        tokens[~mask] = -1
        if self.options.sentence_segment:  # never masked: it has no word-piece target
            sentence = gather_rows(store.sentence, txt_ids).astype(np.float32)[:, None, :]
            segments = np.concatenate([sentence, segments], axis=1)
            mask = np.concatenate([np.ones((len(mask), 1), dtype=bool), mask], axis=1)
            tokens = np.concatenate([np.full((len(tokens), 1), -1, dtype=np.int64), tokens], axis=1)
            keep += 1
        masked = np.zeros(mask.shape, dtype=bool)
        if mask_keys is not None and self.options.mask_prob > 0:
            for i, key in enumerate(mask_keys):
                draws = np.random.default_rng(list(key) + [2]).random(keep)
                masked[i] = (draws < self.options.mask_prob) & mask[i] & (tokens[i] >= 0)
        return tokens, mask, None, masked, segments

    def build(self, rows: np.ndarray, txt_ids: np.ndarray, texts: list | None,
              mask_keys: list[tuple] | None = None) -> Batch:
        """Items (image row, text item) -> Batch.

        `mask_keys`, one integer tuple per item (None: no masking), seed that item's own mask draws, one
        generator per modality: an item's masks never depend on the other items of its batch.
        """
        features, boxes, img_mask, targets, img_masked = self._image_part(rows, mask_keys)
        tokens, txt_mask, vectors, txt_masked, segments = self._text_part(rows, txt_ids, texts, mask_keys)
        labels = gather_rows(self.dataset.labels, rows).astype(np.float32)
        return Batch(
            img_regions=torch.from_numpy(features), img_boxes=torch.from_numpy(boxes),
            img_mask=torch.from_numpy(img_mask), img_region_targets=torch.from_numpy(targets),
            txt_tokens=torch.from_numpy(tokens), txt_mask=torch.from_numpy(txt_mask),
            txt_vectors=None if vectors is None else torch.from_numpy(vectors),
            img_masked=torch.from_numpy(img_masked), txt_masked=torch.from_numpy(txt_masked),
            labels=torch.from_numpy(labels), img_rows=torch.from_numpy(rows.astype(np.int64)),
            txt_ids=torch.from_numpy(np.asarray(txt_ids, dtype=np.int64)),
            txt_segments=None if segments is None else torch.from_numpy(segments),
        )


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
            if self.builder.options.text_input in ("words", "segments"):  # one caption of the row
                offsets = dataset.caption_offsets
                choice = [int(np.random.default_rng(list(key) + [0]).integers(offsets[r + 1] - offsets[r]))
                          for key, r in zip(keys, rows)]
                txt_ids = np.array([offsets[r] + c for r, c in zip(rows, choice)], dtype=np.int64)
                texts = [dataset.captions[r][c] for r, c in zip(rows, choice)]
            else:
                txt_ids, texts = rows.copy(), None
            yield self.builder.build(rows, txt_ids, texts, keys)
