"""Pieces shared by the cells' ``fast`` kernels: the hand-written backpropagation through time of
the Python loops and of the C++ loops (``native.py``), and the input term of a whole sequence."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def step_grads(d_out: torch.Tensor | None, d_last: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """dL/d(output_t) for every step as a private contiguous buffer the loops may overwrite in
    place (zeros when no gradient came), with the gradient of the returned last state (``d_last``)
    added to the last step. d_out, like (T, B, H), d_last (B, H) -> (T, B, H)"""
    g = torch.zeros_like(like) if d_out is None else d_out.clone(memory_format=torch.contiguous_format)
    if d_last is not None:
        g[-1] += d_last
    return g


def weight_grad(d_pre: torch.Tensor, out: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """dL/dW_hh = sum_t d_pre_t^T h_{t-1}: one (G*H, T*B) @ (T*B, H) product plus the first step.
    d_pre (T, B, G*H), out (T, B, H) = h_1 .. h_T, h0 (B, H) -> (G*H, H)"""
    GH, H = d_pre.shape[2], out.shape[2]
    return torch.mm(d_pre[1:].reshape(-1, GH).t(), out[:-1].reshape(-1, H)).addmm_(d_pre[0].t(), h0)


def grad_or_zeros(g: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if g is None else g


def tanh_from_double_(x2: torch.Tensor, minus_one: torch.Tensor) -> torch.Tensor:
    """In place: ``x2`` holds ``2a``; leaves ``tanh(a) = 2 sigmoid(2a) - 1`` there.

    torch's CPU ``tanh`` is several times slower than its ``sigmoid``; this identity is exact in
    real arithmetic and differs from ``tanh`` by float rounding only.
    """
    return torch.add(minus_one, x2.sigmoid_(), alpha=2, out=x2)


def double_rows(w: torch.Tensor, start: int) -> torch.Tensor:
    """A copy of ``w`` with rows (or entries) from ``start`` on multiplied by 2. (R, ...) -> (R, ...)"""
    w = w.clone()
    w[start:] *= 2
    return w


def input_term(x: torch.Tensor, w_ih: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``x W_ih^T + b`` for every step at once. x (T, B, I) float -> one product over T*B rows;
    token ids (T, B) long (one-hot rows) -> row ``x`` of ``W_ih^T + b``, a gather. -> (T, B, G*H)"""
    if x.dtype == torch.long:
        return F.embedding(x, w_ih.t() + b)
    return F.linear(x, w_ih, b)
