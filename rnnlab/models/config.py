"""``ModelConfig``: everything needed to rebuild a model's architecture (the weights live in
safetensors). Stored in every checkpoint's ``config.json``; the CLI's model flags are its fields."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..fields import Settings, flag, setting
from .cells import cell_names, get_cell

IMPLS = ("scratch", "concise", "fast")
MAX_WIDTH = 16384  # hidden and embedding sizes
MAX_LAYERS = 64
MAX_WINDOW = 4096
MAX_VOCAB = 1 << 24


def model_names() -> tuple[str, ...]:
    """Every ``--model``: the registered cells and the AWS post's unrolled many-to-one network."""
    return (*cell_names(), "unrolled")


@dataclass
class ModelConfig(Settings):
    model: str = setting("rnn", "the recurrent cell, or the AWS post's unrolled many-to-one network",
                         choices=model_names)
    impl: str = setting("concise", "scratch: explicit parameters (the book); concise: torch.nn layers; fast: the "
                                   "same maths with hand-written BPTT and C++ loops", choices=IMPLS)
    vocab_size: int = setting(0, "set from the data", min=0, max=MAX_VOCAB, cli=False)
    hidden_size: int = setting(256, "hidden units per layer", min=1, max=MAX_WIDTH)
    num_layers: int = setting(1, "stacked recurrent layers", min=1, max=MAX_LAYERS)
    embedding_dim: int = setting(0, "learned embedding size (0 = one-hot inputs, the book)", min=0, max=MAX_WIDTH)
    dropout: float = setting(0.0, "dropout on embeddings, between layers and before the output", min=0.0, max=0.95)
    input_dropout: float | None = setting(None, "dropout on the embeddings (default: --dropout)", min=0.0, max=0.95)
    locked_dropout: bool = setting(False, "one dropout mask per sequence, the same at every time step (AWD-LSTM's "
                                          "locked dropout), instead of a new mask per step")
    weight_drop: float = setting(0.0, "DropConnect on the recurrent weights W_hh, a new mask per minibatch "
                                      "(AWD-LSTM; --impl fast)", min=0.0, max=0.95)
    activation: str = setting("tanh", "--model rnn only: tanh (the book) or relu", choices=("tanh", "relu"))
    init: str = setting("auto", "auto: N(0, 0.01^2) for scratch (the book), torch's default otherwise",
                        choices=("auto", "normal", "torch"))
    window: int = setting(3, "--model unrolled: tokens in, the next one out (the post: 3)", min=1, max=MAX_WINDOW)

    def check(self) -> None:
        if self.model == "unrolled":
            if self.activation != "tanh":
                raise UsageError("--activation applies to --model rnn only; the unrolled network uses the post's ReLU")
            return
        if self.window != 3:
            raise UsageError("--window applies to --model unrolled only; the recurrent models carry a state instead")
        cell = get_cell(self.model)
        if self.weight_drop and (self.impl != "fast" or cell.recurrent_weight is None):
            raise UsageError(f"--weight-drop needs --impl fast and a cell with recurrent weights "
                             f"(--model {self.model} --impl {self.impl} has none to drop)")
        for name in ("activation",):  # cell options: only the cells that declare them read them
            if name not in cell.options and getattr(self, name) != "tanh":
                raise UsageError(f"{flag(name)} applies to --model "
                                 f"{' / '.join(c for c in cell_names() if name in get_cell(c).options)} only")
        cell.check(self)

    def parameter_count(self) -> int:
        """Parameters of the model this config builds, before building it (sizes are checked against
        memory and against a checkpoint's weights first): the model is built on the meta device,
        which allocates nothing, so the count is the real one for every cell and its stack."""
        import torch

        from . import build_model  # models/__init__ imports this module

        with torch.device("meta"):
            return sum(p.numel() for p in build_model(self).parameters())

    def flops_per_token(self) -> int:
        """Floating-point operations of the model's forward pass per token: its cell's stack
        (``Cell.flops_per_token``) and the output layer (H x V); an embedding is a lookup. The
        unrolled network: every matrix of it, once per token."""
        if self.model == "unrolled":
            import torch

            from . import build_model

            with torch.device("meta"):
                model = build_model(self)
            return 2 * sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and "embedding" not in n)
        input_size = self.embedding_dim or self.vocab_size
        return get_cell(self.model).flops_per_token(input_size, self) + 2 * self.hidden_size * self.vocab_size
