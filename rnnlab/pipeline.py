"""The end-to-end jobs the CLI (and a notebook) run: data -> vocab -> ids -> model -> training.

``train_run`` also runs as one rank of ``torchrun --nproc_per_node N -m rnnlab train ...``: every
rank builds the same data and model and trains its share of each batch (``rnnlab.distributed``,
``Trainer``); rank 0 alone logs, plots, samples and checkpoints.
"""
from __future__ import annotations

import signal
import statistics
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .callbacks import MetricsWriter, ProgressBar, write_plot
from .checkpoint import (BEST, CONFIG, list_snapshots, load_checkpoint, load_trainer_state, resolve_checkpoint_dir,
                         save_checkpoint, save_run_checkpoint, _read_json)
from .config import RUN_CONTROL, DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .data.batching import Ids
from .data.corpus import load_corpus
from .data.prepared import load_prepared
from .data.registry import DATASETS, dataset_path
from .data.vocab import Vocab
from .errors import RnnlabError, UsageError
from .models import LanguageModel, build_model
from .distributed import LOCAL, DistContext, cleanup, device_for, env_context, setup
from .runtime import seed_everything, select_device
from .sampling import generate
from .training import Trainer, evaluate

Log = Callable[[str], None]


@dataclass
class PreparedData:
    vocab: Vocab
    train_ids: Ids  # (N_train,) long tensor, or a read-only memmap of unsigned ids for --prepared
    val_ids: Ids | None  # (N_val,): the last val_fraction of the stream, or None
    source: str
    default_prefixes: list[str]


def resolve_source(cfg: DataConfig) -> Path:
    if (cfg.path is None) == (cfg.dataset is None):
        raise UsageError("give either a text FILE or --dataset NAME, not both")
    return Path(cfg.path) if cfg.path is not None else dataset_path(cfg.dataset)


def split_validation(ids: Ids, fraction: float) -> tuple[Ids, Ids | None]:
    """(train, validation): the last ``fraction`` of the stream is held out (None when empty)."""
    n_val = int(len(ids) * fraction)
    return (ids[:len(ids) - n_val], ids[len(ids) - n_val:]) if n_val else (ids, None)


def prepare_data(cfg: DataConfig, errors: str = "strict", vocab: Vocab | None = None) -> PreparedData:
    """Read, preprocess and tokenise the corpus, build the vocabulary (unless given), encode the
    stream and split off the last ``val_fraction`` of it for validation.

    With ``cfg.prepared`` the ids are a memory-mapped corpus from ``rnnlab prepare`` (not read into
    memory), and ``cfg.preset``, ``token``, ``min_freq`` and ``encoding`` are set to the ones it
    was prepared with."""
    cfg.validate()
    if cfg.prepared is not None:
        return _prepared_data(cfg, vocab)
    path = resolve_source(cfg)
    corpus = load_corpus(path, cfg.preset, cfg.token, cfg.encoding, errors)
    if vocab is None:
        vocab = Vocab.build(corpus.tokens, min_freq=cfg.min_freq, separator="" if cfg.token == "char" else " ")
    tokens = corpus.tokens[:cfg.max_tokens] if cfg.max_tokens else corpus.tokens
    ids = torch.tensor(vocab.encode(tokens), dtype=torch.long)
    train_ids, val_ids = split_validation(ids, cfg.val_fraction)
    if cfg.dataset is not None:
        prefixes = list(DATASETS[cfg.dataset].prefixes)
    else:
        prefixes = [vocab.separator.join(tokens[: (10 if cfg.token == "char" else 2)])]
    if cfg.preset == "letters":
        prefixes = [p.lower() for p in prefixes]
    return PreparedData(vocab, train_ids, val_ids, str(path), prefixes)


def _prepared_data(cfg: DataConfig, vocab: Vocab | None) -> PreparedData:
    if cfg.path is not None or cfg.dataset is not None:
        raise UsageError("give --prepared DIR or a text FILE / --dataset NAME, not both")
    p = load_prepared(cfg.prepared)
    if vocab is not None and vocab != p.vocab:
        raise RnnlabError(f"{cfg.prepared}: its vocabulary differs from the checkpoint's "
                          f"({len(p.vocab)} vs {len(vocab)} tokens); use the corpus the model was trained on")
    for name in ("preset", "token", "min_freq", "encoding"):
        setattr(cfg, name, p.meta[name])
    ids = p.ids[:cfg.max_tokens] if cfg.max_tokens else p.ids
    train_ids, val_ids = split_validation(ids, cfg.val_fraction)
    prefix = p.vocab.decode(ids[: (10 if cfg.token == "char" else 2)].tolist())
    return PreparedData(p.vocab, train_ids, val_ids, f"{p.meta['source']} (prepared in {p.path})", [prefix])


