"""One inference step for a batch of independent rows, shared by generation and suggestions.

``BatchStep(model)(ids (N,), state) -> (logits (N, V), state)``: the model's own maths for one
token per row, with transposed weights and a lookup table made once, no autograd, dropout or time
loop. It works on any model that follows the contract's parameter names (scratch, concise, fast)
and checks itself against ``model.forward`` when built; anything else is stepped through forward.
"""
from __future__ import annotations

import torch

from . import native
from .base import LanguageModel, State


def _rnn_cell(xw, h, c, w_hh_t, b_hh, relu):
    """xw (N, H) with both biases; h (N, H) -> (h', None)."""
    a = xw.addmm_(h, w_hh_t)
    return (a.relu_() if relu else a.tanh_()), None


def _gru_cell(xw, h, c, w_hh_t, b_hh, relu):
    """xw (N, 3H) with the input bias only (the hidden bias sits inside the reset gate)."""
    H = h.shape[1]
    gh = torch.addmm(b_hh, h, w_hh_t)  # (N, 3H): r, z, n
    rz = (xw[:, :2 * H] + gh[:, :2 * H]).sigmoid_()  # (N, 2H)
    n = torch.addcmul(xw[:, 2 * H:], rz[:, :H], gh[:, 2 * H:]).tanh_()  # (N, H)
    return torch.lerp(n, h, rz[:, H:]), None  # (1 - z) * n + z * h


def _lstm_cell(xw, h, c, w_hh_t, b_hh, relu):
    """xw (N, 4H) with both biases; h, c (N, H) -> (h', c'). The weights of the g gate are doubled
    (``_DOUBLED``) so that one sigmoid serves all four gates: tanh(x) = 2 sigmoid(2x) - 1 (a CPU
    sigmoid is several times cheaper than a tanh)."""
    H = h.shape[1]
    s = xw.addmm_(h, w_hh_t).sigmoid_()  # (N, 4H): sigmoid of i, f, 2g, o
    g = s[:, 2 * H:3 * H].mul(2).sub_(1)  # (N, H) tanh(g)
    c = torch.addcmul(s[:, H:2 * H] * c, s[:, :H], g)  # (N, H)
    return s[:, 3 * H:] * (c * 2).sigmoid_().mul_(2).sub_(1), c  # o * tanh(c')


# cell -> (its step, whether the hidden bias joins the input bias)
_CELLS = {"rnn": (_rnn_cell, True), "gru": (_gru_cell, False), "lstm": (_lstm_cell, True)}
_DOUBLED = {"lstm": (2, 3)}  # cell -> the gate columns [a*H, b*H) whose weights and biases are doubled


@torch.inference_mode()
def step_weights(model: LanguageModel, doubled: bool, transposed: bool = True
                 ) -> tuple[torch.Tensor, list, torch.Tensor, torch.Tensor]:
    """The model's weights laid out for one-token steps, read by the contract's parameter names.

    -> ``table`` (V, G*H): layer 0's input product of each token (one-hot or embedding row) with its
    biases; per layer ``[w_ih_t (I, G*H), b_in (G*H,), w_hh_t (H, G*H), b_hh (G*H,)]``, where
    ``b_in`` holds both biases except for the GRU (whose hidden bias sits inside the reset gate);
    the head ``w_t (H, V)`` and ``b (V,)``. ``doubled``: the LSTM's g-gate columns times 2 (for the
    one-sigmoid cell above). ``transposed=False``: the weights in torch's (out, in) layout instead,
    ``w_ih (G*H, I)``, ``w_hh (G*H, H)``, head ``(V, H)``. All copies, contiguous.
    """
    cfg = model.cfg
    _, fold_hh = _CELLS[cfg.model]
    p = {name: t.detach() for name, t in model.named_parameters()}
    H, cols = cfg.hidden_size, _DOUBLED.get(cfg.model) if doubled else None
    layers = []
    for k in range(cfg.num_layers):
        w_ih, w_hh = p[f"rnn.weight_ih_l{k}"], p[f"rnn.weight_hh_l{k}"]  # (G*H, I), (G*H, H)
        b_ih, b_hh = p[f"rnn.bias_ih_l{k}"], p[f"rnn.bias_hh_l{k}"]  # (G*H,)
        b_in = b_ih + b_hh if fold_hh else b_ih.clone()
        if transposed:
            w_ih, w_hh = w_ih.t(), w_hh.t()  # (I, G*H), (H, G*H)
        w_ih, w_hh = (w.clone(memory_format=torch.contiguous_format) for w in (w_ih, w_hh))  # private copies
        if cols is not None:
            for t in (w_ih, w_hh, b_in):
                t[..., cols[0] * H:cols[1] * H] *= 2
        layers.append([w_ih, b_in, w_hh, b_hh.contiguous()])
    emb = p.get("embedding.weight")  # (V, E) or absent (one-hot inputs)
    w_ih_t = layers[0][0] if transposed else layers[0][0].t()  # (I, G*H)
    b_in = layers[0][1]
    table = (torch.addmm(b_in, emb, w_ih_t) if emb is not None else w_ih_t + b_in).contiguous()  # (V, G*H)
    head = p["head.weight"]  # (V, H)
    return table, layers, (head.t() if transposed else head).contiguous(), p["head.bias"].contiguous()


