"""minLSTM (Feng et al. 2024): the LSTM without the state in its gates, forget and input gates
normalised to sum to one (so the state stays on the scale of the candidates)::

    f_t, i_t = sigmoid(f~_t), sigmoid(i~_t)      f~_t, i~_t, v_t = rows of W x_t + b
    f'_t = f_t / (f_t + i_t),  i'_t = i_t / (f_t + i_t)
    h_t  = f'_t * h_{t-1} + i'_t * g(v_t)

a parallel scan in log space (``mingru.py``'s stack): log f'_t = -softplus(d), log i'_t = -softplus(-d)
with d = softplus(-f~) - softplus(-i~).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from .base import register
from .mingru import MinGRUCell, g, log_g


@register
class MinLSTMCell(MinGRUCell):
    name = "minlstm"
    gates = 3  # f, i, v

    def coefficients(self, pre: torch.Tensor):
        f, i, v = pre.chunk(3, dim=-1)
        f, i = torch.sigmoid(f), torch.sigmoid(i)
        return f / (f + i), i / (f + i) * g(v)

    def log_coefficients(self, pre: torch.Tensor):
        f, i, v = pre.chunk(3, dim=-1)
        d = F.softplus(-f) - F.softplus(-i)
        return -F.softplus(d), -F.softplus(-d) + log_g(v)
