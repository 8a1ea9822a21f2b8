"""The GRU cell, as ``torch.nn.GRU`` and cuDNN compute it (gates ``r, z, n``)::

    r  = sigmoid(x W_ir^T + b_ir + h W_hr^T + b_hr)
    z  = sigmoid(x W_iz^T + b_iz + h W_hz^T + b_hz)
    n  = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn))
    h' = (1 - z) * n + z * h

The book's GRU applies the reset gate before the hidden product, ``tanh(x W_xh + (r * h) W_hh + b_h)``;
here it is applied after, as torch does, so scratch and concise are the same function. The hidden
bias sits inside ``r * (...)``, so it is not folded into the input term.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import native
from ..bptt import double_rows, grad_or_zeros, input_term, step_grads, tanh_from_double_, weight_grad
from .base import Cell, TupleState, register, transposed_inference_weights


class ConciseGRU(TupleState, nn.GRU):
    pass


@register
class GRUCell(Cell):
    name = "gru"
    gates = 3
    impls = ("scratch", "concise", "fast")
    fold_hidden_bias = False
    native_greedy = "gru"
    has_inference_step = True

    def step(self, x, state, params, cfg):
        """x (B, I), h (B, H) -> (h',)."""
        (h,), (w_ih, w_hh, b_ih, b_hh) = state, params
        gi = x @ w_ih.T + b_ih  # (B, 3H)
        gh = h @ w_hh.T + b_hh  # (B, 3H)
        i_r, i_z, i_n = gi.chunk(3, dim=1)  # each (B, H)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return ((1 - z) * n + z * h,)

    def torch_layer(self, input_size, cfg):
        dropout = cfg.dropout if cfg.num_layers > 1 else 0.0
        return ConciseGRU(input_size, cfg.hidden_size, cfg.num_layers, dropout=dropout)

    def fast_layer(self, x, state, params, cfg):
        w_ih, w_hh, b_ih, b_hh = params
        xw = input_term(x, w_ih, b_ih)  # (T, B, 3H); b_hh stays in the loop
        seq = NativeGRU if native.use(w_hh) else GRUSequence
        out, h = seq.apply(xw, state[0], w_hh, b_hh)
        return out, (h,)

    def bf16_note(self, cfg, device_type):
        if cfg.impl == "concise" and device_type == "cpu":
            return ("torch's GRU has no bfloat16 kernel on the CPU (autocast leaves it float32): the recurrence runs "
                    "in float32, the output layer in bfloat16")
        return super().bf16_note(cfg, device_type)

    def quantized_layer(self, input_size, cfg, weights):
        from ..quantized import QuantizedRecurrent, with_qconfig

        layer = nn.GRU(input_size, cfg.hidden_size, cfg.num_layers)
        layer.load_state_dict(weights)
        return QuantizedRecurrent(torch.ao.nn.quantized.dynamic.GRU.from_float(with_qconfig(layer)))

    def prepare_inference(self, params, cfg):
        w_ih_t, b_in, w_hh_t, b_hh = transposed_inference_weights(params, False)
        return w_ih_t, b_in, (w_hh_t, b_hh)

    def inference_step(self, xw, state, rest, cfg):
        """xw (N, 3H) with the input bias only; h (N, H) -> (h',)."""
        (w_hh_t, b_hh), h = rest, state[0]
        H = h.shape[1]
        gh = torch.addmm(b_hh, h, w_hh_t)  # (N, 3H): r, z, n
        rz = (xw[:, :2 * H] + gh[:, :2 * H]).sigmoid_()  # (N, 2H)
        n = torch.addcmul(xw[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]).tanh_()  # (N, H)
        return (torch.lerp(n, h, rz[:, H:]),)  # (1 - z) * n + z * h


class GRUSequence(torch.autograd.Function):
    """torch's GRU over a sequence. xw (T, B, 3H) = x W_ih^T + b_ih, h0 (B, H), w_hh (3H, H), b_hh (3H,)."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh):
        T, B, H3 = xw.shape
        H = H3 // 3
        out = xw.new_empty(T, B, H)
        gh = torch.empty_like(xw)  # (T, B, 3H): h W_hh^T + b_hh with the n part doubled
        rz = xw.new_empty(T, B, 2 * H)  # sigmoid gates r, z
        n = xw.new_empty(T, B, H)
        w2_t, b2 = double_rows(w_hh, 2 * H).t(), double_rows(b_hh, 2 * H)
        xw_rz, xw_n2 = xw[:, :, :2 * H], xw[:, :, 2 * H:] * 2  # (T, B, 2H), (T, B, H)
        minus_one = xw.new_full((1, 1), -1.0).expand(B, H)
        h = h0
        # per-step views made once (indexing a tensor inside the loop costs more than the maths)
        steps = zip(xw_rz, xw_n2, gh, gh[:, :, :2 * H], gh[:, :, 2 * H:], rz, rz[:, :, :H], rz[:, :, H:], n, out)
        for xw_rz_t, xw_n2_t, gh_t, gh_rz_t, gh_n_t, rz_t, r_t, z_t, n_t, out_t in steps:
            torch.addmm(b2, h, w2_t, out=gh_t)  # (B, 3H)
            torch.add(xw_rz_t, gh_rz_t, out=rz_t).sigmoid_()  # (B, 2H): r, z
            tanh_from_double_(torch.addcmul(xw_n2_t, r_t, gh_n_t, out=n_t), minus_one)
            h = torch.lerp(n_t, h, z_t, out=out_t)  # n + z * (h - n)
        ctx.save_for_backward(out, h0, w_hh)
        ctx.buffers = gh, rz, n
        return out, out[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        out, h0, w_hh = ctx.saved_tensors
        gh, rz, n = ctx.buffers
        del ctx.buffers
        T, B, H = out.shape
        d_out = grad_or_zeros(d_out, out)
        dh = torch.empty_like(out)  # (T, B, H): total dL/dh_t
        dgh = torch.empty_like(gh)  # (T, B, 3H): dL/d(h W_hh^T + b_hh)
        if d_hT is not None:
            torch.add(d_out[-1], d_hT, out=dh[-1])
        else:
            dh[-1].copy_(d_out[-1])
        r, z = rz[:, :, :H], rz[:, :, H:]  # each (T, B, H)
        h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, H)
        # every factor that does not depend on the incoming gradient, for all steps at once
        k_n = (1 - z) * (1 - n * n)  # (T, B, H): dL/d(n pre-activation) = dh * k_n
        k = out.new_empty(T, B, 3, H)  # (T, B, 3, H): dgh = dh * k
        torch.mul(k_n * gh[:, :, 2 * H:], r * (1 - r) * 0.5, out=k[:, :, 0])  # gh's n part is doubled
        torch.mul(h_prev - n, z * (1 - z), out=k[:, :, 1])
        torch.mul(k_n, r, out=k[:, :, 2])
        dgh3 = dgh.view(T, B, 3, H)
        dh_u, dh_bu, z_u, k_u, dgh_u, dgh3_u, d_out_u = (x.unbind(0) for x in (dh, dh.unsqueeze(2), z, k, dgh, dgh3, d_out))
        for t in range(T - 1, -1, -1):
            torch.mul(dh_bu[t], k_u[t], out=dgh3_u[t])  # (B, 3, H)
            if t > 0:
                torch.addcmul(d_out_u[t - 1], dh_u[t], z_u[t], out=dh_u[t - 1]).addmm_(dgh_u[t], w_hh)
        d_h0 = torch.mul(dh[0], z[0]).addmm_(dgh[0], w_hh) if ctx.needs_input_grad[1] else None
        d_w = d_b = d_xw = None
        if ctx.needs_input_grad[2]:
            d_w = weight_grad(dgh, out, h0)
        if ctx.needs_input_grad[3]:
            d_b = dgh.sum((0, 1))
        if ctx.needs_input_grad[0]:  # r and z pre-activations are shared by the input and hidden parts,
            d_xw = dgh  # so only the n part differs: overwrite it in place, dgh is no longer needed
            torch.mul(dh, k_n, out=d_xw[:, :, 2 * H:])
        return d_xw, d_h0, d_w, d_b


class NativeGRU(torch.autograd.Function):
    """``GRUSequence`` with the loops in C++. xw (T, B, 3H) = x W_ih^T + b_ih, h0 (B, H), w_hh (3H, H),
    b_hh (3H,) -> out (T, B, H), h_T."""

    @staticmethod
    def forward(ctx, xw, h0, w_hh, b_hh):
        T, B, H3 = xw.shape
        xw, h0 = xw.contiguous(), h0.contiguous()
        gh = torch.empty_like(xw)  # (T, B, 3H): h W_hh^T + b_hh
        gates = torch.empty_like(xw)  # (T, B, 3H): r, z, n
        out = xw.new_empty(T, B, H3 // 3)
        native.ops.gru_forward(xw, h0, w_hh.t(), b_hh, gh, gates, out)
        ctx.save_for_backward(out, h0, w_hh, gh, gates)
        return out, out[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        out, h0, w_hh, gh, gates = ctx.saved_tensors
        H = out.shape[2]
        dh = step_grads(d_out, d_hT, out)  # (T, B, H): becomes the total dL/dh_t
        dgh, dxn = torch.empty_like(gh), torch.empty_like(out)  # (T, B, 3H), (T, B, H)
        d_h0 = native.ops.gru_backward(dh, out, h0, gh, gates, w_hh.contiguous(), dgh, dxn)
        d_w = weight_grad(dgh, out, h0) if ctx.needs_input_grad[2] else None
        d_b = dgh.sum((0, 1)) if ctx.needs_input_grad[3] else None
        d_xw = None
        if ctx.needs_input_grad[0]:  # r, z: the same as dgh's; n: dL/d(xn). dgh is no longer needed
            d_xw = dgh
            d_xw[:, :, 2 * H:] = dxn
        return d_xw, (d_h0 if ctx.needs_input_grad[1] else None), d_w, d_b
