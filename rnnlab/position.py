"""Where a run stands inside an epoch, and the epoch's running sums: what an interrupted run keeps
for an exact resume (``Trainer.position``, saved by ``rnnlab.trainer_state``).

    rng_state   the batching RNG at the epoch's start (None: no epoch under way); a resumed epoch
                replays the epoch's plan from it and skips the minibatches done
    batch       minibatches of the epoch done
    carry       the hidden state carried into the next minibatch, all B rows (sequential sampling)
    partial     the epoch's global sums at the kept point: loss (nats), tokens, compute seconds
    rank_rngs   every rank's torch RNG state (DDP: dropout masks differ per rank)

Under DDP each rank trains on its B/W rows (``rnnlab.data.batching``): it takes its rows of the
carry, rank 0 alone starts from the kept sums (they are global), and keeping a position gathers
the rows and the RNG states of every rank (a collective: every rank calls it).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from .distributed import DistContext, all_gather_object, all_gather_rows, sum_over_ranks
from .models import State, detach_state


class EpochSums:
    """This rank's running sums of an epoch: loss (nats, float64 on ``device``), tokens, compute
    seconds, and their values at the last record (``since_record``)."""

    def __init__(self, start: list, device: torch.device):
        self.loss = torch.tensor(start[0], dtype=torch.float64, device=device)
        self.tokens, self.compute = start[1], start[2]
        self.mark = [self.loss.item(), self.tokens, self.compute]

    def add(self, step_loss: torch.Tensor, tokens: int, seconds: float) -> None:
        """One step: its mean loss over ``tokens`` targets, its compute ``seconds``."""
        self.loss += step_loss * tokens
        self.tokens += tokens
        self.compute += seconds

    def since_record(self) -> list:
        """This rank's sums since the last call (or the epoch's start), then mark now."""
        now = [self.loss.item(), self.tokens, self.compute]
        since = [a - b for a, b in zip(now, self.mark)]
        self.mark = now
        return since

    def total(self, ctx: DistContext) -> list:
        """The global sums [loss, tokens (int), compute seconds (rank 0's)] on every rank."""
        loss, tokens, seconds = sum_over_ranks([self.loss, self.tokens, self.compute], ctx, self.loss.device, (2,))
        return [loss, int(tokens), seconds]


@dataclass
class EpochPosition:
    rng_state: tuple | None = None
    batch: int = 0
    carry: tuple[torch.Tensor, ...] | None = None
    partial: list = field(default_factory=lambda: [0.0, 0, 0.0])
    rank_rngs: list[torch.Tensor] | None = None

    def begin(self, rng: random.Random) -> None:
        """Start an epoch (remember ``rng``'s state), or replay the unfinished one (restore it)."""
        if self.rng_state is None:
            self.rng_state = rng.getstate()
            self.batch, self.carry, self.partial = 0, None, [0.0, 0, 0.0]
        else:
            rng.setstate(self.rng_state)

    def sums(self, ctx: DistContext, device: torch.device) -> EpochSums:
        """This rank's sums to continue from: the kept global sums on rank 0, zeros elsewhere."""
        return EpochSums(self.partial if ctx.is_main else [0.0, 0, 0.0], device)

    def rank_carry(self, ctx: DistContext, batch_size: int) -> State | None:
        """The carried state of this rank's rows: (L, B, H) -> (L, B/W, H)."""
        if self.carry is None or not ctx.enabled:
            return self.carry
        per = batch_size // ctx.world_size
        return tuple(s[:, ctx.rank * per:(ctx.rank + 1) * per] for s in self.carry)  # (L, B/W, H)

    def keep(self, state: State | None, sums: list, ctx: DistContext, sequential: bool) -> None:
        """Keep an unfinished epoch: its global ``sums``, the carried state of every rank's rows,
        (L, B/W, H) -> (L, B, H), and every rank's RNG. A collective under DDP."""
        self.partial = sums
        self.carry = None
        if sequential and state is not None:
            self.carry = tuple(all_gather_rows(s, ctx, dim=1) for s in detach_state(state))
        self.gather_rngs(ctx)

    def gather_rngs(self, ctx: DistContext) -> None:
        """Under DDP, collect every rank's torch RNG state, so that rank 0 can save them all. A
        collective: every rank calls it."""
        if ctx.enabled:
            self.rank_rngs = all_gather_object(torch.get_rng_state(), ctx)

    def finish(self) -> None:
        """The epoch is done: nothing unfinished to keep."""
        self.rng_state, self.batch, self.carry, self.partial = None, 0, None, [0.0, 0, 0.0]


__all__ = ["EpochPosition", "EpochSums"]
