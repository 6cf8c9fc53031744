"""The shared model T: the same weights encode image segments and text segments (each modality alone)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semshare.models.layers import Dropout, dropout


class TransformerSharedEncoder(nn.Module):
    """L pre-norm transformer encoder blocks over (B, S, dim) segments with a padding mask (True = real).

    The blocks are torch's nn.TransformerEncoderLayer (their parameters, names and initialisation), run by
    `forward_many`: every linear, norm and dropout sees the real segments of all given batches as one
    (N, dim) matrix (no padding rows, one call per op however many passes a step makes), and only attention
    works per batch, on its padded (B, S) layout. Values equal torch's own forward on every real segment
    (to float rounding; tested); dropout is `layers.dropout`.
    """

    def __init__(self, dim: int, layers: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        block = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        block.dropout, block.dropout1, block.dropout2 = Dropout(dropout), Dropout(dropout), Dropout(dropout)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.heads = heads

    def forward(self, segments: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_many([(segments, mask)])[0]

    def forward_many(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """[(segments (B, S, dim), mask (B, S))] -> [(B, S, dim) outputs, zero at padding], each item attending
        within itself only: the values of one forward per batch. Batches of one length S share each attention
        op (stacked along B, as a step's clean and masked pass of one modality are)."""
        dim = self.norm.normalized_shape[0]
        lengths = [mask.shape[1] for _, mask in batches]
        order = sorted(range(len(batches)), key=lengths.__getitem__)  # equal lengths adjacent
        groups = [list(group) for _, group in itertools.groupby(order, key=lengths.__getitem__)]
        masks = [torch.cat([batches[i][1] for i in group]) for group in groups]  # (sum B, S) per group
        rows = [mask.flatten().nonzero().squeeze(1) for mask in masks]  # real slots of each group's (B * S)
        x = torch.cat([torch.cat([batches[i][0] for i in group]).reshape(-1, dim).index_select(0, where)
                       for group, where in zip(groups, rows)])
        sizes = [len(where) for where in rows]
        for block in self.blocks.layers:
            x = x + block.dropout1(self._attention(block, block.norm1(x), masks, rows, sizes))
            x = x + block.dropout2(block.linear2(block.dropout(F.gelu(block.linear1(block.norm2(x))))))
        x = self.norm(x)
        outputs: list[torch.Tensor | None] = [None] * len(batches)
        for group, mask, where, part in zip(groups, masks, rows, x.split(sizes)):
            padded = part.new_zeros(mask.numel(), dim).index_copy(0, where, part).view(*mask.shape, dim)
            for i, output in zip(group, padded.split([len(batches[i][1]) for i in group])):
                outputs[i] = output
        return outputs

    def _attention(self, block: nn.TransformerEncoderLayer, x: torch.Tensor, masks, rows, sizes) -> torch.Tensor:
        """Multi-head self-attention of each group's real segments (keys at padding masked out)."""
        attention, heads = block.self_attn, self.heads
        dim = x.shape[1]
        qkv = F.linear(x, attention.in_proj_weight, attention.in_proj_bias)
        attended = []
        for mask, where, part in zip(masks, rows, qkv.split(sizes)):
            items, length = mask.shape
            padded = part.new_zeros(items * length, 3 * dim).index_copy(0, where, part)
            q, k, v = padded.view(items, length, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(-2, -1)) * (dim // heads) ** -0.5
            weights = scores.masked_fill(~mask[:, None, None, :], float("-inf")).softmax(-1)
            out = dropout(weights, attention.dropout, self.training) @ v  # (B, heads, S, dim / heads)
            attended.append(out.transpose(1, 2).reshape(items * length, dim).index_select(0, where))
        return attention.out_proj(torch.cat(attended))


class FeedForwardSharedEncoder(nn.Module):
    """The ablations' fully connected shared model: each segment alone through an MLP (no interaction)."""

    def __init__(self, dim: int, layers: int, ffn_dim: int, dropout: float):
        super().__init__()
        blocks = []
        for _ in range(max(1, layers)):
            blocks += [nn.LayerNorm(dim), nn.Linear(dim, ffn_dim), nn.GELU(), Dropout(dropout), nn.Linear(ffn_dim, dim)]
        self.blocks = nn.ModuleList(nn.Sequential(*blocks[i : i + 5]) for i in range(0, len(blocks), 5))
        self.norm = nn.LayerNorm(dim)

    def forward(self, segments: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            segments = segments + block(segments)
        return self.norm(segments)

    def forward_many(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        return [self(segments, mask) for segments, mask in batches]
