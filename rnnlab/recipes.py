"""Named recipes: complete training settings for ``rnnlab train`` when the user gives few flags.

* ``book`` — the book's teaching settings, exactly the configs' defaults: a tanh RNN with one-hot
  inputs, SGD at lr 1, clipping at 1, 500 epochs, no validation (``--recipe book``: every README
  command that reproduces the book uses it).
* ``default`` — the best model this machine trains in the time given (``--budget``, default
  below): a gated cell with learned embeddings, a validation split held out from the end,
  Adam with warm-up and a cosine schedule over the whole budget, evaluations on a bounded slice
  of the validation text inside the budget, the best weights kept and restored, early stopping,
  and dropout once the budget allows many passes over the text. The model's size follows the
  budget and the corpus size (``size_for``; the table it was derived from is in
  ``benchmarks/README.md``).

Explicit flags always win: a recipe fills only the fields the user did not give
(``explicit``), and the first log line says which recipe and which values are in force.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .errors import UsageError
from .models.cells import RECOMMENDED

RECIPES = ("default", "book")
DEFAULT_BUDGET = 300.0  # seconds, when no --budget (and no --epochs / --max-seconds) is given

# Measured training speed (tokens/s; 2 threads, B=16, T=64, embedding 64, 65 characters, the fused
# LSTM with Adam) by hidden size on the reference machine (``python benchmarks/budget.py --speed``),
# and its 1024^3 float32 GEMM rate (``runtime.gemm_rate``): other machines scale by theirs.
LSTM_SPEED = {128: 53_700, 192: 33_900, 256: 22_300, 384: 11_300, 512: 7_400}
SPEED_VOCAB = 65
REFERENCE_GEMM_GFLOPS = 50.0
TOKENS_PER_PARAMETER = 8  # the size rule's target of training tokens per parameter
MAX_PARAMS_PER_TOKEN = 2.0  # and the corpus caps the model: at most 2 parameters per training token
MAX_DROPOUT = 0.25


def lstm_params(hidden: int, vocab: int, embedding: int = 64) -> int:
    return vocab * embedding + 4 * hidden * (embedding + hidden + 2) + hidden * vocab + vocab


@dataclass
class Plan:
    """What a recipe decided, for the first log line."""

    name: str
    values: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        shown = ", ".join(f"{k.replace('_', '-')} {_fmt(v)}" for k, v in self.values.items())
        return f"recipe {self.name}: {shown}" + (f" ({'; '.join(self.notes)})" if self.notes else "")


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _flops(hidden: int, vocab: int, embedding: int = 64) -> int:
    """Multiply-adds per token of the LSTM and its output layer (the embedding is a lookup)."""
    return 4 * hidden * (embedding + hidden) + hidden * vocab


def tokens_seen(hidden: int, budget: float, epochs: int, train_tokens: int, gemm_gflops: float,
                vocab: int = SPEED_VOCAB) -> float:
    """Training tokens a run will process: by the budget (measured speed, scaled to this machine's
    GEMM rate and to the output layer's cost for this vocabulary) or, without one, by its epochs."""
    if budget:
        scale = (gemm_gflops / REFERENCE_GEMM_GFLOPS) * _flops(hidden, SPEED_VOCAB) / _flops(hidden, vocab)
        return LSTM_SPEED[hidden] * scale * budget
    return epochs * train_tokens


def size_for(budget: float, epochs: int, train_tokens: int, vocab: int,
             gemm_gflops: float = REFERENCE_GEMM_GFLOPS) -> int:
    """The hidden size for a budget (or a number of epochs) and a corpus: the largest LSTM that
    still sees about ``TOKENS_PER_PARAMETER`` training tokens per parameter, and has at most
    ``MAX_PARAMS_PER_TOKEN`` parameters per token of the corpus (small texts get small models)."""
    best = min(LSTM_SPEED)
    for h in sorted(LSTM_SPEED):
        params = lstm_params(h, vocab)
        seen = tokens_seen(h, budget, epochs, train_tokens, gemm_gflops, vocab)
        if seen >= TOKENS_PER_PARAMETER * params and params <= MAX_PARAMS_PER_TOKEN * train_tokens:
            best = h
    return best


def dropout_for(budget: float, epochs: int, train_tokens: int, hidden: int,
                gemm_gflops: float = REFERENCE_GEMM_GFLOPS, vocab: int = SPEED_VOCAB) -> float:
    """Dropout by the passes the run makes over the text: none up to 8 epochs (measured: any
    dropout costs loss then), then rising to ``MAX_DROPOUT`` (measured on the Jay Chou lyrics,
    60 k characters seen hundreds of times: locked dropout 0.25 on the outputs, 0.1 on the
    embeddings and DropConnect 0.2 on the recurrent weights gained 0.045 nats)."""
    passes = tokens_seen(hidden, budget, epochs, train_tokens, gemm_gflops, vocab) / max(train_tokens, 1)
    if passes <= 8:
        return 0.0
    return round(min(MAX_DROPOUT, 0.1 * math.log2(passes / 8) + 0.1), 2)


def model_defaults(recipe: str, mcfg: ModelConfig, explicit: set[str]) -> list[str]:
    """The model settings a recipe fills before the configs are checked: the fast kernels (every
    cell has them; ``--model mingru`` has no ``concise``)."""
    check(recipe)
    if recipe == "default" and "impl" not in explicit:
        mcfg.impl = "fast"
        return ["impl"]
    return []


def data_defaults(recipe: str, dcfg: DataConfig, explicit: set[str]) -> list[str]:
    """The data settings a recipe fills before the corpus is read: the validation split."""
    check(recipe)
    if recipe == "default" and "val_fraction" not in explicit and not dcfg.val_fraction:
        dcfg.val_fraction = 0.05
        return ["val_fraction"]
    return []


def resolve(recipe: str, mcfg: ModelConfig, tcfg: TrainConfig, rcfg: RunConfig, explicit: set[str],
            train_tokens: int, vocab: int, gemm_gflops: float = REFERENCE_GEMM_GFLOPS,
            fine_tuning: bool = False, validation: bool = True) -> Plan:
    """Fill the fields the user did not give (``explicit``) from ``recipe``, for a corpus of
    ``train_tokens`` tokens over ``vocab`` types; return what was decided."""
    check(recipe)
    plan = Plan(recipe)
    if recipe == "book":
        return plan

    def put(cfg, name, value):
        if name not in explicit:
            setattr(cfg, name, value)
            plan.values[name] = value

    if not ({"budget", "epochs", "max_seconds"} & explicit):
        put(rcfg, "budget", DEFAULT_BUDGET)
        plan.notes.append(f"no --budget given: {DEFAULT_BUDGET / 60:g} minutes")
    budget = rcfg.budget or rcfg.max_seconds  # 0: the run is --epochs long
    if "epochs" not in explicit and budget:
        rcfg.epochs = 1_000_000  # the budget decides
    if not fine_tuning:  # a fine-tuned model keeps the base's architecture
        put(mcfg, "model", RECOMMENDED)
        put(mcfg, "impl", "fast")
        put(mcfg, "embedding_dim", 64)
        hidden = mcfg.hidden_size if "hidden_size" in explicit else \
            size_for(budget, rcfg.epochs, train_tokens, vocab, gemm_gflops)
        put(mcfg, "hidden_size", hidden)
        if hidden in LSTM_SPEED:
            p = dropout_for(budget, rcfg.epochs, train_tokens, hidden, gemm_gflops, vocab)
            put(mcfg, "dropout", p)
            if p:  # the measured set, scaled: locked masks, embeddings and recurrent weights too
                put(mcfg, "locked_dropout", True)
                put(mcfg, "input_dropout", round(0.4 * p, 2))
                put(mcfg, "weight_drop", round(0.8 * p, 2))
    lr = 7e-3 * (256 / max(mcfg.hidden_size, 64)) ** 0.5
    if fine_tuning:
        lr /= 3  # start gently from a trained model
    put(tcfg, "optimizer", "adam")
    put(tcfg, "lr", round(lr, 5))
    put(tcfg, "min_lr", round(tcfg.lr / 70, 9))  # of the rate in force, the user's if given
    put(tcfg, "lr_schedule", "cosine")
    put(tcfg, "warmup_steps", 50)
    put(tcfg, "clip_norm", 1.0)
    put(tcfg, "batch_size", 16)  # measured: as fast per token as 64 here, ~0.1 nats better
    put(tcfg, "num_steps", 64)
    if validation:
        put(rcfg, "eval_every", round(budget / 10, 1))  # 0 without a budget: at epoch ends
        put(rcfg, "eval_tokens", 20_000)
        put(rcfg, "patience", 4)
        put(rcfg, "restore_best", True)
    put(rcfg, "predict_every", 0)
    return plan


def check(recipe: str) -> None:
    if recipe not in RECIPES:
        raise UsageError(f"unknown --recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
