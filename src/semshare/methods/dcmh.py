"""DCMH (Jiang & Li, CVPR 2017): deep cross-modal hashing, written from the paper's equations.

One network per modality maps its input to B real outputs (F for images, G for texts); the codes are
B = sign(F + G) in training and sign(F) / sign(G) at retrieval. The objective (the paper's Eq. 3):

  J = - sum_ij (S_ij theta_ij - log(1 + e^theta_ij))  +  gamma (||B - F||^2 + ||B - G||^2)
      +  eta (||F^T 1||^2 + ||G^T 1||^2),        theta_ij = 1/2 F_i . G_j,  S_ij = 1: i and j share a label

alternating F, G and B. As the authors' code does it, per batch: F and G of every training item are kept
(buffers, updated with each batch's outputs, so a checkpoint resumes exactly), a batch's theta is taken
against all of the other modality's stored outputs, B = sign(F + G) for the batch's items (the closed-form B
step), and the sums are divided by N * n (training items x batch): the likelihood over n x N pairs then
outweighs the quantisation of the batch, as in the paper's full-data objective. The bit balance is the
batch's own (||F_batch^T 1||^2 / n): a sum over all N stored outputs, constants for this step, outweighed
everything a batch can move and diverged on coco_2k (the loss grew 1,000-fold in 20 epochs).
The outputs go through tanh (as in the family's later
code, e.g. SSAH): on pooled features of arbitrary scale, unbounded outputs make theta and the bit-balance
sum explode. Inputs are the pooled features every two-tower method reads (the mean of an image's regions or its global
feature; the text vector or the mean of a caption's word vectors), in place of the paper's CNN-F on pixels
and bag-of-words MLP. Its real-valued outputs are its embedding (cosine retrieval, the usual tables); its
codes come with `semshare fit-hash RUN --set kinds=[sign] --set bits=[B]` (the signs, no projection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch
from torch import nn

from semshare.data.batches import Batch
from semshare.methods.base import NOTHING_FITTED, WORD_VECTORS, FitContext, InputConfig, ModelSpec, TrainedMethod
from semshare.models.pooled_inputs import PooledInputs
from semshare.registry import METHODS


@dataclass(frozen=True)
class DCMHConfig:
    bits: int = 64
    hidden_dim: int = 1024
    gamma: float = 1.0  # quantisation: ||B - F||^2 + ||B - G||^2
    eta: float = 1.0  # bit balance: ||F^T 1||^2 + ||G^T 1||^2
    dropout: float = 0.0


def dcmh_side_loss(out: torch.Tensor, other_all: torch.Tensor, codes: torch.Tensor, similar: torch.Tensor,
                   out_all_sum: torch.Tensor, gamma: float, eta: float, total_items: int) -> dict[str, torch.Tensor]:
    """One modality's DCMH loss for a batch: `out` (n, B) its outputs, `other_all` (N, B) the other
    modality's stored outputs, `codes` (n, B) the batch's B, `similar` (n, N) S, `out_all_sum` (B,) the sum
    of this modality's stored outputs over the items outside the batch; divided by N * n."""
    theta = 0.5 * out @ other_all.T
    likelihood = (torch.nn.functional.softplus(theta) - similar * theta).sum()
    quantisation = ((codes - out) ** 2).sum()
    # bit balance over the batch (the batch's share of ||F^T 1||^2): the stored outputs of other items are
    # constants here, and a sum over all N of them outweighs anything one batch can move
    balance = (out.sum(0) ** 2).sum() / len(out)
    scale = float(total_items * len(out))
    return {"likelihood": likelihood / scale, "quantisation": quantisation / scale, "balance": balance / scale,
            "loss": (likelihood + gamma * quantisation + eta * balance) / scale}


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

    @classmethod
    def fit_inputs(cls, cfg: DCMHConfig, context: FitContext) -> dict[str, np.ndarray]:
        """The training rows and their labels: S of a batch against every training item."""
        rows = np.sort(np.asarray(context.train_rows, dtype=np.int64))
        return {"dcmh_rows": rows, "dcmh_labels": np.asarray(context.dataset.labels, dtype=np.float32)[rows]}

    def __init__(self, cfg: DCMHConfig, spec: ModelSpec, inputs: InputConfig,
                 fitted: Mapping[str, np.ndarray] = NOTHING_FITTED):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        rows = np.asarray(fitted.get("dcmh_rows", np.zeros(0, np.int64)), dtype=np.int64)
        labels = np.asarray(fitted.get("dcmh_labels", np.zeros((0, spec.num_labels), np.float32)), dtype=np.float32)
        self.register_buffer("train_rows", torch.from_numpy(rows.copy()), persistent=False)
        self.register_buffer("train_labels", torch.from_numpy(labels.copy()), persistent=False)
        # every training item's latest outputs (the paper's F and G), saved with the checkpoint
        generator = torch.Generator().manual_seed(0)
        self.register_buffer("f_all", 0.01 * torch.randn(len(rows), cfg.bits, generator=generator))
        self.register_buffer("g_all", 0.01 * torch.randn(len(rows), cfg.bits, generator=generator))
        self.inputs = PooledInputs(inputs.text, spec.vocab_size, spec.word_dim, spec.text_dim,
                                   fitted.get(WORD_VECTORS))
        self.img_net = nn.Sequential(nn.Linear(spec.region_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                     nn.Linear(cfg.hidden_dim, cfg.bits))
        self.txt_net = nn.Sequential(nn.Linear(self.inputs.text_dim, cfg.hidden_dim), nn.ReLU(), nn.Dropout(cfg.dropout),
                                     nn.Linear(cfg.hidden_dim, cfg.bits))

    def encode_image(self, batch: Batch) -> torch.Tensor:
        return torch.tanh(self.img_net(self.inputs.image(batch))).float()

    def encode_text(self, batch: Batch) -> torch.Tensor:
        return torch.tanh(self.txt_net(self.inputs.text(batch))).float()

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        if len(self.train_rows) == 0:
            raise RuntimeError("DCMH was built without its training rows (fit_inputs)")
        f, g = self.encode_image(batch), self.encode_text(batch)
        positions = torch.searchsorted(self.train_rows, batch.img_rows)  # the batch's items among the training rows
        with torch.no_grad():
            self.f_all[positions], self.g_all[positions] = f.detach(), g.detach()
            codes = torch.sign(self.f_all[positions] + self.g_all[positions])
            codes[codes == 0] = 1
            similar = ((batch.labels @ self.train_labels.T) > 0).float()
            f_rest = self.f_all.sum(0) - self.f_all[positions].sum(0)
            g_rest = self.g_all.sum(0) - self.g_all[positions].sum(0)
        total = len(self.train_rows)
        image = dcmh_side_loss(f, self.g_all, codes, similar, f_rest, self.cfg.gamma, self.cfg.eta, total)
        text = dcmh_side_loss(g, self.f_all, codes, similar, g_rest, self.cfg.gamma, self.cfg.eta, total)
        losses = {f"{name}_{side}": value for side, terms in (("image", image), ("text", text))
                  for name, value in terms.items() if name != "loss"}
        losses["loss"] = image["loss"] + text["loss"]
        return losses
