"""The trainer: truncated BPTT over minibatches, clipping by global norm, perplexity, callbacks.

The trainer knows the model only through its contract (``begin_state``, ``forward``); what to do
after each epoch (print, write metrics, sample text, save) is a callback.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Callable, Protocol

import torch
from torch.nn import functional as F

from .config import TrainConfig
from .data.batching import epoch_batches, min_tokens_needed
from .errors import RnnlabError
from .metrics import bits_per_token, perplexity
from .models import LanguageModel, detach_state


class Callback(Protocol):
    def __call__(self, trainer: "Trainer", metrics: dict) -> None: ...


def make_optimizer(model: LanguageModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr)
    raise RnnlabError(f"unknown optimizer {cfg.optimizer!r}")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats. logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))  # (B*T, V) vs (B*T,)


@torch.no_grad()
def evaluate(model: LanguageModel, ids: torch.Tensor, batch_size: int = 32, num_steps: int = 35) -> dict:
    """Mean NLL over every next-token prediction of ``ids``, read in order.

    The stream is cut into ``batch_size`` contiguous rows processed side by side in chunks of
    ``num_steps`` with the state carried across chunks; the few targets left over after the rows
    (fewer than ``batch_size``) are scored as one more row. Returns loss, ppl, bpc, tokens.
    """
    was_training = model.training
    model.eval()
    device = model.device
    n_targets = len(ids) - 1
    if n_targets < 1:
        raise RnnlabError("evaluation needs at least 2 tokens")
    b = max(1, min(batch_size, n_targets))
    row = n_targets // b
    total, count = 0.0, 0

    def run_rows(xs: torch.Tensor, ys: torch.Tensor) -> None:
        nonlocal total, count
        state = model.begin_state(xs.shape[0], device)
        for i in range(0, xs.shape[1], num_steps):
            x = xs[:, i:i + num_steps].to(device)
            y = ys[:, i:i + num_steps].to(device)
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()

    run_rows(ids[:b * row].view(b, row), ids[1:b * row + 1].view(b, row))  # (b, row)
    if b * row < n_targets:
        run_rows(ids[b * row:-1].view(1, -1), ids[b * row + 1:].view(1, -1))  # the tail, one row
    model.train(was_training)
    loss = total / count
    return {"loss": loss, "ppl": perplexity(loss), "bpc": bits_per_token(loss), "tokens": count}


class Trainer:
    """Trains ``model`` on the 1-D id tensor ``train_ids`` as ``cfg`` says.

    ``fit()`` runs epochs ``1..cfg.epochs``, calling every callback with the epoch's metrics
    dict (``epoch``, ``train_loss``, ``train_ppl``, ``tokens_per_sec``, ``elapsed_s``, ...).
    """

    def __init__(self, model: LanguageModel, cfg: TrainConfig, train_ids: torch.Tensor,
                 optimizer: torch.optim.Optimizer | None = None, callbacks: list[Callable] = ()):
        need = min_tokens_needed(cfg.batch_size, cfg.num_steps)
        if len(train_ids) < need:
            raise RnnlabError(
                f"the training text has {len(train_ids)} tokens, too short for --batch-size {cfg.batch_size} "
                f"x --num-steps {cfg.num_steps} (needs at least {need}); use a longer text or smaller values")
        self.model, self.cfg, self.train_ids = model, cfg, train_ids
        self.optimizer = optimizer or make_optimizer(model, cfg)
        self.callbacks = list(callbacks)
        self.rng = random.Random(cfg.seed)  # batching: offsets and window order
        self.epoch = 0
        self.history: list[dict] = []
        self.elapsed = 0.0

    def train_epoch(self) -> dict:
        """One pass over the training stream. Returns the epoch's loss and throughput."""
        model, cfg, opt = self.model, self.cfg, self.optimizer
        device = model.device
        ids = self.train_ids.to(device)
        model.train()
        state = None
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        n_tokens = 0
        start = time.perf_counter()
        for x, y in epoch_batches(ids, cfg.batch_size, cfg.num_steps, cfg.sampling, self.rng):
            if state is None or cfg.sampling == "random":
                state = model.begin_state(x.shape[0], device)  # random windows: nothing to carry
            else:
                state = detach_state(state)  # sequential: keep values, cut the graph
            logits, state = model(x, state)
            loss = lm_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
            opt.step()
            loss_sum += loss.detach() * y.numel()
            n_tokens += y.numel()
        seconds = time.perf_counter() - start
        mean = loss_sum.item() / n_tokens
        if not math.isfinite(mean):
            raise RnnlabError(f"the training loss became {mean} in epoch {self.epoch + 1}; "
                              f"lower --lr or set --clip-norm (e.g. 1) and train again")
        return {"train_loss": mean, "train_ppl": perplexity(mean), "tokens": n_tokens, "seconds": seconds}

    def fit(self) -> list[dict]:
        while self.epoch < self.cfg.epochs:
            m = self.train_epoch()
            self.epoch += 1
            self.elapsed += m["seconds"]
            metrics = {
                "epoch": self.epoch,
                "train_loss": m["train_loss"],
                "train_ppl": m["train_ppl"],
                "tokens_per_sec": m["tokens"] / m["seconds"] if m["seconds"] > 0 else float("inf"),
                "elapsed_s": self.elapsed,
            }
            self.history.append(metrics)
            for cb in self.callbacks:
                cb(self, metrics)
        return self.history


class MetricsWriter:
    """Appends one JSON object per epoch to ``path`` (``metrics.jsonl``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, trainer: Trainer, metrics: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics) + "\n")
