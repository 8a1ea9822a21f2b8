"""What a run does at an evaluation (each epoch end and each evaluation point inside an epoch):
score the held-out text the trainer was given (the selection slice, or the validation split; all
of it, or its first ``--eval-tokens``), let the schedule decide (``rnnlab.schedule``: best loss,
plateau, final decay, early stop) and keep the weights of the best evaluation (``--restore-best``),
or bring them back when the final decay starts from them.

When evaluations are due, and the time they take, are the trainer's (``rnnlab.timing``).
"""
from __future__ import annotations

import torch

from .config import RunConfig, TrainConfig
from .data.batching import Ids
from .evaluation import evaluate
from .models import LanguageModel
from .schedule import Schedule


class EvalPoints:
    """The evaluations of one run of ``model`` on ``ids`` (None: no held-out text, nothing scored);
    ``label`` names the metrics (``{label}_loss/_ppl/_bpc``)."""

    def __init__(self, model: LanguageModel, ids: Ids | None, cfg: TrainConfig, run: RunConfig, schedule: Schedule,
                 label: str = "val"):
        bounded = ids is not None and run.eval_tokens and len(ids) > run.eval_tokens + 1
        self.ids = ids[:run.eval_tokens + 1] if bounded else ids  # (+1: the last target)
        self.model, self.schedule, self.label = model, schedule, label
        self.batch_size, self.num_steps, self.keep_best = cfg.batch_size, cfg.num_steps, run.restore_best
        self.best_state: dict[str, torch.Tensor] | None = None  # the weights of the best evaluation

    def score(self, metrics: dict) -> bool:
        """Score the held-out text into ``metrics``; False (nothing scored) without one."""
        if self.ids is None:
            return False
        v = evaluate(self.model, self.ids, self.batch_size, self.num_steps)
        self.model.train()
        metrics.update({f"{self.label}_loss": v["loss"], f"{self.label}_ppl": v["ppl"], f"{self.label}_bpc": v["bpc"]})
        return True

    def decide(self, metrics: dict, step: int, elapsed: float) -> None:
        """The schedule's decisions on an evaluation's ``metrics`` (after ``step`` steps, ``elapsed``
        training seconds); the final decay starts from the best weights, a better loss keeps its own."""
        if self.schedule.record(metrics.get(f"{self.label}_loss"), step, elapsed, self.best_state is not None):
            self.model.load_state_dict(self.best_state)
        if self.schedule.improved and self.keep_best:
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore_best(self) -> None:
        """End with the best evaluation's weights (``--restore-best``, once one was kept)."""
        if self.keep_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)


__all__ = ["EvalPoints"]
