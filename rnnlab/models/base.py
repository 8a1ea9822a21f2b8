"""The one model contract every rnnlab model honours.

Letters used in shape comments across the package: ``B`` batch, ``T`` time steps, ``V``
vocabulary size, ``E`` embedding size, ``I`` input size of a recurrent layer (``V`` or ``E``),
``H`` hidden size, ``L`` layers, ``G`` gates (1 RNN, 3 GRU, 4 LSTM).

    state  = model.begin_state(batch_size, device)     # tuple of (L, B, H) tensors
    logits, state = model(tokens, state)                # tokens (B, T) long -> logits (B, T, V)

The state is a tuple so that every model is handled alike: ``(h,)`` for RNN and GRU, ``(h, c)``
for LSTM. The trainer, the sampler and the server use only this contract.
"""
from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, ...]


class LanguageModel(nn.Module):
    """Base class: subclasses implement ``begin_state`` and ``forward``."""

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable name for logs."""
        return type(self).__name__

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def detach_state(state: State) -> State:
    """Cut the autograd graph at a minibatch boundary, keeping the values (truncated BPTT)."""
    return tuple(s.detach() for s in state)


def num_gates(model: str) -> int:
    return {"rnn": 1, "gru": 3, "lstm": 4}[model]
