"""ViLBERT (Lu et al., 2019), trained FROM SCRATCH on the same features (no pre-trained weights exist here;
every result table marks the row so).

Two streams: image regions (+ boxes) and words each pass their own transformer layers, then co-attention
blocks where each stream's queries attend to the other stream (then self-attention and FFN per stream).
A pair is scored jointly: sigmoid(w^T (mean(image) * mean(text))). Because scoring needs the pair, the
model sets `pairwise_scoring = True`: a first stage ranks the gallery by each stream's own pooled
output in a shared label space (a shared classifier trained on both streams), and the top `shortlist`
items are re-ranked by the pair score (`semshare.evaluation.rerank`).
Training: each image with its own caption and `negatives` other captions of the batch; target = the pair
shares a label (label-wise, not alignment); plus the first-stage label loss on both streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semshare.data.batches import Batch
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, InputConfig, ModelSpec, TrainedMethod
from semshare.methods.losses import label_prediction_loss
from semshare.models.image_encoders import RegionEncoder
from semshare.models.layers import SegmentProjection, masked_mean, sinusoidal_positions
from semshare.registry import METHODS


@dataclass(frozen=True)
class ViLBERTConfig:
    dim: int = 768
    heads: int = 8
    ffn_dim: int = 1536
    stream_layers: int = 2  # own layers per stream before co-attention
    co_layers: int = 2
    dropout: float = 0.1
    negatives: int = 3
    shortlist: int = 50  # first-stage candidates re-ranked by the pair score
    # per-epoch model selection re-ranks a shorter list: pair scoring of the validation split cost 5x an
    # epoch of training at 50 (synthetic small: 36 s vs 7.5 s); the test split is re-ranked at `shortlist`
    validation_shortlist: int = 10
    label_weight: float = 1.0


class CoAttentionBlock(nn.Module):
    """Cross-attention each way (queries from one stream, keys/values from the other), then per stream
    self-attention + FFN. Pre-norm, residual, key-padding masks."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.norm_img, self.norm_txt = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.img_from_txt = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.txt_from_img = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        layer = lambda: nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu", batch_first=True,
                                                   norm_first=True)
        self.img_self, self.txt_self = layer(), layer()

    def forward(self, img, img_mask, txt, txt_mask):
        img_n, txt_n = self.norm_img(img), self.norm_txt(txt)
        img = img + self.img_from_txt(img_n, txt_n, txt_n, key_padding_mask=~txt_mask, need_weights=False)[0]
        txt = txt + self.txt_from_img(txt_n, img_n, img_n, key_padding_mask=~img_mask, need_weights=False)[0]
        return self.img_self(img, src_key_padding_mask=~img_mask), self.txt_self(txt, src_key_padding_mask=~txt_mask)


