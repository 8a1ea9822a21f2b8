"""What a recurrent cell is to the rest of rnnlab, and the registry that names the cells.

A cell module (``rnn.py``, ``gru.py``, ``lstm.py``, ...) holds everything about one cell — its
equations, parameters, state, and the kernels that run it — in one subclass of ``Cell``, and
registers it (``@register``). The model factory, the layer stack and the one-token inference step
look cells up here by ``ModelConfig.model``; nothing outside ``rnnlab.models`` knows their names.

Methods take the model's ``ModelConfig`` as ``cfg`` (for options such as ``activation``).

Letters: ``B`` batch rows (``N`` at inference), ``T`` steps, ``I`` a layer's input size, ``H``
hidden size, ``G`` gate blocks (the rows of ``weight_ih`` are ``G*H``), ``V`` vocabulary.

Per layer ``k`` a cell's parameters are named ``{name}_l{k}`` after ``Cell.parameters`` —
by default torch's layout (``weight_ih (G*H, I)``, ``weight_hh (G*H, H)``, ``bias_ih``, ``bias_hh``),
so a checkpoint moves between the implementations of a cell:

* ``scratch`` runs ``Cell.step`` (the book's maths, one step) in a Python loop over time;
* ``concise`` runs ``Cell.torch_layer`` (a ``torch.nn`` recurrent layer) when the cell has one;
* ``fast`` runs ``Cell.fast_layer`` (a whole sequence per call: hand-written BPTT, C++ loops) or,
  where one applies, ``Cell.fast_stack`` (every layer in one library call).

``Cell.impls`` says which of these exist; asking for another fails with a message, never runs
another cell's code. Inference (generation, suggestions) steps one token for ``N`` rows with
``Cell.inference_step`` when the cell has a specialised one, else with ``Cell.step``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import UsageError

Config = Any  # the model's ModelConfig (rnnlab.models.config, which imports this registry)
CellState = tuple[torch.Tensor, ...]  # one layer's state: (h,) or (h, c), each (B, H)
Params = tuple[torch.Tensor, ...]  # one layer's parameters, in the order of Cell.parameters


class Cell:
    """Base class of the cells; see the module docstring. Subclasses set the class attributes and
    implement ``step`` (and whatever of ``torch_layer``, ``fast_layer``, ``fast_stack``,
    ``prepare_inference``/``inference_step`` they offer)."""

    name: str = ""
    gates: int = 1  # G
    state_names: tuple[str, ...] = ("h",)  # the state tensors of one layer; the first is the output h
    impls: tuple[str, ...] = ("scratch",)  # the implementations this cell has
    options: dict[str, tuple] = {}  # ModelConfig fields only this cell reads -> their allowed values
    fold_hidden_bias: bool = True  # the input term holds bias_hh too (GRU: no, it sits inside r * (...))
    native_greedy: str | None = None  # the C++ greedy loop's name for this cell (csrc/loops.cpp), if any
    recurrent_weight: str | None = "weight_hh"  # the parameter --weight-drop drops (None: the cell has none)
    width_is_embedding: bool = False  # its blocks add their output to their input: --embedding-dim == --hidden-size

    # -- declaration ----------------------------------------------------------------------------
    def parameters(self, input_size: int, hidden_size: int) -> list[tuple[str, tuple[int, ...]]]:
        """One layer's parameters: (name, shape) in registration order (torch's layout)."""
        G, H = self.gates, hidden_size
        return [("weight_ih", (G * H, input_size)), ("weight_hh", (G * H, H)), ("bias_ih", (G * H,)),
                ("bias_hh", (G * H,))]

    def check(self, cfg: Config) -> None:
        """Refuse the implementation or options this cell does not have (a ``UsageError``)."""
        if cfg.impl not in self.impls:
            raise UsageError(f"--impl {cfg.impl} is not available for --model {self.name}; "
                             f"choose one of: {', '.join(self.impls)}")
        for name, allowed in self.options.items():
            value = getattr(cfg, name)
            if value not in allowed:
                raise UsageError(f"unknown --{name.replace('_', '-')} {value!r} for --model {self.name}; "
                                 f"choose one of: {', '.join(map(str, allowed))}")
        if self.width_is_embedding and cfg.embedding_dim != cfg.hidden_size:
            raise UsageError(f"--model {self.name} adds each block's output to its input: give --embedding-dim "
                             f"equal to --hidden-size ({cfg.hidden_size})")

    def make_stack(self, impl: str, input_size: int, cfg: Config) -> nn.Module:
        """The module that runs ``cfg.num_layers`` layers of this cell in ``impl``: (T, B, I) (or
        token ids (T, B) when it has ``accepts_ids``), state tuple of (L, B, ...) -> (T, B, H), state.
        By default torch's layer for ``concise`` and ``RecurrentStack`` (this cell's ``step`` or
        fast kernels per layer) otherwise; a cell with a block structure of its own returns its own."""
        if impl == "concise":
            return self.torch_layer(input_size, cfg)
        from ..stack import RecurrentStack

        return RecurrentStack(self, impl, input_size, cfg)

    # -- size and cost ------------------------------------------------------------------------------
    def parameter_count(self, input_size: int, cfg: Config) -> int:
        """Parameters of this cell's stack (``make_stack``: ``cfg.num_layers`` layers over inputs of
        ``input_size``), counted on the meta device: nothing is allocated."""
        return sum(p.numel() for p in self._meta_stack(input_size, cfg).parameters())

    def flops_per_token(self, input_size: int, cfg: Config) -> int:
        """Floating-point operations of the stack's forward pass per token: a multiply and an add for
        every weight of every matrix (each is applied once per token); the elementwise work (gates,
        norms, a scan) grows with H, not H^2, and is left out. A training step costs about three
        times this (the backward pass computes two products per forward one). A cell whose stack
        applies a matrix more or less often than once per token overrides this."""
        return 2 * sum(p.numel() for p in self._meta_stack(input_size, cfg).parameters() if p.dim() >= 2)

    def _meta_stack(self, input_size: int, cfg: Config) -> nn.Module:
        with torch.device("meta"):
            return self.make_stack(cfg.impl, input_size, cfg)

    # -- scratch --------------------------------------------------------------------------------
    def step(self, x: torch.Tensor, state: CellState, params: Params, cfg: Config) -> CellState:
        """The reference maths of one step: x (B, I), state each (B, H) -> the new state (h first)."""
        raise NotImplementedError

    # -- concise --------------------------------------------------------------------------------
    def torch_layer(self, input_size: int, cfg: Config) -> nn.Module:
        """A ``torch.nn`` stack of ``cfg.num_layers`` layers: (T, B, I), state tuple -> (T, B, H), state."""
        raise UsageError(f"--impl concise is not available for --model {self.name}")

    # -- fast -----------------------------------------------------------------------------------
    def fast_stack(self, x: torch.Tensor, state: tuple[torch.Tensor, ...], params: list[Params],
                   cfg: Config, training: bool) -> tuple[torch.Tensor, tuple] | None:
        """Every layer in one call where such a kernel applies (x (T, B, I) or ids (T, B); state each
        (L, B, H)); None where it does not (then ``fast_layer`` runs per layer)."""
        return None

    def fast_layer(self, x: torch.Tensor, state: CellState, params: Params,
                   cfg: Config) -> tuple[torch.Tensor, CellState]:
        """One layer over a whole sequence: x (T, B, I) float or token ids (T, B) long (one-hot rows
        of size I) -> out (T, B, H), the last state."""
        raise UsageError(f"--impl fast is not available for --model {self.name}")

    # -- bfloat16 ---------------------------------------------------------------------------------
    def bf16_note(self, cfg: Config, device_type: str) -> str:
        """What of this cell stays float32 under bfloat16 autocast on ``device_type``, and why ('':
        nothing worth saying). ``fast``'s per-layer kernels are float32 only (``stack.py`` runs them
        with autocast off)."""
        if cfg.impl == "fast":
            return (f"--impl fast {self.name}: the recurrence runs rnnlab's float32 kernels (the C++ loops are float32 "
                    f"only); the output layer runs in bfloat16")
        return ""

    # -- export and int8 -------------------------------------------------------------------------
    @property
    def onnx_graph(self) -> str:
        """Which implementation torch's ONNX exporter traces for the float graph: torch's layer
        where the cell has one (ONNX's own RNN/GRU/LSTM operators), else the reference step (plain
        tensor operations; the fast kernels' C++ calls are invisible to the tracer)."""
        return "concise" if "concise" in self.impls else "scratch"

    #: which implementation's ONNX graph onnxruntime can quantise to int8 (its own recurrent
    #: operators where it has an int8 kernel for them, else the scratch graph's plain MatMuls)
    int8_onnx_graph: str = "scratch"

    def quantized_layer(self, input_size: int, cfg: Config, weights: dict[str, torch.Tensor]) -> nn.Module:
        """int8 recurrent layers (``rnnlab.models.quantized``) holding ``weights`` (the stack's
        parameters by name): (T, B, I), state tuple -> (T, B, H), state."""
        raise UsageError(f"int8 is not available for --model {self.name}")

    # -- inference: one token for N rows (generation, suggestions) ------------------------------
    #: whether ``inference_step`` is specialised; without it the model steps with ``step``
    has_inference_step: bool = False

    def prepare_inference(self, params: Params, cfg: Config) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One layer's parameters prepared once for ``inference_step`` while the weights do not
        change: ``(w_ih_t (I, G*H), b_in (G*H,), rest)`` — the input term is ``x @ w_ih_t + b_in``
        (for layer 0 a lookup table of it is made for every token), ``rest`` is what
        ``inference_step`` takes."""
        raise NotImplementedError

    def inference_step(self, xw: torch.Tensor, state: CellState, rest: Any, cfg: Config) -> CellState:
        """One step from the input term ``xw`` (N, G*H), a private buffer it may overwrite -> the
        new state, under ``torch.inference_mode``."""
        raise NotImplementedError


_REGISTRY: dict[str, Cell] = {}


def register(cls: type[Cell]) -> type[Cell]:
    """Class decorator: make ``cls()`` the cell named ``cls.name`` (a later registration of the same
    name replaces the earlier one)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls()
    return cls


def get_cell(name: str) -> Cell:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown cell {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def cell_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


class TupleState:
    """Mixin for ``torch.nn.RNN/GRU/LSTM``: the state as rnnlab's tuple of (L, B, H) tensors.
    Parameters keep torch's names, so the same weights load into the scratch and fast stacks."""

    def forward(self, x: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        """x (T, B, I), state tuple of (L, B, H) -> out (T, B, H), state."""
        out, s = super().forward(x, state[0] if len(state) == 1 else state)
        return out, (s,) if isinstance(s, torch.Tensor) else tuple(s)


def transposed_inference_weights(params: Params, fold_hidden_bias: bool, doubled: tuple[int, int] | None = None,
                                 hidden_size: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Private contiguous copies for one-token steps: ``w_ih_t (I, G*H)``, ``b_in (G*H,)`` (both
    biases when ``fold_hidden_bias``), ``w_hh_t (H, G*H)``, ``b_hh (G*H,)``; with ``doubled = (a, b)``
    the gate columns ``[a*H, b*H)`` of the first three are multiplied by 2."""
    w_ih, w_hh, b_ih, b_hh = (t.detach() for t in params)
    b_in = b_ih + b_hh if fold_hidden_bias else b_ih.clone()
    w_ih_t, w_hh_t = (w.t().clone(memory_format=torch.contiguous_format) for w in (w_ih, w_hh))
    if doubled is not None:
        a, b = doubled[0] * hidden_size, doubled[1] * hidden_size
        for t in (w_ih_t, w_hh_t, b_in):
            t[..., a:b] *= 2
    return w_ih_t, b_in, w_hh_t, b_hh.contiguous()
