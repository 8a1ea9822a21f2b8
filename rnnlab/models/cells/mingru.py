"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): the GRU without the state in its gates::

    z_t  = sigmoid(k_t)            k_t, v_t = rows of W x_t + b   (x_t: the block's shifted input)
    h~_t = g(v_t)                  g(v) = v + 1/2 for v >= 0, sigmoid(v) below (positive, for log space)
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

so ``h_t = a_t h_{t-1} + b_t`` with ``a = 1 - z``, ``b = z h~``. This module is the whole cell:
its maths (``g``, the scans), its stack of blocks (``MinStack``) and its registration; minLSTM
(``minlstm.py``) shares the stack and differs in its coefficients only.

The gates come from the input alone, so the recurrence is elementwise and linear in the state and
every product covers all T*B rows at once. A block of the stack (pre-norm, residual)::

    x ──► RMSNorm ──► token shift ──► Linear (D -> G*D) ──► a, b ──► scan ──► Linear (D -> D) ──► (+x)
      ──► RMSNorm ──► Linear (D -> F*D) ──► GELU ──► Linear (F*D -> D) ──► (+x)

*Token shift* mixes each position's normalised input with the previous one's, per channel, with a
learned weight (the cell then sees two tokens even in its gates, which are otherwise one token
wide). After the last block a final RMSNorm feeds the output layer. The input is the embedding, of
size D = ``hidden_size`` (``embedding_dim`` must equal it).

The state of layer ``k`` is ``(h, shift)``: its scan state and the last normalised input (for the
token shift), each (L, B, D). ``impl``:

* ``scratch`` — the recurrence one step at a time in linear space (the paper's maths);
* ``fast``    — on CPU float32 with the C++ loops, the recurrence in C++ (``NativeScan``: one
  memory pass forward and one backward, exact in linear space, the columns split over the
  cores); elsewhere (float64, CUDA, no compiler) a parallel scan in log space over chunks of
  ``SCAN_CHUNK`` steps:
  ``log h_t = A_t + logcumsumexp_k(log b_k - A_k)`` with ``A_t = sum_{k<=t} log a_k`` (the start
  state enters as ``exp(A_t) * h_0``), chunks chained by their last state. Chunking bounds
  ``|A_t|``, which keeps float32 precise for any T.

Nothing looks at a later position: the shift reads the previous position, the scan the past
(tested: changing a future token never changes an earlier output).

Under bfloat16 autocast the products (projections, MLP) run in bfloat16 and the scan in float32:
the C++ scan is float32 only, and ``h_t`` is a product of up to T gates, where bfloat16's 8 bits
would drift.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .. import native
from .base import Cell, register

SCAN_CHUNK = 16
FFN_EXPANSION = 2


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t, one step at a time. a, b (T, B, D), h0 (B, D) -> h (T, B, D)."""
    out, h = [], h0
    for a_t, b_t in zip(a, b):
        h = a_t * h + b_t
        out.append(h)
    return torch.stack(out)


def log_scan(log_a: torch.Tensor, log_b: torch.Tensor, h0: torch.Tensor, chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """The same recurrence from log a_t, log b_t (b_t > 0), as a parallel scan over chunks of
    ``chunk`` steps. log_a, log_b (T, B, D), h0 (B, D) (any sign) -> h (T, B, D)."""
    out, h = [], h0
    for s in range(0, log_a.shape[0], chunk):
        a_star = log_a[s:s + chunk].cumsum(0)  # (c, B, D): log of the product of a up to t
        inner = torch.logcumsumexp(log_b[s:s + chunk] - a_star, dim=0)  # (c, B, D)
        h_c = torch.exp(a_star + inner) + torch.exp(a_star) * h  # the inputs' part + the start state's part
        out.append(h_c)
        h = h_c[-1]
    return torch.cat(out)


class NativeScan(torch.autograd.Function):
    """``linear_scan`` in C++ (``csrc/loops.cpp``: one pass forward, one backward, each thread a
    range of the B*D columns for all T steps). a, b (T, B, D), h0 (B, D) -> h (T, B, D)."""

    @staticmethod
    def forward(ctx, a, b, h0):
        T, B, D = a.shape
        a, b, h0 = (t.contiguous() for t in (a, b, h0))
        out = torch.empty_like(a)
        native.ops.scan_forward(a.view(T, -1), b.view(T, -1), h0.view(-1), out.view(T, -1))
        ctx.save_for_backward(a, out, h0)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out):
        a, out, h0 = ctx.saved_tensors
        T = a.shape[0]
        da, db, dh0 = torch.empty_like(a), torch.empty_like(a), torch.empty_like(h0)
        native.ops.scan_backward(d_out.contiguous().view(T, -1), a.view(T, -1), out.view(T, -1), h0.view(-1),
                                 da.view(T, -1), db.view(T, -1), dh0.view(-1))
        return da, db, dh0


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a narrower format (bfloat16 under autocast or in a bfloat16 copy)."""
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


def g(x: torch.Tensor) -> torch.Tensor:
    """The paper's positive activation for the candidate state: x + 1/2 for x >= 0, sigmoid(x) below."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def log_g(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, torch.log(F.relu(x) + 0.5), -F.softplus(-x))


class MinBlock(nn.Module):
    """One block (see the module docstring): x (T, B, D), (h0, shift0) each (B, D) -> x', (h_T, u_T)."""

    def __init__(self, cell, dim: int):
        super().__init__()
        self.cell = cell
        self.norm1 = RMSNorm(dim)
        self.shift_mix = nn.Parameter(torch.full((dim,), 0.5))  # weight of the previous position
        self.in_proj = nn.Linear(dim, cell.gates * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.norm2 = RMSNorm(dim)
        self.ffn_in = nn.Linear(dim, FFN_EXPANSION * dim)
        self.ffn_out = nn.Linear(FFN_EXPANSION * dim, dim)

    def mixer(self, x: torch.Tensor, h0: torch.Tensor, u0: torch.Tensor, parallel: bool):
        """The recurrent half: x (T, B, D) -> its update (T, B, D), last h, last normalised input."""
        u = self.norm1(x)  # (T, B, D)
        prev = torch.cat([u0[None], u[:-1]])  # (T, B, D): each position's previous normalised input
        mixed = torch.lerp(u, prev, self.shift_mix)  # (1 - mix) * u + mix * prev
        pre = _wide(self.in_proj(mixed))  # (T, B, G*D): one product over T*B rows; the scan: float32 at least
        h0 = _wide(h0)
        if parallel and native.use(pre):  # CPU float32: the recurrence in C++, linear space (exact)
            a, b = self.cell.coefficients(pre)
            h = NativeScan.apply(a, b, h0)
        elif parallel:
            log_a, log_b = self.cell.log_coefficients(pre)
            h = log_scan(log_a, log_b, h0)
        else:
            a, b = self.cell.coefficients(pre)
            h = linear_scan(a, b, h0)
        h = h.to(x.dtype)  # back to the stream's dtype (float32 under autocast; a bfloat16 copy's own)
        return self.out_proj(h), h[-1], u[-1]

    def forward(self, x: torch.Tensor, h0: torch.Tensor, u0: torch.Tensor, parallel: bool):
        update, h, u = self.mixer(x, h0, u0, parallel)
        x = x + update
        x = x + self.ffn_out(F.gelu(self.ffn_in(self.norm2(x))))
        return x, h, u


class MinStack(nn.Module):
    """``cfg.num_layers`` blocks and a final norm. forward: x (T, B, D), state (h, shift) each
    (L, B, D) -> (T, B, D), state; step: x (N, D), state -> (N, D), state."""

    accepts_ids = False
    owns_init = True

    def __init__(self, cell, impl: str, input_size: int, cfg):
        super().__init__()
        self.cell, self.impl, self.cfg = cell, impl, cfg
        self.blocks = nn.ModuleList(MinBlock(cell, cfg.hidden_size) for _ in range(cfg.num_layers))
        self.final_norm = RMSNorm(cfg.hidden_size)

    def reset_parameters(self) -> None:
        """Linear layers torch's default with zero biases; the layers that write into the residual
        stream scaled by 1/sqrt(2L) (so the stream's size does not grow with depth); norms 1; token
        shift half the previous position."""
        scale = (2 * len(self.blocks)) ** -0.5
        for block in self.blocks:
            for lin in (block.in_proj, block.out_proj, block.ffn_in, block.ffn_out):
                lin.reset_parameters()
                nn.init.zeros_(lin.bias)
            with torch.no_grad():
                block.out_proj.weight.mul_(scale)
                block.ffn_out.weight.mul_(scale)
            for norm in (block.norm1, block.norm2):
                nn.init.ones_(norm.weight)
            nn.init.constant_(block.shift_mix, 0.5)
        nn.init.ones_(self.final_norm.weight)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        hs, us = [], []
        for k, block in enumerate(self.blocks):
            x, h, u = block(x, state[0][k], state[1][k], parallel=self.impl == "fast")
            hs.append(h)
            us.append(u)
            if self.cfg.dropout > 0 and self.training and k < len(self.blocks) - 1:
                x = F.dropout(x, self.cfg.dropout, training=True)
        return self.final_norm(x), (torch.stack(hs), torch.stack(us))  # (T, B, D), each (L, B, D)

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple]:
        out, state = self(x[None], state)  # (1, N, D): one step of the recurrence either way
        return out[0], state


@register
class MinGRUCell(Cell):
    name = "mingru"
    gates = 2  # k, v
    state_names = ("h", "shift")
    impls = ("scratch", "fast")
    recurrent_weight = None  # its gates read the input only
    width_is_embedding = True  # residual blocks (MinStack)

    def make_stack(self, impl, input_size, cfg):
        return MinStack(self, impl, input_size, cfg)

    def quantized_layer(self, input_size, cfg, weights):
        """The block stack with every Linear layer (gate, output and MLP projections) int8; the
        norms, the token shift and the scan stay float32."""
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
        return 1 - z, z * g(v)

    def log_coefficients(self, pre: torch.Tensor):
        """pre (T, B, 2D) -> log a, log b (T, B, D)."""
        k, v = pre.chunk(2, dim=-1)
        return -F.softplus(k), -F.softplus(-k) + log_g(v)
