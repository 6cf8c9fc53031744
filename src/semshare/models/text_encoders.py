"""Text side (modality-specific): word vectors -> BiGRU -> one segment per token; pretrained token states
(e.g. MiniLM) -> one segment per word piece; or one text vector."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from semshare.models.layers import SegmentProjection, sinusoidal_positions


class BidirectionalGRURecurrence(torch.autograd.Function):
    """The GRU recurrence of both directions as one (2, B) batch over precomputed input gates, with a
    hand-written backward: a few ops per time step instead of torch's per-step autograd graph (on CPU the
    packed nn.GRU spends most of its time there), and the weight gradient as one product over all steps.

    input_gates (T, 2, B, 3H) = W_ih x + b_ih in torch's gate order (r, z, n); weight_hh (2, 3H, H);
    bias_hh (2, 3H) -> states (T, 2, B, H) from a zero initial state:
      r, z = sigmoid(gi_rz + gh_rz), n = tanh(gi_n + r * gh_n), h' = (1 - z) * n + z * h, gh = W_hh h + b_hh.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.float32)
    def forward(ctx, input_gates: torch.Tensor, weight_hh: torch.Tensor, bias_hh: torch.Tensor) -> torch.Tensor:
        steps, _, rows, gates = input_gates.shape
        size = gates // 3
        states = input_gates.new_zeros(steps + 1, 2, rows, size)
        hidden_gates = input_gates.new_empty(steps, 2, rows, gates)
        reset_update = input_gates.new_empty(steps, 2, rows, 2 * size)
        candidate = input_gates.new_empty(steps, 2, rows, size)
        weight_t, bias = weight_hh.transpose(1, 2), bias_hh.unsqueeze(1)
        # per-step views made once (indexing in the loop costs more than the small ops it feeds)
        input_rz, input_n = (part.unbind(0) for part in input_gates.split([2 * size, size], -1))
        hidden_rz, hidden_n = (part.unbind(0) for part in hidden_gates.split([2 * size, size], -1))
        reset, update = (part.unbind(0) for part in reset_update.split(size, -1))
        state, hidden_all = states.unbind(0), hidden_gates.unbind(0)
        gates_rz, new_candidate = reset_update.unbind(0), candidate.unbind(0)
        for t in range(steps):
            torch.baddbmm(bias, state[t], weight_t, out=hidden_all[t])
            torch.sigmoid(input_rz[t] + hidden_rz[t], out=gates_rz[t])
            torch.tanh(torch.addcmul(input_n[t], reset[t], hidden_n[t]), out=new_candidate[t])
            torch.lerp(new_candidate[t], state[t], update[t], out=state[t + 1])
        ctx.save_for_backward(weight_hh, states, hidden_gates, reset_update, candidate)
        return states[1:]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad_states: torch.Tensor):
        weight_hh, states, hidden_gates, reset_update, candidate = ctx.saved_tensors
        steps, _, rows, size = candidate.shape
        reset, update, previous = reset_update[..., :size], reset_update[..., size:], states[:-1]
        # d(gate pre-activations) / d(new state) for the input gates (r, z, n) and the hidden gates (the
        # candidate's differs by the reset factor), every step at once: only the sum over time is sequential
        to_candidate = (1 - update) * (1 - candidate * candidate)
        to_input = torch.stack([to_candidate * hidden_gates[..., 2 * size :] * reset * (1 - reset),
                                (previous - candidate) * update * (1 - update), to_candidate], 3)  # (T, 2, B, 3, H)
        to_hidden = torch.cat([to_input[..., :2, :], (to_candidate * reset).unsqueeze(3)], 3)
        grad_gates = grad_states.new_empty(steps, 2, rows, 3, size)  # = d(input gates)
        grad_hidden = grad_states.new_empty(steps, 2, rows, 3, size)  # = d(hidden gates)
        carry = grad_states.new_zeros(2, rows, size)
        for t in reversed(range(steps)):
            grad = grad_states[t] + carry
            torch.mul(grad.unsqueeze(2), to_input[t], out=grad_gates[t])
            torch.mul(grad.unsqueeze(2), to_hidden[t], out=grad_hidden[t])
            carry = torch.baddbmm(grad * update[t], grad_hidden[t].view(2, rows, 3 * size), weight_hh)
        flat_grad = grad_hidden.permute(1, 3, 4, 0, 2).reshape(2, 3 * size, steps * rows)
        grad_weight = torch.bmm(flat_grad, previous.transpose(0, 1).reshape(2, steps * rows, size))
        return grad_gates.view(steps, 2, rows, 3 * size), grad_weight, flat_grad.sum(2)


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
        if self.own_recurrence and tokens.device.type == "cpu":
            return self._bidirectional_states(tokens, mask.sum(1).clamp_min(1))
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=tokens.shape[1])
        return states

    own_recurrence = True  # on CPU; False: torch's packed nn.GRU there too (the reference the tests compare with)

    def _bidirectional_states(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The packed BiGRU's states (zero at padding) from `BidirectionalGRURecurrence`. Each row's real tokens
        reversed in place give the backward direction the same start at step 0, so padding only ever follows a
        row's real steps and never reaches a state that is kept."""
        gru, (rows, length) = self.gru, tokens.shape
        steps = torch.arange(length, device=tokens.device)
        real = steps < lengths.unsqueeze(1)  # (B, L)
        reverse = torch.where(real, lengths.unsqueeze(1) - 1 - steps, steps)  # an involution on real slots
        row, step = real.nonzero(as_tuple=True)
        # a word's input gates are the same wherever it occurs: project each distinct word of the batch once
        # (the clean and masked copies of a caption share all but their MASK tokens)
        words, occurrence = torch.unique(tokens[row, step], return_inverse=True)
        size = gru.hidden_size
        gates = F.linear(self.embedding(words), torch.cat([gru.weight_ih_l0, gru.weight_ih_l0_reverse]),
                         torch.cat([gru.bias_ih_l0, gru.bias_ih_l0_reverse])).index_select(0, occurrence)
        # flat slots of (L, 2, B): step t of direction d for row b; padding steps come last, their gates 0
        forward_slot = step * 2 * rows + row
        backward_slot = reverse[row, step] * 2 * rows + rows + row
        slots = torch.cat([forward_slot, backward_slot])
        input_gates = gates.new_zeros(length * 2 * rows, 3 * size).index_copy(
            0, slots, torch.cat([gates[:, : 3 * size], gates[:, 3 * size :]]))
        states = BidirectionalGRURecurrence.apply(input_gates.view(length, 2, rows, 3 * size),
                                                  torch.stack([gru.weight_hh_l0, gru.weight_hh_l0_reverse]),
                                                  torch.stack([gru.bias_hh_l0, gru.bias_hh_l0_reverse]))
        flat_states = states.reshape(length * 2 * rows, size)
        kept = torch.cat([flat_states.index_select(0, forward_slot), flat_states.index_select(0, backward_slot)], 1)
        return kept.new_zeros(rows * length, 2 * size).index_copy(0, row * length + step, kept).view(rows, length, -1)

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
