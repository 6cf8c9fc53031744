"""SCML (Song & Tan, 2019): one shared classifier learned modality by modality, text first, then image,
with a meta-learned update of the shared classifier against forgetting.

Phases (declared through `on_epoch_start`, the loop stays generic):
  1. epochs < text_epochs: the text network and the shared classifier W learn the labels from text;
  2. then the image network joins. Each step also takes a look-ahead: W' = W - step * dL_img/dW (kept in the
     graph), and the text loss under W' is added, so an update that serves the image must not make the
     classifier forget the text (a MAML-style meta objective).
Pooled inputs (mean of regions or the global feature; text vector or mean of frozen word vectors) through
modal MLPs into a common space; retrieval in the shared label space (sigmoid of W), where both modalities
meet by construction.
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
from semshare.models.pooled_inputs import PooledInputs
from semshare.registry import METHODS


@dataclass(frozen=True)
class SCMLConfig:
    hidden_dim: int = 1024
    common_dim: int = 512
    text_epochs: int = 3  # phase 1 length
    meta_step: float = 0.1  # inner learning rate of the look-ahead classifier update
    meta_weight: float = 1.0


@METHODS.register("scml")
class SCML(TrainedMethod):
    config_class = SCMLConfig
    display_name = "SCML"

    def __init__(self, cfg: SCMLConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.inputs = PooledInputs(inputs.text, spec.vocab_size, spec.word_dim, spec.text_dim,
                                   fitted.get(WORD_VECTORS))
        text_dim = self.inputs.text_dim
        self.img_net = nn.Sequential(nn.Linear(spec.region_dim, cfg.hidden_dim), nn.ReLU(),
                                     nn.Linear(cfg.hidden_dim, cfg.common_dim))
        self.txt_net = nn.Sequential(nn.Linear(text_dim, cfg.hidden_dim), nn.ReLU(),
                                     nn.Linear(cfg.hidden_dim, cfg.common_dim))
        self.classifier = nn.Linear(cfg.common_dim, spec.num_labels)
        self.epoch = 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def _image_common(self, batch: Batch) -> torch.Tensor:
        return self.img_net(self.inputs.image(batch))

    def _text_common(self, batch: Batch) -> torch.Tensor:
        return self.txt_net(self.inputs.text(batch))

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return torch.sigmoid(self.classifier(self._image_common(batch))).float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return torch.sigmoid(self.classifier(self._text_common(batch))).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        text_common = self._text_common(batch)
        losses = {"label_text": label_prediction_loss(self.classifier(text_common), batch.labels)}
        if self.epoch < self.cfg.text_epochs:
            # phase 1; the image network still enters the graph (with weight 0) so every parameter is used
            losses["loss"] = losses["label_text"] + 0.0 * self._image_common(batch).sum()
            return losses
        image_logits = self.classifier(self._image_common(batch))
        losses["label_image"] = label_prediction_loss(image_logits, batch.labels)
        weight, bias = self.classifier.weight, self.classifier.bias
        grad_weight, grad_bias = torch.autograd.grad(losses["label_image"], (weight, bias), create_graph=True)
        looked_ahead = F.linear(text_common, weight - self.cfg.meta_step * grad_weight,
                                bias - self.cfg.meta_step * grad_bias)
        losses["meta_text"] = label_prediction_loss(looked_ahead, batch.labels)
        losses["loss"] = losses["label_text"] + losses["label_image"] + self.cfg.meta_weight * losses["meta_text"]
        return losses
