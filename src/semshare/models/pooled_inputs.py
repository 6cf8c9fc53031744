"""Pooled (one vector per item) inputs for the baselines trained by the loop (DCCA, DSCMR, SCML).

Image: the mean of the real regions (a global feature is one region). Text: the precomputed text vector
(`text.npy`), the mean of the caption's word vectors, frozen (these methods take fixed text features), or
the mean of a pretrained encoder's token states (text_input "segments": the pooled form of what Ours reads).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from semshare.data.batches import Batch
from semshare.models.layers import l2_normalize, masked_mean


class PooledInputs(nn.Module):
    def __init__(self, text_input: str, vocab_size: int, word_dim: int, text_dim: int,
                 word_vectors: np.ndarray | None = None):
        super().__init__()
        if text_input == "words":
            if word_vectors is None:  # rebuilding to load weights: the checkpoint fills the buffer
                word_vectors = np.zeros((vocab_size, word_dim), dtype=np.float32)
            self.register_buffer("word_vectors", torch.from_numpy(np.asarray(word_vectors, dtype=np.float32)))
            self.text_dim = word_dim
        else:
            self.word_vectors = None
            self.text_dim = text_dim

    def image(self, batch: Batch) -> torch.Tensor:
        return masked_mean(batch.img_regions, batch.img_mask)

    def text(self, batch: Batch) -> torch.Tensor:
        if batch.txt_segments is not None:  # the encoder's own sentence vector: normalised mean of its states
            return l2_normalize(masked_mean(batch.txt_segments, batch.txt_mask))
        if self.word_vectors is None:
            return batch.txt_vectors
        return masked_mean(self.word_vectors[batch.txt_tokens], batch.txt_mask)
