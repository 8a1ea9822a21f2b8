"""The learning-rate schedule and the decisions taken at evaluations, without a model.

    rate:  linear warm-up over ``warmup_steps`` steps, then constant or a cosine from ``lr`` to
           ``min_lr`` over the run's steps (``epochs x steps per epoch``) or over its time budget
    evaluations:  a better loss is remembered (the caller keeps those weights); ``patience``
           evaluations without one are a plateau:
             - under a time budget with a cosine schedule, the first plateau (early enough, with
               best weights kept) starts the *final decay*: the caller restores the best weights
               and the rate decays from where it is to ``min_lr`` over ``ANNEAL`` of the budget;
               the end of that decay stops the run (there is nothing more to gain at ``min_lr``)
             - otherwise the plateau stops the run (early stopping)

A long budget's rate is still high when a small text starts to overfit; stopping there would keep
weights trained at that rate, worse than a shorter budget's, hence the final decay. The rates are
pure functions of (step, training seconds) and the state a few numbers (``state_dict``), so a
resumed run continues on the same curve.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .config import RunConfig, TrainConfig

ANNEAL = 0.1  # of the budget: the final decay after a plateau


def warmup_lr(lr: float, step: int, warmup_steps: int) -> float:
    """The rate of 0-based step ``step`` of a linear warm-up to ``lr``."""
    return lr * (step + 1) / warmup_steps


def cosine_lr(start: float, end: float, progress: float) -> float:
    """From ``start`` (progress 0) to ``end`` (progress 1 and after) along half a cosine."""
    progress = min(max(progress, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class Schedule:
    """The rate at each step and the plateau -> final decay state machine of one run."""

    lr: float
    min_lr: float = 0.0
    kind: str = "constant"  # or "cosine"
    warmup_steps: int = 0
    budget: float = 0.0  # seconds the cosine spans (0: it spans total_steps)
    total_steps: int = 0  # optimizer steps of the whole run
    patience: int = 0  # evaluations without a better loss that make a plateau (0: never)
    label: str = "val"  # what the evaluations score, for the stop reason
    # state (state_dict)
    best: float = math.inf  # the best evaluation loss so far
    evals_since_best: int = 0
    anneal: tuple[float, float] | None = None  # (seconds, rate) when the final decay began
    stopped: str = ""  # why the schedule ended the run ("" while it goes on)
    improved: bool = False  # did the last evaluation improve on the best?

    @classmethod
    def of(cls, cfg: TrainConfig, run: RunConfig, steps_per_epoch: int, label: str = "val") -> "Schedule":
        return cls(cfg.lr, cfg.min_lr, cfg.lr_schedule, cfg.warmup_steps, run.budget,
                   run.epochs * steps_per_epoch, run.patience, label)

    def lr_at(self, step: int, elapsed: float) -> float:
        """The rate of optimizer step ``step`` (0-based) taken ``elapsed`` training seconds into the run."""
        if self.warmup_steps and step < self.warmup_steps:
            return warmup_lr(self.lr, step, self.warmup_steps)
        if self.kind == "constant":
            return self.lr
        if self.anneal is not None:  # after a plateau: from the rate then to min_lr over ANNEAL of the budget
            start, lr0 = self.anneal
            return cosine_lr(lr0, self.min_lr, (elapsed - start) / (ANNEAL * self.budget))
        if self.budget:
            return cosine_lr(self.lr, self.min_lr, elapsed / self.budget)
        return cosine_lr(self.lr, self.min_lr, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))

    def record(self, loss: float | None, step: int, elapsed: float, has_best: bool) -> bool:
        """An evaluation's ``loss`` (None: nothing was scored) at ``step``, ``elapsed`` seconds in;
        ``has_best``: the caller holds the best weights. Returns True when the final decay starts
        now: the caller restores the best weights. Sets ``improved``, and ``stopped`` when the run
        should end."""
        self.improved = loss is not None and loss < self.best
        starts_decay = False
        if self.improved:
            self.best, self.evals_since_best = loss, 0
        elif loss is not None:
            self.evals_since_best += 1
            if self.patience and self.evals_since_best >= self.patience:
                starts_decay = self._plateau(step, elapsed, has_best)
        if self.anneal is not None and elapsed >= self.anneal[0] + ANNEAL * self.budget:
            self.stopped = "the final decay after the plateau is done"
        return starts_decay

    def _plateau(self, step: int, elapsed: float, has_best: bool) -> bool:
        if (self.anneal is None and self.budget and self.kind == "cosine" and has_best
                and elapsed < self.budget * (1 - ANNEAL)):
            self.anneal = (elapsed, self.lr_at(step, elapsed))
            self.evals_since_best = 0
            return True
        if self.anneal is None:
            self.stopped = f"early stop: {self.evals_since_best} evaluations without a better {self.label} loss"
        return False

    def state_dict(self) -> dict:
        """The state, JSON-able (the keys of the trainer state file)."""
        return {"best_val": self.best, "evals_since_best": self.evals_since_best, "early_stopped": bool(self.stopped),
                "anneal": list(self.anneal) if self.anneal is not None else None, "stop_reason": self.stopped}

    def load_state_dict(self, state: dict) -> None:
        """``state`` from ``state_dict`` (or a trainer state file: keys absent before rnnlab 0.2 default)."""
        self.best = state["best_val"]
        self.evals_since_best = int(state.get("evals_since_best", 0))
        anneal = state.get("anneal")
        self.anneal = (float(anneal[0]), float(anneal[1])) if anneal else None
        self.stopped = str(state.get("stop_reason") or "early stop") if state.get("early_stopped") else ""


__all__ = ["ANNEAL", "Schedule", "cosine_lr", "warmup_lr"]
