"""A run's plan, settled once: what the user gave -> the settings the run trains with.

    flags / library configs, --init-from, --resume
        ──► gathered (``rnnlab.gather``: the base's or the stored settings merged in, the explicit names)
        ──► the recipe's data settings (test split, selection slice)
        ──► the corpus read and split (training | selection | test), the fine-tuning base checked
        ──► the recipe's model and training settings (the width chosen by the measured speed of the
            candidates on the run's device: ``rnnlab.speed``) and ``--precision auto`` decided on the
            first candidate measured (its step in float32 and bfloat16), the sizing then measuring
            in the precision chosen (``rnnlab.precision``)
        ──► every config validated, the memory checked ──► ``RunPlan`` (the log lines included)

``settle`` works on copies: the caller's configs are not changed, and nothing after it sets a
config field. ``train_run`` gathers, settles and executes a plan; ``rnnlab train --dry-run``
gathers, settles and prints it; ``rnnlab train --nproc N`` gathers and settles in the launcher and
hands the plan to its ranks (``plan_file``), so every rank trains what was logged.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .checkpoint import load_checkpoint
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import PreparedData, prepare_data
from .distributed import LOCAL, DistContext, reduce_over_ranks
from .errors import RnnlabError, UsageError
from .fields import flag
from .gather import ARCHITECTURE, FIXED_BY_BASE, merge_init_from
from .models import precision_notes
from .precision import Choice, check as check_precision, decide, emulated, not_worth_measuring
from .runs import check_chat, check_ranges
from .runtime import check_memory
from . import ratebook, recipes
from .ratebook import RateBook
from .speed import MEASURE_SECONDS, Rates, simulated_step_seconds, step_rates

Log = Callable[[str], None]
DECISIONS = ("patience", "restore_best")  # run settings that choose weights on held-out text


@dataclass(frozen=True)
class RunPlan:
    """The settings a run trains with, the corpus they were settled on, and what to log."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    run: RunConfig
    corpus: PreparedData
    base: Any = None  # the fine-tuning base's Checkpoint
    lines: tuple[str, ...] = ()
    rates: Rates | None = None
    setup_seconds: float = 0.0  # reading, measuring: counted against a budget

    @property
    def configs(self) -> tuple[DataConfig, ModelConfig, TrainConfig, RunConfig]:
        return self.data, self.model, self.train, self.run


def _copy(cfg):
    return type(cfg).from_dict(cfg.to_dict(), validate=False)


def check_decisions(dcfg: DataConfig, rcfg: RunConfig, selection: bool) -> None:
    """Weights may be chosen only on the selection slice, never on the reported test split."""
    asked = [flag(n) for n in DECISIONS if getattr(rcfg, n)]
    if asked and not selection:
        raise UsageError(f"{' and '.join(asked)} choose weights on held-out text: give --select-fraction F (a "
                         f"slice from the start of the text{', as the default recipe sets with --val-fraction' if dcfg.val_fraction else ''}) "
                         f"so the reported test split stays untouched")


