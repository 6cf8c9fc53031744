"""Losses shared by several methods (Semantic Sharing, DSCMR, SCML, ViLBERT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from semshare.models.layers import l2_normalize


def label_prediction_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """(B, C) logits and multi-hot labels -> scalar mean over items."""
    logits = logits.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").sum(1).mean() / labels.shape[1]
    if kind == "eq4":
        signs = 2.0 * labels - 1.0
        return F.softplus(-(signs * logits).sum(1)).mean()
    raise ValueError(f"unknown label_loss {kind!r}; expected 'bce' or 'eq4'")


def discrimination_loss(img_emb: torch.Tensor, txt_emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paper Eq. 1 (DSCMR's common-space loss): theta = cos / 2, S = shares a label; inter + intra-modal."""
    similar = (labels @ labels.T > 0).float()
    img_n, txt_n = l2_normalize(img_emb.float()), l2_normalize(txt_emb.float())

    def term(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        theta = 0.5 * (a @ b.T)
        return (F.softplus(theta) - similar * theta).mean()

    return term(img_n, txt_n) + term(img_n, img_n) + term(txt_n, txt_n)
