"""Encode items with a trained model: each side alone, in batches, without gradients."""

from __future__ import annotations

import numpy as np
import torch

from semshare.data.batches import BatchBuilder, text_source_for
from semshare.evaluation.protocols import EmbeddingTable


@torch.no_grad()
def embed_rows(model, builder: BatchBuilder, rows: np.ndarray, batch_size: int = 256,
               device: torch.device | str = "cpu", sides: tuple[str, ...] = ("image", "text"),
               ) -> tuple[EmbeddingTable, EmbeddingTable]:
    """Image embeddings of `rows` and text embeddings of all their text items (every caption); a side left
    out of `sides` comes back empty."""
    was_training = model.training
    model.eval()
    dataset = builder.dataset
    text_source = text_source_for(builder.options.text_input)
    items = dataset.text_items(rows, text_source)
    img_parts, txt_parts = [], []
    for start in range(0, len(rows) if "image" in sides else 0, batch_size):
        chunk = rows[start : start + batch_size]
        # the text half of this batch is a placeholder (first text of each row); only images are encoded
        batch = builder.build(chunk, chunk, _first_texts(dataset, chunk, text_source)).to(device)
        img_parts.append(model.encode_image(batch).cpu().numpy())
    for start in range(0, len(items.rows) if "text" in sides else 0, batch_size):
        stop = start + batch_size
        batch = builder.build(items.rows[start:stop], items.item_ids[start:stop],
                              None if items.texts is None else items.texts[start:stop]).to(device)
        txt_parts.append(model.encode_text(batch).cpu().numpy())
    model.train(was_training)
    img = np.concatenate(img_parts) if img_parts else np.zeros((0, 0), dtype=np.float32)
    txt = np.concatenate(txt_parts) if txt_parts else np.zeros((0, 0), dtype=np.float32)
    img_ids = np.asarray(rows, dtype=np.int64) if "image" in sides else np.zeros(0, dtype=np.int64)
    txt_ids = items.item_ids if "text" in sides else np.zeros(0, dtype=np.int64)
    return EmbeddingTable(img_ids, img), EmbeddingTable(txt_ids, txt)


def _first_texts(dataset, rows: np.ndarray, text_source: str):
    if text_source != "captions":
        return None
    return [dataset.captions[r][0] for r in rows]
