"""DCMH (Jiang & Li, CVPR 2017): deep cross-modal hashing, written from the paper's equations.

One network per modality maps its input to B real outputs (F for images, G for texts); the codes are
B = sign(F + G) in training and sign(F) / sign(G) at retrieval. The objective (the paper's Eq. 3):

  J = - sum_ij (S_ij theta_ij - log(1 + e^theta_ij))  +  gamma (||B - F||^2 + ||B - G||^2)
      +  eta (||F^T 1||^2 + ||G^T 1||^2),        theta_ij = 1/2 F_i . G_j,  S_ij = 1: i and j share a label

alternating F, G and B. Here the networks are trained by the one loop, so the alternation is per batch:
B = sign(F + G) for the batch (the paper's closed-form B step, detached), then one gradient step on F and
G together; the sums are means (over pairs, items and bits), so gamma and eta do not scale with the batch.
Inputs are the pooled features every two-tower method reads (the mean of an image's regions or its global
feature; the text vector or the mean of a caption's word vectors), in place of the paper's CNN-F on pixels
and bag-of-words MLP. Its real-valued outputs are its embedding (cosine retrieval, the usual tables); its
codes come with `semshare fit-hash RUN --set kinds=[sign] --set bits=[B]` (the signs, no projection).
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
from semshare.models.pooled_inputs import PooledInputs
from semshare.registry import METHODS


@dataclass(frozen=True)
class DCMHConfig:
    bits: int = 64
    hidden_dim: int = 1024
    gamma: float = 1.0  # quantisation: ||B - F||^2 + ||B - G||^2
    eta: float = 1.0  # bit balance: ||F^T 1||^2 + ||G^T 1||^2
    dropout: float = 0.0


def dcmh_loss(f: torch.Tensor, g: torch.Tensor, labels: torch.Tensor, gamma: float, eta: float) -> dict[str, torch.Tensor]:
    """The three terms of DCMH's objective for one batch of paired items, each a mean."""
    similar = (labels @ labels.T > 0).float()
    theta = 0.5 * f @ g.T
    likelihood = (F.softplus(theta) - similar * theta).mean()
    codes = torch.sign(f + g).detach()
    codes = torch.where(codes == 0, torch.ones_like(codes), codes)
    quantisation = ((codes - f) ** 2).mean() + ((codes - g) ** 2).mean()
    balance = (f.mean(0) ** 2).mean() + (g.mean(0) ** 2).mean()
    return {"likelihood": likelihood, "quantisation": quantisation, "balance": balance,
            "loss": likelihood + gamma * quantisation + eta * balance}


@METHODS.register("dcmh")
class DCMH(TrainedMethod):
    config_class = DCMHConfig
    display_name = "DCMH"

    @classmethod
    def check_config(cls, cfg: DCMHConfig) -> None:
        from semshare.errors import ConfigError

        if not isinstance(cfg.bits, int) or not 1 <= cfg.bits <= 1024:
            raise ConfigError(f"model.bits: expected an integer in 1..1024, found {cfg.bits!r}")
        super().check_config(cfg)

    def __init__(self, cfg: DCMHConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.inputs = PooledInputs(inputs.text, spec.vocab_size, spec.word_dim, spec.text_dim,
                                   fitted.get(WORD_VECTORS))
        self.img_net = nn.Sequential(nn.Linear(spec.region_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                     nn.Linear(cfg.hidden_dim, cfg.bits))
        self.txt_net = nn.Sequential(nn.Linear(self.inputs.text_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                     nn.Linear(cfg.hidden_dim, cfg.bits))

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return self.img_net(self.inputs.image(batch)).float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return self.txt_net(self.inputs.text(batch)).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        return dcmh_loss(self.encode_image(batch), self.encode_text(batch), batch.labels, self.cfg.gamma, self.cfg.eta)