def settle(dcfg: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, rcfg: RunConfig, explicit: set[str],
           device: torch.device, ctx: DistContext = LOCAL, resume_vocab=None, world_size: int | None = None,
           out: Path | None = None) -> RunPlan:
    """Settle a run: see the module docstring. ``resume_vocab``: the vocabulary of the run being
    resumed (its settings are the stored, settled ones: no recipe). ``world_size``: the processes
    the run will have (the launcher settles before they exist)."""
    t0 = time.perf_counter()
    dcfg, mcfg, tcfg, rcfg = (_copy(c) for c in (dcfg, mcfg, tcfg, rcfg))
    resume = resume_vocab is not None
    world = world_size or ctx.world_size
    use_recipe = rcfg.recipe != "book" and not resume
    lines: list[str] = []
    if not resume:  # under the book recipe too: an implementation the cell has when concise is not among them
        recipes.model_defaults(rcfg.recipe, mcfg, explicit, device.type)
        recipes.data_defaults(rcfg.recipe, dcfg, explicit)
    for cfg in (dcfg, mcfg, tcfg, rcfg):
        cfg.validate()
    base = _fine_tuning_base(rcfg, dcfg, mcfg, device, lines) if rcfg.init_from and not resume else None
    if base is not None:
        data = prepare_data(dcfg, vocab=base.vocab, extend=rcfg.extend_vocab)
        lines += _unknown_lines(data, base, rcfg)
    elif resume and rcfg.init_from:  # resuming a fine-tuned run: its vocabulary is the base's (grown), kept in the run
        data = prepare_data(dcfg, vocab=resume_vocab)
    else:  # a new run, or a resumed one whose text must give the same vocabulary again
        data = prepare_data(dcfg)
    if resume and data.chat is not None and out is not None:  # a resumed run must read the same messages
        check_chat(out, data.chat.text, data.source)
    if resume_vocab is not None and data.vocab != resume_vocab:
        raise RnnlabError(f"the corpus {data.source} gives a different vocabulary from the checkpoint's"
                          f"{' in ' + str(out) if out else ''} ({resume_vocab.difference(data.vocab)}); resume with "
                          f"the same text and settings")
    if resume and out is not None:  # ...and split them as it did
        check_ranges(out, data.ranges)
    if not rcfg.prefixes:
        rcfg.prefixes = data.default_prefixes
    rates = Rates(device=str(device), book=RateBook(remeasure=rcfg.remeasure))
    check_precision(rcfg.precision, device)
    if use_recipe:
        measure = _measurer(tcfg, rcfg, device, ctx, world, rates)
        plan = recipes.resolve(rcfg.recipe, mcfg, tcfg, rcfg, explicit, len(data.train_ids), len(data.vocab),
                               rate_of=measure, fine_tuning=base is not None, selection=data.select_ids is not None)
        if rcfg.precision == "auto":  # no candidate was measured (the size and dropout were given): this model
            measure(mcfg)
        if "precision" in plan.values:
            plan.values["precision"] = rcfg.precision
        if plan.values or plan.notes:
            lines.insert(0, plan.describe())
        if rates.precision is not None:
            lines.insert(1, rates.precision.describe())
        if rates.tokens_per_s:
            lines.insert(2 if rates.precision is not None else 1, rates.describe())
    mcfg.vocab_size = len(data.vocab)
    if rcfg.precision == "auto":  # --recipe book or --resume with --precision auto: this very model decides
        rates.precision = _decide_precision(mcfg, tcfg, rcfg, device, ctx, world, book=rates.book)
        lines.append(rates.precision.describe())
    if rcfg.precision == "bf16":
        lines += _bf16_notes(mcfg, device)
    for cfg in (dcfg, mcfg, tcfg, rcfg):
        cfg.validate()
    check_decisions(dcfg, rcfg, data.select_ids is not None)
    if tcfg.batch_size % world:
        raise UsageError(f"--batch-size {tcfg.batch_size} is the global batch and must be divisible by the "
                         f"{world} processes; use a multiple of {world}")
    check_memory(mcfg.parameter_count() * 4 * 4, "training the model (weights, gradients, optimizer state)")
    return RunPlan(dcfg, mcfg, tcfg, rcfg, data, base, tuple(lines), rates if rates.tokens_per_s or rates.precision
                   else None, time.perf_counter() - t0)


