"""Text side (modality-specific): word vectors -> BiGRU -> one segment per token; pretrained token states
(e.g. MiniLM) -> one segment per word piece; or one text vector."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from semshare.models.layers import SegmentProjection, sinusoidal_positions


class WordGRUEncoder(nn.Module):
    """(B, L) token ids + (B, L) mask -> (B, L, dim) segments.

    Word vectors (Word2Vec or loaded, trainable) feed a bidirectional GRU over packed sequences, so padding
    never reaches the recurrent state; sinusoidal positions enter through psi2 (paper Eq. 3).
    Masked tokens are replaced by the MASK id before the GRU: the context must predict them.
    """

    def __init__(self, word_vectors: np.ndarray, dim: int, mask_id: int, dropout: float = 0.1):
        super().__init__()
        vocab_size, word_dim = word_vectors.shape
        self.embedding = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        vectors = np.asarray(word_vectors, dtype=np.float32)
        # Word2Vec vectors share a large common direction and come at small, source-dependent scales
        # (per-dimension std ~0.1); a GRU fed them learns very slowly. Removing the common mean
        # ("all-but-the-top", Mu & Viswanath 2018) and one global rescale to unit std keep their geometry.
        if len(vectors) > 4:
            words = vectors[4:]
            words = words - words.mean(axis=0, keepdims=True)
            spread = float(words.std())
            vectors = vectors.copy()
            vectors[4:] = words / spread if spread > 0 else words
        with torch.no_grad():
            self.embedding.weight.copy_(torch.from_numpy(vectors))
        self.gru = nn.GRU(word_dim, dim // 2, batch_first=True, bidirectional=True)
        self.project = SegmentProjection(2 * (dim // 2), dim, dim, dropout)
        self.mask_id = mask_id
        self.dim = dim

    def recurrent_states(self, tokens: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) tokens -> (B, L, 2 * (dim // 2)) BiGRU states (masked tokens enter as MASK)."""
        if masked is not None:
            tokens = torch.where(masked, torch.full_like(tokens, self.mask_id), tokens)
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])
        return states

    def paired_states(self, tokens: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean and the masked tokens' states from one GRU call over both (2B rows): the values of two
        calls, at about the cost of one (the recurrence is a loop of small steps; the GRU draws no random
        numbers, so the run's random stream is unchanged)."""
        states = self.recurrent_states(torch.cat([tokens, tokens]), torch.cat([mask, mask]),
                                       torch.cat([torch.zeros_like(masked), masked]))
        return states[: len(tokens)], states[len(tokens) :]

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor | None = None,
                states: torch.Tensor | None = None) -> torch.Tensor:
        """`states`: this batch's recurrent_states, when computed already (paired_states)."""
        if states is None:
            states = self.recurrent_states(tokens, mask, masked)
        positions = sinusoidal_positions(tokens.shape[1], self.dim, tokens.device).unsqueeze(0).expand(len(tokens), -1, -1)
        # the MASK input is applied before the GRU, so no second masking in the projection
        return self.project(states, positions.to(states.dtype))


class TextVectorEncoder(nn.Module):
    """(B, Dt) precomputed text vector (e.g. `text.npy`) -> (B, 1, dim): one segment at position 0."""

    def __init__(self, text_dim: int, dim: int, dropout: float = 0.1):
        super().__init__()
        self.project = SegmentProjection(text_dim, dim, dim, dropout)
        self.dim = dim

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        positions = sinusoidal_positions(1, self.dim, vectors.device).expand(len(vectors), -1)
        return self.project(vectors, positions.to(vectors.dtype)).unsqueeze(1)


class PretrainedSegmentEncoder(nn.Module):
    """(B, L, Dt) token states of a frozen pretrained encoder + (B, L) masked flags -> (B, L, dim) segments.

    The states are inputs, not parameters (extracted once, data/text_segments.py). A masked word piece loses
    its state to a learned MASK vector; its neighbours' states were computed seeing it, so context prediction
    here is easier than over words learned from scratch (docs/MODEL.md).
    """

    def __init__(self, text_dim: int, dim: int, dropout: float = 0.1, maskable: bool = False):
        super().__init__()
        self.project = SegmentProjection(text_dim, dim, dim, dropout, maskable)
        self.dim = dim

    def forward(self, states: torch.Tensor, masked: torch.Tensor | None = None,
                projected: torch.Tensor | None = None) -> torch.Tensor:
        """`projected`: psi1(states), when computed already (shared by a step's clean and masked pass)."""
        positions = sinusoidal_positions(states.shape[1], self.dim, states.device)
        positions = positions.unsqueeze(0).expand(len(states), -1, -1).to(states.dtype)
        return self.project(states, positions, masked, projected)
