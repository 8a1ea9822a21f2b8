"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): the GRU without the state in its gates::

    z_t  = sigmoid(k_t)            k_t, v_t = rows of W x_t + b   (x_t: the block's shifted input)
    h~_t = g(v_t)                  g(v) = v + 1/2 for v >= 0, sigmoid(v) below (positive, for log space)
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

so ``h_t = a_t h_{t-1} + b_t`` with ``a = 1 - z``, ``b = z h~``: a parallel scan (``minstack.py``,
which also holds the block around the cell: norms, token shift, projections, a small MLP).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .base import Cell, register


@register
class MinGRUCell(Cell):
    name = "mingru"
    gates = 2  # k, v
    state_names = ("h", "shift")
    impls = ("scratch", "fast")
    recurrent_weight = None  # its gates read the input only
    width_is_embedding = True  # residual blocks (minstack.py)

    def make_stack(self, impl, input_size, cfg):
        from ..minstack import MinStack

        return MinStack(self, impl, input_size, cfg)

    def quantized_layer(self, input_size, cfg, weights):
        """The block stack with every Linear layer (gate, output and MLP projections) int8; the
        norms, the token shift and the scan stay float32."""
        from ..minstack import MinStack
        from ..quantized import quantize_linears

        stack = MinStack(self, "fast", input_size, cfg)
        stack.load_state_dict(weights)
        return quantize_linears(stack, {n for n, m in stack.named_modules() if isinstance(m, nn.Linear)})

    def bf16_note(self, cfg, device_type):
        return ("the scan runs in float32 (its C++ loop is float32 only, and a product of many gates needs float32's "
                "precision); the products of every block run in bfloat16")

    def coefficients(self, pre: torch.Tensor):
        """pre (T, B, 2D) -> a, b (T, B, D) in linear space (the reference)."""
        k, v = pre.chunk(2, dim=-1)
        z = torch.sigmoid(k)
        from ..minstack import g

        return 1 - z, z * g(v)

    def log_coefficients(self, pre: torch.Tensor):
        """pre (T, B, 2D) -> log a, log b (T, B, D)."""
        from ..minstack import log_g

        k, v = pre.chunk(2, dim=-1)
        return -F.softplus(k), -F.softplus(-k) + log_g(v)
