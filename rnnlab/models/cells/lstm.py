"""The LSTM cell, as ``torch.nn.LSTM`` computes it (gates ``i, f, g, o``)::

    i, f, g, o = split(x W_ih^T + b_ih + h W_hh^T + b_hh)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(c')

``fast`` on CPU float32 trains through oneDNN's fused LSTM (``torch.lstm``, the kernel behind
``nn.LSTM``: measured 1.4x the C++ loop and 1.5x the Python loop per minibatch at H=256; under
bfloat16 autocast it runs oneDNN's bfloat16 LSTM); float64, CUDA and torch builds without oneDNN
run a loop (C++ where it applies). Inside the Python loop the
gate rows are rotated to ``o, i, f, g`` so the three sigmoids are one op (autograd rotates the
gradients back); the g rows are doubled so one sigmoid serves all four gates:
``tanh(x) = 2 sigmoid(2x) - 1`` (a CPU sigmoid is several times cheaper than a tanh).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .. import native
from ..bptt import double_rows, input_term, step_grads, tanh_from_double_, weight_grad
from .base import Cell, TupleState, register, transposed_inference_weights

#: Train LSTMs on CPU float32 through oneDNN's fused LSTM. Tests switch it off to cover the loops.
FUSED = True


class ConciseLSTM(TupleState, nn.LSTM):
    pass


def fused_applies(w: torch.Tensor) -> bool:
    """Whether an LSTM with weights like ``w`` runs as one oneDNN call."""
    return FUSED and w.device.type == "cpu" and w.dtype == torch.float32 and torch.backends.mkldnn.is_available()


def _rotated(w: torch.Tensor) -> torch.Tensor:
    """torch's gate rows i, f, g, o -> o, i, f, g (a rotation by one gate)."""
    return torch.roll(w, w.shape[0] // 4, dims=0)


@register
class LSTMCell(Cell):
    name = "lstm"
    gates = 4
    state_names = ("h", "c")
    impls = ("scratch", "concise", "fast")
    native_greedy = "lstm"
    has_inference_step = True
    int8_onnx_graph = "concise"  # onnxruntime's DynamicQuantizeLSTM

    def step(self, x, state, params, cfg):
        """x (B, I), h, c (B, H) -> (h', c')."""
        (h, c), (w_ih, w_hh, b_ih, b_hh) = state, params
        gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=1)  # each (B, H)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

    def torch_layer(self, input_size, cfg):
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        return ConciseLSTM(input_size, cfg.hidden_size, cfg.num_layers, dropout=dropout)

    def fast_stack(self, x, state, params, cfg, training):
        """The whole stack as one library call (oneDNN's fused LSTM, forward and backward)."""
        if not fused_applies(params[0][1]):
            return None
        if x.dtype == torch.long:  # the library multiplies one-hot rows itself (V is small)
            x = F.one_hot(x, params[0][0].shape[1]).to(params[0][0].dtype)  # (T, B, V)
        flat = [p for layer in params for p in layer]
        dropout = cfg.dropout if training else 0.0  # between layers, as in the loops
        out, h, c = torch.lstm(x, list(state), flat, True, len(params), dropout, training, False, False)
        return out, (h, c)

    def fast_layer(self, x, state, params, cfg):
        (h0, c0), (w_ih, w_hh, b_ih, b_hh) = state, params
        if native.use(w_hh):  # torch's gate order
            out, h, c = NativeLSTM.apply(input_term(x, w_ih, b_ih + b_hh), h0, c0, w_hh)
        else:  # rows rotated to o, i, f, g
            out, h, c = LSTMSequence.apply(input_term(x, _rotated(w_ih), _rotated(b_ih + b_hh)), h0, c0,
                                           _rotated(w_hh))
        return out, (h, c)

    def bf16_note(self, cfg, device_type):
        if cfg.impl == "fast" and device_type == "cpu" and FUSED and torch.backends.mkldnn.is_available():
            return ""  # oneDNN's fused LSTM runs in bfloat16 under autocast
        return super().bf16_note(cfg, device_type)

    def quantized_layer(self, input_size, cfg, weights):
        from ..quantized import QuantizedRecurrent, with_qconfig

        layer = nn.LSTM(input_size, cfg.hidden_size, cfg.num_layers)
        layer.load_state_dict(weights)
        return QuantizedRecurrent(torch.ao.nn.quantized.dynamic.LSTM.from_float(with_qconfig(layer)))

    def prepare_inference(self, params, cfg):
        H = params[1].shape[1]
        w_ih_t, b_in, w_hh_t, _ = transposed_inference_weights(params, True, doubled=(2, 3), hidden_size=H)
        return w_ih_t, b_in, w_hh_t

    def inference_step(self, xw, state, w_hh_t, cfg):
        """xw (N, 4H) with both biases and the g columns doubled (one sigmoid for all gates);
        h, c (N, H) -> (h', c')."""
        h, c = state
        H = h.shape[1]
        s = xw.addmm_(h, w_hh_t).sigmoid_()  # (N, 4H): sigmoid of i, f, 2g, o
        g = s[:, 2 * H:3 * H].mul(2).sub_(1)  # (N, H) tanh(g)
        c = torch.addcmul(s[:, H:2 * H] * c, s[:, :H], g)  # (N, H)
        return s[:, 3 * H:] * (c * 2).sigmoid_().mul_(2).sub_(1), c  # o * tanh(c')