def stored_configs(run_dir: str | Path) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The configs saved in a run directory (for ``--resume``)."""
    d = Path(run_dir)
    if not (d / CONFIG).is_file():
        raise RnnlabError(f"{d}: no checkpoint to resume (no {CONFIG}); drop --resume to start a new run")
    meta = _read_json(resolve_checkpoint_dir(d) / CONFIG)
    return (from_dict(DataConfig, meta.get("data", {})), from_dict(ModelConfig, meta.get("model", {})),
            from_dict(TrainConfig, meta.get("train", {})))


def merge_resume(stored: tuple[DataConfig, ModelConfig, TrainConfig],
                 given: tuple[DataConfig, ModelConfig, TrainConfig], explicit: set[str]):
    """Settings for a resumed run: the stored ones, with the explicitly given run-control flags
    (``RUN_CONTROL``) applied. Any other explicit flag must equal the stored value."""
    out = []
    for old, new in zip(stored, given):
        merged = from_dict(type(old), to_dict(old))
        for name, value in to_dict(new).items():
            if name not in explicit or name == "vocab_size":
                continue
            if isinstance(old, TrainConfig) and name in RUN_CONTROL:
                setattr(merged, name, value)
            elif getattr(old, name) != value:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} {value!r} differs from the checkpoint's {getattr(old, name)!r}; drop the "
                                 f"flag to resume, or start a new run with another --out")
        out.append(merged)
    return tuple(out)


@dataclass
class RunResult:
    model: LanguageModel
    vocab: Vocab
    history: list[dict]
    out_dir: Path
    interrupted: bool = False
    info: dict = field(default_factory=dict)


class _StopOnSignal:
    """SIGINT/SIGTERM during training: finish the step, checkpoint, return. A second SIGINT aborts."""

    def __init__(self, trainer: Trainer, log: Log):
        self.trainer, self.log, self.old = trainer, log, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.trainer._stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.log(f"{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
                 f"(press Ctrl-C again to abort without saving)")
        self.trainer.request_stop()

    def __exit__(self, *exc):
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def train_run(dcfg: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, out_dir: str | Path, log: Log = print,
              errors: str = "strict", log_every: int = 10, resume: bool = False, overwrite: bool = False,
              progress: bool = False) -> RunResult:
    """Train as configured, writing ``metrics.jsonl``, checkpoints and a plot into ``out_dir``.

    With ``resume``, the model, optimizer, RNG states and position are read from ``out_dir`` and
    training continues exactly where it stopped.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), this process joins the
    process group and trains as one rank: ``tcfg.batch_size`` is the global batch, split evenly
    over the ranks; only rank 0 logs and writes files.
    """
    device = device_for(env_context(), tcfg.device)
    ctx = setup(device)
    ok = False
    try:
        result = _train_run(dcfg, mcfg, tcfg, out_dir, log, errors, log_every, resume, overwrite, progress,
                            device, ctx)
        ok = True
        return result
    finally:
        if ok:
            cleanup(ctx)  # wait for rank 0's last checkpoint, then leave the group
        elif ctx.owns_group:  # an error: leave at once (a barrier could wait forever on a failed rank)
            torch.distributed.destroy_process_group()


def _train_run(dcfg: DataConfig, mcfg: ModelConfig, tcfg: TrainConfig, out_dir: str | Path, log: Log,
               errors: str, log_every: int, resume: bool, overwrite: bool, progress: bool,
               device: torch.device, ctx: DistContext = LOCAL) -> RunResult:
    main = ctx.is_main
    if not main:
        log = lambda msg: None  # noqa: E731  (rank 0 speaks for the run)
        progress = False
    mcfg.validate()
    tcfg.validate()
    out = Path(out_dir)
    if not resume and not overwrite and (out / CONFIG).exists():
        raise UsageError(f"{out} already holds a checkpoint; pass --resume to continue it, --overwrite to "
                         f"replace it, or choose another --out")
    stored_vocab = load_checkpoint(out).vocab if resume else None
    data = prepare_data(dcfg, errors)
    if stored_vocab is not None and data.vocab != stored_vocab:
        raise RnnlabError(f"the corpus {data.source} gives a different vocabulary from the checkpoint's in {out} "
                          f"({len(data.vocab)} vs {len(stored_vocab)} tokens); resume with the same text and settings")
    if not tcfg.prefixes:
        tcfg.prefixes = data.default_prefixes
    seed_everything(tcfg.seed)
    mcfg.vocab_size = len(data.vocab)
    model = build_model(mcfg).to(device)  # the same initial weights on every rank
    if ctx.rank > 0:  # ranks train different rows: give each its own dropout masks
        torch.manual_seed(tcfg.seed + 1_000_003 * ctx.rank)
    vocab = data.vocab
    bar = ProgressBar(0, enabled=False)  # replaced below once the trainer knows its length
    emit: Log = log

    def save(trainer: Trainer, name: str) -> None:
        last = trainer.history[-1] if trainer.history else {}
        info = {"epoch": trainer.epoch, "step": trainer.step, "source": data.source,
                **{k: v for k, v in last.items() if k.startswith(("train_", "val_"))}}
        save_run_checkpoint(out, name, tcfg.keep, model, vocab, mcfg, dcfg, tcfg, info, trainer.state_dict())
        write_plot(trainer.history, out / "perplexity.png", title=f"{model.describe()} H={mcfg.hidden_size}")

    save_every = tcfg.save_every or max(1, tcfg.epochs // 10)

    def on_epoch(trainer: Trainer, m: dict) -> None:
        e = m["epoch"]
        if e == 1 or e % log_every == 0 or e == tcfg.epochs or trainer.time_up:
            val = f"  val ppl {m['val_ppl']:.3f}" if "val_ppl" in m else ""
            emit(f"epoch {e:4d}  loss {m['train_loss']:.4f}  ppl {m['train_ppl']:.3f}{val}  "
                 f"{m['tokens_per_sec']:,.0f} tokens/s  {m['elapsed_s']:.1f}s")
        if tcfg.predict_every and (e % tcfg.predict_every == 0 or e == tcfg.epochs):
            for p in tcfg.prefixes:
                emit("  > " + generate(trainer.model, vocab, p, tcfg.predict_length).replace("\n", "\\n"))
        if trainer.improved:
            save_checkpoint(out / BEST, model, vocab, mcfg, dcfg, tcfg, info={"epoch": e, **{
                k: v for k, v in m.items() if k.startswith(("train_", "val_"))}})
        if e % save_every == 0 and e < tcfg.epochs and not trainer.time_up:
            save(trainer, f"epoch-{e:06d}")

    if main:
        out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(model, tcfg, data.train_ids, data.val_ids, callbacks=[on_epoch] if main else [], dist_ctx=ctx)
    if resume:
        ck = load_checkpoint(out, device)
        model.load_state_dict(ck.model.state_dict())
        tensors, meta = load_trainer_state(ck.path)
        trainer.load_state_dict(tensors, meta)
        log(f"resuming {out} at epoch {trainer.epoch} (step {trainer.step}"
            f"{', inside the epoch' if trainer.epoch_rng_state is not None else ''})")
    if main:
        trainer.callbacks.insert(0, MetricsWriter(out / "metrics.jsonl", trainer.history))
    n_params = sum(p.numel() for p in model.parameters())
    val = f", validation {len(data.val_ids):,}" if data.val_ids is not None else ""
    where = f"{ctx.world_size} processes (DDP, {tcfg.batch_size // ctx.world_size} rows each)" if ctx.enabled else ""
    log(f"corpus {data.source}: {len(data.train_ids):,} training tokens{val}, vocabulary {len(vocab)}; "
        f"model {model.describe()} ({n_params:,} parameters) on {device}{' x ' + where if where else ''}")
    if progress:
        bar = ProgressBar(tcfg.epochs * trainer.batches_per_epoch, initial=trainer.step)
        trainer.step_callbacks.append(bar.step)
        emit = bar.write
    try:
        with _StopOnSignal(trainer, emit):
            trainer.fit()
    finally:
        bar.close()
    if trainer.interrupted:
        if main:
            save(trainer, f"interrupted-step-{trainer.step:08d}")
        log(f"stopped at epoch {trainer.epoch} + {trainer.batch_in_epoch} minibatches; checkpoint saved in {out}; "
            f"continue with: rnnlab train --resume --out {out}")
        return RunResult(model, vocab, trainer.history, out, interrupted=True)
    if main:
        save(trainer, f"epoch-{trainer.epoch:06d}")
    final = trainer.history[-1]
    speed = statistics.median(h["tokens_per_sec"] for h in trainer.history)
    val = f", validation perplexity {final['val_ppl']:.3f}" if "val_ppl" in final else ""
    why = " (time limit)" if trainer.time_up else ""
    log(f"done{why}: epoch {trainer.epoch}, train perplexity {final['train_ppl']:.3f}{val}, "
        f"median {speed:,.0f} tokens/s; checkpoint in {out}")
    return RunResult(model, vocab, trainer.history, out, info=final)


def evaluate_checkpoint(ckpt_dir: str | Path, dcfg: DataConfig | None = None, device: str = "auto",
                        errors: str = "strict", batch_size: int = 32, num_steps: int = 35) -> dict:
    """Perplexity of a checkpoint on a text (default: the validation split of its own corpus)."""
    ck = load_checkpoint(ckpt_dir, select_device(device))
    if dcfg is None:
        dcfg = ck.data_config
        if not dcfg.val_fraction:
            raise UsageError(f"{ckpt_dir} was trained without --val-fraction, so it has no held-out split; "
                             f"give a FILE or --dataset to evaluate on")
        ids = prepare_data(dcfg, errors, vocab=ck.vocab).val_ids
        what = f"validation split ({dcfg.val_fraction:g}) of {dcfg.path or dcfg.dataset}"
    else:
        dcfg.preset, dcfg.token = ck.data_config.preset, ck.data_config.token
        d = prepare_data(dcfg, errors, vocab=ck.vocab)
        ids = d.train_ids
        what = d.source
    result = evaluate(ck.model, ids, batch_size, num_steps)
    unk = ck.vocab.unk_id
    result["unk_tokens"] = int((ids == unk).sum()) if unk is not None else 0
    result["source"] = what
    return result


__all__ = ["PreparedData", "RunResult", "evaluate_checkpoint", "merge_resume", "prepare_data", "stored_configs",
           "train_run", "list_snapshots"]
