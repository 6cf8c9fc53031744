"""The shared model T: the same weights encode image segments and text segments (each modality alone)."""

from __future__ import annotations

import torch
from torch import nn


class TransformerSharedEncoder(nn.Module):
    """L transformer encoder blocks over (B, S, dim) segments with a key-padding mask (True = real)."""

    def __init__(self, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        block = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # nested-tensor fast path changes padded outputs between train and eval; keep one exact path
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, segments: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(segments, src_key_padding_mask=~mask))


class FeedForwardSharedEncoder(nn.Module):
    """The ablations' fully connected shared model: each segment alone through an MLP (no interaction)."""

    def __init__(self, dim: int, layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        blocks = []
        for _ in range(max(1, layers)):
            blocks += [nn.LayerNorm(dim), nn.Linear(dim, ffn_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim)]
        self.blocks = nn.ModuleList(nn.Sequential(*blocks[i : i + 5]) for i in range(0, len(blocks), 5))
        self.norm = nn.LayerNorm(dim)

    def forward(self, segments: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            segments = segments + block(segments)
        return self.norm(segments)
