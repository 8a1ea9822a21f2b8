"""The one model contract every rnnlab model honours.

Letters used in shape comments across the package: ``B`` batch, ``T`` time steps, ``V``
vocabulary size, ``E`` embedding size, ``I`` input size of a recurrent layer (``V`` or ``E``),
``H`` hidden size, ``L`` layers, ``G`` gate blocks, ``N`` independent rows at inference.

    state  = model.begin_state(batch_size, device)     # tuple of (L, B, H) tensors
    logits, state = model(tokens, state)                # tokens (B, T) long -> logits (B, T, V)
    logits, state = model.step(ids, state)              # ids (N,) long -> logits (N, V): one token

The state is a tuple so that every model is handled alike: ``(h,)`` for RNN and GRU, ``(h, c)``
for LSTM; the batch is always dimension 1. The trainer, the decoder, the suggestion engine and the
server use only this contract. ``step`` defaults to a one-token ``forward``; a model may override
it with something faster (``RNNLM`` does), and may offer ``greedy_tokens``, a whole greedy loop in
one kernel, which the decoder uses when its filters allow.
"""
from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, ...]


class LanguageModel(nn.Module):
    """Base class: subclasses implement ``begin_state`` and ``forward``."""

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token for each of ``N`` independent rows: ids (N,), state -> logits (N, V), state."""
        logits, state = self(ids[:, None], state)  # (N, 1, V)
        return logits[:, -1], state

    def greedy_tokens(self, logits: torch.Tensor, state: State, length: int,
                      suppress: torch.Tensor) -> torch.Tensor | None:
        """``length`` greedy tokens (argmax, never an id in ``suppress``) after ``logits`` (N, V) and
        ``state``, computed by one kernel: ids (N, length); None where the model has none."""
        return None

    def derived_tensors(self) -> list[torch.Tensor]:
        """Tensors the model holds besides its parameters and buffers (e.g. weights laid out once for
        one-token steps): with those, what a copy of the model really takes in memory."""
        return []

    def quantized(self) -> "LanguageModel":
        """An int8 copy for CPU inference (``rnnlab.models.quantized``), where the model has one."""
        from ..errors import UsageError

        raise UsageError(f"int8 is not available for {self.describe()}")

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tensors (``("h",)``, ``("h", "c")``, ...), e.g. for an exported graph."""
        return tuple(f"s{i}" for i in range(len(self.begin_state(1, "cpu"))))

    def describe(self) -> str:
        """A short human-readable name for logs."""
        return type(self).__name__

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def detach_state(state: State) -> State:
    """Cut the autograd graph at a minibatch boundary, keeping the values (truncated BPTT)."""
    return tuple(s.detach() for s in state)


def grow_vocabulary(state: dict[str, torch.Tensor], model: nn.Module, old_size: int, like: int | None) -> dict:
    """``state`` (a model's weights over ``old_size`` tokens) laid out for ``model``, whose
    vocabulary has the same first ``old_size`` tokens and new ones after them: every tensor with a
    vocabulary-sized dimension (embedding rows, one-hot input columns, output rows and biases)
    keeps its old slices, and each new token's slice starts as token ``like``'s (``<unk>``: what
    the model already did with characters it had not seen) or, without it, the mean of the old
    ones."""
    out = {}
    for name, new in model.state_dict().items():
        old = state[name]
        if old.shape == new.shape:
            out[name] = old
            continue
        dims = [d for d, (a, b) in enumerate(zip(old.shape, new.shape)) if a != b]
        if len(old.shape) != len(new.shape) or any(old.shape[d] != old_size for d in dims):
            raise ValueError(f"{name}: {tuple(old.shape)} does not grow into {tuple(new.shape)}")
        grown = old
        for d in dims:
            n_new = new.shape[d] - old_size
            seed = grown.narrow(d, like, 1) if like is not None else grown.mean(dim=d, keepdim=True)
            grown = torch.cat([grown, seed.expand(*[n_new if i == d else -1 for i in range(grown.dim())])], dim=d)
        out[name] = grown.clone()
    return out
