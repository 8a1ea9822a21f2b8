"""The trainer: truncated BPTT over minibatches, clipping by global norm, perplexity, callbacks.

The trainer knows the model only through its contract (``begin_state``, ``forward``). What to do
after each step or epoch (progress bar, metrics file, samples, checkpoints) is a callback. The
learning rate and the decisions taken at evaluations (best loss, plateau, final decay, early stop)
are ``rnnlab.schedule``'s; the clock, the time limit and when evaluations and snapshots are due
``rnnlab.timing``'s; what an evaluation does (score, decide, keep the best weights)
``rnnlab.evalpoints``'; the position inside an unfinished epoch ``rnnlab.position``'s; the state
saved for an exact resume is ``rnnlab.trainer_state``'s.

Under ``torchrun`` (a ``DistContext`` with ``world_size`` W > 1) each process trains on its
``B/W`` rows of every global minibatch (``rnnlab.data.batching``) through
``DistributedDataParallel``, which averages the gradients: the per-rank mean losses average to the
global mean, so every rank clips and steps with the gradient one process with batch ``B`` would
get. Loss sums and token counts are summed over the ranks (``distributed.sum_over_ranks``), so
every rank holds the global metrics; a stop request (signal, callback, time limit) is summed each
step, so all ranks stop together.
"""
from __future__ import annotations

import math
import random
from typing import Callable

import torch

from .config import RunConfig, TrainConfig
from .data.batching import Ids, epoch_batches, min_tokens_needed, num_batches
from .distributed import LOCAL, DistContext, check_batch, sum_over_ranks
from .errors import RnnlabError
from .evaluation import lm_loss, to_device  # lm_loss: the one LM loss (also rnnlab.training.lm_loss)
from .evalpoints import EvalPoints
from .metrics import perplexity
from .models import LanguageModel, State, detach_state
from .position import EpochPosition, EpochSums
from .precision import autocast
from .runtime import keep_freed_memory
from .schedule import Schedule
from .timing import RunClock
from .trainer_state import TrainerState

DIVERGED = 100.0  # nats/token: far above any vocabulary's uniform loss (ln 2^24 = 16.6): the run has diverged
EpochCallback = Callable[["Trainer", dict], None]
StepCallback = Callable[["Trainer", float, int], None]  # (trainer, loss of the step, tokens of the step)


def make_optimizer(model: LanguageModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    params, lr, wd = model.parameters(), cfg.lr, cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=wd)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise RnnlabError(f"unknown optimizer {cfg.optimizer!r}", exit_code=2)


def check_lengths(cfg: TrainConfig, train_ids: Ids, val_ids: Ids | None) -> None:
    need = min_tokens_needed(cfg.batch_size, cfg.num_steps)
    if len(train_ids) < need:
        raise RnnlabError(
            f"the training text has {len(train_ids)} tokens, too short for --batch-size {cfg.batch_size} "
            f"x --num-steps {cfg.num_steps} (needs at least {need}); use a longer text or smaller values")
    if val_ids is not None and len(val_ids) < 2:
        raise RnnlabError("the validation split has fewer than 2 tokens; raise --val-fraction or use more text")


