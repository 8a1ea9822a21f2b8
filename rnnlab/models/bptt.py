"""Pieces shared by the hand-written backpropagation through time of ``fast.py`` (Python loops)
and ``native.py`` (C++ loops): the incoming gradient as a private buffer, and the weight gradient
of all steps as one product."""
from __future__ import annotations

import torch


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
