"""The ``fast`` implementation: the maths and parameters of scratch/concise, computed with fewer, larger ops.

What makes it fast (the numbers agree with ``scratch`` to float32 rounding; tests/test_fast.py):

* **One-hot inputs are a row gather.** ``one_hot(x) @ W_ih^T + b`` is row ``x`` of ``W_ih^T + b``, so
  the input projection of all ``T`` steps is one ``embedding`` lookup (an embedding or a lower
  layer's output: one matrix product over ``T*B`` rows). Only ``h @ W_hh^T`` stays in the loop.
* **Backpropagation through time by hand** (``torch.autograd.Function`` per layer): the forward
  loop writes into preallocated ``(T, B, ...)`` buffers; the backward loop does one matrix
  product and two or three fused elementwise ops per step, with every factor that does not
  depend on the incoming gradient computed for all steps at once beforehand; the weight
  gradient of all steps is one large product ``dG^T (G*H, T*B) @ H_prev (T*B, H)``.
* **tanh through sigmoid.** torch's CPU ``tanh`` costs several times its ``sigmoid``, so the loops
  carry doubled pre-activations and use ``tanh(a) = 2 sigmoid(2a) - 1`` (equal up to rounding);
  the LSTM's ``g`` rows are doubled so one sigmoid covers all four gates.
* **In-place, view-free loops.** The input term buffer is private, so each step's ``h W_hh^T``
  is added in place (``addmm_``, no copy); per-step views come from one ``unbind``.

* **The time loops in C++** (``native.py``, ``csrc/loops.cpp``) on CPU float32 when the machine can
  compile them: one product and one fused elementwise pass per step, no Python per step. The
  Python loops below serve float64, CUDA and machines without a compiler.
* **LSTM on CPU float32** runs oneDNN's fused LSTM (``torch.lstm``, the kernel behind
  ``nn.LSTM``), which beats both loops there (1.4x the C++ loop); float64, CUDA and torch builds
  without oneDNN run a loop.

Splitting the batch across the two cores (one thread per half) was measured and dropped: the
small products ran no faster than two-thread products and the Python per-op cost doubled.

Layouts are torch's (``weight_ih_l{k}`` ``(G*H, I)``, gates ``r, z, n`` / ``i, f, g, o``), so a
checkpoint moves between ``scratch``, ``concise`` and ``fast``. Inside the LSTM loop the gate rows
are rotated to ``o, i, f, g`` so that the three sigmoids are one op; autograd rotates the
gradients back.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from . import native
from .bptt import step_grads, weight_grad
from .base import State
from .rnnlm import RNNLM
from .scratch import ScratchRecurrent

def _grad_or_zeros(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def _tanh_from_double_(x2: torch.Tensor, minus_one: torch.Tensor) -> torch.Tensor:
    """In place: ``x2`` holds ``2a``; leaves ``tanh(a) = 2 sigmoid(2a) - 1`` there.

    torch's CPU ``tanh`` is several times slower than its ``sigmoid``; this identity is exact in
    real arithmetic and differs from ``tanh`` by float rounding only.
    """
    return torch.add(minus_one, x2.sigmoid_(), alpha=2, out=x2)


# ---------------------------------------------------------------------------------------------
# One layer over a whole sequence: forward loops and hand-written BPTT
#   xw: (T, B, G*H) input projections with biases folded in (GRU: b_ih only)
# ---------------------------------------------------------------------------------------------

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
                h = _tanh_from_double_(out_t.addmm_(h, w2_t), minus_one)
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
        d_w = None
        if ctx.needs_input_grad[2]:  # sum_t g_t^T h_{t-1}: one (H, T*B) @ (T*B, H) product
            d_w = weight_grad(g, out, h0)
        return g, d_h0, d_w, None


def _double_rows(w: torch.Tensor, start: int) -> torch.Tensor:
    """A copy of ``w`` with rows (or entries) from ``start`` on multiplied by 2. (R, ...) -> (R, ...)"""
    w = w.clone()
    w[start:] *= 2
    return w


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
        w2_t, b2 = _double_rows(w_hh, 2 * H).t(), _double_rows(b_hh, 2 * H)
        xw_rz, xw_n2 = xw[:, :, :2 * H], xw[:, :, 2 * H:] * 2  # (T, B, 2H), (T, B, H)
        minus_one = xw.new_full((1, 1), -1.0).expand(B, H)
        h = h0
        # per-step views made once (indexing a tensor inside the loop costs more than the maths)
        steps = zip(xw_rz, xw_n2, gh, gh[:, :, :2 * H], gh[:, :, 2 * H:], rz, rz[:, :, :H], rz[:, :, H:], n, out)
        for xw_rz_t, xw_n2_t, gh_t, gh_rz_t, gh_n_t, rz_t, r_t, z_t, n_t, out_t in steps:
            torch.addmm(b2, h, w2_t, out=gh_t)  # (B, 3H)
            torch.add(xw_rz_t, gh_rz_t, out=rz_t).sigmoid_()  # (B, 2H): r, z
            _tanh_from_double_(torch.addcmul(xw_n2_t, r_t, gh_n_t, out=n_t), minus_one)
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
        d_out = _grad_or_zeros(d_out, out)
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
        w2_t = _double_rows(w_hh, 3 * H).t()
        minus_one = xw.new_full((1, 1), -1.0).expand(B, H)
        h, c = h0, c0
        o, i, f, g = act.split(H, dim=2)  # each (T, B, H)
        for a_t, o_t, i_t, f_t, g_t, c_t, tc_t, out_t in zip(act, o, i, f, g, cs, tc, out):
            a_t.addmm_(h, w2_t).sigmoid_()  # (B, 4H)
            torch.add(minus_one, g_t, alpha=2, out=g_t)
            c = torch.mul(f_t, c, out=c_t).addcmul_(i_t, g_t)
            h = torch.mul(o_t, _tanh_from_double_(torch.add(c, c, out=tc_t), minus_one), out=out_t)
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


# ---------------------------------------------------------------------------------------------
# The layer stack and the language model
# ---------------------------------------------------------------------------------------------

#: On CPU float32, train LSTMs through oneDNN's fused LSTM (what ``torch.nn.LSTM`` runs there)
#: instead of the loop above: measured 1.5x faster per minibatch at H=256, B=32, T=35 on the
#: 2-core machine. Tests switch it off to cover the loop in float32 too.
FUSED_LSTM = True

#: Run the C++ time loops (``native.py``) where they apply: CPU float32 with the extension built.
#: The fused LSTM above comes first (measured 1.4x the C++ loop); tests switch both off to cover
#: the C++ LSTM loop, and this off to cover the Python loops.
NATIVE = True


def fused_lstm_applies(w: torch.Tensor) -> bool:
    """Whether an LSTM with weights like ``w`` runs as one oneDNN call."""
    return (FUSED_LSTM and w.device.type == "cpu" and w.dtype == torch.float32
            and torch.backends.mkldnn.is_available())


def _lstm_rows(w: torch.Tensor) -> torch.Tensor:
    """torch's gate rows i, f, g, o -> o, i, f, g (a rotation by one gate)."""
    return torch.roll(w, w.shape[0] // 4, dims=0)


class FastRecurrent(ScratchRecurrent):
    """The scratch stack's parameters, run by the sequence functions above.

    forward: x (T, B, I) float, or token ids (T, B) long meaning one-hot rows of size I,
    state tuple of (L, B, H) -> out (T, B, H), state.
    """

    def _input_projection(self, k: int, x: torch.Tensor, rotate: bool = True) -> torch.Tensor:
        """Layer ``k``'s input term for all steps, biases folded in. -> (T, B, G*H).
        LSTM gate rows are rotated to o, i, f, g for the Python loop (``rotate``), torch's order otherwise."""
        w_ih, _, b_ih, b_hh = self.layer_params(k)
        if self.mode == "lstm" and not rotate:
            b = b_ih + b_hh
        elif self.mode == "lstm":
            w_ih, b = _lstm_rows(w_ih), _lstm_rows(b_ih + b_hh)
        elif self.mode == "gru":
            b = b_ih  # b_hh's n part sits inside r * (...), so the whole b_hh stays in the loop
        else:
            b = b_ih + b_hh
        if x.dtype == torch.long:  # one-hot rows: pick row x of W_ih^T + b
            return F.embedding(x, w_ih.t() + b)  # (T, B, G*H)
        return F.linear(x, w_ih, b)  # (T, B, G*H): one product over T*B rows

    def _fused_lstm(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The whole LSTM stack as one library call (oneDNN's fused LSTM, forward and backward)."""
        if x.dtype == torch.long:  # the library multiplies one-hot rows itself (V is small)
            x = F.one_hot(x, self.weight_ih_l0.shape[1]).to(self.weight_ih_l0.dtype)  # (T, B, V)
        params = [p for k in range(self.num_layers) for p in self.layer_params(k)]
        dropout = self.dropout if self.training else 0.0  # between layers, as in the loop below
        out, h, c = torch.lstm(x, list(state), params, True, self.num_layers, dropout, self.training, False, False)
        return out, (h, c)

    def forward(self, x: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.mode == "lstm" and fused_lstm_applies(self.weight_hh_l0):
            return self._fused_lstm(x, state)
        use_native = NATIVE and native.applies(self.weight_hh_l0)
        hs, cs = [], []
        layer_in = x
        for k in range(self.num_layers):
            xw = self._input_projection(k, layer_in, rotate=not use_native)
            _, w_hh, _, b_hh = self.layer_params(k)
            h0 = state[0][k]  # (B, H)
            if use_native:
                if self.mode == "rnn":
                    layer_in, h = native.NativeRNN.apply(xw, h0, w_hh, self.activation == "relu")
                elif self.mode == "gru":
                    layer_in, h = native.NativeGRU.apply(xw, h0, w_hh, b_hh)
                else:
                    layer_in, h, c = native.NativeLSTM.apply(xw, h0, state[1][k], w_hh)
                    cs.append(c)
            elif self.mode == "rnn":
                layer_in, h = RNNSequence.apply(xw, h0, w_hh, self.activation == "relu")
            elif self.mode == "gru":
                layer_in, h = GRUSequence.apply(xw, h0, w_hh, b_hh)
            else:
                layer_in, h, c = LSTMSequence.apply(xw, h0, state[1][k], _lstm_rows(w_hh))
                cs.append(c)
            hs.append(h)
            if self.dropout > 0 and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, training=True)
        new_state = (torch.stack(hs),) if not cs else (torch.stack(hs), torch.stack(cs))  # (L, B, H)
        return layer_in, new_state


class FastRNNLM(RNNLM):
    """``RNNLM`` whose one-hot inputs never materialise: token ids go straight to the gather."""

    def make_recurrent(self, input_size: int) -> nn.Module:
        cfg = self.cfg
        return FastRecurrent(cfg.model, input_size, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.activation)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.begin_state(tokens.shape[0], tokens.device)
        x = tokens.T  # (T, B)
        if self.embedding is not None:
            x = F.dropout(self.embedding(x), self.cfg.dropout, self.training)  # (T, B, E)
        out, state = self.rnn(x, state)  # (T, B, H)
        out = F.dropout(out, self.cfg.dropout, self.training)
        logits = self.head(out)  # (T, B, V): one product over T*B rows
        return logits.transpose(0, 1), state  # (B, T, V) view
