"""Small shared blocks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DROP_STEPS = 65536  # a CPU dropout mask compares 16-bit random lanes: p is rounded to a multiple of 1/65536


def masked_mean(segments: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, S, D), (B, S) bool -> (B, D) mean over real segments (zeros for an item without any)."""
    weights = mask.to(segments.dtype).unsqueeze(-1)
    return (segments * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On CPU the mask comes from 16-bit lanes of torch.randint words: the same masks for a
    seed on every CPU, and ~3x faster than torch's CPU Bernoulli, which draws element by element except on
    Intel CPUs (there MKL draws other masks). p is rounded to a multiple of 1/65536 (0.1 -> 0.1000061).
    Elsewhere (CUDA) torch's own dropout."""
    if not training or p == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p, True)
    if not 0 < p < 1:
        raise ValueError(f"dropout probability: expected a fraction in [0, 1), found {p}")
    dropped = round(p * DROP_STEPS)
    count = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64)  # 4 lanes a word
    keep = words.view(torch.int16)[:count].view(x.shape) >= dropped - DROP_STEPS // 2
    return x * keep * (DROP_STEPS / (DROP_STEPS - dropped))  # a bool mask: no float copy, 1 byte saved per value


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` (same state dict and repr)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, dim) position features of Vaswani et al."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class SegmentProjection(nn.Module):
    """The paper's Eq. 3 input: e = phi(psi1(content) + psi2(position)).

    A learned MASK vector replaces psi1(content) of masked segments (the position part stays), so a
    masked segment keeps where it is but not what it is.
    """

    def __init__(self, content_dim: int, position_dim: int, dim: int, dropout: float, maskable: bool = False):
        super().__init__()
        self.psi1 = nn.Linear(content_dim, dim)
        self.psi2 = nn.Linear(position_dim, dim)
        self.phi = nn.Sequential(nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim), Dropout(dropout))
        # only built when segments get masked, so every parameter of a model is one that trains
        self.mask_embedding = nn.Parameter(torch.randn(dim) * 0.02) if maskable else None

    def forward(self, content: torch.Tensor, position: torch.Tensor, masked: torch.Tensor | None = None,
                projected: torch.Tensor | None = None) -> torch.Tensor:
        """`projected`: psi1(content), when computed already."""
        content = self.psi1(content) if projected is None else projected
        if masked is not None and self.mask_embedding is not None:
            content = torch.where(masked.unsqueeze(-1), self.mask_embedding.to(content.dtype), content)
        return self.phi(content + self.psi2(position))
