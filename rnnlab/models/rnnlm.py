"""``RNNLM``: inputs (one-hot or embedding) -> stacked recurrent layers of one cell -> linear output."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from . import native
from .base import LanguageModel, State
from .cells import Cell, get_cell
from .config import ModelConfig
from .stack import RecurrentStack


class RNNLM(LanguageModel):
    """A recurrent language model over token ids.

    tokens (B, T) -> inputs (T, B, I) -> recurrent (T, B, H) -> logits (B, T, V).
    Dropout (when ``dropout > 0``) is applied to embeddings, between layers and before the
    output layer — the AWS post's embedding + stacked LSTM/GRU + dropout + dense decoder.
    The recurrent stack is the cell's (``cfg.model``) in the implementation ``cfg.impl``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.cell: Cell = get_cell(cfg.model)
        V, E, H = cfg.vocab_size, cfg.embedding_dim, cfg.hidden_size
        self.embedding = nn.Embedding(V, E) if E > 0 else None
        input_size = E if E > 0 else V
        self.rnn = self.cell.make_stack(cfg.impl, input_size, cfg)
        self.head = nn.Linear(H, V)
        self._inference = None  # (key, weights prepared for `step`), rebuilt when the parameters change
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init = self.cfg.init
        if init == "auto":
            init = "normal" if self.cfg.impl == "scratch" else "torch"
        own = getattr(self.rnn, "owns_init", False)  # a block stack (norms, mixes) initialises itself
        if own:
            self.rnn.reset_parameters()
        for name, p in self.named_parameters():
            if name.startswith("embedding.") or (own and name.startswith("rnn.")):
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

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.cell.state_names

    def quantized(self) -> LanguageModel:
        """An int8 CPU copy: the cell's quantised recurrent layers and an int8 output layer."""
        from .quantized import QuantizedLM

        return QuantizedLM(self)

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        cfg = self.cfg
        device = device if device is not None else self.device
        return tuple(torch.zeros(cfg.num_layers, batch_size, cfg.hidden_size, device=device, dtype=self.dtype)
                     for _ in self.cell.state_names)  # each (L, B, H)

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        if state is None:
            state = self.begin_state(tokens.shape[0], tokens.device)
        cfg = self.cfg
        x = tokens.T  # (T, B): the recurrent loop runs over time first
        if self.embedding is not None:
            p_in = cfg.dropout if cfg.input_dropout is None else cfg.input_dropout
            x = self._dropout(self.embedding(x), p_in)  # (T, B, E)
        elif not getattr(self.rnn, "accepts_ids", False):
            x = F.one_hot(x, cfg.vocab_size).to(self.dtype)  # (T, B, V)
        out, state = self.rnn(x, state)  # (T, B, H)
        dtype = self.dtype  # under bfloat16 autocast a fused layer returns a bfloat16 state: the carried state
        state = tuple(s if s.dtype == dtype else s.to(dtype) for s in state)  # stays the weights' (exactly)
        out = self._dropout(out, cfg.dropout)
        if getattr(self.rnn, "accepts_ids", False):
            return self.head(out).transpose(0, 1), state  # one product over T*B rows -> (B, T, V) view
        return self.head(out.transpose(0, 1)), state  # (B, T, V)

    def _dropout(self, x: torch.Tensor, p: float) -> torch.Tensor:
        """Dropout on (T, B, F): a new mask per element, or with ``locked_dropout`` one mask per
        sequence and feature, the same at every step."""
        if not (p and self.training):
            return x
        if not self.cfg.locked_dropout:
            return F.dropout(x, p, training=True)
        mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - p).div_(1 - p)  # (1, B, F)
        return x * mask

    # -- inference ------------------------------------------------------------------------------
    def _layer_params(self, k: int) -> tuple[torch.Tensor, ...]:
        if isinstance(self.rnn, RecurrentStack):
            return self.rnn.layer_params(k)
        return tuple(getattr(self.rnn, f"{n}_l{k}") for n, _ in self.cell.parameters(1, 1))

    def _prepared(self):
        """The weights laid out for one-token steps, made once and reused while the parameters are
        unchanged (in-place updates bump a parameter's version; moves change its storage)."""
        key = tuple((id(p), p._version, p.data_ptr(), p.device, p.dtype) for p in self.parameters())
        if self._inference is not None and self._inference[0] == key:
            return self._inference[1]
        cfg, cell = self.cfg, self.cell
        prepared = {}
        if cell.has_inference_step:
            with torch.inference_mode():
                layers = [cell.prepare_inference(self._layer_params(k), cfg) for k in range(cfg.num_layers)]
                w_ih_t, b_in, _ = layers[0]
                emb = self.embedding.weight if self.embedding is not None else None  # (V, E)
                table = (torch.addmm(b_in, emb, w_ih_t) if emb is not None else w_ih_t + b_in).contiguous()  # (V, G*H)
                head = (self.head.weight.t().contiguous(), self.head.bias.detach().contiguous())  # (H, V), (V,)
            prepared = {"table": table, "layers": layers, "head": head}
        self._inference = (key, prepared)
        return prepared

    def derived_tensors(self) -> list[torch.Tensor]:
        """The weights prepared for ``step`` (and the greedy kernel), while they are kept."""
        out, todo = [], [self._inference[1] if self._inference is not None else None]
        while todo:  # a loop, not a recursive closure: a closure that calls itself is a reference cycle
            x = todo.pop()
            if isinstance(x, torch.Tensor):
                out.append(x)
            elif isinstance(x, (tuple, list)):
                todo.extend(x)
            elif isinstance(x, dict):
                todo.extend(x.values())
        return out

    @torch.inference_mode()
    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One token for N rows with the cell's inference step: weights transposed once, layer 0's
        input product (one-hot or embedding row, biases included) a lookup in a (V, G*H) table, no
        autograd, dropout or time loop. ids (N,), state each (L, N, H) -> logits (N, V), state."""
        cell, cfg = self.cell, self.cfg
        if not cell.has_inference_step:
            return self._reference_step(ids, state)
        prep = self._prepared()
        layers_in = list(zip(*(s.unbind(0) for s in state)))  # L x (each (N, H),)
        new, x = [], None
        for k, (w_ih_t, b_in, rest) in enumerate(prep["layers"]):
            xw = prep["table"].index_select(0, ids) if k == 0 else torch.addmm(b_in, x, w_ih_t)  # (N, G*H)
            st = cell.inference_step(xw, layers_in[k], rest, cfg)
            new.append(st)
            x = st[0]
        logits = torch.addmm(prep["head"][1], x, prep["head"][0])  # (N, V)
        return logits, tuple(torch.stack(parts) for parts in zip(*new))  # each (L, N, H)

    def _reference_step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """The cell's own ``step`` (the book's maths) for a cell without a specialised one."""
        x = self.embedding(ids) if self.embedding is not None else \
            F.one_hot(ids, self.cfg.vocab_size).to(self.dtype)  # (N, I)
        if hasattr(self.rnn, "step"):  # a stack with a one-step mode of its own
            out, state = self.rnn.step(x, state)  # (N, H)
            return self.head(out), state
        layers_in = list(zip(*(s.unbind(0) for s in state)))
        new = []
        for k in range(self.cfg.num_layers):
            st = self.cell.step(x, layers_in[k], self._layer_params(k), self.cfg)
            new.append(st)
            x = st[0]
        return self.head(x), tuple(torch.stack(parts) for parts in zip(*new))

    def greedy_tokens(self, logits: torch.Tensor, state: State, length: int,
                      suppress: torch.Tensor) -> torch.Tensor | None:
        """The whole greedy loop in C++ (``csrc/loops.cpp``) for cells that have one, on CPU float32."""
        mode = self.cell.native_greedy
        if mode is None or length <= 0 or not native.applies(self.head.weight):
            return None
        prep = self._prepared()
        if "greedy" not in prep:
            prep["greedy"] = self._greedy_weights()
        table, (w_ih, b_in, w_hh, b_hh), head_w, head_b = prep["greedy"]
        h = state[0].contiguous().clone()  # (L, N, H): updated in place
        c = state[1].contiguous().clone() if len(state) > 1 else h.new_empty(0)
        return native.ops.greedy(mode, self.cfg.activation == "relu", table, w_ih, b_in, w_hh, b_hh, head_w, head_b,
                                 h, c, logits.float().contiguous(), suppress.to(torch.long).cpu(), length)

    @torch.inference_mode()
    def _greedy_weights(self):
        """The C++ loop's weights, in torch's (out, in) layout: the layer-0 table (V, G*H), per layer
        w_ih (G*H, I), b_in (both biases but for the GRU), w_hh (G*H, H), b_hh; the head (V, H), (V,)."""
        layers = []
        for k in range(self.cfg.num_layers):
            w_ih, w_hh, b_ih, b_hh = (t.detach() for t in self._layer_params(k))
            b_in = b_ih + b_hh if self.cell.fold_hidden_bias else b_ih.clone()
            layers.append((w_ih.contiguous(), b_in, w_hh.contiguous(), b_hh.contiguous()))
        emb = self.embedding.weight if self.embedding is not None else None  # (V, E)
        w_ih0_t, b_in0 = layers[0][0].t(), layers[0][1]  # (I, G*H), (G*H,)
        table = (torch.addmm(b_in0, emb, w_ih0_t) if emb is not None else w_ih0_t + b_in0).contiguous()
        columns = tuple(list(col) for col in zip(*layers))
        return table, columns, self.head.weight.detach().contiguous(), self.head.bias.detach().contiguous()

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_inference"] = None  # prepared weights are rebuilt on the other side
        return state
