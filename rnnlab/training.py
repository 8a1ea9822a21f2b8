"""The trainer: truncated BPTT over minibatches, clipping by global norm, perplexity, callbacks.

The trainer knows the model only through its contract (``begin_state``, ``forward``). What to do
after each step or epoch (progress bar, metrics file, samples, checkpoints) is a callback. Its
whole state (epoch, position inside the epoch, carried hidden state, RNG states, optimizer) can be
saved and restored, so an interrupted run resumes exactly where it stopped.

Under ``torchrun`` (a ``DistContext`` with ``world_size`` W > 1) each process trains on its
``B/W`` rows of every global minibatch (``rnnlab.data.batching``) through
``DistributedDataParallel``, which averages the gradients: the per-rank mean losses average to the
global mean, so every rank clips and steps with the gradient one process with batch ``B`` would
get. Loss sums and token counts are all-reduced, so every rank holds the global metrics; a stop
request (signal, callback, time limit) is all-reduced each step, so all ranks stop together.
"""
from __future__ import annotations

import math
import random
import time
from typing import Callable

import torch

from .config import RunConfig, TrainConfig
from .data.batching import Ids, epoch_batches, min_tokens_needed, num_batches
from .distributed import LOCAL, DistContext, all_gather_object, all_gather_rows, all_reduce_sum, check_batch
from .errors import RnnlabError
from .evaluation import evaluate, lm_loss, to_device  # lm_loss: the one LM loss (also rnnlab.training.lm_loss)
from .metrics import perplexity
from .models import LanguageModel, State, detach_state
from .precision import autocast
from .runtime import keep_freed_memory

DIVERGED = 100.0  # nats/token: far above any vocabulary's uniform loss (ln 2^24 = 16.6): the run has diverged
ANNEAL = 0.1  # of the budget: the final decay after a plateau (see Trainer._plateau)
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


