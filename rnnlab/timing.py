"""A run's clock and its time rules, without a model: training seconds so far, the time limit
(``--budget`` or ``--max-seconds``, the sooner), when the next evaluation point (every
``eval_every`` seconds) and the next snapshot (every ``save_seconds``) are due, and the setup time
(measuring candidates) counted against a budget.

``clock`` is the one clock read (tests give a fake one). With ``step_seconds`` > 0 the time is
simulated: the setup plus ``step_seconds`` per optimizer step, the same on any machine and after a
resume. Otherwise the training seconds are those of earlier spans (``elapsed`` at ``start()``)
plus the clock's time since ``start()``.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from .config import RunConfig


def due_after(seconds: float, every: float) -> float:
    """The time of the next point of a cadence of ``every`` seconds after ``seconds`` (never, without one)."""
    return seconds + every if every else math.inf


class RunClock:
    """The time rules of one run (``Trainer.timing``); ``elapsed`` is its training seconds so far."""

    def __init__(self, run: RunConfig, step_seconds: float = 0.0, clock: Callable[[], float] | None = None):
        self.eval_every, self.save_seconds = run.eval_every, run.save_seconds
        limits = [t for t in (run.budget, run.max_seconds) if t]
        self.limit = min(limits) if limits else 0.0  # 0: no time limit
        self.step_seconds, self.setup_seconds = step_seconds, 0.0
        self.clock = clock if clock is not None else time.perf_counter
        self.elapsed = 0.0  # seconds of training so far, across resumes
        self.next_eval = due_after(0.0, self.eval_every)
        self.next_snapshot = due_after(0.0, self.save_seconds)
        self.elapsed0 = self.wall0 = 0.0  # the current span: training seconds and clock at its start

    def count_setup(self, seconds: float) -> None:
        """Count ``seconds`` spent setting the run up as training time: the budget's clock starts
        there, and the first evaluation point and snapshot follow it."""
        self.elapsed = self.setup_seconds = seconds
        self.next_eval = due_after(seconds, self.eval_every)
        self.next_snapshot = due_after(seconds, self.save_seconds)

    def resume(self, elapsed: float, next_eval: float, setup_seconds: float) -> None:
        """Continue a saved run: its training seconds, its next evaluation point, its setup time."""
        self.elapsed, self.next_eval, self.setup_seconds = elapsed, next_eval, setup_seconds
        self.next_snapshot = due_after(elapsed, self.save_seconds)

    def start(self) -> None:
        """A span of training begins (an epoch): the clock's time from here adds to ``elapsed``."""
        self.wall0, self.elapsed0 = self.clock(), self.elapsed

    def tick(self, step: int, now: float | None = None) -> float:
        """``elapsed`` after ``step`` optimizer steps: the clock (read now, or its reading ``now``)
        since ``start()``, or the simulated time of the steps."""
        if self.step_seconds:
            self.elapsed = self.setup_seconds + step * self.step_seconds
        else:
            self.elapsed = self.elapsed0 + ((self.clock() if now is None else now) - self.wall0)
        return self.elapsed

    @property
    def spent(self) -> bool:
        """The time limit is reached."""
        return bool(self.limit and self.elapsed >= self.limit)

    @property
    def eval_due(self) -> bool:
        return self.elapsed >= self.next_eval

    @property
    def snapshot_due(self) -> bool:
        return self.elapsed >= self.next_snapshot  # (never without a cadence: next_snapshot is inf)

    def evaluated(self) -> None:
        """An evaluation was recorded now: the next one is ``eval_every`` seconds later."""
        self.next_eval = due_after(self.elapsed, self.eval_every)

    def snapshotted(self) -> None:
        self.next_snapshot = due_after(self.elapsed, self.save_seconds)


__all__ = ["RunClock", "due_after"]
