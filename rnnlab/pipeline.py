"""The end-to-end jobs the CLI (and a notebook) run: data -> vocab -> ids -> model -> training,
and a checkpoint's held-out evaluation.

``train_run`` also runs as one rank of ``torchrun --nproc_per_node N -m rnnlab train ...``: every
rank builds the same data and model and trains its share of each batch (``rnnlab.distributed``,
``Trainer``); rank 0 alone logs, plots, samples and checkpoints.
"""
from __future__ import annotations

import dataclasses
import shutil
import signal
import statistics
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .callbacks import MetricsWriter, ProgressBar, write_plot
from .checkpoint import BEST, CONFIG, load_checkpoint, load_for_inference, save_checkpoint
from .config import AdaptConfig, DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import PreparedData, Tokenizer, prepare_data
from .decoding import generate
from .distributed import LOCAL, DistContext, cleanup, device_for, env_context, setup
from .errors import UsageError
from .adaptation import dynamic_evaluate, step_rule, training_ids
from .evaluation import evaluate
from .fields import flag
from .models import LanguageModel, build_model, grow_vocabulary
from .gather import Gathered, gather, stored_configs
from .runs import RunLock, prepare_run_dir, record_chat, save_run_checkpoint
from .plan import settle
from .precision import sequence_precision
from .speed import simulated_step_seconds
from .runtime import seed_everything
from .trainer_state import load_trainer_state
from .training import Trainer

Log = Callable[[str], None]


@dataclass
class RunResult:
    model: LanguageModel
    tokenizer: Tokenizer
    history: list[dict]
    out_dir: Path
    interrupted: bool = False
    info: dict = field(default_factory=dict)
    signal: int = 0  # the signal that stopped an interrupted run (SIGINT, SIGTERM), if one did

    @property
    def vocab(self):
        return self.tokenizer.vocab