class BatchStep:
    """One inference step of a recurrent model for ``N`` independent rows:
    ``(ids (N,) long, state (L, N, H) each) -> (logits (N, V), state)``.

    Generation and the suggestion worker make thousands of one-step calls with one to a few dozen
    rows; this is the model's own maths with the per-call overhead taken out: weights transposed once, the layer-0
    input product (one-hot or embedding) a lookup in a (V, G*H) table that holds the biases, and
    no autograd, dropout or time loop. It reads the parameters by the model contract's names
    (``rnn.weight_ih_l{k}`` ..., ``head.weight/bias``, optional ``embedding.weight``) and checks
    itself against ``model.forward`` once; a model it does not fit (or that disagrees) is stepped
    through ``model.forward`` instead.
    """

    def __init__(self, model: LanguageModel):
        self.model = model
        self.layers: list | None = None
        self._greedy_weights = None
        try:
            self._build()
            if not self._agrees():
                self.layers = None
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError):
            self.layers = None

    @classmethod
    def for_model(cls, model: LanguageModel) -> "BatchStep":
        """The model's step, reused while its parameters are unchanged (each generation call would
        otherwise rebuild and re-check it: a few ms, as long as 500 greedy characters take).
        In-place updates (optimizer steps, ``load_state_dict``) bump a parameter's version; moves
        (``.to``) change its storage."""
        key = tuple((id(p), p._version, p.data_ptr(), p.device, p.dtype) for p in model.parameters())
        cached = model.__dict__.get("_rnnlab_batch_step")
        if cached is not None and cached[0] == key:
            return cached[1]
        step = cls(model)
        model.__dict__["_rnnlab_batch_step"] = (key, step)
        return step

    @property
    def specialised(self) -> bool:
        return self.layers is not None

    @torch.inference_mode()
    def _build(self) -> None:
        cfg = self.model.cfg
        self.cell, _ = _CELLS[cfg.model]
        self.relu = getattr(cfg, "activation", "tanh") == "relu"
        table, layers, self.head_w_t, self.head_b = step_weights(self.model, doubled=True)
        self.layers = [[table if k == 0 else None, *layer] for k, layer in enumerate(layers)]

    def _agrees(self) -> bool:
        """The specialised step against ``model.forward`` on a few random rows and states."""
        gen = torch.Generator().manual_seed(0)
        V = self.head_b.shape[0]
        ids = torch.randint(0, V, (3,), generator=gen).to(self.model.device)
        state = tuple((torch.rand(s.shape, generator=gen) - 0.5).to(s) for s in self.model.begin_state(3))
        with torch.inference_mode():
            mine, mine_state = self(ids, state)
            ref, ref_state = self._forward(ids, state)
        return all(a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5)
                   for a, b in zip((mine, *mine_state), (ref, *ref_state)))

    def greedy(self, logits: torch.Tensor, state: State, length: int, banned: torch.Tensor) -> torch.Tensor | None:
        """``length`` greedy tokens after ``logits`` (N, V) and ``state``, the whole loop in C++
        (``native.py``): ids (N, length). None where that does not apply (the caller loops)."""
        if not (self.specialised and native.applies(self.head_w_t)):
            return None
        if self._greedy_weights is None:  # torch's (out, in) layouts: the C++ loop reads rows
            table, layers, head_w, head_b = step_weights(self.model, doubled=False, transposed=False)
            self._greedy_weights = table, [list(col) for col in zip(*layers)], head_w, head_b
        table, (w_ih, b_in, w_hh, b_hh), head_w, head_b = self._greedy_weights
        h = state[0].contiguous().clone()  # (L, N, H): updated in place
        c = state[1].contiguous().clone() if len(state) > 1 else h.new_empty(0)
        return native.ops.greedy(self.model.cfg.model, self.relu, table, w_ih, b_in, w_hh, b_hh, head_w, head_b,
                                 h, c, logits.float().contiguous(), banned.to(torch.long).cpu(), length)

    def _forward(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        logits, state = self.model(ids[:, None], state)  # (N, 1, V)
        return logits[:, -1], state

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.layers is None:
            return self._forward(ids, state)
        hs = state[0].unbind(0)  # L x (N, H)
        cs = state[1].unbind(0) if len(state) > 1 else [None] * len(hs)
        new_h, new_c, x = [], [], None
        for k, (table, w_ih_t, b_in, w_hh_t, b_hh) in enumerate(self.layers):
            xw = table.index_select(0, ids) if k == 0 else torch.addmm(b_in, x, w_ih_t)  # (N, G*H)
            x, c = self.cell(xw, hs[k], cs[k], w_hh_t, b_hh, self.relu)
            new_h.append(x)
            new_c.append(c)
        logits = torch.addmm(self.head_b, x, self.head_w_t)  # (N, V)
        h = new_h[0][None] if len(new_h) == 1 else torch.stack(new_h)  # (L, N, H)
        if new_c[0] is None:
            return logits, (h,)
        c = new_c[0][None] if len(new_c) == 1 else torch.stack(new_c)  # (L, N, H)
        return logits, (h, c)
