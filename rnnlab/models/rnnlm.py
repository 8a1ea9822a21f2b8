"""``RNNLM``: inputs (one-hot or embedding) -> stacked recurrent layers -> linear output layer."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..config import ModelConfig
from .base import LanguageModel, State
from .concise import concise_recurrent
from .scratch import ScratchRecurrent


class RNNLM(LanguageModel):
    """A recurrent language model over token ids.

    tokens (B, T) -> inputs (T, B, I) -> recurrent (T, B, H) -> logits (B, T, V).
    Dropout (when ``dropout > 0``) is applied to embeddings, between layers and before the
    output layer — the AWS post's embedding + stacked LSTM/GRU + dropout + dense decoder.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        V, E, H = cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size
        self.embedding = nn.Embedding(V, E) if E > 0 else None
        input_size = E if E > 0 else V
        self.rnn = self.make_recurrent(input_size)
        self.head = nn.Linear(H, V)
        self.reset_parameters()

    def make_recurrent(self, input_size: int) -> nn.Module:
        """The recurrent stack, (T, B, I) -> (T, B, H); ``FastRNNLM`` supplies its own."""
        cfg = self.cfg
        args = (cfg.model, input_size, cfg.hidden_size, cfg.num_layers, cfg.dropout, cfg.activation)
        return ScratchRecurrent(*args) if cfg.impl == "scratch" else concise_recurrent(*args)

    def reset_parameters(self) -> None:
        init = self.cfg.init
        if init == "auto":
            init = "normal" if self.cfg.impl == "scratch" else "torch"
        for name, p in self.named_parameters():
            if name.startswith("embedding."):
                continue  # N(0, 1), torch's default, in every case
            if init == "normal":  # the book's scratch models: N(0, 0.01^2) weights, zero biases
                if "bias" in name:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, std=0.01)
            elif name.startswith("rnn."):  # torch's recurrent default: U(-1/sqrt(H), 1/sqrt(H))
                bound = 1.0 / math.sqrt(self.cfg.hidden_size)
                nn.init.uniform_(p, -bound, bound)
        if init == "torch":
            self.head.reset_parameters()

    def describe(self) -> str:
        return f"{self.cfg.impl} {self.cfg.model}"

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        cfg = self.cfg
        device = device if device is not None else self.device
        n = 2 if cfg.model == "lstm" else 1
        return tuple(torch.zeros(cfg.num_layers, batch_size, cfg.hidden_size, device=device, dtype=self.dtype)
                     for _ in range(n))  # each (L, B, H)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.begin_state(tokens.shape[0], tokens.device)
        x = tokens.T  # (T, B): the recurrent loop runs over time first
        if self.embedding is not None:
            x = F.dropout(self.embedding(x), self.cfg.dropout, self.training)  # (T, B, E)
        else:
            x = F.one_hot(x, self.cfg.vocab_size).to(self.dtype)  # (T, B, V)
        out, state = self.rnn(x, state)  # (T, B, H)
        out = F.dropout(out, self.cfg.dropout, self.training)
        logits = self.head(out.transpose(0, 1))  # (B, T, V)
        return logits, state
