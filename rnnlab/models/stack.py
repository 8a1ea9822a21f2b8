"""A stack of ``num_layers`` recurrent layers of one cell with explicit parameters.

Parameters are registered per layer ``k`` under the cell's names with ``_l{k}`` (torch's:
``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ...), so the same weights load
into ``torch.nn.RNN/GRU/LSTM`` (``impl concise``). Two ways to run them:

* ``scratch`` — the book's "RNN from scratch" (d2l 8.5) generalised to any cell and stacked layers:
  ``Cell.step`` in a Python loop over time steps;
* ``fast`` — the same maths with fewer, larger ops: the cell's whole-stack kernel where one
  applies (``Cell.fast_stack``), else its whole-sequence kernel per layer (``Cell.fast_layer``).
  One-hot inputs never materialise: token ids come in and the input term is a row gather.
  Under bfloat16 autocast the per-layer kernels (hand-written BPTT, C++ loops: float32 only) run
  in float32, autocast off; a whole-stack library kernel runs as autocast makes it.

Dropout (training only) is applied to each layer's output except the last, as in torch.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F



class RecurrentStack(nn.Module):
    """forward: x (T, B, I) float — or token ids (T, B) long meaning one-hot rows of size I, with
    ``impl="fast"`` (``accepts_ids``) — and a state tuple of (L, B, H) -> out (T, B, H), state."""

    def __init__(self, cell: Any, impl: str, input_size: int, cfg):  # cell: a cells.base.Cell (it builds its stack)
        super().__init__()
        self.cell, self.impl, self.cfg = cell, impl, cfg
        self.num_layers = cfg.num_layers
        self.accepts_ids = impl == "fast"
        self._names: list[list[str]] = []
        for k in range(cfg.num_layers):
            in_k = input_size if k == 0 else cfg.hidden_size
            names = []
            for name, shape in cell.parameters(in_k, cfg.hidden_size):
                init = torch.zeros if name.startswith("bias") else torch.empty
                self.register_parameter(f"{name}_l{k}", nn.Parameter(init(*shape)))
                names.append(f"{name}_l{k}")
            self._names.append(names)

    def layer_params(self, k: int) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, name) for name in self._names[k])

    def _run_params(self, k: int) -> tuple[torch.Tensor, ...]:
        """Layer ``k``'s parameters for this forward: with ``weight_drop`` in training, a copy of
        the recurrent weights with a fresh DropConnect mask (the fused kernels run on it as usual)."""
        params = self.layer_params(k)
        p, name = self.cfg.weight_drop, self.cell.recurrent_weight
        if not (p and self.training and name):
            return params
        i = [n.rsplit("_l", 1)[0] for n in self._names[k]].index(name)
        return (*params[:i], F.dropout(params[i], p, training=True), *params[i + 1:])

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        cfg, cell = self.cfg, self.cell
        if self.impl == "fast":
            whole = cell.fast_stack(x, state, [self._run_params(k) for k in range(self.num_layers)], cfg,
                                    self.training)
            if whole is not None:
                return whole
            if torch.is_autocast_enabled(x.device.type):
                with torch.autocast(x.device.type, enabled=False):  # the kernels are float32 (see above)
                    return self._layers(x.float() if x.is_floating_point() else x, tuple(s.float() for s in state))
        return self._layers(x, state)

    def _layers(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        """Layer by layer: the cell's ``fast_layer`` kernel or its reference ``step`` in a loop."""
        cfg, cell = self.cfg, self.cell
        layers = list(zip(*(s.unbind(0) for s in state)))  # L x (each (B, H),)
        layer_in = x  # (T, B, I)
        for k in range(self.num_layers):
            params = self._run_params(k)
            if self.impl == "fast":
                layer_in, layers[k] = cell.fast_layer(layer_in, layers[k], params, cfg)
            else:
                st, outputs = layers[k], []
                for x_t in layer_in:  # x_t: (B, I)
                    st = cell.step(x_t, st, params, cfg)
                    outputs.append(st[0])
                layers[k] = st
                layer_in = torch.stack(outputs)  # (T, B, H)
            if cfg.dropout > 0 and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, cfg.dropout, training=True)
        return layer_in, tuple(torch.stack(parts) for parts in zip(*layers))  # each (L, B, H)
