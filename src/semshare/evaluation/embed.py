"""Encode items with a trained model: each side alone, in batches, without gradients."""

from __future__ import annotations

import numpy as np
import torch

from semshare.data.batches import BatchBuilder
from semshare.evaluation.protocols import EmbeddingTable


@torch.no_grad()
def embed_rows(model, builder: BatchBuilder, rows: np.ndarray, batch_size: int = 256,
               device: torch.device | str = "cpu", sides: tuple[str, ...] = ("image", "text"),
               ) -> tuple[EmbeddingTable, EmbeddingTable]:
    """Image embeddings (len(rows), D) of `rows` and text embeddings of all their text items (every
    caption); a side left out of `sides` comes back empty."""
    was_training = model.training
    model.eval()
    rows = np.asarray(rows, dtype=np.int64)
    img_ids = rows if "image" in sides else np.zeros(0, dtype=np.int64)
    txt_ids = (builder.dataset.text_items(rows, builder.text_source).item_ids if "text" in sides
               else np.zeros(0, dtype=np.int64))
    img = _encode_in_batches(lambda ids: model.encode_image(builder.build_images(ids).to(device)), img_ids, batch_size)
    txt = _encode_in_batches(lambda ids: model.encode_text(builder.build_texts(ids).to(device)), txt_ids, batch_size)
    model.train(was_training)
    return EmbeddingTable(img_ids, img), EmbeddingTable(txt_ids, txt)


def _encode_in_batches(encode, ids: np.ndarray, batch_size: int) -> np.ndarray:
    parts = [encode(ids[start : start + batch_size]).float().cpu().numpy() for start in range(0, len(ids), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