class _StopOnSignal:
    """SIGINT/SIGTERM during training: finish the step, checkpoint, return. A second SIGINT aborts."""

    def __init__(self, trainer: Trainer, log: Log):
        self.trainer, self.log, self.old = trainer, log, {}
        self.signum = 0  # the signal that asked the run to stop

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self.log(f"{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                 f"(press Ctrl-C again to abort without saving)")
        self.trainer.request_stop()

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def train_run(dcfg: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, rcfg: RunConfig, out_dir: str | Path,
              log: Log = print, resume: bool = False, overwrite: bool = False, progress: bool = False,
              explicit: set[str] | None = None) -> RunResult:
    """Train as configured, writing ``metrics.jsonl``, checkpoints and a plot into ``out_dir``.

    ``rcfg.recipe == "default"`` (the default, as for ``rnnlab train``) fills the settings not in
    ``explicit`` (the field names the user chose; by default every field that differs from its
    dataclass default) from the recipe (``rnnlab.recipes``), once the corpus size is known;
    ``"book"`` trains exactly as configured (the dataclass defaults are the book's settings).
    With ``rcfg.init_from``, the base's architecture and text settings are taken (``rnnlab.gather``:
    a field chosen against them is refused).

    With ``resume``, the settings stored in ``out_dir`` are kept (a data, model or training field
    chosen differently is refused; the run fields chosen replace the stored ones), and the model,
    optimizer, RNG states and position are read from it: training continues exactly where it
    stopped. ``overwrite`` replaces a previous run in ``out_dir`` (its checkpoints, snapshots and
    best weights), once the new run is ready to start.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), this process joins the
    process group and trains as one rank: ``tcfg.batch_size`` is the global batch, split evenly
    over the ranks; only rank 0 logs and writes files.
    """
    if not str(out_dir).strip():
        raise UsageError("--out is empty; give a directory for the run")
    given = gather(dcfg, mcfg, tcfg, rcfg, explicit, out_dir, resume)
    device = device_for(env_context(), given.run.device)
    ctx = setup(device)
    ok = False
    out = Path(out_dir)
    created = ctx.is_main and str(out_dir) != "" and not out.exists()
    try:
        if ctx.is_main:
            prepare_run_dir(out)
        with RunLock(out) if ctx.is_main else nullcontext():
            result = _train_run(given, out, log, resume, overwrite, progress, device, ctx)
        ok = True
        return result
    finally:
        if created and not ok and out.is_dir() and all(p.name.startswith(".") for p in out.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # a run that failed before writing anything leaves no folder
        if ok:
            cleanup(ctx)  # wait for rank 0's last checkpoint, then leave the group
        elif ctx.owns_group:  # an error: leave at once (a barrier could wait forever on a failed rank)
            torch.distributed.destroy_process_group()


def _train_run(given: Gathered, out: Path, log: Log, resume: bool, overwrite: bool, progress: bool,
               device: torch.device, ctx: DistContext = LOCAL) -> RunResult:
    main = ctx.is_main
    if not main:
        log = lambda msg: None  # noqa: E731  (rank 0 speaks for the run)
        progress = False
    if not resume and not overwrite and (out / CONFIG).exists():
        raise UsageError(f"{out} already holds a checkpoint; pass --resume to continue it, --overwrite to "
                         f"replace it, or choose another --out")
    stored_vocab = load_checkpoint(out).vocab if resume else None
    plan = settle(*given.configs, given.explicit, device, ctx, resume_vocab=stored_vocab, out=out)
    dcfg, mcfg, tcfg, rcfg = plan.configs
    data, base = plan.corpus, plan.base
    for line in plan.lines:
        log(line)
    if data.chat is not None:  # a chat export: say what was read (settle checked a resumed run reads the same messages)
        log(data.chat.report.describe())
    seed_everything(tcfg.seed)
    model = build_model(mcfg).to(device)  # the same initial weights on every rank
    if base is not None:  # fine-tuning: the base's weights (grown for tokens it never saw, with --extend-vocab)
        model.load_state_dict(grow_vocabulary(base.model.state_dict(), model, len(base.vocab), base.vocab.unk_id))
    if ctx.rank > 0:  # ranks train different rows: give each its own dropout masks
        torch.manual_seed(tcfg.seed + 1_000_003 * ctx.rank)
    tokenizer = data.tokenizer
    # evaluations during training score the selection slice (they choose the weights); without one
    # they score the test split for the record only (settle refused any decision then)
    selecting = data.select_ids is not None
    trainer = Trainer(model, tcfg, data.train_ids, data.select_ids if selecting else data.val_ids, run=rcfg,
                      dist_ctx=ctx, label="select" if selecting else "val", step_seconds=simulated_step_seconds())
    if not resume:
        if rcfg.budget and not trainer.timing.step_seconds:
            trainer.timing.count_setup(plan.setup_seconds)  # measuring counts against a budget
    if resume:
        ck = load_checkpoint(out, device)
        model.load_state_dict(ck.model.state_dict())
        tensors, meta = load_trainer_state(ck.path)
        trainer.load_state_dict(tensors, meta)
        if trainer.finished:  # nothing to train: leave the finished run as it is
            log(f"{out}: the run is finished ({trainer.stop_reason or 'done'}, epoch {trainer.epoch}, step "
                f"{trainer.step}); nothing to resume. Give a larger --epochs or --budget to train further")
            return RunResult(model, data.tokenizer, trainer.history, out, info=dict(ck.info))
        log(f"resuming {out} at epoch {trainer.epoch} (step {trainer.step}"
            f"{', inside the epoch' if trainer.position.rng_state is not None else ''})")
    # --overwrite: the old run goes when the new one first saves (a run that fails before leaves it whole)
    replacing = {"run": overwrite and not resume and main, "best": overwrite and not resume and main}
    bar = ProgressBar(0, enabled=False)  # replaced below once the trainer knows its length
    emit: Log = log

    def save(trainer: Trainer, name: str, last: dict | None = None) -> None:
        last = last if last is not None else (trainer.history[-1] if trainer.history else {})
        info = {"epoch": trainer.epoch, "step": trainer.step, "source": data.source, "ranges": data.ranges,
                **({"measured": plan.rates.to_dict()} if plan.rates is not None else {}),
                **{k: v for k, v in last.items() if k.startswith(("train_", "val_", "select_"))}}
        save_run_checkpoint(out, name, rcfg.keep, model, tokenizer, mcfg, dcfg, tcfg, rcfg, info, trainer.state_dict(),
                            replace_run=replacing["run"], replace_best=replacing["best"])
        replacing.update(run=False, best=False)
        if data.chat is not None:
            record_chat(out, data.chat.text)
        write_plot(trainer.history, out / "perplexity.png", title=f"{model.describe()} H={mcfg.hidden_size}")

    save_every = rcfg.save_every or max(1, rcfg.epochs // 10)

    def on_epoch(trainer: Trainer, m: dict) -> None:
        e = m["epoch"]
        ends_epoch = isinstance(e, int)  # else an evaluation point inside an epoch (--eval-every)
        if not ends_epoch or e == 1 or e % rcfg.log_every == 0 or e == rcfg.epochs or trainer.time_up:
            val = f"  val loss {m['val_loss']:.4f}  val ppl {m['val_ppl']:.3f}" if "val_ppl" in m else ""
            where = f"epoch {e:4d}" if ends_epoch else f"epoch {e:8.2f}"
            if "select_ppl" in m:
                val = f"  select loss {m['select_loss']:.4f}  select ppl {m['select_ppl']:.3f}"
            emit(f"{where}  loss {m['train_loss']:.4f}  ppl {m['train_ppl']:.3f}{val}  "
                 f"{m['tokens_per_sec']:,.0f} tokens/s  {m['elapsed_s']:.1f}s")
        if ends_epoch and rcfg.predict_every and (e % rcfg.predict_every == 0 or e == rcfg.epochs):
            for p in rcfg.prefixes:
                emit("  > " + generate(trainer.model, tokenizer, p, rcfg.predict_length).replace("\n", "\\n"))
        if trainer.schedule.improved and selecting:
            if replacing["best"] and (out / BEST).is_dir():
                shutil.rmtree(out / BEST)  # the old run's best weights are not this run's
            replacing["best"] = False
            save_checkpoint(out / BEST, model, tokenizer, mcfg, dcfg, tcfg, rcfg, info={
                "epoch": e, "step": trainer.step, "ranges": data.ranges,
                **{k: v for k, v in m.items() if k.startswith(("train_", "select_"))}})
        if ends_epoch and e % save_every == 0 and e < rcfg.epochs and not trainer.time_up:
            save(trainer, f"epoch-{e:06d}")

    if main:
        trainer.callbacks.append(on_epoch)
        trainer.snapshot_callbacks.append(lambda tr, m: save(tr, f"step-{tr.step:010d}", m))
        trainer.callbacks.insert(0, MetricsWriter(out / "metrics.jsonl", trainer.history))
    n_params = sum(p.numel() for p in model.parameters())
    val = f", selection {len(data.select_ids):,}" if data.select_ids is not None else ""
    val += f", test {len(data.val_ids):,}" if data.val_ids is not None else ""
    where = f"{ctx.world_size} processes (DDP, {tcfg.batch_size // ctx.world_size} rows each)" if ctx.enabled else ""
    log(f"corpus {data.source}: {len(data.train_ids):,} training tokens{val}, vocabulary {len(data.vocab)}; "
        f"model {model.describe()} ({n_params:,} parameters) on {device}{' x ' + where if where else ''}")
    if progress:
        bar = ProgressBar(rcfg.epochs * trainer.batches_per_epoch, initial=trainer.step)
        trainer.step_callbacks.append(bar.step)
        emit = bar.write
    try:
        with _StopOnSignal(trainer, emit) as stopper:
            trainer.fit()
    finally:
        bar.close()
    if trainer.interrupted:
        if main:
            save(trainer, f"interrupted-step-{trainer.step:08d}")
        log(f"stopped at epoch {trainer.epoch} + {trainer.position.batch} minibatches; checkpoint saved in {out}; "
            f"continue with: rnnlab train --resume --out {out}")
        return RunResult(model, tokenizer, trainer.history, out, interrupted=True, signal=stopper.signum)
    final = dict(trainer.history[-1])
    if data.val_ids is not None and (selecting or rcfg.eval_tokens):  # the whole test split, once, at the end
        full = evaluate(model, data.val_ids, tcfg.batch_size, tcfg.num_steps)
        final.update(val_loss=full["loss"], val_ppl=full["ppl"], val_bpc=full["bpc"])
    if main:
        save(trainer, f"epoch-{trainer.epoch:06d}", final)
        from .keyboard.tune import build_for_run  # the keyboard's word model: training split, tuned on the selection slice
        build_for_run(model, tokenizer, dcfg, out, log)
    speed = statistics.median(h["tokens_per_sec"] for h in trainer.history)
    val = f", test loss {final['val_loss']:.4f} (perplexity {final['val_ppl']:.3f})" if "val_ppl" in final else ""
    if selecting and trainer.schedule.best < float("inf"):
        val += f", best selection loss {trainer.schedule.best:.4f}"
    why = f" ({trainer.stop_reason})" if trainer.stop_reason not in ("", "epochs done") else ""
    best = ", the best selection weights restored" if rcfg.restore_best and trainer.evals.best_state is not None else ""
    log(f"done{why}: epoch {trainer.epoch}, train perplexity {final['train_ppl']:.3f}{val}{best}, "
        f"median {speed:,.0f} tokens/s; checkpoint in {out}")
    return RunResult(model, tokenizer, trainer.history, out, info=final)


def evaluate_checkpoint(ckpt_dir: str | Path, dcfg: DataConfig | None = None, device: str = "auto",
                        batch_size: int = 32, num_steps: int = 35, dynamic: AdaptConfig | None = None,
                        log: Log = lambda msg: None, int8: bool = False, precision: str = "fp32") -> dict:
    """Perplexity of a checkpoint on a text (default: the validation split of its own corpus).

    With ``dynamic``, also the dynamic evaluation of the same text (``adaptation.dynamic_evaluate``:
    the model adapts as it reads; the checkpoint is not changed), beside the static figure read
    the same way (one row, chunks of ``dynamic.chunk``): ``result["dynamic"]``, ``result["static_1row"]``.
    ``precision``: bf16 scores (and adapts) under bfloat16 autocast; auto measures which is faster."""
    ck = load_for_inference(ckpt_dir, device, int8)
    precision = sequence_precision(ck.model, precision, batch_size, num_steps, log, int8=int8)
    train_ids = None
    if dcfg is None:
        dcfg = ck.data_config
        if not dcfg.val_fraction:
            raise UsageError(f"{ckpt_dir} was trained without --val-fraction, so it has no held-out split; "
                             f"give a FILE or --dataset to evaluate on")
        data = prepare_data(dcfg, vocab=ck.vocab)
        if data.chat is not None:
            log(data.chat.report.describe())
        ids, train_ids = data.val_ids, data.train_ids
        source = dcfg.path or dcfg.dataset or (f"the prepared corpus {dcfg.prepared}" if dcfg.prepared else "the corpus")
        what = f"test split (the last {dcfg.val_fraction:g}) of {source}"
        rc = ck.run_config
        if not dcfg.select_fraction and (rc.patience or rc.restore_best):
            log(f"rnnlab: note: {ckpt_dir} was trained before rnnlab kept a selection slice: its weights were chosen on "
                f"this same split, so this figure is optimistic; retrain to get a split no decision saw")
    else:
        dcfg = dcfg.replace(preset=ck.data_config.preset, token=ck.data_config.token)  # read as the model was trained
        d = prepare_data(dcfg, vocab=ck.vocab)
        if d.chat is not None:
            log(d.chat.report.describe())
        ids = d.train_ids
        what = d.source
    result = evaluate(ck.model, ids, batch_size, num_steps, precision=precision)
    result["precision"] = precision
    unk = ck.vocab.unk_id
    result["unk_tokens"] = int((ids == unk).sum()) if unk is not None else 0
    result["source"] = what
    if dynamic is not None:
        if dynamic.method == "rms" and train_ids is None:
            train_ids = training_ids(ck, log)  # its training range only; None: plain SGD steps
        method, lr = step_rule(dynamic, train_ids)
        result["static_1row"] = evaluate(ck.model, ids, 1, dynamic.chunk, precision=precision)
        result["dynamic"] = {**dynamic_evaluate(ck.model, ids, lr, dynamic.chunk, method, train_ids,
                                                precision=precision),
                             "method": method, "lr": lr, "chunk": dynamic.chunk}
    return result


__all__ = ["RunResult", "evaluate_checkpoint", "stored_configs", "train_run"]
