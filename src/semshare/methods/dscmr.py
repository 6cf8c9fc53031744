"""DSCMR (Zhen et al., CVPR 2019): deep supervised cross-modal retrieval, multi-label kept multi-label.

Each modality's pooled input goes through its own MLP, then ONE shared linear layer into the common
space (u for images, v for texts), then ONE shared linear classifier P. Loss (the authors' formulas):
  J1 label space      mean_i ||P u_i - y_i||_2 + mean_i ||P v_i - y_i||_2
  J2 common space     Eq. 1: inter- and intra-modal terms log(1 + e^theta) - S theta, theta = cos / 2,
                      S_ij = 1 when items i and j share a label (not an argmax of the labels)
  J3 invariance       mean_i ||u_i - v_i||_2
  L = J1 + alpha J2 + beta J3, alpha = 1e-3, beta = 1e-1; retrieval in the common space by cosine.
Inputs: the mean of an image's real regions (or its global feature); the text vector (`text.npy`) or the
mean of the caption's word vectors (frozen). Model selection is the loop's: on validation, never on test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from semshare.data.batches import Batch
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, InputConfig, ModelSpec, TrainedMethod
from semshare.methods.losses import discrimination_loss
from semshare.models.pooled_inputs import PooledInputs
from semshare.registry import METHODS


@dataclass(frozen=True)
class DSCMRConfig:
    hidden_dim: int = 1024
    common_dim: int = 512
    alpha: float = 1e-3
    beta: float = 1e-1
    dropout: float = 0.0


def label_space_loss(predicted: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mean_i ||p_i - y_i||_2 (DSCMR's J1 for one modality)."""
    return (predicted - labels).pow(2).sum(1).clamp_min(1e-12).sqrt().mean()


def invariance_loss(img_common: torch.Tensor, txt_common: torch.Tensor) -> torch.Tensor:
    """mean_i ||u_i - v_i||_2 (DSCMR's J3)."""
    return (img_common - txt_common).pow(2).sum(1).clamp_min(1e-12).sqrt().mean()


def _mlp(in_dim: int, hidden_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU())


@METHODS.register("dscmr")
class DSCMR(TrainedMethod):
    config_class = DSCMRConfig
    display_name = "DSCMR"

    def __init__(self, cfg: DSCMRConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.inputs = PooledInputs(inputs.text, spec.vocab_size, spec.word_dim, spec.text_dim,
                                   fitted.get(WORD_VECTORS))
        self.img_net = _mlp(spec.region_dim, cfg.hidden_dim, cfg.dropout)
        self.txt_net = _mlp(self.inputs.text_dim, cfg.hidden_dim, cfg.dropout)
        self.common = nn.Linear(cfg.hidden_dim, cfg.common_dim)
        self.classifier = nn.Linear(cfg.common_dim, spec.num_labels)

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return self.common(self.img_net(self.inputs.image(batch))).float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return self.common(self.txt_net(self.inputs.text(batch))).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        u, v = self.encode_image(batch), self.encode_text(batch)
        losses = {
            "label_image": label_space_loss(self.classifier(u), batch.labels),
            "label_text": label_space_loss(self.classifier(v), batch.labels),
            "discrimination": discrimination_loss(u, v, batch.labels),
            "invariance": invariance_loss(u, v),
        }
        losses["loss"] = (losses["label_image"] + losses["label_text"] + self.cfg.alpha * losses["discrimination"]
                          + self.cfg.beta * losses["invariance"])
        return losses
