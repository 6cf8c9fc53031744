"""DCCA (Andrew et al., ICML 2013): two MLPs trained to maximise the total canonical correlation of their
outputs (regularised covariances, r = 1e-3), then linear CCA on the outputs gives the retrieval space.

Loss on a batch (B items, o outputs per view): with centred outputs H1, H2,
  S11 = H1^T H1 / (B - 1) + r I,  S22 likewise,  S12 = H1^T H2 / (B - 1),
  T = L11^-1 S12 L22^-T (Cholesky factors),  corr = sum of T's singular values,  loss = -corr.
Unsupervised like CCA: labels are not used. After training (and before each validation) the linear CCA
is fitted on the training items' outputs (`fit_retrieval`) and kept as buffers, so it travels with the
checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from semshare.data.batches import Batch
from semshare.methods.cca import CCAConfig, fit_cca
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, InputConfig, ModelSpec, TrainedMethod
from semshare.models.pooled_inputs import PooledInputs
from semshare.registry import METHODS


@dataclass(frozen=True)
class DCCAConfig:
    hidden_dim: int = 1024
    output_dim: int = 64
    reg: float = 1e-3
    cca_items: int = 5000  # training items the final linear CCA is fitted on (seeded subsample above)


def total_correlation(h1: torch.Tensor, h2: torch.Tensor, reg: float) -> torch.Tensor:
    """Sum of canonical correlations between the columns of h1 (B, o) and h2 (B, o)."""
    h1 = h1.double() - h1.double().mean(0)
    h2 = h2.double() - h2.double().mean(0)
    n = h1.shape[0] - 1
    eye = torch.eye(h1.shape[1], dtype=h1.dtype, device=h1.device)
    s11 = h1.T @ h1 / n + reg * eye
    s22 = h2.T @ h2 / n + reg * eye
    s12 = h1.T @ h2 / n
    # whiten with Cholesky factors (any square root gives the same singular values); unlike an eigh-based
    # inverse square root, its backward pass has no 1 / (lambda_i - lambda_j) terms that explode
    l11 = torch.linalg.cholesky(s11)
    l22 = torch.linalg.cholesky(s22)
    t = torch.linalg.solve_triangular(l11, s12, upper=False)
    t = torch.linalg.solve_triangular(l22, t.T, upper=False).T
    return torch.linalg.svdvals(t).sum()


def _mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Sigmoid(), nn.Linear(hidden_dim, hidden_dim), nn.Sigmoid(),
                         nn.Linear(hidden_dim, out_dim))


@METHODS.register("dcca")
class DCCA(TrainedMethod):
    config_class = DCCAConfig
    display_name = "DCCA"

    def __init__(self, cfg: DCCAConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.inputs = PooledInputs(inputs.text, spec.vocab_size, spec.word_dim, spec.text_dim,
                                   fitted.get(WORD_VECTORS))
        self.img_net = _mlp(spec.region_dim, cfg.hidden_dim, cfg.output_dim)
        self.txt_net = _mlp(self.inputs.text_dim, cfg.hidden_dim, cfg.output_dim)
        o = cfg.output_dim
        # the linear CCA on top (identity until fitted)
        for name, value in (("img_mean", torch.zeros(o)), ("txt_mean", torch.zeros(o)),
                            ("img_proj", torch.eye(o)), ("txt_proj", torch.eye(o))):
            self.register_buffer(name, value)

    def _outputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.img_net(self.inputs.image(batch)), self.txt_net(self.inputs.text(batch))

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return ((self.img_net(self.inputs.image(batch)) - self.img_mean) @ self.img_proj).float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return ((self.txt_net(self.inputs.text(batch)) - self.txt_mean) @ self.txt_proj).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        img, txt = self._outputs(batch)
        correlation = total_correlation(img, txt, self.cfg.reg)
        return {"correlation": correlation.detach().float(), "loss": (-correlation).float()}

    @torch.no_grad()
    def fit_retrieval(self, builder, rows: np.ndarray, batch_size: int = 256) -> None:
        """Fit the linear CCA on the outputs of (a seeded subsample of) the training items."""
        was_training = self.training
        self.eval()
        if len(rows) > self.cfg.cca_items:
            rows = np.sort(np.random.default_rng(0).choice(rows, self.cfg.cca_items, replace=False))
        device = next(self.parameters()).device
        img_parts, txt_parts = [], []
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            img, txt = self._outputs(builder.build(chunk, builder.first_text_ids(chunk)).to(device))
            img_parts.append(img.double().cpu().numpy())
            txt_parts.append(txt.double().cpu().numpy())
        cca, _ = fit_cca(np.concatenate(img_parts), np.concatenate(txt_parts), CCAConfig(reg=self.cfg.reg))
        for name, value in (("img_mean", cca.img_mean), ("txt_mean", cca.txt_mean), ("img_proj", cca.img_weight),
                            ("txt_proj", cca.txt_weight)):
            getattr(self, name).copy_(torch.from_numpy(value).to(getattr(self, name)))
        self.train(was_training)
