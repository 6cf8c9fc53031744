"""Image side (modality-specific): region vectors + 5-d boxes -> one segment per region."""

from __future__ import annotations

import torch
from torch import nn

from semshare.data.batches import BOX_FEATURES
from semshare.models.layers import SegmentProjection


class RegionEncoder(nn.Module):
    """(B, R, D_in) regions, (B, R, 5) boxes -> (B, R, dim) segments; a global feature is one segment.

    Masked regions (context prediction) lose their content, not their box.
    """

    def __init__(self, region_dim: int, dim: int, dropout: float = 0.1, maskable: bool = True):
        super().__init__()
        self.project = SegmentProjection(region_dim, BOX_FEATURES, dim, dropout, maskable)

    def forward(self, regions: torch.Tensor, boxes: torch.Tensor, masked: torch.Tensor | None = None,
                projected: torch.Tensor | None = None) -> torch.Tensor:
        """`projected`: psi1(regions), when computed already (shared by a step's clean and masked pass)."""
        return self.project(regions, boxes, masked, projected)