def data_parallel(model: LanguageModel, ctx: DistContext) -> torch.nn.Module:
    """The module the training forward goes through: DDP (gradient all-reduce) under torchrun."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = model.device
    return DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)


class Trainer:
    """Trains ``model`` on the 1-D id tensor ``train_ids`` as ``cfg`` (how to optimise) and ``run``
    (how long) say. ``fit()`` runs epochs until ``run.epochs`` are done, the time limit is spent,
    the schedule stops the run or ``request_stop()`` is called (the step finishes, then ``fit``
    returns with ``interrupted`` set and the ``position`` kept for resume). Each epoch end and each
    evaluation point calls the epoch callbacks with ``epoch``, ``step``, ``train_loss``,
    ``train_ppl``, ``tokens_per_sec``, ``lr``, ``elapsed_s`` and, with evaluation ids,
    ``{label}_loss/_ppl/_bpc`` (``label="select"`` for a selection slice). The parts: ``timing``
    (``clock``, ``step_seconds`` > 0 simulates it), ``evals``, ``schedule``, ``position``.

    ``dist_ctx``: one rank of a data-parallel run (``cfg.batch_size`` is the global batch; every
    rank gets the same metrics; ``state_dict`` holds all rows' carried state and every rank's RNG).
    """

    def __init__(self, model: LanguageModel, cfg: TrainConfig, train_ids: Ids, val_ids: Ids | None = None,
                 run: RunConfig | None = None, optimizer: torch.optim.Optimizer | None = None,
                 callbacks: list[EpochCallback] = (), step_callbacks: list[StepCallback] = (),
                 dist_ctx: DistContext = LOCAL, label: str = "val", step_seconds: float = 0.0,
                 clock: Callable[[], float] | None = None):
        check_lengths(cfg, train_ids, val_ids)
        check_batch(cfg.batch_size, dist_ctx)
        self.model, self.cfg, self.dist, self.label = model, cfg, dist_ctx, label
        self.run = run if run is not None else RunConfig()
        if model.device.type == "cpu":
            keep_freed_memory()  # no page faults for the per-minibatch buffers
        self.train_ids = to_device(train_ids, model.device)
        val_ids = to_device(val_ids, model.device) if val_ids is not None else None
        self.forward_model = data_parallel(model, dist_ctx)
        self.optimizer = optimizer or make_optimizer(model, cfg)
        self.callbacks, self.step_callbacks = list(callbacks), list(step_callbacks)
        self.snapshot_callbacks: list[EpochCallback] = []  # called with a resumable position inside an epoch
        self.rng = random.Random(cfg.seed)  # batching: offsets and window order
        self.batches_per_epoch = num_batches(len(train_ids), cfg.batch_size, cfg.num_steps, cfg.sampling,
                                             cfg.num_steps // 2)
        self.schedule = Schedule.of(cfg, self.run, self.batches_per_epoch, label)
        self.evals = EvalPoints(model, val_ids, cfg, self.run, self.schedule, label)
        self.timing = RunClock(self.run, step_seconds, clock)
        # progress; all of it is saved by state_dict()
        self.epoch = self.step = 0  # finished epochs, optimizer steps taken
        self.history: list[dict] = []
        self.position = EpochPosition()  # inside an unfinished epoch (after an interruption)
        self.interrupted = self.time_up = self.stop_requested = False
        self.stop_reason = ""  # why the last fit() ended: "time limit", "early stop: ...", "interrupted", ...

    # -- control ---------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Finish the current step, then return from ``fit`` keeping the position for resume."""
        self.stop_requested = True

    @property
    def early_stopped(self) -> bool:
        return bool(self.schedule.stopped)

    @property
    def finished(self) -> bool:
        """Nothing left to train under the run's controls: every epoch done, the time limit spent or
        the run stopped early (a resumed run with a larger --epochs or --budget goes on)."""
        return self.epoch >= self.run.epochs or self.early_stopped or self.timing.spent

    # -- training --------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        self.interrupted = self.time_up = self.stop_requested = False
        while self.epoch < self.run.epochs and not (self.interrupted or self.time_up or self.early_stopped):
            self._run_epoch()
        self.stop_reason = ("interrupted" if self.interrupted else "time limit" if self.time_up else
                            self.schedule.stopped if self.early_stopped else "epochs done")
        if not self.interrupted:
            self.evals.restore_best()  # end with the best validation weights (--restore-best)
        return self.history

    def _train_step(self, x: torch.Tensor, y: torch.Tensor, state: State | None) -> tuple[State, torch.Tensor]:
        """One optimizer step on the minibatch x, y (B/W, T): (the state to carry, the step's mean loss)."""
        model, cfg, opt, device = self.model, self.cfg, self.optimizer, self.model.device
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # (B/W, T)
        if state is None or cfg.sampling == "random":
            state = model.begin_state(x.shape[0], device)  # random windows: nothing to carry
        else:
            state = detach_state(state)  # sequential: keep the values, cut the graph
        lr = self.schedule.lr_at(self.step, self.timing.elapsed)
        for g in opt.param_groups:
            g["lr"] = lr
        with autocast(device, self.run.precision):  # bf16: the products in bfloat16, weights and loss float32
            logits, state = self.forward_model(x, state)
            loss = lm_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
        opt.step()
        return state, loss.detach()

    def _run_epoch(self) -> None:
        cfg, ctx, device, timing, pos = self.cfg, self.dist, self.model.device, self.timing, self.position
        self.model.train()
        pos.begin(self.rng)
        batches = epoch_batches(self.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, self.rng,
                                start=pos.batch, rank=ctx.rank, world_size=ctx.world_size)
        sums, stop, state = pos.sums(ctx, device), False, pos.rank_carry(ctx, cfg.batch_size)
        timing.start()
        for x, y in batches:
            t0 = timing.clock()
            state, step_loss = self._train_step(x, y, state)
            self.step += 1
            pos.batch += 1
            now = timing.clock()
            sums.add(step_loss, y.numel(), now - t0)
            timing.tick(self.step, now)
            stop = self.stop_requested
            if ctx.enabled:  # one small all-reduce: global step loss, any rank stopping, rank 0's clock
                total, stops, timing.elapsed = sum_over_ranks([step_loss, float(stop), timing.elapsed], ctx, device, (2,))
                step_loss, stop = total / ctx.world_size, stops > 0
                self.stop_requested = self.stop_requested or stop
            for cb in self.step_callbacks:
                cb(self, step_loss, y.numel() * ctx.world_size)
            if stop or (self.stop_requested and not ctx.enabled):
                break
            if timing.spent:  # the same clock on every rank
                self.time_up = True
                break
            if timing.eval_due and self.evals.ids is not None and pos.batch < self.batches_per_epoch:
                self._evaluation_point(sums)
                if self.early_stopped:
                    break
                self._snapshot_point(state, sums)
            elif timing.snapshot_due:
                self._snapshot_point(state, sums)
        # under DDP a stop requested after the last all-reduce (e.g. in a callback) waits for the next step
        stopped = stop if ctx.enabled else self.stop_requested
        totals = sums.total(ctx)
        mean = totals[0] / max(totals[1], 1)
        if not math.isfinite(mean) or mean > DIVERGED:
            raise RnnlabError(f"training diverged: the loss became {mean:.4g} nats/token in epoch {self.epoch + 1}; "
                              f"lower --lr or set --clip-norm (e.g. 1) and train again")
        if stopped:  # keep the unfinished epoch for resume
            self.interrupted = True
            pos.keep(state, totals, ctx, cfg.sampling == "sequential")
            return
        self.epoch += 1
        pos.finish()
        self._evaluate(self.epoch, mean, *totals[1:])

    def _evaluate(self, epoch: float, loss: float, tokens: int, seconds: float) -> None:
        """A record: the training figures since the last one, the held-out text scored (the time counts
        as training time; under DDP the clocks agree on rank 0's); the schedule's decisions, callbacks."""
        metrics = {"epoch": epoch, "step": self.step, "train_loss": loss, "train_ppl": perplexity(loss),
                   "tokens_per_sec": tokens / seconds if seconds > 0 else 0.0, "lr": self.optimizer.param_groups[0]["lr"]}
        if self.evals.score(metrics):
            self.timing.tick(self.step)
        if self.dist.enabled:  # validation took each rank its own time: agree on rank 0's clock
            self.timing.elapsed = sum_over_ranks([self.timing.elapsed], self.dist, self.model.device, (0,))[0]
        metrics["elapsed_s"] = self.timing.elapsed
        self.position.gather_rngs(self.dist)  # for a callback that saves (a collective under DDP)
        self.evals.decide(metrics, self.step, self.timing.elapsed)
        self.stop_reason = self.schedule.stopped or self.stop_reason
        self.timing.evaluated()
        self.history.append(metrics)
        for cb in self.callbacks:
            cb(self, metrics)

    def _evaluation_point(self, sums: EpochSums) -> None:
        """An evaluation inside an epoch (every ``eval_every`` seconds): a record whose ``epoch`` is
        the fractional progress and whose training loss is the mean since the last record."""
        loss, tokens, seconds = sum_over_ranks(sums.since_record(), self.dist, self.model.device, (2,))
        tokens = int(tokens)
        progress = round(self.epoch + self.position.batch / max(self.batches_per_epoch, 1), 3)
        self._evaluate(progress, loss / max(tokens, 1), tokens, seconds)

    def _snapshot_point(self, state: State, sums: EpochSums) -> None:
        """A resumable position inside an epoch for the snapshot callbacks (a run killed later
        resumes from here exactly). A collective under DDP."""
        self.timing.snapshotted()
        if not self.snapshot_callbacks and not self.dist.enabled:
            return
        self.position.keep(state, sums.total(self.dist), self.dist, self.cfg.sampling == "sequential")
        for cb in self.snapshot_callbacks:
            cb(self, self.history[-1] if self.history else {})

    # -- saving and restoring --------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue exactly, as (tensors, JSON-able dict): ``rnnlab.trainer_state``."""
        t, pos = self.timing, self.position
        return TrainerState(
            self.epoch, self.step, t.elapsed, self.history, self.rng.getstate(), pos.rng_state, pos.batch,
            pos.partial, self.optimizer.state_dict(), self.schedule.state_dict(), t.next_eval, t.setup_seconds,
            self.stop_reason, carry=pos.carry, best_weights=self.evals.best_state,
            rank_rngs=pos.rank_rngs if self.dist.enabled else None).to_files()

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        s = TrainerState.from_files(tensors, meta, self.model.device, self.dist.rank, self.run.eval_every)
        if s.carry is not None and s.carry[0].shape[1] != self.cfg.batch_size:
            raise RnnlabError(f"the saved state has {s.carry[0].shape[1]} rows but --batch-size is "
                              f"{self.cfg.batch_size}; resume with the run's batch size")
        self.epoch, self.step, self.history = s.epoch, s.step, s.history
        self.rng.setstate(s.batch_rng)
        self.position = EpochPosition(s.epoch_rng, s.batch_in_epoch, s.carry, s.partial)
        self.schedule.load_state_dict(s.schedule)
        self.evals.best_state, self.stop_reason = s.best_weights, s.stop_reason
        self.timing.resume(s.elapsed, s.next_eval, s.setup_seconds)
        s.restore_rngs()
        self.optimizer.load_state_dict(s.optimizer)


__all__ = ["DIVERGED", "Trainer", "check_lengths", "lm_loss", "make_optimizer"]
