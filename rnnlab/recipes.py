"""Named recipes: complete training settings for ``rnnlab train`` when the user gives few flags.

* ``book`` — the book's teaching settings, exactly the configs' defaults: a tanh RNN with one-hot
  inputs, SGD at lr 1, clipping at 1, 500 epochs, no validation (``--recipe book``: every README
  command that reproduces the book uses it).
* ``default`` — the best model this machine trains in the time given (``--budget``, default
  below): a gated cell with learned embeddings, a validation split held out from the end,
  Adam with warm-up and a cosine schedule over the whole budget, evaluations on a bounded slice
  of the validation text inside the budget, the best weights kept and restored, early stopping,
  and dropout once the budget allows many passes over the text. The model's size follows the
  training speed measured on this machine for the candidates themselves (``rnnlab.speed``), the
  budget and the corpus size (``size_for``); the plan's log line shows the rates behind it. The
  precision is ``auto``: bfloat16 where the first candidate's step measures faster in it
  (``rnnlab.precision``), and the candidates are then measured, so sized, in the precision chosen.

Explicit flags always win: a recipe fills only the fields the user did not give
(``explicit``), and the first log line says which recipe and which values are in force.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .errors import UsageError
from .models.cells import RECOMMENDED, cell_names, get_cell

RECIPES = ("default", "book")
DEFAULT_BUDGET = 300.0  # seconds, when no --budget (and no --epochs / --max-seconds) is given
EMBEDDING = 64  # the learned embedding of the default recipe (cells whose blocks need it equal the width excepted)
WIDTHS = (64, 96, 128, 192, 256, 384, 512, 768, 1024)  # the hidden sizes the recipe chooses among
TOKENS_PER_PARAMETER = 8  # the size rule's target of training tokens per parameter
MAX_PARAMS_PER_TOKEN = 2.0  # and the corpus caps the model: at most 2 parameters per training token
MAX_DROPOUT = 0.25
EVAL_SHARE = 0.05  # of a budget: scoring the selection slice ten times (forward only)
SELECT_TOKENS = 100_000  # scored of the selection slice at each evaluation: all of it on these corpora (its first
# 20,000 were measured unrepresentative: 1.28 there, 1.47 on the whole slice, for the same tinyshakespeare model)
SETUP_ALLOWANCE = 5.0  # seconds of a budget: reading the text, measuring the candidates, building the model
MEASURE_SHARE, MEASURE_FLOOR = 0.03, 2.0  # measuring the candidates stops at 3% of a budget (at least 2 s)

RateOf = Callable[[ModelConfig], "tuple[float, int]"]  # a candidate -> (training tokens/s, parameters)


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


def candidate(mcfg: ModelConfig, width: int) -> ModelConfig:
    """The model the recipe would train at ``width`` (the cell says whether its embedding is the width)."""
    cell = get_cell(mcfg.model) if mcfg.model in cell_names() else None  # None: the unrolled network
    emb = width if cell is not None and cell.width_is_embedding else (mcfg.embedding_dim or EMBEDDING)
    return dataclasses.replace(mcfg, hidden_size=width, embedding_dim=emb)


def measuring_allowance(budget: float) -> float:
    """Seconds the candidates' speed may be measured for (a busy machine measures slowly: past this
    the search stops and the widths not measured count as too large). No budget: no limit."""
    return max(MEASURE_FLOOR, MEASURE_SHARE * budget) if budget else float("inf")


def tokens_seen(rate: float, budget: float, epochs: int, train_tokens: int) -> float:
    """Training tokens a run will process: by the budget at the measured rate (less the share spent
    on evaluations and setting up) or, without a budget, by its epochs."""
    if budget:
        return rate * max(budget * (1 - EVAL_SHARE) - SETUP_ALLOWANCE, 0.0)
    return epochs * train_tokens


def size_for(mcfg: ModelConfig, rate_of: RateOf, budget: float, epochs: int, train_tokens: int,
             widths: tuple[int, ...] = WIDTHS) -> int:
    """The width for a budget (or a number of epochs) and a corpus: the largest model that still
    sees about ``TOKENS_PER_PARAMETER`` training tokens per parameter at the rate measured for it,
    and has at most ``MAX_PARAMS_PER_TOKEN`` parameters per token of the corpus (small texts get
    small models). Both tests fail from some width on (a wider model is slower and larger), so a
    binary search measures only a few candidates."""
    def fits(w: int) -> bool:
        cand = candidate(mcfg, w)
        if cand.parameter_count() > MAX_PARAMS_PER_TOKEN * train_tokens:
            return False
        if not budget:
            return epochs * train_tokens >= TOKENS_PER_PARAMETER * cand.parameter_count()
        rate, params = rate_of(cand)
        return tokens_seen(rate, budget, epochs, train_tokens) >= TOKENS_PER_PARAMETER * params

    lo, hi = 0, len(widths) - 1  # invariant: every width below lo fits (or lo is 0), every one above hi fails
    best = widths[0]
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(widths[mid]):
            best, lo = widths[mid], mid + 1
        else:
            hi = mid - 1
    return best


def dropout_for(passes: float) -> float:
    """Dropout by the passes the run makes over the text, in steps of 0.05: none up to 8 passes
    (measured: any dropout costs loss then), then rising to ``MAX_DROPOUT`` (measured on the Jay
    Chou lyrics, 60 k characters seen hundreds of times: locked dropout 0.25 on the outputs, 0.1 on
    the embeddings and DropConnect 0.2 on the recurrent weights gained 0.045 nats)."""
    if passes <= 8:
        return 0.0
    return min(MAX_DROPOUT, round(round((0.1 * math.log2(passes / 8) + 0.1) / 0.05) * 0.05, 2))


def model_defaults(recipe: str, mcfg: ModelConfig, explicit: set[str], device: str = "cpu") -> list[str]:
    """The model settings a recipe fills before the configs are checked: the implementation (the
    fused library kernels on CUDA, rnnlab's fast kernels elsewhere; under any recipe, an
    implementation the cell has when the default one is not among them) and, for a cell whose
    blocks add their output to their input, an embedding as wide as the hidden state."""
    check(recipe)
    filled = []
    cell = get_cell(mcfg.model) if mcfg.model in cell_names() else None
    if recipe == "default" and "impl" not in explicit:
        impls = cell.impls if cell is not None else ("fast",)
        mcfg.impl = ("concise" if device.startswith("cuda") and "concise" in impls else
                     next((i for i in ("fast", "concise", "scratch") if i in impls), impls[0]))
        filled.append("impl")
    elif "impl" not in explicit and cell is not None and mcfg.impl not in cell.impls:  # e.g. the book's concise
        mcfg.impl = "fast" if "fast" in cell.impls else cell.impls[0]  # for a cell without torch layers
        filled.append("impl")
    if (recipe == "default" and "embedding_dim" not in explicit and mcfg.model in cell_names()
            and get_cell(mcfg.model).width_is_embedding):
        mcfg.embedding_dim = mcfg.hidden_size
        filled.append("embedding_dim")
    return filled


def data_defaults(recipe: str, dcfg: DataConfig, explicit: set[str]) -> list[str]:
    """The data settings a recipe fills before the corpus is read: a test split (the last 5%) and
    a selection slice before it (5%) that chooses the weights, so the test split stays untouched."""
    check(recipe)
    filled = []
    if recipe == "default" and "val_fraction" not in explicit and not dcfg.val_fraction:
        dcfg.val_fraction = 0.05
        filled.append("val_fraction")
    if recipe == "default" and "select_fraction" not in explicit and dcfg.val_fraction and not dcfg.select_fraction:
        dcfg.select_fraction = 0.05
        filled.append("select_fraction")
    return filled


def resolve(recipe: str, mcfg: ModelConfig, tcfg: TrainConfig, rcfg: RunConfig, explicit: set[str],
            train_tokens: int, vocab: int, rate_of: RateOf | None = None, fine_tuning: bool = False,
            selection: bool = True) -> Plan:
    """Fill the fields the user did not give (``explicit``) from ``recipe``, for a corpus of
    ``train_tokens`` tokens over ``vocab`` types; ``rate_of`` measures a candidate's training speed
    (``rnnlab.speed.step_rate`` on the run's device; tests give fixed rates). Return what was
    decided. ``selection``: the run has a selection slice to evaluate on."""
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
    put(tcfg, "optimizer", "adam")
    put(tcfg, "batch_size", 16)  # measured: as fast per token as 64 here, ~0.1 nats better
    put(tcfg, "num_steps", 64)
    put(tcfg, "clip_norm", 1.0)
    put(rcfg, "precision", "auto")  # decided by the first measured candidate (plan.settle's rate_of)
    mcfg.vocab_size = vocab
    if not fine_tuning:  # a fine-tuned model keeps the base's architecture
        put(mcfg, "model", RECOMMENDED)
        cell = get_cell(mcfg.model) if mcfg.model in cell_names() else None  # None: the unrolled network
        rate_of = rate_of or (lambda cand: (0.0, cand.parameter_count()))
        if "hidden_size" not in explicit:
            width = size_for(mcfg, rate_of, budget, rcfg.epochs, train_tokens)
            for name, value in dataclasses.asdict(candidate(mcfg, width)).items():
                if name in ("hidden_size", "embedding_dim") and name not in explicit:
                    put(mcfg, name, value)
        elif "embedding_dim" not in explicit:
            put(mcfg, "embedding_dim", candidate(mcfg, mcfg.hidden_size).embedding_dim)
        if "dropout" not in explicit:
            rate, _ = rate_of(mcfg) if budget else (0.0, 0)
            passes = tokens_seen(rate, budget, rcfg.epochs, train_tokens) / max(train_tokens, 1)
            p = dropout_for(passes)
            put(mcfg, "dropout", p)
            if p and cell is not None and not cell.width_is_embedding:  # the measured set, scaled: locked, embeddings
                put(mcfg, "locked_dropout", True)
                put(mcfg, "input_dropout", round(0.4 * p, 2))
                if mcfg.impl == "fast" and cell.recurrent_weight is not None:  # DropConnect runs in the fast kernels
                    put(mcfg, "weight_drop", round(0.8 * p, 2))
    lr = 7e-3 * (256 / max(mcfg.hidden_size, 64)) ** 0.5
    if fine_tuning:
        lr /= 3  # start gently from a trained model
    put(tcfg, "lr", round(lr, 5))
    put(tcfg, "min_lr", round(tcfg.lr / 70, 9))  # of the rate in force, the user's if given
    put(tcfg, "lr_schedule", "cosine")
    put(tcfg, "warmup_steps", 50)
    if selection:
        put(rcfg, "eval_every", round(budget / 10, 1))  # 0 without a budget: at epoch ends
        put(rcfg, "eval_tokens", SELECT_TOKENS)
        put(rcfg, "patience", 4)
        put(rcfg, "restore_best", True)
    put(rcfg, "predict_every", 0)
    return plan


def check(recipe: str) -> None:
    if recipe not in RECIPES:
        raise UsageError(f"unknown --recipe {recipe!r}; choose one of: {', '.join(RECIPES)}")
