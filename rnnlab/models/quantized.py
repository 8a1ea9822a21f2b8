"""int8 copies of a model for CPU inference (torch's dynamic quantisation: int8 weights,
activations quantised per call). ``model.quantized()`` makes one; the cells say how their
recurrent layers quantise (``Cell.quantized_layer``).

Measured on an LSTM 256 char model (``benchmarks/export.py``): 3.75x smaller, held-out loss
+0.0004 nats; on this CPU not faster than the float32 step at these sizes (quantising the
activations of small matrices costs more than it saves), so it is a memory saving.
"""
from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from .base import LanguageModel, State


def with_qconfig(module: nn.Module) -> nn.Module:
    """``module`` marked for dynamic int8 quantisation (``from_float`` reads the mark)."""
    module.qconfig = torch.ao.quantization.default_dynamic_qconfig
    return module


@contextlib.contextmanager
def quiet_quantization():
    """torch.ao's eager quantisation is deprecated in favour of torchao (Linear layers only): its
    notices are silenced where it is used."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        yield


class QuantizedLM(LanguageModel):
    """An int8 CPU inference copy of an ``RNNLM``: the cell's quantised recurrent layers and an
    int8 output layer; the embedding stays float32. The model contract as usual:
    begin_state(B) -> (L, B, H) tensors; forward(tokens (B, T), state) -> logits (B, T, V), state."""

    def __init__(self, model):
        super().__init__()
        self.cfg = cfg = copy.deepcopy(model.cfg)
        self.cell = model.cell
        weights = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
        self.embedding = nn.Embedding.from_pretrained(weights["embedding.weight"]) if cfg.embedding_dim else None
        with quiet_quantization():
            self.rnn = model.cell.quantized_layer(cfg.embedding_dim or cfg.vocab_size, cfg,
                                                  {k[4:]: v for k, v in weights.items() if k.startswith("rnn.")})
            head = nn.Linear(cfg.hidden_size, cfg.vocab_size)
            head.load_state_dict({"weight": weights["head.weight"], "bias": weights["head.bias"]})
            self.head = torch.ao.nn.quantized.dynamic.Linear.from_float(with_qconfig(head))
        self.eval()

    device = property(lambda self: torch.device("cpu"))
    dtype = property(lambda self: torch.float32)
    state_names = property(lambda self: self.cell.state_names)

    def describe(self) -> str:
        return f"int8 {self.cfg.model}"

    def begin_state(self, batch_size: int, device=None) -> State:
        return tuple(torch.zeros(self.cfg.num_layers, batch_size, self.cfg.hidden_size)
                     for _ in self.cell.state_names)  # each (L, B, H)

    def forward(self, tokens: torch.Tensor, state: State | None = None):
        if state is None:
            state = self.begin_state(tokens.shape[0])
        x = tokens.T  # (T, B)
        x = self.embedding(x) if self.embedding is not None else F.one_hot(x, self.cfg.vocab_size).float()  # (T, B, I)
        out, state = self.rnn(x, state)  # (T, B, H)
        return self.head(out.transpose(0, 1)), state  # (B, T, V)


class QuantizedRecurrent(nn.Module):
    """A torch dynamic-quantised LSTM/GRU layer with rnnlab's tuple state:
    x (T, B, I), state tuple of (L, B, H) -> out (T, B, H), state."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor, state: State):
        out, s = self.layer(x, state[0] if len(state) == 1 else state)
        return out, (s,) if isinstance(s, torch.Tensor) else tuple(s)


def quantize_linears(model: nn.Module, names: set[str]) -> nn.Module:
    """A CPU copy of ``model`` with its submodules ``names`` (Linear layers) dynamically int8."""
    from torch.ao.quantization import quantize_dynamic

    q = copy.deepcopy(model).cpu().float().eval()
    with quiet_quantization():
        return quantize_dynamic(q, {n: torch.ao.quantization.default_dynamic_qconfig for n in names}, dtype=torch.qint8)