def _rates(cand: ModelConfig, tcfg: TrainConfig, device: torch.device, ctx: DistContext, world: int,
           precisions: tuple[str, ...], seconds: float = MEASURE_SECONDS, deadline: float | None = None,
           book: RateBook | None = None) -> tuple[dict[str, float], int]:
    """({precision: global training tokens/s}, parameters) of ``cand``, the precisions measured
    taking turns, or remembered from an earlier run on this machine (``book``: see
    ``rnnlab.ratebook``). Under DDP every rank measures its share at once and
    all take the slowest rank's rate (the same decision everywhere); remembered rates are used
    only when every rank has them."""
    rows = max(1, tcfg.batch_size // world)
    keys = {p: ratebook.key(cand, tcfg, device, rows, p) for p in precisions}
    if book is not None and not book.remeasure:
        got = {p: book.get(k) for p, k in keys.items()}
        if reduce_over_ranks([1.0 if all(got.values()) else 0.0], ctx, device, "min")[0]:  # every rank has them
            book.remembered = min([book.remembered or float("inf")] + [at for _, at in got.values()])
            return {p: got[p][0] * world for p in precisions}, cand.parameter_count()
    rates, params = step_rates(cand, tcfg, device, rows=rows, precisions=precisions, seconds=seconds,
                               deadline=deadline)
    if ctx.enabled:  # the slowest rank's rate, on every rank
        rates = dict(zip(precisions, reduce_over_ranks([rates[p] for p in precisions], ctx, device, "min")))
    if book is not None and ctx.is_main and not simulated_step_seconds():
        book.put({keys[p]: rates[p] for p in precisions})
    return {p: v * world for p, v in rates.items()}, params


def _decide_precision(cand: ModelConfig, tcfg: TrainConfig, rcfg: RunConfig, device: torch.device,
                      ctx: DistContext, world: int, seen: dict | None = None, sizing: bool = False,
                      seconds: float = MEASURE_SECONDS, deadline: float | None = None,
                      book: RateBook | None = None) -> Choice:
    """``--precision auto`` for the training step of ``cand``: measured in float32 and bfloat16
    (``precision.decide``); sets ``rcfg.precision``. ``seen`` gets (rates, parameters) when measured."""
    def measure() -> tuple[float, float]:
        rates, params = _rates(cand, tcfg, device, ctx, world, ("fp32", "bf16"), seconds, deadline, book)
        if seen is not None:
            seen.update(rates=rates, params=params)
        return rates["fp32"], rates["bf16"]

    why = not_worth_measuring(device)
    if ctx.enabled:  # ranks on different machines could see different CPUs: all measure, or none
        skip = reduce_over_ranks([1.0 if why else 0.0], ctx, device, "max")[0]
        why = why or ("another process's device has no bfloat16" if skip else "")
    what = f"the training step at H={cand.hidden_size}"
    if sizing:
        what = f"{what}, the first candidate; the others measured in the precision chosen"
    choice = decide(device, measure, what, why=why)
    rcfg.precision = choice.precision
    return choice


def _measurer(tcfg: TrainConfig, rcfg: RunConfig, device: torch.device, ctx: DistContext, world: int, rates: Rates):
    """A candidate -> (global training tokens/s, parameters), measured once per width in the run's
    precision. Under ``--precision auto`` the first candidate measured (the binary search's middle
    width) decides the precision first (both measured), and every candidate is then measured in
    the precision chosen. The measuring stops at ``recipes.measuring_allowance`` of the budget: a
    candidate asked for after that counts as too slow (rate 0), and the log says so."""
    cache: dict[tuple[int, int], tuple[float, int]] = {}

    def spent() -> bool:  # the same answer on every rank
        return bool(reduce_over_ranks([1.0 if rates.seconds >= rates.allowance else 0.0], ctx, device, "max")[0])

    def measure(cand: ModelConfig) -> tuple[float, int]:
        key = (cand.hidden_size, cand.embedding_dim)
        if key not in cache:
            rates.allowance = recipes.measuring_allowance(rcfg.budget or rcfg.max_seconds)
            if rates.tokens_per_s and rcfg.precision != "auto" and spent():
                rates.skipped.append(cand.hidden_size)
                return 0.0, cand.parameter_count()
            t = time.perf_counter()
            seconds = min(MEASURE_SECONDS, rates.allowance / 8)  # a binary search measures 3-4, the first twice
            deadline = t + rates.allowance - rates.seconds
            seen: dict = {}
            if rcfg.precision == "auto":
                rates.precision = _decide_precision(cand, tcfg, rcfg, device, ctx, world, seen, sizing=True,
                                                    seconds=seconds, deadline=deadline, book=rates.book)
            if not seen:  # (a device without bfloat16 decided without measuring)
                seen["rates"], seen["params"] = _rates(cand, tcfg, device, ctx, world, (rcfg.precision,),
                                                       seconds, deadline, rates.book)
            cache[key] = (seen["rates"][rcfg.precision], seen["params"])
            rates.at = rcfg.precision
            rates.tokens_per_s[cand.hidden_size], rates.params[cand.hidden_size] = cache[key]
            rates.seconds += time.perf_counter() - t
        return cache[key]

    return measure


def _bf16_notes(mcfg: ModelConfig, device: torch.device) -> list[str]:
    """What of this model stays float32 under bf16 on ``device``, and why (said once, in the plan)."""
    notes = precision_notes(mcfg, device.type)
    if emulated(device):
        notes.append("this CPU has no bfloat16 instructions: torch emulates them, slower than fp32 (auto measures "
                     "nothing here and keeps fp32)")
    return [f"bf16: {note}" for note in notes]


def _fine_tuning_base(rcfg: RunConfig, dcfg: DataConfig, mcfg: ModelConfig, device, lines: list[str]):
    """The checkpoint ``--init-from`` names, checked against the run's settings."""
    if not str(rcfg.init_from).strip():
        raise UsageError("--init-from is empty; give the --out DIR of a trained run")
    base = load_checkpoint(rcfg.init_from, device)
    merge_init_from((base.data_config, base.model_config), (dcfg, mcfg), set(ARCHITECTURE) | set(FIXED_BY_BASE),
                    rcfg.init_from)  # refuses any difference (``gather`` merged the base's settings in)
    lines.append(f"fine-tuning {rcfg.init_from} ({base.model.describe()}, vocabulary {len(base.vocab)}, "
                 f"trained {base.info.get('epoch', '?')} epochs on {Path(str(base.info.get('source', '?'))).name})")
    return base


def _unknown_lines(data: PreparedData, base, rcfg: RunConfig) -> list[str]:
    if not data.unknown:
        return []
    n, shown = sum(data.unknown.values()), ", ".join(repr(t) for t in list(data.unknown)[:8])
    more = " ..." if len(data.unknown) > 8 else ""
    if rcfg.extend_vocab:
        return [f"{len(data.unknown)} new tokens ({shown}{more}; {n:,} occurrences) added to the base's "
                f"{len(base.vocab)}: their weights start as <unk>'s" if base.vocab.unk is not None else
                f"{len(data.unknown)} new tokens added; their weights start as the mean of the others'"]
    return [f"{n:,} tokens of the text ({len(data.unknown)} distinct: {shown}{more}) are not in the base model's "
            f"vocabulary and are read as <unk>; --extend-vocab adds them"]


# -- handing a settled plan to the ranks of `train --nproc N` ---------------------------------------
PLAN_ENV = "RNNLAB_PLAN"


def write_plan_file(plan: RunPlan, path: Path) -> None:
    """The settled configs as JSON, for ranks that must train exactly this plan."""
    body = {"data": plan.data.to_dict(), "model": plan.model.to_dict(), "train": plan.train.to_dict(),
            "run": plan.run.to_dict()}
    path.write_text(json.dumps(body))


def read_plan_file(path: str | Path) -> tuple[DataConfig, ModelConfig, TrainConfig, RunConfig]:
    body = json.loads(Path(path).read_text())
    return (DataConfig.from_dict(body["data"]), ModelConfig.from_dict(body["model"]),
            TrainConfig.from_dict(body["train"]), RunConfig.from_dict(body["run"]))


def all_fields() -> set[str]:
    """Every setting's name: a plan read from a file is explicit in all of them (no recipe fills any)."""
    return {f.name for cls in (DataConfig, ModelConfig, TrainConfig, RunConfig) for f in dataclasses.fields(cls)}


__all__ = ["RunPlan", "check_decisions", "read_plan_file", "settle", "write_plan_file"]
