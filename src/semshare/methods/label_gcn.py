"""Label-graph baseline (the GNN4CMR / ALGCN family: Qian et al., AAAI 2021 / TPAMI 2022; TMM 2021).

Two towers as DSCMR reads them (mean of regions, pooled text: frozen Word2Vec mean, text vector or the mean
of pretrained token states), each an MLP into a D-dim common space; a 2-layer GCN over the label
co-occurrence graph of the training rows turns vectors of the label names into one classifier per label,
shared by both modalities (models/label_graph.py). Loss: per-label BCE of u W^T + b and v W^T + b, plus an
optional cross-modal consistency term ||u - v|| on the paired items (ALGCN's; weight 0 by default).
Retrieval in the common space (u, v), or in the label space (the sigmoid scores), or `auto`: both scored on
every validation, the better one (Ave NDCG@500) kept with the checkpoint, both logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch
from torch import nn

from semshare.data.batches import Batch
from semshare.errors import ConfigError
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, FitContext, InputConfig, ModelSpec, TrainedMethod
from semshare.methods.dscmr import invariance_loss
from semshare.methods.losses import label_prediction_loss
from semshare.models.label_graph import (LabelGraphClassifier, LabelGraphConfig, check_label_graph_config,
                                         fit_label_graph)
from semshare.models.pooled_inputs import PooledInputs
from semshare.registry import METHODS

RETRIEVAL_SPACES = ("common", "label")


@dataclass(frozen=True)
class LabelGCNConfig:
    hidden_dim: int = 1024
    common_dim: int = 512
    dropout: float = 0.0
    consistency_weight: float = 0.0  # ALGCN's cross-modal term ||u - v|| on paired items; 0: label loss only
    retrieval: str = "auto"  # common | label | auto (chosen on validation)
    graph: LabelGraphConfig = field(default_factory=LabelGraphConfig)


def _tower(in_dim: int, hidden_dim: int, common_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(hidden_dim, common_dim))


@METHODS.register("label_gcn")
class LabelGCN(TrainedMethod):
    config_class = LabelGCNConfig
    display_name = "Label GCN"
    label_classifier = True

    @classmethod
    def check_config(cls, cfg: LabelGCNConfig) -> None:
        super().check_config(cfg)
        check_label_graph_config(cfg.graph, "model.graph.")
        if cfg.retrieval not in RETRIEVAL_SPACES + ("auto",):
            raise ConfigError(f"model.retrieval: expected common, label or auto, found {cfg.retrieval!r}")
        if not 0 <= cfg.dropout < 1:
            raise ConfigError(f"model.dropout: expected a fraction in [0, 1), found {cfg.dropout}")

    @classmethod
    def fit_inputs(cls, cfg: LabelGCNConfig, context: FitContext) -> dict[str, np.ndarray]:
        return fit_label_graph(cfg.graph, context)

    def __init__(self, cfg: LabelGCNConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg = cfg
        self.inputs = PooledInputs(inputs.text, spec.vocab_size, spec.word_dim, spec.text_dim,
                                   fitted.get(WORD_VECTORS))
        self.img_net = _tower(spec.region_dim, cfg.hidden_dim, cfg.common_dim, cfg.dropout)
        self.txt_net = _tower(self.inputs.text_dim, cfg.hidden_dim, cfg.common_dim, cfg.dropout)
        self.classifier = LabelGraphClassifier(cfg.graph, fitted, spec.num_labels, cfg.common_dim)
        # the retrieval space in use: a buffer, so the checkpoint kept by validation holds the one it chose
        start = RETRIEVAL_SPACES.index(cfg.retrieval) if cfg.retrieval in RETRIEVAL_SPACES else 0
        self.register_buffer("retrieval_choice", torch.tensor(start))

    def retrieval_spaces(self) -> tuple[str, ...]:
        return RETRIEVAL_SPACES if self.cfg.retrieval == "auto" else ()

    def use_retrieval_space(self, name: str) -> None:
        self.retrieval_choice.fill_(RETRIEVAL_SPACES.index(name))

    @property
    def retrieval_space(self) -> str:
        return RETRIEVAL_SPACES[int(self.retrieval_choice)]

    def _common(self, batch: Batch, side: str) -> torch.Tensor:
        if side == "image":
            return self.img_net(self.inputs.image(batch))
        return self.txt_net(self.inputs.text(batch))

    def _retrieval(self, common: torch.Tensor) -> torch.Tensor:
        if self.retrieval_space == "label":
            return torch.sigmoid(self.classifier(common)).float()
        return common.float()

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return self._retrieval(self._common(batch, "image"))

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return self._retrieval(self._common(batch, "text"))

    def predict_labels(self, batch: Batch, side: str) -> torch.Tensor:
        """The GCN classifiers' sigmoid scores (trained with the label prediction loss): what was read."""
        return torch.sigmoid(self.classifier(self._common(batch, side))).float()

    def encode_with_labels(self, batch: Batch, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        common = self._common(batch, side)
        return self._retrieval(common), torch.sigmoid(self.classifier(common)).float()

    def encode_features(self, batch: Batch, side: str) -> torch.Tensor:
        return self._common(batch, side).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        u, v = self._common(batch, "image"), self._common(batch, "text")
        losses = {"label_image": label_prediction_loss(self.classifier(u), batch.labels),
                  "label_text": label_prediction_loss(self.classifier(v), batch.labels)}
        total = losses["label_image"] + losses["label_text"]
        if self.cfg.consistency_weight > 0:
            losses["consistency"] = invariance_loss(u, v)
            total = total + self.cfg.consistency_weight * losses["consistency"]
        losses["loss"] = total
        return losses
