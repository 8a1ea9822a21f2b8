"""The RNN cell (the book's "RNN from scratch", d2l 8.5)::

    h' = act(x W_ih^T + b_ih + h W_hh^T + b_hh)          act = tanh (the book) or relu

The two biases act as the book's single ``b_h`` (only their sum enters the maths); both are kept
so the parameters are torch's and a checkpoint moves between scratch, concise and fast.

``fast``: the input term of all steps is one product (a gather for one-hot inputs), only
``h W_hh^T`` stays in the loop; backpropagation through time by hand, in C++ (``native.py``) on
CPU float32, else in the Python loop below (float64, CUDA, no compiler).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import native
from ..bptt import input_term, step_grads, tanh_from_double_, weight_grad
from .base import Cell, TupleState, register, transposed_inference_weights


class ConciseRNN(TupleState, nn.RNN):
    pass


@register
class RNNCell(Cell):
    name = "rnn"
    gates = 1
    impls = ("scratch", "concise", "fast")
    options = {"activation": ("tanh", "relu")}
    native_greedy = "rnn"
    has_inference_step = True

    def step(self, x, state, params, cfg):
        """x (B, I), h (B, H) -> (h',)."""
        (h,), (w_ih, w_hh, b_ih, b_hh) = state, params
        a = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, H)
        return (torch.tanh(a) if cfg.activation == "tanh" else torch.relu(a),)

    def torch_layer(self, input_size, cfg):
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0  # torch warns about dropout with one layer
        return ConciseRNN(input_size, cfg.hidden_size, cfg.num_layers, nonlinearity=cfg.activation, dropout=dropout)

    def fast_layer(self, x, state, params, cfg):
        w_ih, w_hh, b_ih, b_hh = params
        xw = input_term(x, w_ih, b_ih + b_hh)  # (T, B, H)
        relu = cfg.activation == "relu"
        seq = NativeRNN if native.use(w_hh) else RNNSequence
        out, h = seq.apply(xw, state[0], w_hh, relu)
        return out, (h,)

    def quantized_layer(self, input_size, cfg, weights):
        from ..quantized import with_qconfig

        cells = [nn.RNNCell(input_size if k == 0 else cfg.hidden_size, cfg.hidden_size, nonlinearity=cfg.activation)
                 for k in range(cfg.num_layers)]
        for k, cell in enumerate(cells):  # torch's layout: weight_ih_l{k}, ..., bias_hh_l{k}
            cell.load_state_dict({n: weights[f"{n}_l{k}"] for n in cell.state_dict()})
        return QuantizedRNNStack([torch.ao.nn.quantized.dynamic.RNNCell.from_float(with_qconfig(c)) for c in cells])

    def prepare_inference(self, params, cfg):
        w_ih_t, b_in, w_hh_t, _ = transposed_inference_weights(params, True)
        return w_ih_t, b_in, w_hh_t

    def inference_step(self, xw, state, w_hh_t, cfg):
        """xw (N, H) with both biases; h (N, H) -> (h',)."""
        a = xw.addmm_(state[0], w_hh_t)
        return (a.relu_() if cfg.activation == "relu" else a.tanh_(),)


class QuantizedRNNStack(nn.Module):
    """int8 RNN layers (``nn.RNN`` has no quantised version): one quantised ``RNNCell`` per layer,
    looped over time. x (T, B, I), (h (L, B, H),) -> out (T, B, H), (h,)."""

    def __init__(self, cells: list[nn.Module]):
        super().__init__()
        self.cells = nn.ModuleList(cells)

    def forward(self, x, state):
        hs, outs = list(state[0].unbind(0)), []  # L x (B, H)
        for x_t in x:  # (B, I)
            for k, cell in enumerate(self.cells):
                hs[k] = x_t = cell(x_t, hs[k])
            outs.append(x_t)
        return torch.stack(outs), (torch.stack(hs),)  # (T, B, H), (L, B, H)


class RNNSequence(torch.autograd.Function):
    """h_t = act(xw_t + h_{t-1} W_hh^T). xw (T, B, H), h0 (B, H), w_hh (H, H) -> out (T, B, H), h_T."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, relu: bool):
        T, B, H = xw.shape
        h = h0
        # out (T, B, H) starts as a private copy of the input term; step t adds h_{t-1} W_hh^T in place
        if relu:
            out, w_t = xw.clone(), w_hh.t()
            for out_t in out:
                h = out_t.addmm_(h, w_t).relu_()  # (B, H)
        else:  # work with 2a so that tanh is one sigmoid and one add
            out, w2_t = xw * 2, (w_hh * 2).t()
            minus_one = xw.new_full((1, 1), -1.0).expand(B, H)
            for out_t in out:
                h = tanh_from_double_(out_t.addmm_(h, w2_t), minus_one)
        ctx.relu = relu
        ctx.save_for_backward(out, h0, w_hh)
        return out, out[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        out, h0, w_hh = ctx.saved_tensors
        T, B, H = out.shape
        g = step_grads(d_out, d_hT, out)  # (T, B, H): becomes dL/d(pre-activation) in place
        if ctx.relu:  # act'(a) for all steps at once
            deriv = (out > 0).to(out.dtype)
        else:  # 1 - h^2 in one pass
            deriv = torch.addcmul(out.new_ones(()).expand_as(out), out, out, value=-1)
        g_u, deriv_u = g.unbind(0), deriv.unbind(0)
        for t in range(T - 1, 0, -1):
            g_u[t - 1].addmm_(g_u[t].mul_(deriv_u[t]), w_hh)  # d_out[t-1] + g_t W_hh
        g[0].mul_(deriv[0])
        d_h0 = torch.mm(g[0], w_hh) if ctx.needs_input_grad[1] else None  # a detached start state needs none
        d_w = weight_grad(g, out, h0) if ctx.needs_input_grad[2] else None  # sum_t g_t^T h_{t-1}, one product
        return g, d_h0, d_w, None


class NativeRNN(torch.autograd.Function):
    """``RNNSequence`` with the loops in C++. xw (T, B, H), h0 (B, H), w_hh (H, H) -> out (T, B, H), h_T."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, relu: bool):
        out = xw.contiguous().clone()  # (T, B, H): the input term, then h_t in place
        h0 = h0.contiguous()
        native.ops.rnn_forward(out, h0, w_hh.t(), relu)
        ctx.relu = relu
        ctx.save_for_backward(out, h0, w_hh)
        return out, out[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        out, h0, w_hh = ctx.saved_tensors
        g = step_grads(d_out, d_hT, out)  # (T, B, H): becomes dL/d(pre-activation)
        native.ops.rnn_backward(g, out, w_hh.contiguous(), ctx.relu)
        d_h0 = torch.mm(g[0], w_hh) if ctx.needs_input_grad[1] else None
        d_w = weight_grad(g, out, h0) if ctx.needs_input_grad[2] else None
        return g, d_h0, d_w, None
