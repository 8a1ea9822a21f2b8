"""Recurrent layers from ``torch.nn`` (the book's "concise implementation", d2l 8.6).

The subclasses only adapt the state to rnnlab's contract (always a tuple of ``(L, B, H)``
tensors); parameters keep torch's names, so the same weights load into the scratch layers.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import State


class _TupleState:
    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """x (T, B, I), state tuple of (L, B, H) -> out (T, B, H), state."""
        out, s = super().forward(x, state[0] if len(state) == 1 else state)
        return out, (s,) if isinstance(s, torch.Tensor) else tuple(s)


class ConciseRNN(_TupleState, nn.RNN):
    pass


class ConciseGRU(_TupleState, nn.GRU):
    pass


class ConciseLSTM(_TupleState, nn.LSTM):
    pass


def concise_recurrent(model: str, input_size: int, hidden_size: int, num_layers: int = 1,
                      dropout: float = 0.0, activation: str = "tanh") -> nn.Module:
    dropout = dropout if num_layers > 1 else 0.0  # torch warns about dropout with one layer
    if model == "rnn":
        return ConciseRNN(input_size, hidden_size, num_layers, nonlinearity=activation, dropout=dropout)
    cls = {"gru": ConciseGRU, "lstm": ConciseLSTM}[model]
    return cls(input_size, hidden_size, num_layers, dropout=dropout)