class Trainer:
    """Trains ``model`` on the 1-D id tensor ``train_ids`` as ``cfg`` (how to optimise) and ``run``
    (how long) say.

    ``fit()`` runs epochs until ``run.epochs`` are done, ``run.max_seconds`` of wall time have
    passed, or ``request_stop()`` is called (e.g. from a signal handler: the current step
    finishes, then ``fit`` returns with ``interrupted`` set and the position kept for resume).
    Each finished epoch calls every epoch callback with a metrics dict: ``epoch``, ``step``,
    ``train_loss``, ``train_ppl``, ``tokens_per_sec``, ``elapsed_s``, ``lr`` and, with
    evaluation ids, ``val_loss``, ``val_ppl``, ``val_bpc`` (``select_*`` with ``label="select"``:
    the caller passes a selection slice, and the best weights, early stopping and the final decay
    are decided on whatever text it passes).

    ``dist_ctx`` (from ``rnnlab.distributed.setup``) makes it one rank of a data-parallel run:
    ``cfg.batch_size`` is then the global batch, every rank gets the same global metrics and
    history, and ``state_dict`` (collected at epoch ends and interruptions) holds the carried
    state of all rows and every rank's torch RNG state, so a run resumes exactly under DDP too.
    Callbacks run on every rank; whoever builds the trainer registers them on rank 0 only.

    ``clock`` (seconds, default ``time.perf_counter``; also settable on the class) is the one clock
    of every time rule (budget, ``max_seconds``, evaluation points, the final decay, tokens/s):
    tests give it a fake one, so that what a run does never depends on the machine's speed.
    ``run.precision`` ``bf16`` runs each step's forward pass and loss under bfloat16 autocast
    (``rnnlab.precision``); the weights, gradients, optimizer state and evaluations stay float32.
    """

    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def __init__(self, model: LanguageModel, cfg: TrainConfig, train_ids: Ids,
                 val_ids: Ids | None = None, run: RunConfig | None = None,
                 optimizer: torch.optim.Optimizer | None = None,
                 callbacks: list[EpochCallback] = (), step_callbacks: list[StepCallback] = (),
                 dist_ctx: DistContext = LOCAL, label: str = "val", step_seconds: float = 0.0,
                 clock: Callable[[], float] | None = None):
        need = min_tokens_needed(cfg.batch_size, cfg.num_steps)
        if len(train_ids) < need:
            raise RnnlabError(
                f"the training text has {len(train_ids)} tokens, too short for --batch-size {cfg.batch_size} "
                f"x --num-steps {cfg.num_steps} (needs at least {need}); use a longer text or smaller values")
        if val_ids is not None and len(val_ids) < 2:
            raise RnnlabError("the validation split has fewer than 2 tokens; raise --val-fraction or use more text")
        self.model, self.cfg, self.dist = model, cfg, dist_ctx
        self.label = label  # the metrics' prefix for the evaluation text: "val", or "select" for a selection slice
        # a simulated clock for tests: each optimizer step takes step_seconds of "training time" (0: the wall clock)
        self.step_seconds = step_seconds
        self.setup_seconds = 0.0
        self.snapshot_callbacks: list[EpochCallback] = []  # called with a resumable position inside an epoch
        if clock is not None:
            self.clock = clock
        self.run = run if run is not None else RunConfig()
        check_batch(cfg.batch_size, dist_ctx)
        if model.device.type == "cpu":
            keep_freed_memory()  # no page faults for the per-minibatch buffers
        self.train_ids = to_device(train_ids, model.device)
        self.val_ids = to_device(val_ids, model.device) if val_ids is not None else None
        # the training forward goes through DDP (gradient all-reduce); everything else uses the module
        self.forward_model = model
        if dist_ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            dev = model.device
            self.forward_model = DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
        self.rank_rng_states: list[torch.Tensor] | None = None  # every rank's torch RNG (DDP), for saving
        self.optimizer = optimizer or make_optimizer(model, cfg)
        self.callbacks, self.step_callbacks = list(callbacks), list(step_callbacks)
        self.rng = random.Random(cfg.seed)  # batching: offsets and window order
        # progress; all of it is saved by state_dict()
        self.epoch = 0  # finished epochs
        self.step = 0  # optimizer steps taken
        self.elapsed = 0.0  # wall seconds of training so far, across resumes
        self.history: list[dict] = []
        self.best_val = float("inf")
        self.improved = False  # did the last evaluation improve the validation loss?
        self.best_state: dict[str, torch.Tensor] | None = None  # the weights of the best validation loss
        self.evals_since_best = 0  # evaluations without a better validation loss (early stopping)
        self.early_stopped = False
        self.anneal: tuple[float, float] | None = None  # (elapsed, lr) when the final decay began
        self.next_eval = self.run.eval_every or float("inf")
        self.next_snapshot = self.run.save_seconds or float("inf")  # the time cadence of snapshots inside epochs
        # an unfinished epoch (after an interruption)
        self.epoch_rng_state = None  # batching RNG state at the start of the unfinished epoch
        self.batch_in_epoch = 0
        self.carry: State | None = None  # hidden state carried into the next minibatch (sequential)
        self.partial = [0.0, 0, 0.0]  # loss sum (nats), tokens, compute seconds of the unfinished epoch
        self.interrupted = False
        self.time_up = False
        self.stop_reason = ""  # why the last fit() ended: "time limit", "early stop: ...", "final decay done", ...
        self._stop = False
        self.batches_per_epoch = num_batches(len(train_ids), cfg.batch_size, cfg.num_steps, cfg.sampling,
                                             cfg.num_steps // 2)
        # the validation text scored at each evaluation: all of it, or its first eval_tokens (+1 for the last target)
        self.eval_ids = self.val_ids
        if self.val_ids is not None and self.run.eval_tokens and len(self.val_ids) > self.run.eval_tokens + 1:
            self.eval_ids = self.val_ids[:self.run.eval_tokens + 1]

    # -- control ---------------------------------------------------------------------------
    def count_setup(self, seconds: float) -> None:
        """Count ``seconds`` spent setting the run up (measuring candidates) as training time: the
        budget's clock starts there, and the first evaluation point follows it."""
        self.elapsed = self.setup_seconds = seconds
        self.next_eval = seconds + self.run.eval_every if self.run.eval_every else float("inf")
        self.next_snapshot = seconds + self.run.save_seconds if self.run.save_seconds else float("inf")

    def request_stop(self) -> None:
        """Finish the current step, then return from ``fit`` keeping the position for resume."""
        self._stop = True

    def lr_at(self, step: int, elapsed: float) -> float:
        """The learning rate for optimizer step ``step`` (0-based): warmup, then constant or cosine."""
        cfg = self.cfg
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant":
            return cfg.lr
        if self.anneal is not None:  # after a plateau: from the rate then to min_lr over ANNEAL of the budget
            start, lr0 = self.anneal
            progress = min(max((elapsed - start) / (ANNEAL * self.run.budget), 0.0), 1.0)
            return cfg.min_lr + (lr0 - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.run.budget:  # the schedule spans the time budget
            progress = elapsed / self.run.budget
        else:
            total = max(1, self.run.epochs * self.batches_per_epoch - cfg.warmup_steps)
            progress = (step - cfg.warmup_steps) / total
        progress = min(max(progress, 0.0), 1.0)
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    # -- training --------------------------------------------------------------------------
    @property
    def time_limit(self) -> float:
        """Seconds of training after which ``fit`` stops: the budget or ``max_seconds``, the sooner."""
        limits = [t for t in (self.run.budget, self.run.max_seconds) if t]
        return min(limits) if limits else 0.0

    @property
    def finished(self) -> bool:
        """Nothing left to train under the run's controls: every epoch done, the time limit spent or
        the run stopped early (a resumed run with a larger --epochs or --budget goes on)."""
        limit = self.time_limit
        return self.epoch >= self.run.epochs or self.early_stopped or bool(limit and self.elapsed >= limit)

    def _clock(self, elapsed0: float, wall0: float, now: float | None = None) -> float:
        """Training seconds so far: ``self.clock`` since ``wall0`` on top of ``elapsed0``, or with
        ``step_seconds`` the simulated time of the steps taken (exactly the same after a resume)."""
        if self.step_seconds:
            return self.setup_seconds + self.step * self.step_seconds
        return elapsed0 + ((self.clock() if now is None else now) - wall0)

    def fit(self) -> list[dict]:
        self.interrupted = self.time_up = self._stop = False
        while self.epoch < self.run.epochs and not (self.interrupted or self.time_up or self.early_stopped):
            self._run_epoch()
        self.stop_reason = ("interrupted" if self.interrupted else "time limit" if self.time_up else
                            self.stop_reason if self.early_stopped else "epochs done")
        if self.run.restore_best and self.best_state is not None and not self.interrupted:
            self.model.load_state_dict(self.best_state)  # end with the best validation weights
        return self.history

    def _run_epoch(self) -> None:
        model, cfg, opt = self.model, self.cfg, self.optimizer
        device = model.device
        model.train()
        if self.epoch_rng_state is None:  # a fresh epoch
            self.epoch_rng_state = self.rng.getstate()
            self.batch_in_epoch, self.carry, self.partial = 0, None, [0.0, 0, 0.0]
        else:  # resuming inside an epoch: replay its plan from the start state, skip what is done
            self.rng.setstate(self.epoch_rng_state)
        ctx = self.dist
        batches = epoch_batches(self.train_ids, cfg.batch_size, cfg.num_steps, cfg.sampling, self.rng,
                                start=self.batch_in_epoch, rank=ctx.rank, world_size=ctx.world_size)
        # sums of the epoch: ``self.partial`` (global, before an interruption) counts on rank 0 only
        part = self.partial if ctx.is_main else [0.0, 0, 0.0]
        loss_sum = torch.tensor(part[0], dtype=torch.float64, device=device)
        n_tokens, compute = part[1], part[2]
        stop = False
        state = self.carry
        if state is not None and ctx.enabled:  # the saved state holds all B rows: keep this rank's
            per = cfg.batch_size // ctx.world_size
            state = tuple(s[:, ctx.rank * per:(ctx.rank + 1) * per] for s in state)  # (L, B/W, H)
        wall0, elapsed0 = self.clock(), self.elapsed
        self._mark = [loss_sum.item(), n_tokens, compute]  # sums at the last record (evaluation points)
        for x, y in batches:
            t0 = self.clock()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # (B/W, T)
            if state is None or cfg.sampling == "random":
                state = model.begin_state(x.shape[0], device)  # random windows: nothing to carry
            else:
                state = detach_state(state)  # sequential: keep the values, cut the graph
            lr = self.lr_at(self.step, self.elapsed)
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
            step_loss = loss.detach()
            loss_sum += step_loss * y.numel()
            n_tokens += y.numel()
            self.step += 1
            self.batch_in_epoch += 1
            now = self.clock()
            compute += now - t0
            self.elapsed = self._clock(elapsed0, wall0, now)
            stop = self._stop
            if ctx.enabled:  # one small all-reduce: global step loss, any rank stopping, rank 0's clock
                packed = torch.stack([step_loss.double(), torch.tensor(float(stop), dtype=torch.float64, device=device),
                                      torch.tensor(self.elapsed if ctx.is_main else 0.0, dtype=torch.float64,
                                                   device=device)])
                all_reduce_sum(packed, ctx)
                step_loss = packed[0] / ctx.world_size
                stop, self.elapsed = bool(packed[1].item() > 0), float(packed[2].item())
                self._stop = self._stop or stop
            for cb in self.step_callbacks:
                cb(self, step_loss, y.numel() * ctx.world_size)
            if stop or (self._stop and not ctx.enabled):
                break
            limit = self.time_limit
            if limit and self.elapsed >= limit:  # the same clock on every rank
                self.time_up = True
                break
            if self.elapsed >= self.next_eval and self.eval_ids is not None and self.batch_in_epoch < self.batches_per_epoch:
                self._evaluation_point(loss_sum, n_tokens, compute, elapsed0, wall0)
                if self.early_stopped:
                    break
                self._snapshot_point(state, loss_sum, n_tokens, compute)
            elif self.run.save_seconds and self.elapsed >= self.next_snapshot:
                self._snapshot_point(state, loss_sum, n_tokens, compute)
        # under DDP a stop requested after the last all-reduce (e.g. in a callback) waits for the next step
        stopped = stop if ctx.enabled else self._stop
        loss_total = loss_sum.item()
        if ctx.enabled:
            sums = torch.tensor([loss_total, n_tokens, compute if ctx.is_main else 0.0], dtype=torch.float64,
                                device=device)
            all_reduce_sum(sums, ctx)
            loss_total, n_tokens, compute = sums[0].item(), int(sums[1].item()), sums[2].item()
        mean = loss_total / max(n_tokens, 1)
        if not math.isfinite(mean) or mean > DIVERGED:
            raise RnnlabError(f"training diverged: the loss became {mean:.4g} nats/token in epoch {self.epoch + 1}; "
                              f"lower --lr or set --clip-norm (e.g. 1) and train again")
        if stopped:  # keep the unfinished epoch for resume
            self.interrupted = True
            self.carry = None
            if cfg.sampling == "sequential" and state is not None:  # every rank's rows: (L, B/W, H) -> (L, B, H)
                self.carry = tuple(all_gather_rows(s, ctx, dim=1) for s in detach_state(state))
            self.partial = [loss_total, n_tokens, compute]
            self._gather_rng()
            return
        self.epoch += 1
        self.epoch_rng_state, self.batch_in_epoch, self.carry, self.partial = None, 0, None, [0.0, 0, 0.0]
        metrics = {
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": mean,
            "train_ppl": perplexity(mean),
            "tokens_per_sec": n_tokens / compute if compute > 0 else 0.0,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        self._validate(metrics, elapsed0, wall0)
        self._gather_rng()
        self._record(metrics)

    def _validate(self, metrics: dict, elapsed0: float, wall0: float) -> None:
        """Score the validation text (its bounded slice) into ``metrics``; the time counts as training
        time (inside a budget). Under DDP every rank scores and the clocks agree on rank 0's."""
        ctx, device = self.dist, self.model.device
        if self.eval_ids is not None:
            v = evaluate(self.model, self.eval_ids, self.cfg.batch_size, self.cfg.num_steps)
            self.model.train()
            metrics.update({f"{self.label}_loss": v["loss"], f"{self.label}_ppl": v["ppl"], f"{self.label}_bpc": v["bpc"]})
            self.elapsed = self._clock(elapsed0, wall0)
        if ctx.enabled:  # validation took each rank its own time: agree on rank 0's clock
            clock = torch.tensor([self.elapsed if ctx.is_main else 0.0], dtype=torch.float64, device=device)
            self.elapsed = float(all_reduce_sum(clock, ctx).item())
        metrics["elapsed_s"] = self.elapsed

    def _record(self, metrics: dict) -> None:
        """Keep an evaluation's metrics: best weights, early stopping, history, callbacks."""
        key = f"{self.label}_loss"
        self.improved = key in metrics and metrics[key] < self.best_val
        if self.improved:
            self.best_val = metrics[key]
            self.evals_since_best = 0
            if self.run.restore_best:
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        elif key in metrics:
            self.evals_since_best += 1
            if self.run.patience and self.evals_since_best >= self.run.patience:
                self._plateau()
        if self.anneal is not None and self.elapsed >= self.anneal[0] + ANNEAL * self.run.budget:
            self.early_stopped = True  # the final decay is over: nothing more to gain at min_lr
            self.stop_reason = "the final decay after the plateau is done"
        self.next_eval = self.elapsed + self.run.eval_every if self.run.eval_every else float("inf")
        self.history.append(metrics)
        for cb in self.callbacks:
            cb(self, metrics)

    def _plateau(self) -> None:
        """``patience`` evaluations without improvement. Under a time budget with a cosine schedule,
        the first plateau starts the final decay early instead of stopping: the best weights are
        restored and the rate decays from where it is to ``min_lr`` over ``ANNEAL`` of the budget
        (a long budget's rate is still high when a small text starts to overfit; stopping there
        would keep weights trained at that rate, worse than a shorter budget's). The decay then runs
        to its end (it is what improves the weights), which stops training."""
        if (self.anneal is None and self.run.budget and self.cfg.lr_schedule == "cosine"
                and self.best_state is not None and self.elapsed < self.run.budget * (1 - ANNEAL)):
            self.anneal = (self.elapsed, self.lr_at(self.step, self.elapsed))
            self.model.load_state_dict(self.best_state)
            self.evals_since_best = 0
            return
        if self.anneal is None:
            self.early_stopped = True
            self.stop_reason = f"early stop: {self.evals_since_best} evaluations without a better {self.label} loss"

    def _evaluation_point(self, loss_sum: torch.Tensor, n_tokens: int, compute: float, elapsed0: float,
                          wall0: float) -> None:
        """An evaluation inside an epoch (every ``eval_every`` seconds): a record whose ``epoch`` is
        the fractional progress and whose training loss is the mean since the last record."""
        ctx, device = self.dist, self.model.device
        now = [loss_sum.item(), n_tokens, compute]
        since = [a - b for a, b in zip(now, self._mark)]  # this rank's sums since the last record of the epoch
        self._mark = now
        if ctx.enabled:
            sums = torch.tensor([since[0], since[1], since[2] if ctx.is_main else 0.0], dtype=torch.float64, device=device)
            all_reduce_sum(sums, ctx)
            since = [sums[0].item(), int(sums[1].item()), sums[2].item()]
        mean = since[0] / max(since[1], 1)
        metrics = {"epoch": round(self.epoch + self.batch_in_epoch / max(self.batches_per_epoch, 1), 3),
                   "step": self.step, "train_loss": mean, "train_ppl": perplexity(mean),
                   "tokens_per_sec": since[1] / since[2] if since[2] > 0 else 0.0,
                   "lr": self.optimizer.param_groups[0]["lr"]}
        self._validate(metrics, elapsed0, wall0)
        self._record(metrics)

    def _snapshot_point(self, state, loss_sum: torch.Tensor, n_tokens: int, compute: float) -> None:
        """A resumable position inside an epoch (after an evaluation point): the carried state, the
        epoch's sums and every rank's RNG, as an interruption would keep them, for the snapshot
        callbacks (a run killed later resumes from here exactly). A collective under DDP."""
        self.next_snapshot = self.elapsed + self.run.save_seconds if self.run.save_seconds else float("inf")
        if not self.snapshot_callbacks and not self.dist.enabled:
            return
        ctx = self.dist
        sums = torch.tensor([loss_sum.item(), n_tokens, compute if ctx.is_main else 0.0], dtype=torch.float64,
                            device=self.model.device)
        if ctx.enabled:
            all_reduce_sum(sums, ctx)
        self.partial = [sums[0].item(), int(sums[1].item()), sums[2].item()]
        self.carry = None
        if self.cfg.sampling == "sequential" and state is not None:  # every rank's rows: (L, B/W, H) -> (L, B, H)
            self.carry = tuple(all_gather_rows(s, ctx, dim=1) for s in detach_state(state))
        self._gather_rng()
        for cb in self.snapshot_callbacks:
            cb(self, self.history[-1] if self.history else {})

    # -- saving and restoring --------------------------------------------------------------
    def _gather_rng(self) -> None:
        """Under DDP, collect every rank's torch RNG state (dropout masks differ per rank), so
        that ``state_dict`` on rank 0 can save them all. A collective: every rank calls it."""
        if self.dist.enabled:
            self.rank_rng_states = all_gather_object(torch.get_rng_state(), self.dist)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue exactly: (tensors, JSON-able dict).

        Under DDP (on rank 0, after an epoch end or an interruption) the carried state has all
        ``B`` rows and ``rng.torch.rank{r}`` holds each rank's RNG state."""
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        if self.dist.enabled and self.rank_rng_states is not None:
            for r, s in enumerate(self.rank_rng_states):
                tensors[f"rng.torch.rank{r}"] = s
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.cuda.{i}"] = s
        if self.carry is not None:
            for i, s in enumerate(self.carry):
                tensors[f"carry.{i}"] = s
        for name, t in (self.best_state or {}).items():
            tensors[f"best.{name}"] = t
        opt = self.optimizer.state_dict()
        opt_json: dict = {"param_groups": opt["param_groups"], "state": {}}
        for pid, st in opt["state"].items():
            entry = {}
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optim.{pid}.{k}"] = v
                    entry[k] = "tensor"
                else:
                    entry[k] = v
            opt_json["state"][str(pid)] = entry
        version, internal, gauss = self.rng.getstate()
        meta = {
            "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed, "best_val": self.best_val,
            "history": self.history, "rng_batching": [version, list(internal), gauss],
            "epoch_rng_state": (None if self.epoch_rng_state is None else
                                [self.epoch_rng_state[0], list(self.epoch_rng_state[1]), self.epoch_rng_state[2]]),
            "batch_in_epoch": self.batch_in_epoch, "partial": self.partial,
            "carry_len": 0 if self.carry is None else len(self.carry), "optimizer": opt_json,
            "evals_since_best": self.evals_since_best, "early_stopped": self.early_stopped,
            "anneal": list(self.anneal) if self.anneal is not None else None,
            "next_eval": self.next_eval if math.isfinite(self.next_eval) else None,
            "setup_seconds": self.setup_seconds, "stop_reason": self.stop_reason,
        }
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        device = self.model.device
        self.epoch, self.step, self.elapsed = meta["epoch"], meta["step"], meta["elapsed"]
        self.best_val, self.history = meta["best_val"], meta["history"]
        self.evals_since_best = int(meta.get("evals_since_best", 0))  # absent before rnnlab 0.2
        self.early_stopped = bool(meta.get("early_stopped", False))
        self.setup_seconds = float(meta.get("setup_seconds", 0.0))
        self.stop_reason = str(meta.get("stop_reason", ""))
        anneal = meta.get("anneal")
        self.anneal = (float(anneal[0]), float(anneal[1])) if anneal else None
        self.next_snapshot = self.elapsed + self.run.save_seconds if self.run.save_seconds else float("inf")
        nxt = meta.get("next_eval")
        self.next_eval = float(nxt) if nxt is not None else (self.run.eval_every or float("inf"))
        best = {k[len("best."):]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        v, internal, gauss = meta["rng_batching"]
        self.rng.setstate((v, tuple(internal), gauss))
        e = meta["epoch_rng_state"]
        self.epoch_rng_state = None if e is None else (e[0], tuple(e[1]), e[2])
        self.batch_in_epoch, self.partial = meta["batch_in_epoch"], meta["partial"]
        n = meta["carry_len"]
        self.carry = tuple(tensors[f"carry.{i}"].to(device) for i in range(n)) if n else None
        if self.carry is not None and self.carry[0].shape[1] != self.cfg.batch_size:
            raise RnnlabError(f"the saved state has {self.carry[0].shape[1]} rows but --batch-size is "
                              f"{self.cfg.batch_size}; resume with the run's batch size")
        own = f"rng.torch.rank{self.dist.rank}"
        torch.set_rng_state(tensors[own if own in tensors else "rng.torch"].cpu())
        cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        opt = meta["optimizer"]
        state = {}
        for pid, entry in opt["state"].items():
            state[int(pid)] = {k: (tensors[f"optim.{pid}.{k}"] if val == "tensor" else val) for k, val in entry.items()}
        self.optimizer.load_state_dict({"state": state, "param_groups": opt["param_groups"]})
