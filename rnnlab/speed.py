"""How fast this machine trains a given model: its real training step, timed.

The default recipe sizes its model by what the machine actually does, not by a table measured
elsewhere: ``step_rate`` builds the candidate (the run's cell, width, layers, vocabulary, batch,
sequence length, optimiser and device), takes two warm-up steps, then times steps for a fraction of
a second and returns training tokens per second from the median step. The time it takes is part of
the run's budget (the trainer's clock starts after it).

``Rates`` keeps what was measured, for the plan's log line and the checkpoint.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import TrainConfig
from .errors import UsageError
from .models import ModelConfig, build_model
from .precision import Choice, autocast
from .ratebook import RateBook
from .training import lm_loss, make_optimizer

Clock = Callable[[], float]
MEASURE_SECONDS = 0.4  # per candidate, after two warm-up steps
MIN_STEPS, MAX_STEPS = 3, 400


SIMULATED_CLOCK_ENV = "RNNLAB_SIMULATED_STEP_SECONDS"  # for tests: every training step takes this long


def simulated_step_seconds() -> float:
    """The simulated clock's step time from the environment (0: the wall clock). Tests use it so a
    budget run is the same on a fast and a slow machine, and resumes exactly: every optimizer step
    counts as this many seconds, and every candidate model measures at that speed."""
    try:
        value = float(os.environ.get(SIMULATED_CLOCK_ENV, "0") or 0)
    except ValueError:
        value = -1.0
    if not value >= 0 or value > 1e6:
        raise UsageError(f"{SIMULATED_CLOCK_ENV} must be a number of seconds between 0 and 1e6")
    return value


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_rate(mcfg: ModelConfig, tcfg: TrainConfig, device: torch.device, rows: int | None = None,
              seconds: float = MEASURE_SECONDS, clock: Clock = time.perf_counter,
              precision: str = "fp32", deadline: float | None = None) -> tuple[float, int]:
    """(training tokens/s, parameters) of the model ``mcfg`` builds, trained as ``tcfg`` says
    (``rows`` rows per step: one rank's share under DDP) on ``device`` in ``precision`` (fp32 or
    bf16, as the trainer runs it): the median of at least ``MIN_STEPS`` timed steps after two
    warm-up steps (or one, once ``clock()`` passes ``deadline``). Torch's global RNG is left as it was."""
    rates, n_params = step_rates(mcfg, tcfg, device, rows, seconds, clock, (precision,), deadline)
    return rates[precision], n_params


def step_rates(mcfg: ModelConfig, tcfg: TrainConfig, device: torch.device, rows: int | None = None,
               seconds: float = MEASURE_SECONDS, clock: Clock = time.perf_counter,
               precisions: tuple[str, ...] = ("fp32",), deadline: float | None = None) -> tuple[dict[str, float], int]:
    """``step_rate`` in several precisions at once: one model and optimiser, the steps taking
    turns between the precisions (so a machine whose load changes while measuring slows them
    alike), ``seconds`` per precision. Past ``deadline`` (a ``clock()`` time: the run's measuring
    allowance) one timed step per precision is enough. -> ({precision: training tokens/s}, parameters)."""
    simulated = simulated_step_seconds()
    if simulated:
        rate = (rows or tcfg.batch_size) * tcfg.num_steps / simulated
        return {p: rate for p in precisions}, mcfg.parameter_count()
    rng = torch.get_rng_state()
    try:
        cfg = dataclasses.replace(mcfg, dropout=0.0, input_dropout=None, locked_dropout=False, weight_drop=0.0)
        model = build_model(cfg).to(device)
        model.train()
        opt = make_optimizer(model, tcfg)
        B, T = rows or tcfg.batch_size, tcfg.num_steps
        g = torch.Generator().manual_seed(0)
        xy = torch.randint(cfg.vocab_size, (B, T + 1), generator=g).to(device)  # (B, T+1)
        x, y = xy[:, :-1], xy[:, 1:]  # (B, T) each

        def one(precision: str) -> None:
            with autocast(device, precision):
                logits, _ = model(x, model.begin_state(B, device))
                loss = lm_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            _sync(device)

        for p in precisions:  # warm-up: each precision has kernels of its own to prepare
            one(p), one(p)
        times: dict[str, list[float]] = {p: [] for p in precisions}
        end = clock() + seconds * len(precisions)
        hard = float("inf") if deadline is None else deadline

        def enough() -> bool:
            steps = min(len(t) for t in times.values())
            if steps >= 1 and clock() >= hard:
                return True
            return steps >= MIN_STEPS and (clock() >= end or len(times[precisions[-1]]) >= MAX_STEPS)

        while not enough():
            for p in precisions:
                t0 = clock()
                one(p)
                times[p].append(clock() - t0)
        n_params = sum(p.numel() for p in model.parameters())
        return {p: B * T / statistics.median(t) for p, t in times.items()}, n_params
    finally:
        torch.set_rng_state(rng)


@dataclass
class Rates:
    """Measured rates by width (at the run's precision), the seconds the measuring took, and what
    ``--precision auto`` decided (``precision``)."""

    device: str = "cpu"
    tokens_per_s: dict[int, float] = field(default_factory=dict)
    params: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    precision: Choice | None = None
    at: str = "fp32"  # the precision the widths were measured in
    skipped: list[int] = field(default_factory=list)  # widths not measured: the measuring allowance was spent
    allowance: float = float("inf")
    book: RateBook | None = field(default=None, repr=False)  # the rates remembered on this machine

    @property
    def remembered(self) -> float | None:
        """When the oldest remembered rate the run used was measured (epoch seconds), or None."""
        return self.book.remembered if self.book is not None else None

    def describe(self) -> str:
        shown = ", ".join(f"H={w} {r / 1000:.1f}k" for w, r in sorted(self.tokens_per_s.items()))
        cut = (f"; measuring stopped at its allowance of {self.allowance:.1f} s, so H="
               f"{', '.join(map(str, sorted(self.skipped)))} counted as too large" if self.skipped else "")
        when = f"{self.seconds:.1f} s{cut}"
        if self.remembered is not None:
            when = (f"remembered from this machine's measurement of {time.strftime('%Y-%m-%d %H:%M', time.localtime(self.remembered))}"
                    f"; --remeasure measures again{cut}")
        return f"measured training tokens/s on {self.device} in {self.at}: {shown} ({when})"

    def to_dict(self) -> dict:
        return {"device": self.device, "seconds": round(self.seconds, 3), "at": self.at,
                "tokens_per_s": {str(w): round(r, 1) for w, r in sorted(self.tokens_per_s.items())},
                "params": {str(w): p for w, p in sorted(self.params.items())},
                **({"skipped": sorted(self.skipped), "allowance": round(self.allowance, 3)} if self.skipped else {}),
                **({"remembered_from": round(self.remembered, 1)} if self.remembered is not None else {}),
                **({"precision": self.precision.to_dict()} if self.precision is not None else {})}


__all__ = ["Rates", "SIMULATED_CLOCK_ENV", "simulated_step_seconds", "step_rate", "step_rates"]
