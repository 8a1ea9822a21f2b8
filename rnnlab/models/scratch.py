"""Recurrent layers from scratch: explicit parameters and a Python loop over time steps.

This is the book's "RNN from scratch" (d2l 8.5) generalised to GRU, LSTM and stacked layers.
Parameters use the layout of ``torch.nn.RNN/GRU/LSTM`` (``weight_ih_l{k}`` of shape ``(G*H, I)``,
``weight_hh_l{k}`` of shape ``(G*H, H)``, ``bias_ih_l{k}``, ``bias_hh_l{k}``; gates in torch's
order: GRU ``r, z, n``, LSTM ``i, f, g, o``), so a checkpoint moves between implementations.
The RNN's two biases act as the book's single ``b_h`` (only their sum enters the maths).

Cell equations (``x`` input, ``h`` previous hidden state, ``*`` elementwise)::

    RNN   h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)          act = tanh (book) or relu
    GRU   r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
          z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
          n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
          h' = (1 - z) * n + z * h
    LSTM  i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)
          c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
          h' = sigmoid(o) * tanh(c')

The book's GRU applies the reset gate before the hidden product, ``tanh(x W_xh + (r * h) W_hh + b_h)``;
here it is applied after, as in cuDNN and ``torch.nn.GRU``, so the two implementations agree.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import State, num_gates


def rnn_cell(x: torch.Tensor, h: torch.Tensor, w_ih, w_hh, b_ih, b_hh, activation: str = "tanh") -> torch.Tensor:
    """One RNN step. x: (B, I), h: (B, H) -> h': (B, H)."""
    a = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, H)
    return torch.tanh(a) if activation == "tanh" else torch.relu(a)


def gru_cell(x: torch.Tensor, h: torch.Tensor, w_ih, w_hh, b_ih, b_hh) -> torch.Tensor:
    """One GRU step. x: (B, I), h: (B, H) -> h': (B, H)."""
    gi = x @ w_ih.T + b_ih  # (B, 3H)
    gh = h @ w_hh.T + b_hh  # (B, 3H)
    i_r, i_z, i_n = gi.chunk(3, dim=1)  # each (B, H)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + r * h_n)
    return (1 - z) * n + z * h


def lstm_cell(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih, w_hh, b_ih, b_hh) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step. x: (B, I), h, c: (B, H) -> h', c': (B, H)."""
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, 4H)
    i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


class ScratchRecurrent(nn.Module):
    """A stack of ``num_layers`` RNN/GRU/LSTM layers with explicit parameters.

    forward: x (T, B, I), state tuple of (L, B, H) -> out (T, B, H), state.
    Dropout (training only) is applied to each layer's output except the last, as in torch.
    """

    def __init__(self, model: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, activation: str = "tanh"):
        super().__init__()
        self.mode, self.hidden_size, self.num_layers = model, hidden_size, num_layers
        self.dropout, self.activation = dropout, activation
        g = num_gates(model)
        for k in range(num_layers):
            in_k = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(g * hidden_size, in_k)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(g * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.zeros(g * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.zeros(g * hidden_size)))

    def layer_params(self, k: int):
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}"),
                getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}"))

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        hs = list(state[0].unbind(0))  # L x (B, H)
        cs = list(state[1].unbind(0)) if self.mode == "lstm" else None
        layer_in = x  # (T, B, I)
        for k in range(self.num_layers):
            params = self.layer_params(k)
            h = hs[k]
            c = cs[k] if cs is not None else None
            outputs = []
            for x_t in layer_in:  # x_t: (B, I)
                if self.mode == "rnn":
                    h = rnn_cell(x_t, h, *params, activation=self.activation)
                elif self.mode == "gru":
                    h = gru_cell(x_t, h, *params)
                else:
                    h, c = lstm_cell(x_t, h, c, *params)
                outputs.append(h)
            hs[k] = h
            if cs is not None:
                cs[k] = c
            layer_in = torch.stack(outputs)  # (T, B, H)
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                layer_in = nn.functional.dropout(layer_in, self.dropout, training=True)
        new_state = (torch.stack(hs),) if cs is None else (torch.stack(hs), torch.stack(cs))  # (L, B, H)
        return layer_in, new_state