@METHODS.register("vilbert")
class ViLBERT(TrainedMethod):
    config_class = ViLBERTConfig
    display_name = "ViLBERT (from scratch)"
    pairwise_scoring = True
    image_inputs = ("regions",)  # its own streams read region features + boxes and word ids
    text_inputs = ("words",)

    def __init__(self, cfg: ViLBERTConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        dim = cfg.dim
        self.img_encoder = RegionEncoder(spec.region_dim, dim, cfg.dropout, maskable=False)
        word_vectors = fitted.get(WORD_VECTORS)
        if word_vectors is None:  # an old run folder rebuilt to load weights: the checkpoint fills the embedding
            word_vectors = np.zeros((spec.vocab_size, spec.word_dim), dtype=np.float32)
        self.word_embedding = nn.Embedding(spec.vocab_size, spec.word_dim, padding_idx=0)
        with torch.no_grad():
            vectors = np.asarray(word_vectors, dtype=np.float32)
            spread = float(vectors[4:].std()) if len(vectors) > 4 else 0.0
            self.word_embedding.weight.copy_(torch.from_numpy(vectors / spread if spread > 0 else vectors))
        self.txt_project = SegmentProjection(spec.word_dim, dim, dim, cfg.dropout)

        def stream() -> nn.TransformerEncoder:
            layer = nn.TransformerEncoderLayer(dim, cfg.heads, cfg.ffn_dim, cfg.dropout, activation="gelu",
                                               batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, cfg.stream_layers, enable_nested_tensor=False)

        self.img_stream, self.txt_stream = stream(), stream()
        self.co_blocks = nn.ModuleList(CoAttentionBlock(dim, cfg.heads, cfg.ffn_dim, cfg.dropout)
                                       for _ in range(cfg.co_layers))
        self.classifier = nn.Linear(dim, spec.num_labels)  # shared: the first stage's label space
        self.pair_head = nn.Linear(dim, 1)

    # ---- single streams (first stage) ----
    def _image_stream(self, batch: Batch):
        mask = batch.img_mask.clone()
        mask[~mask.any(1), 0] = True
        hidden = self.img_stream(self.img_encoder(batch.img_regions, batch.img_boxes), src_key_padding_mask=~mask)
        return hidden, mask

    def _text_stream(self, batch: Batch):
        mask = batch.txt_mask.clone()
        mask[~mask.any(1), 0] = True
        tokens = batch.txt_tokens
        positions = sinusoidal_positions(tokens.shape[1], self.cfg.dim, tokens.device).expand(len(tokens), -1, -1)
        segments = self.txt_project(self.word_embedding(tokens), positions)
        return self.txt_stream(segments, src_key_padding_mask=~mask), mask

    def encode_image(self, batch: Batch) -> torch.Tensor:
        hidden, mask = self._image_stream(batch)
        return torch.sigmoid(self.classifier(masked_mean(hidden, mask))).float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        hidden, mask = self._text_stream(batch)
        return torch.sigmoid(self.classifier(masked_mean(hidden, mask))).float()

    # ---- joint scoring ----
    def rerank_shortlist(self, validation: bool) -> int:
        return self.cfg.validation_shortlist if validation else self.cfg.shortlist

    def _pair_logits(self, img, img_mask, txt, txt_mask) -> torch.Tensor:
        for block in self.co_blocks:
            img, txt = block(img, img_mask, txt, txt_mask)
        return self.pair_head(masked_mean(img, img_mask) * masked_mean(txt, txt_mask)).squeeze(-1)

    def score_pairs(self, img_batch: Batch, txt_batch: Batch) -> torch.Tensor:
        """(B,) joint scores of item i of img_batch with item i of txt_batch."""
        img, img_mask = self._image_stream(img_batch)
        txt, txt_mask = self._text_stream(txt_batch)
        return torch.sigmoid(self._pair_logits(img, img_mask, txt, txt_mask)).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        img, img_mask = self._image_stream(batch)
        txt, txt_mask = self._text_stream(batch)
        losses = {
            "label_image": label_prediction_loss(self.classifier(masked_mean(img, img_mask)), batch.labels),
            "label_text": label_prediction_loss(self.classifier(masked_mean(txt, txt_mask)), batch.labels),
        }
        size = len(batch)
        # pair i with its own caption and the captions of the next `negatives` items (a fixed shift: no RNG)
        shifts = [0] + [1 + k for k in range(min(self.cfg.negatives, size - 1))]
        img_index = torch.arange(size, device=img.device).repeat(len(shifts))
        txt_index = torch.cat([(torch.arange(size, device=img.device) + s) % size for s in shifts])
        logits = self._pair_logits(img[img_index], img_mask[img_index], txt[txt_index], txt_mask[txt_index])
        targets = ((batch.labels[img_index] * batch.labels[txt_index]).sum(1) > 0).float()
        losses["pair"] = F.binary_cross_entropy_with_logits(logits.float(), targets)
        losses["loss"] = self.cfg.label_weight * (losses["label_image"] + losses["label_text"]) + losses["pair"]
        return losses