class LSTMSequence(torch.autograd.Function):
    """An LSTM over a sequence, gate rows in the order o, i, f, g.

    xw (T, B, 4H) = x W_ih^T + b_ih + b_hh, h0, c0 (B, H), w_hh (4H, H) -> out (T, B, H), h_T, c_T.
    """

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh):
        T, B, H4 = xw.shape
        H = H4 // 4
        out = xw.new_empty(T, B, H)
        cs = xw.new_empty(T, B, H)  # c_1 .. c_T
        tc = xw.new_empty(T, B, H)  # tanh(c_t)
        # act (T, B, 4H): the input term, then in place sigmoid(o, i, f), tanh(g). g's rows are
        # doubled so one sigmoid covers all four gates, then tanh(g) = 2 sigmoid(2g) - 1
        act = xw.clone()
        act[:, :, 3 * H:] *= 2
        w2_t = double_rows(w_hh, 3 * H).t()
        minus_one = xw.new_full((1, 1), -1.0).expand(B, H)
        h, c = h0, c0
        o, i, f, g = act.split(H, dim=2)  # each (T, B, H)
        for a_t, o_t, i_t, f_t, g_t, c_t, tc_t, out_t in zip(act, o, i, f, g, cs, tc, out):
            a_t.addmm_(h, w2_t).sigmoid_()  # (B, 4H)
            torch.add(minus_one, g_t, alpha=2, out=g_t)
            c = torch.mul(f_t, c, out=c_t).addcmul_(i_t, g_t)
            h = torch.mul(o_t, tanh_from_double_(torch.add(c, c, out=tc_t), minus_one), out=out_t)
        ctx.save_for_backward(out, h0, c0, w_hh)
        ctx.buffers = cs, tc, act
        return out, out[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT):
        out, h0, c0, w_hh = ctx.saved_tensors
        cs, tc, act = ctx.buffers
        del ctx.buffers
        T, B, H = out.shape
        dg = torch.empty_like(act)  # (T, B, 4H): dL/d(gate pre-activations)
        o, i, f, g = act.split(H, dim=2)  # each (T, B, H)
        c_prev = torch.cat([c0.unsqueeze(0), cs[:-1]])  # (T, B, H)
        # every factor that does not depend on the incoming gradient, for all steps at once
        k_o = tc * o * (1 - o)  # dL/d(o pre-act) = dh * k_o
        k_c = o * (1 - tc * tc)  # dL/dc (through h) = dh * k_c
        k = out.new_empty(T, B, 3, H)  # (T, B, 3, H): d(i, f, g pre-acts) = dc * k
        torch.mul(g, i * (1 - i), out=k[:, :, 0])
        torch.mul(c_prev, f * (1 - f), out=k[:, :, 1])
        torch.mul(i, 1 - g * g, out=k[:, :, 2])
        dh_all = step_grads(d_out, d_hT, out)  # (T, B, H): dL/dh_t, completed in place step by step
        dh_u = dh_all.unbind(0)
        dh = dh_u[-1]  # (B, H)
        dc = step_grads(d_cT, None, c0)  # (B, H): dL/dc_T in, dL/dc_t as the loop goes back
        dct = torch.empty_like(dh)
        dct_b = dct.unsqueeze(1)  # (B, 1, H)
        dg_u, dg_o, dg_ifg = dg.unbind(0), dg[:, :, :H].unbind(0), dg[:, :, H:].view(T, B, 3, H).unbind(0)
        k_c, k_o, k, f = (x.unbind(0) for x in (k_c, k_o, k, f))
        for t in range(T - 1, -1, -1):
            torch.addcmul(dc, dh, k_c[t], out=dct)
            torch.mul(dh, k_o[t], out=dg_o[t])
            torch.mul(dct_b, k[t], out=dg_ifg[t])
            torch.mul(dct, f[t], out=dc)
            if t > 0:
                dh = dh_u[t - 1].addmm_(dg_u[t], w_hh)
        d_h0 = torch.mm(dg[0], w_hh) if ctx.needs_input_grad[1] else None
        d_w = None
        if ctx.needs_input_grad[3]:
            d_w = weight_grad(dg, out, h0)
        return dg, d_h0, dc, d_w


class NativeLSTM(torch.autograd.Function):
    """torch's LSTM (gates i, f, g, o). xw (T, B, 4H) = x W_ih^T + b_ih + b_hh, h0, c0 (B, H),
    w_hh (4H, H) -> out (T, B, H), h_T, c_T."""

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh):
        T, B, H4 = xw.shape
        xw, h0, c0 = xw.contiguous(), h0.contiguous(), c0.contiguous()
        act = torch.empty_like(xw)  # (T, B, 4H): gate activations
        cs, tc, out = (xw.new_empty(T, B, H4 // 4) for _ in range(3))  # c_t, tanh(c_t), h_t
        native.ops.lstm_forward(xw, h0, c0, w_hh.t(), act, cs, tc, out)
        ctx.save_for_backward(out, h0, c0, w_hh, act, cs, tc)
        return out, out[-1].clone(), cs[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT):
        out, h0, c0, w_hh, act, cs, tc = ctx.saved_tensors
        dh = step_grads(d_out, d_hT, out)  # (T, B, H)
        dc = step_grads(d_cT, None, c0)  # (B, H): dL/dc_T in, dL/dc_0 out
        dg = torch.empty_like(act)  # (T, B, 4H)
        d_h0 = native.ops.lstm_backward(dh, dc, c0, act, cs, tc, w_hh.contiguous(), dg)
        d_w = weight_grad(dg, out, h0) if ctx.needs_input_grad[3] else None
        return dg, d_h0, dc, d_w
