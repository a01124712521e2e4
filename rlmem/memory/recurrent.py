"""Recurrent baselines: GRU and LSTM mixers (cuDNN on GPU) and the memoryless `mlp` core."""

from __future__ import annotations

import torch
from torch import nn

from rlmem.memory.base import MemoryCore, Mixer


def _reset_columns(resets: torch.Tensor) -> list[int]:
    """Time indices where some row starts an episode (plus 0): the spans between them run in
    one cuDNN call each."""
    cols = torch.nonzero(resets.any(dim=0)).flatten().tolist()
    return sorted(set([0] + cols))


class RNNMixer(Mixer):
    """One GRU or LSTM layer of width D; state {"h": [B, D]} (+ {"c": [B, D]} for the LSTM)."""

    def __init__(self, d_model: int, cell: str):
        super().__init__()
        self.cell = cell
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(d_model, d_model, batch_first=True)
        self.d_model = d_model

    def initial_state(self, batch_size, device=None):
        zeros = lambda: torch.zeros(batch_size, self.d_model, device=device)
        return {"h": zeros(), "c": zeros()} if self.cell == "lstm" else {"h": zeros()}

    def _hidden(self, state, dtype):
        h = state["h"][None].to(dtype)
        return (h, state["c"][None].to(dtype)) if self.cell == "lstm" else h

    def _state(self, hidden):
        if self.cell == "lstm":
            return {"h": hidden[0][0].float(), "c": hidden[1][0].float()}
        return {"h": hidden[0].float()}

    def forward(self, x, state, resets):
        state, resets = self.filled(x, state, resets)
        B, T, _ = x.shape
        cols = _reset_columns(resets) + [T]
        outs = []
        for start, end in zip(cols[:-1], cols[1:]):
            keep = ~resets[:, start, None]
            state = {k: v * keep for k, v in state.items()}
            y, hidden = self.rnn(x[:, start:end], self._hidden(state, x.dtype))
            state = self._state(hidden)
            outs.append(y)
        return torch.cat(outs, dim=1), state

    def step(self, x, state):
        y, hidden = self.rnn(x[:, None], self._hidden(state, x.dtype))
        return y[:, 0], self._state(hidden)


class PointwiseMixer(Mixer):
    """No memory: a per-token linear map; the state is empty."""

    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def initial_state(self, batch_size, device=None):
        return {}

    def forward(self, x, state, resets):
        return self.proj(x), {}

    def step(self, x, state):
        return self.proj(x), state


class GRUCore(MemoryCore):
    """GRU baseline: blocks with a GRU layer of width D as the token mixer."""

    name = "gru"

    def make_mixer(self, layer):
        return RNNMixer(self.d_model, "gru")


class LSTMCore(MemoryCore):
    """LSTM baseline: blocks with an LSTM layer of width D as the token mixer."""

    name = "lstm"

    def make_mixer(self, layer):
        return RNNMixer(self.d_model, "lstm")


class MLPCore(MemoryCore):
    """No memory at all (sanity baseline): each step sees only its own input."""

    name = "mlp"

    def make_mixer(self, layer):
        return PointwiseMixer(self.d_model)
