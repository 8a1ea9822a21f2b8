r"""The AWS/O'Reilly post's unrolled many-to-one RNN: ``W`` tokens in, the next token out.

A feed-forward network whose layers are shared across the window's positions — a vanilla RNN
unrolled by hand for a fixed number of steps. ``W_I`` (``input_layer``) is applied to every
token, ``W_H`` (``hidden_layer``) chains the positions, ``W_O`` (``head``) predicts. For the
post's window of 3 (``e_k`` the embedding of the k-th token of the window)::

    e_1 ──W_I──► a_1 ──W_H──►(+)──W_H──►(+)──W_O──► logits of token 4
    e_2 ──W_I──► a_2 ────────┘          │
    e_3 ──W_I──► a_3 ───────────────────┘

    a_k = relu(W_I e_k + b_I)                       the shared input layer (dense1)
    z_1 = a_1
    z_k = a_k + relu(W_H z_{k-1} + b_H)   k = 2..W  the shared hidden layer (dense2)
    logits = W_O z_W + b_O                          the output layer (dense3)

This is the post's exact wiring, generalised from 3 to ``W`` positions.

**Streaming = every sliding window.** To fit rnnlab's contract, ``forward(tokens (B, T), state)``
returns a prediction at every position: logits[:, t] predicts the token after ``x_t`` from the
window ``x_{t-W+1} .. x_t``. Training on a ``(B, T)`` minibatch is therefore training on all its
``T`` sliding windows at once (the post's data preparation, ``window_dataset``, cuts the same
windows out of the stream). The state is the last ``W - 1`` token ids, ``(prev,)`` with ``prev``
of shape ``(1, B, W-1)`` long (the contract's ``(L, B, ...)`` layout: batch on dim 1, so batching,
DDP and the suggestion scheduler treat it like any recurrent state), so sequential batching
carries the window across minibatches and generation slides it one token at a time.

**Start of a stream.** ``begin_state`` fills ``prev`` with ``PAD = -1`` ("no token yet"). A
window with ``j`` leading pads is read as the post's chain over its ``W - j`` real tokens:
``z`` starts at the first real token (``z = a_{j+1}``), exactly as ``z_1 = a_1`` above. No
vocabulary id is spent on padding and ``<unk>`` keeps its meaning.

Inputs are a learned embedding when ``embedding_dim > 0`` (the post: 30) or one-hot vectors when
it is 0; with one-hot inputs ``W_I e_k`` is column ``x_k`` of ``W_I``, looked up rather than
multiplied. ``impl`` does not apply (there is one implementation); ``dropout`` (training only) is
applied to the embeddings and to ``z_W`` before the output layer.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .base import LanguageModel, State

PAD = -1  # a window position before the start of the stream


def window_dataset(ids: torch.Tensor, window: int, stride: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The post's data preparation: every ``window`` consecutive ids and the id that follows.

    ids (N,) long -> X (M, W), y (M,) with ``X[m] = ids[m*s : m*s+W]`` and ``y[m] = ids[m*s+W]``,
    ``M = (N - W - 1) // s + 1`` (0 when ``N <= W``). ``stride=1`` gives every sliding window
    (what streaming ``forward`` trains on); the post steps by the window size (``stride=window``).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive, got {window} and {stride}")
    if len(ids) <= window:
        return ids.new_empty(0, window), ids.new_empty(0)
    X = ids[:-1].unfold(0, window, stride)  # (M, W): the windows whose next token exists
    y = ids[window::stride][: X.shape[0]]  # (M,)
    return X.contiguous(), y.contiguous()


class UnrolledRNN(LanguageModel):
    """The unrolled many-to-one model of the module docstring; ``cfg.window`` is ``W``.

    begin_state(B) -> (prev,) with prev (1, B, W-1) long, all ``PAD``.
    forward(tokens (B, T), state) -> logits (B, T, V), (prev,) = the last W-1 ids seen.
    predict_windows(X (N, W)) -> logits (N, V): the post's forward, one window per row.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        V, E, H = cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size
        self.window = cfg.window
        self.embedding = nn.Embedding(V, E) if E > 0 else None
        self.input_layer = nn.Linear(E if E > 0 else V, H)  # W_I, shared by every position
        self.hidden_layer = nn.Linear(H, H)  # W_H, shared by every link of the chain
        self.head = nn.Linear(H, V)  # W_O
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """auto: the post's Xavier weights, zero biases; normal: N(0, 0.01^2), zero biases;
        torch: torch's Linear default. The embedding keeps torch's N(0, 1)."""
        for layer in (self.input_layer, self.hidden_layer, self.head):
            if self.cfg.init == "torch":
                layer.reset_parameters()
                continue
            if self.cfg.init == "normal":
                nn.init.normal_(layer.weight, std=0.01)
            else:
                nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    state_names = ("prev",)

    def quantized(self) -> LanguageModel:
        """An int8 CPU copy: the hidden and output layers (and the input layer after an embedding)."""
        from .quantized import quantize_linears

        return quantize_linears(self, {"hidden_layer", "head"} | ({"input_layer"} if self.cfg.embedding_dim else set()))

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.device
        return (torch.full((1, batch_size, self.window - 1), PAD, dtype=torch.long, device=device),)  # (1, B, W-1)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.begin_state(tokens.shape[0], tokens.device)
        W = self.window
        stream = torch.cat([state[0][0], tokens], dim=1)  # (B, W-1+T)
        windows = stream.unfold(1, W, 1)  # (B, T, W): windows[:, t] = x_{t-W+1} .. x_t
        logits = self.predict_windows(windows)  # (B, T, V)
        return logits, (stream[None, :, stream.shape[1] - (W - 1):],)  # (1, B, W-1)

    def predict_windows(self, windows: torch.Tensor) -> torch.Tensor:
        """windows (..., W) long, ids or ``PAD`` -> logits (..., V) for the token after each window.

        Vectorised over every leading dimension; the only loop is over the W window positions.
        """
        valid = windows != PAD  # (..., W)
        ids = windows.clamp(min=0)
        if self.embedding is not None:
            e = F.dropout(self.embedding(ids), self.cfg.dropout, self.training)  # (..., W, E)
            a = torch.relu(self.input_layer(e))  # (..., W, H)
        else:  # one-hot: W_I onehot(x) is column x of W_I
            a = torch.relu(F.embedding(ids, self.input_layer.weight.T) + self.input_layer.bias)  # (..., W, H)
        z = torch.zeros_like(a[..., 0, :])  # (..., H)
        started = torch.zeros_like(valid[..., :1])  # (..., 1): a real token has been read
        for k in range(self.window):
            v = valid[..., k:k + 1]  # (..., 1)
            link = torch.relu(self.hidden_layer(z))  # (..., H), W_H carries the chain forward
            step = a[..., k, :] + torch.where(started, link, torch.zeros_like(link))
            z = torch.where(v, step, z)  # a pad keeps z (zeros before the first real token)
            started = started | v
        z = F.dropout(z, self.cfg.dropout, self.training)
        return self.head(z)  # (..., V)
